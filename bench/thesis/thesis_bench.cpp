// SPDX-License-Identifier: GPL-2.0-or-later
// ferry's counterparts of the thesis' measurements (docs/thesis/README.md, written by
// bench/thesis/reproduce, which runs this binary section by section with --benchmark_filter).
//
//  #1  BM_FirstTouch       first-touch latency of a chunk served by a post-copy fault, or of an
//                          already pulled one, through the link emulator at an RTT
//      BM_FirstTouchLocal  the same first touch of a local region: memory, mmap'd file (cold
//                          and warm page cache): the baselines
//      BM_ReadWhilePulling read throughput of a region pulled while it is read (post-copy
//                          with background pull: the thesis' "managed mount")
//      BM_ReadLocal        the same read of a local region (memory, mmap'd file)
//  #2,3 BM_HashChunks      hashing every chunk (XXH3, CRC32C, SHA-256, BLAKE2b) vs
//      BM_HashWhole        one hash over the whole region vs
//      BM_ExactPass        exact tracking (uffd-wp + PAGEMAP_SCAN), after 1% of pages written
//  #4  BM_DeltaSync        the finalize of a file-backed region after 1% of its pages changed
//  #5  BM_PullChunk        pull throughput against chunk size and RTT
//  #6  BM_Startup          connect to first usable chunk, and bytes on the wire until then
//  #7  BM_PullBacking      pull of a region backed by memory vs by an mmap'd file on disk
//  #8,9 BM_PullRtt         pull throughput against RTT, requests in flight and connections,
//      BM_RawStream        next to one plain TCP stream through the same emulated link
//
// Every run that moves data checks the destination byte for byte against the source and
// fails the benchmark if it differs. Grids are full by default; --thesis_quick (consumed here,
// before Google Benchmark sees the arguments) uses smaller regions and fewer points.
#include <benchmark/benchmark.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <utility>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <xxhash.h>
#include <nettle/sha2.h>
#if FERRY_HAVE_ISAL
#include <isa-l/crc.h>
#endif
#if FERRY_HAVE_LIBB2
#include <blake2.h>
#endif

#include "ferry/base/log.h"
#include "../common/raw_tcp.h"
#include "../common/samples.h"
#include "ferry/dirty/tracker.h"
#include "ferry/link/link_emulator.h"
#include "ferry/roles/leecher.h"
#include "ferry/roles/seeder.h"
#include "ferry/sys/mapping.h"
#include "ferry/sys/pagemap_scan.h"
#include "ferry/sys/userfaultfd.h"
#include "ferry/wire/connection.h"

using namespace ferry;
using bench::fillRandom;
using bench::percentile;
using Clock = std::chrono::steady_clock;

namespace {

bool gQuick = false;
constexpr uint64_t kMiB = 1ull << 20;
constexpr size_t kPage = 4096;

template<typename T>
Status statusOf(const Result<T> &r)
{
	return r.ok() ? Status() : Status(r.error());
}

double secondsSince(Clock::time_point t0)
{
	return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Where file-backed regions live: a directory on disk (not tmpfs), FERRY_THESIS_DIR or
// /var/tmp.
std::string fileDir()
{
	const char *d = std::getenv("FERRY_THESIS_DIR");
	return d && *d ? d : "/var/tmp";
}

// A file of `size` random bytes on disk, mapped MAP_SHARED read-write; unlinked when done.
struct FileRegion {
	std::string path;
	UniqueFd fd;
	Mapping map;

	static Result<FileRegion> create(uint64_t size, uint64_t seed)
	{
		FileRegion f;
		std::string tmpl = fileDir() + "/ferry-thesis-XXXXXX";
		std::vector<char> name(tmpl.begin(), tmpl.end());
		name.push_back('\0');
		int raw = ::mkstemp(name.data());
		if (raw < 0)
			return Error::fromErrno(fmt::format("mkstemp in {}", fileDir()));
		f.fd = UniqueFd(raw);
		f.path = name.data();
		if (::ftruncate(raw, off_t(size)) < 0)
			return Error::fromErrno("ftruncate");
		FERRY_ASSIGN(f.map, Mapping::map(raw, size, PROT_READ | PROT_WRITE, MAP_SHARED));
		fillRandom(f.map.data(), size, seed);
		if (::msync(f.map.data(), size, MS_SYNC) < 0)
			return Error::fromErrno("msync");
		return f;
	}
	// Writes the file back and drops its pages from the page cache, so that the next read
	// comes from the disk. The mapping is replaced by a fresh one (no page table entries).
	Status evict()
	{
		const size_t size = map.size();
		if (::msync(map.data(), size, MS_SYNC) < 0)
			return Error::fromErrno("msync");
		map = Mapping();
		if (::fdatasync(fd.get()) < 0)
			return Error::fromErrno("fdatasync");
		if (int e = ::posix_fadvise(fd.get(), 0, off_t(size), POSIX_FADV_DONTNEED); e != 0)
			return Error::fromErrno("posix_fadvise", e);
		FERRY_ASSIGN(map, Mapping::map(fd.get(), size, PROT_READ | PROT_WRITE, MAP_SHARED));
		return {};
	}
	FileRegion() = default;
	// The moved-from region no longer owns the file's name (it must not unlink it).
	FileRegion(FileRegion &&o) noexcept : path(std::exchange(o.path, {})), fd(std::move(o.fd)), map(std::move(o.map)) {}
	FileRegion &operator=(FileRegion &&) = delete;
	~FileRegion()
	{
		if (!path.empty())
			::unlink(path.c_str());
	}
};

enum class Backing { Memory, FileCold, FileWarm };

// A seeder over a region of this process (memory, or an mmap'd file), served from a thread;
// an application in this process would write it through the mapping.
struct LocalSeeder {
	std::optional<MemfdMapping> memory;
	std::optional<FileRegion> file;
	uint8_t *data = nullptr;
	uint64_t size = 0;
	std::unique_ptr<Seeder> seeder;
	std::optional<Listener> listener;
	std::thread thread;
	Status served;

	Status start(uint64_t sz, uint32_t chunk, Backing backing = Backing::Memory,
		     std::function<Status()> suspend = [] { return Status(); })
	{
		size = sz;
		if (backing == Backing::Memory) {
			FERRY_ASSIGN(auto m, MemfdMapping::create("thesis-source", size));
			memory.emplace(std::move(m));
			fillRandom(memory->data(), size, 42);
			data = memory->data();
		} else {
			FERRY_ASSIGN(auto f, FileRegion::create(size, 42));
			file.emplace(std::move(f));
			if (backing == Backing::FileCold)
				FERRY_TRY(file->evict());
			data = file->map.data();
		}
		// Memory is tracked exactly, as in a migration; a file by hashing, as `ferry seed
		// --file` does (userfaultfd write-protect does not cover regular files). The hash
		// tracker rehashes the region at every sample, which competes with the pull for CPU.
		TrackedRegion r{0, reinterpret_cast<uintptr_t>(data), size, chunk};
		FERRY_ASSIGN(auto tracker,
			     backing == Backing::Memory ? makeUffdWpTracker(r, Userfaultfd()) : makeHashTracker(r));
		SeederOptions so;
		so.chunkSize = chunk;
		seeder = std::make_unique<Seeder>(data, size, std::move(tracker),
						  SeederHooks{std::move(suspend), [] { return Status(); }, [] {}, {}}, so);
		FERRY_ASSIGN(Listener l, Listener::listen(Endpoint::tcp("127.0.0.1", 0)));
		listener.emplace(std::move(l));
		thread = std::thread([this] { served = seeder->serve(*listener); });
		return {};
	}
	~LocalSeeder()
	{
		if (thread.joinable()) {
			seeder->stop();
			thread.join();
		}
	}
};

Result<std::unique_ptr<LinkEmulator>> linkTo(const LocalSeeder &src, double rttMs, double mbit = 0)
{
	return LinkEmulator::start(Endpoint::tcp("127.0.0.1", 0), src.listener->boundEndpoint(),
				   LinkParams::symmetric(std::chrono::microseconds(int64_t(rttMs * 1000)), mbit));
}

// Starts `src` over `size` bytes of memory in `chunk`s and a link of `rttMs` in front of it.
Result<std::unique_ptr<LinkEmulator>> startBehindLink(LocalSeeder &src, uint64_t size, uint32_t chunk, double rttMs)
{
	FERRY_TRY(src.start(size, chunk));
	return linkTo(src, rttMs);
}

// One hybrid migration of `src` into a destination application in this process whose mapping
// is guarded by a userfaultfd; `app` runs once the leecher resumed the application, and the
// leecher's report is returned once it finished and the destination equals the source.
struct HybridSpec {
	bool postcopyOnly = true;  // no pre-copy: every chunk is served after switch-over
	bool backgroundPull = true;
	uint32_t chunk = 64 * 1024;
	unsigned depth = 64;
};

Result<LeecherReport> runHybrid(LocalSeeder &src, const Endpoint &via, const HybridSpec &spec,
				const std::function<void(uint8_t *app)> &app,
				Clock::time_point *started = nullptr)
{
	const uint64_t size = src.size;
	MemfdMapping dest;
	Mapping appMap;
	std::mutex m;
	std::condition_variable cv;
	bool go = false;
	LeecherHooks hooks = LeecherHooks::intoGuardedMemory(dest, appMap, "thesis-destination", [&]() -> Status {
		std::lock_guard g(m);
		go = true;
		cv.notify_all();
		return {};
	});
	LeecherOptions lo;
	lo.name = "thesis";
	lo.seeder = via;
	lo.mode = MigrationMode::Hybrid;
	lo.postcopyOnly = spec.postcopyOnly;
	lo.backgroundPull = spec.backgroundPull;
	lo.connections = 2;
	lo.depth = spec.depth;
	lo.compression = false;
	lo.sampleInterval = std::chrono::milliseconds(10);
	Leecher leecher(std::move(hooks), lo);
	Result<LeecherReport> rep = Error(0, "not run");
	bool finished = false;
	if (started)
		*started = Clock::now();
	std::thread runner([&] {
		rep = leecher.run();
		std::lock_guard g(m);
		finished = true;
		cv.notify_all();
	});
	bool resumed;
	{
		std::unique_lock g(m);
		cv.wait(g, [&] { return go || finished; });
		resumed = go;
	}
	if (resumed)
		app(appMap.data());
	runner.join();
	FERRY_TRY(statusOf(rep));
	if (!resumed)
		return Error(EPROTO, "the leecher finished without resuming the application");
	if (std::memcmp(appMap.data(), src.data, size) != 0)
		return Error(EIO, "destination differs from source");
	return rep;
}

// A pre-copy pull of `src` through `via`; the destination must equal the source.
Result<LeecherReport> pullOnce(LocalSeeder &src, const Endpoint &via, unsigned conns, unsigned depth,
			       std::string policy = "immediate")
{
	MemfdMapping dest;
	LeecherOptions lo;
	lo.name = "thesis";
	lo.seeder = via;
	lo.mode = MigrationMode::PreCopy;
	lo.connections = conns;
	lo.depth = depth;
	lo.compression = false;
	lo.finalizePolicy = std::move(policy);
	lo.sampleInterval = std::chrono::milliseconds(10);
	Leecher leecher(LeecherHooks::intoMemory(dest, "thesis-destination"), lo);
	FERRY_ASSIGN(LeecherReport rep, leecher.run());
	if (std::memcmp(dest.data(), src.data, src.size) != 0)
		return Error(EIO, "destination differs from source");
	return rep;
}

bool skipOn(benchmark::State &state, const Status &st)
{
	if (st.ok())
		return false;
	state.SkipWithError(st.error().message().c_str());
	return true;
}

// Touches the first byte of every chunk in a shuffled order; returns each touch's latency (µs).
std::vector<double> touchChunks(const uint8_t *base, uint64_t size, uint32_t chunk, uint32_t seed)
{
	std::vector<uint32_t> order(size / chunk);
	for (uint32_t i = 0; i < order.size(); i++)
		order[i] = i;
	std::shuffle(order.begin(), order.end(), std::mt19937(seed));
	std::vector<double> lat;
	lat.reserve(order.size());
	volatile uint8_t sink = 0;
	for (uint32_t i : order) {
		auto a = Clock::now();
		sink = sink + *reinterpret_cast<const volatile uint8_t *>(base + uint64_t(i) * chunk);
		lat.push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
	}
	return lat;
}

void latencyCounters(benchmark::State &state, const std::vector<double> &lat)
{
	state.counters["p50_us"] = percentile(lat, 0.50);
	state.counters["p99_us"] = percentile(lat, 0.99);
	double sum = 0;
	for (double v : lat)
		sum += v;
	state.counters["mean_us"] = lat.empty() ? 0 : sum / double(lat.size());
	state.counters["touches"] = double(lat.size());
}

// #1: args rtt µs (-1: no link emulator, the leecher connects to the seeder directly), kind
// (0 served by post-copy faults, 1 already pulled), chunk KiB.
void BM_FirstTouch(benchmark::State &state)
{
	const bool direct = state.range(0) < 0;
	const double rttMs = direct ? 0 : double(state.range(0)) / 1000;
	const bool pulled = state.range(1) != 0;
	const uint32_t chunk = uint32_t(state.range(2)) * 1024;
	const uint64_t chunks = gQuick ? 32 : 64;
	const uint64_t size = chunks * chunk;
	auto f = Userfaultfd::probeFeatures();
	if (!f.ok() || !(*f & UFFD_FEATURE_MINOR_SHMEM))
		return state.SkipWithError("userfaultfd MINOR_SHMEM unavailable");
	std::vector<double> lat;
	for (auto _ : state) {
		LocalSeeder src;
		if (skipOn(state, src.start(size, chunk)))
			return;
		std::unique_ptr<LinkEmulator> link;
		if (!direct) {
			auto l = linkTo(src, rttMs);
			if (skipOn(state, statusOf(l)))
				return;
			link = std::move(l).value();
		}
		HybridSpec spec;
		spec.postcopyOnly = !pulled;
		spec.backgroundPull = pulled;
		spec.chunk = chunk;
		std::vector<double> run;
		auto rep = runHybrid(src, link ? link->endpoint() : src.listener->boundEndpoint(), spec,
				     [&](uint8_t *app) { run = touchChunks(app, size, chunk, 7); });
		if (skipOn(state, statusOf(rep)))
			return;
		state.SetIterationTime(std::max(1e-9, rep->postcopyMs / 1e3));
		lat.insert(lat.end(), run.begin(), run.end());
	}
	latencyCounters(state, lat);
	state.SetLabel(pulled ? "already-pulled" : "postcopy-fault");
}

// Maps a local region of `backing` afresh (no page table entries) over `size` random bytes.
struct LocalRegion {
	std::optional<MemfdMapping> memory;
	std::optional<FileRegion> file;
	Mapping view; // a fresh mapping: the first touch of each page faults

	static Result<LocalRegion> create(Backing backing, uint64_t size)
	{
		LocalRegion r;
		int fd;
		if (backing == Backing::Memory) {
			FERRY_ASSIGN(auto m, MemfdMapping::create("thesis-local", size));
			fillRandom(m.data(), size, 3);
			r.memory.emplace(std::move(m));
			fd = r.memory->fd.get();
		} else {
			FERRY_ASSIGN(auto f, FileRegion::create(size, 3));
			r.file.emplace(std::move(f));
			if (backing == Backing::FileCold)
				FERRY_TRY(r.file->evict());
			fd = r.file->fd.get();
		}
		FERRY_ASSIGN(r.view, Mapping::map(fd, size, PROT_READ, MAP_SHARED));
		return r;
	}
	const uint8_t *source() const { return memory ? memory->data() : file->map.data(); }
};

const char *backingName(Backing b)
{
	static constexpr const char *kNames[] = {"memory", "file-cold", "file-warm"}; // Backing's order
	return kNames[size_t(b)];
}

// #1 baselines: args backing (0 memory, 1 file cold, 2 file warm), chunk KiB.
void BM_FirstTouchLocal(benchmark::State &state)
{
	const Backing backing = Backing(state.range(0));
	const uint32_t chunk = uint32_t(state.range(1)) * 1024;
	const uint64_t size = 64ull * chunk;
	std::vector<double> lat;
	for (auto _ : state) {
		auto r = LocalRegion::create(backing, size);
		if (skipOn(state, statusOf(r)))
			return;
		auto t0 = Clock::now();
		auto run = touchChunks(r->view.data(), size, chunk, 7);
		state.SetIterationTime(secondsSince(t0));
		lat.insert(lat.end(), run.begin(), run.end());
	}
	latencyCounters(state, lat);
	state.SetLabel(backingName(backing));
}

// Reads the whole region front to back into a 1 MiB buffer, as a reader of a mount would;
// returns a checksum so that the copy is not optimised away.
uint64_t readAll(const uint8_t *base, uint64_t size)
{
	static thread_local std::vector<uint8_t> buf(kMiB);
	uint64_t sum = 0;
	for (uint64_t at = 0; at < size; at += buf.size()) {
		size_t n = size_t(std::min<uint64_t>(buf.size(), size - at));
		std::memcpy(buf.data(), base + at, n);
		sum += XXH3_64bits(buf.data(), 64);
	}
	return sum;
}

uint64_t readRegionSize()
{
	return (gQuick ? 32 : 128) * kMiB;
}

// #1: read throughput while the region is pulled (post-copy, background pull on); arg rtt µs.
void BM_ReadWhilePulling(benchmark::State &state)
{
	const double rttMs = double(state.range(0)) / 1000;
	const uint64_t size = readRegionSize();
	const uint32_t chunk = 64 * 1024;
	double totalSec = 0, bytes = 0;
	for (auto _ : state) {
		LocalSeeder src;
		auto link = startBehindLink(src, size, chunk, rttMs);
		if (skipOn(state, statusOf(link)))
			return;
		double sec = 0;
		auto rep = runHybrid(src, (*link)->endpoint(), HybridSpec{}, [&](uint8_t *app) {
			auto t0 = Clock::now();
			benchmark::DoNotOptimize(readAll(app, size));
			sec = secondsSince(t0);
		});
		if (skipOn(state, statusOf(rep)))
			return;
		state.SetIterationTime(sec);
		totalSec += sec;
		bytes += double(size);
		state.counters["faults"] = double(rep->faults);
	}
	state.counters["MB_per_s"] = bytes / totalSec / 1e6;
}

// #1 baselines of the read: arg backing.
void BM_ReadLocal(benchmark::State &state)
{
	const Backing backing = Backing(state.range(0));
	const uint64_t size = readRegionSize();
	double totalSec = 0, bytes = 0;
	for (auto _ : state) {
		auto r = LocalRegion::create(backing, size);
		if (skipOn(state, statusOf(r)))
			return;
		auto t0 = Clock::now();
		benchmark::DoNotOptimize(readAll(r->view.data(), size));
		double sec = secondsSince(t0);
		if (std::memcmp(r->view.data(), r->source(), size) != 0)
			return state.SkipWithError("mapping differs from its source");
		state.SetIterationTime(sec);
		totalSec += sec;
		bytes += double(size);
	}
	state.counters["MB_per_s"] = bytes / totalSec / 1e6;
	state.SetLabel(backingName(backing));
}

// #6: from the leecher's start (connect) to the first chunk the application can read, and
// the bytes the link carried by then (both directions); arg rtt µs.
void BM_Startup(benchmark::State &state)
{
	const double rttMs = double(state.range(0)) / 1000;
	const uint64_t size = (gQuick ? 16 : 64) * kMiB;
	const uint32_t chunk = 64 * 1024;
	std::vector<double> ms, resumeMs, wire;
	for (auto _ : state) {
		LocalSeeder src;
		auto link = startBehindLink(src, size, chunk, rttMs);
		if (skipOn(state, statusOf(link)))
			return;
		Clock::time_point t0;
		double toFirst = 0, toResume = 0;
		uint64_t bytes = 0;
		LinkEmulator *l = link->get();
		auto rep = runHybrid(
			src, l->endpoint(), HybridSpec{},
			[&](uint8_t *app) {
				toResume = secondsSince(t0);
				volatile uint8_t v = *reinterpret_cast<volatile uint8_t *>(app);
				(void)v;
				toFirst = secondsSince(t0);
				bytes = l->bytesRelayed();
			},
			&t0);
		if (skipOn(state, statusOf(rep)))
			return;
		state.SetIterationTime(toFirst);
		ms.push_back(toFirst * 1e3);
		resumeMs.push_back(toResume * 1e3);
		wire.push_back(double(bytes));
	}
	state.counters["first_chunk_ms"] = percentile(ms, 0.5);
	state.counters["resume_ms"] = percentile(resumeMs, 0.5);
	state.counters["startup_bytes"] = percentile(wire, 0.5);
}

// The pull benchmarks' loop: a fresh seeder per iteration, one pre-copy pull through a fresh
// link, timed by the first pass. Reports MB_per_s (region bytes per second).
void runPulls(benchmark::State &state, uint64_t size, uint32_t chunk, Backing backing, double rttMs, double mbit,
	      unsigned conns, unsigned depth)
{
	double totalSec = 0, bytes = 0;
	for (auto _ : state) {
		LocalSeeder src;
		if (skipOn(state, src.start(size, chunk, backing)))
			return;
		auto link = linkTo(src, rttMs, mbit);
		if (skipOn(state, statusOf(link)))
			return;
		auto rep = pullOnce(src, (*link)->endpoint(), conns, depth);
		if (skipOn(state, statusOf(rep)))
			return;
		double sec = rep->firstPassMs / 1e3;
		state.SetIterationTime(sec);
		totalSec += sec;
		bytes += double(size);
	}
	state.counters["MB_per_s"] = bytes / totalSec / 1e6;
}

// #5: args chunk KiB, rtt µs. About 8 MiB in flight per connection at every chunk size
// (at most 1024 chunks), 2 connections, no bandwidth cap.
void BM_PullChunk(benchmark::State &state)
{
	const uint32_t chunk = uint32_t(state.range(0)) * 1024;
	const double rttMs = double(state.range(1)) / 1000;
	const unsigned depth = unsigned(std::clamp<uint64_t>((8 * kMiB) / chunk, 4, 1024));
	runPulls(state, (gQuick ? 32 : 64) * kMiB, chunk, Backing::Memory, rttMs, 0, 2, depth);
	state.counters["depth"] = depth;
}

// #7: arg backing (0 memory, 1 mmap'd file, cold page cache); no link delay or cap.
void BM_PullBacking(benchmark::State &state)
{
	const Backing backing = Backing(state.range(0));
	runPulls(state, (gQuick ? 32 : 128) * kMiB, 64 * 1024, backing, 0, 0, 2, 64);
	state.SetLabel(backingName(backing));
}

// #8/#9: args rtt µs, depth (chunks in flight per connection), connections, Mbit/s (0: none).
void BM_PullRtt(benchmark::State &state)
{
	const double rttMs = double(state.range(0)) / 1000;
	const unsigned depth = unsigned(state.range(1));
	const unsigned conns = unsigned(state.range(2));
	const double mbit = double(state.range(3));
	// Shallow pipelines over a long RTT crawl (1 chunk per RTT): a smaller region for them.
	const uint64_t size = (depth < 8 ? 8 : (gQuick ? 32 : 64)) * kMiB;
	runPulls(state, size, 64 * 1024, Backing::Memory, rttMs, mbit, conns, depth);
}

// #8 baseline: the same bytes as one plain TCP stream through the same emulated link;
// args rtt µs, Mbit/s.
void BM_RawStream(benchmark::State &state)
{
	const double rttMs = double(state.range(0)) / 1000;
	const double mbit = double(state.range(1));
	const uint64_t size = (gQuick ? 32 : 64) * kMiB;
	std::vector<uint8_t> buf(kMiB), rbuf(kMiB);
	fillRandom(buf.data(), buf.size(), 7);
	double totalSec = 0, bytes = 0;
	for (auto _ : state) {
		auto l = Listener::listen(Endpoint::tcp("127.0.0.1", 0));
		if (skipOn(state, statusOf(l)))
			return;
		auto link = LinkEmulator::start(Endpoint::tcp("127.0.0.1", 0), l->boundEndpoint(),
						LinkParams::symmetric(std::chrono::microseconds(int64_t(rttMs * 1000)), mbit));
		if (skipOn(state, statusOf(link)))
			return;
		auto t0 = Clock::now();
		std::thread sender([&] { bench::sendRawStream((*link)->endpoint(), buf, size); });
		auto c = l->accept(10000);
		uint64_t got = 0;
		bool same = true;
		while (c.ok() && got < size) {
			ssize_t n = ::recv(c->fd(), rbuf.data(), rbuf.size() - (got % kMiB), 0);
			if (n <= 0)
				break;
			same = same && std::memcmp(rbuf.data(), buf.data() + (got % kMiB), size_t(n)) == 0;
			got += uint64_t(n);
		}
		double sec = secondsSince(t0);
		if (c.ok()) {
			uint8_t ack = 1;
			(void)::send(c->fd(), &ack, 1, MSG_NOSIGNAL);
		}
		sender.join();
		if (got != size || !same)
			return state.SkipWithError("raw stream incomplete or corrupted");
		state.SetIterationTime(sec);
		totalSec += sec;
		bytes += double(size);
	}
	state.counters["MB_per_s"] = bytes / totalSec / 1e6;
}

// #2/#3: the hash functions Debian 12 packages as C libraries. BLAKE3 has none there (only
// the b3sum tool and Rust sources), so BLAKE2b (libb2) stands in for it.
enum class Hash { Xxh3_64, Xxh3_128, Crc32c, Sha256, Blake2b };

// The write-detection benchmarks' counters: passes over `size` bytes took totalSec in all,
// and found `detected` bytes written in all.
void reportRegionPasses(benchmark::State &state, uint64_t size, double totalSec, double detected)
{
	const double passes = double(state.iterations());
	state.counters["GB_per_s"] = passes * double(size) / totalSec / 1e9;
	state.counters["ms_per_GiB"] = totalSec * 1e3 / passes / (double(size) / double(1ull << 30));
	state.counters["detected_bytes"] = detected / passes;
}

const char *hashName(Hash h)
{
	static constexpr const char *kNames[] = {"XXH3-64", "XXH3-128", "CRC32C", "SHA-256", "BLAKE2b-256"}; // Hash's order
	return kNames[size_t(h)];
}

bool hashAvailable(Hash h)
{
#if !FERRY_HAVE_ISAL
	if (h == Hash::Crc32c)
		return false;
#endif
#if !FERRY_HAVE_LIBB2
	if (h == Hash::Blake2b)
		return false;
#endif
	(void)h;
	return true;
}

// A streaming hasher over one algorithm: update() any number of times, then digest (the
// first 16 bytes of it, enough to compare).
class Hasher {
public:
	explicit Hasher(Hash h) : h_(h) { reset(); }
	~Hasher()
	{
		if (xxh_)
			XXH3_freeState(xxh_);
	}
	Hasher(const Hasher &) = delete;
	Hasher &operator=(const Hasher &) = delete;

	void reset()
	{
		switch (h_) {
		case Hash::Xxh3_64:
		case Hash::Xxh3_128:
			if (!xxh_)
				xxh_ = XXH3_createState();
			if (h_ == Hash::Xxh3_64)
				XXH3_64bits_reset(xxh_);
			else
				XXH3_128bits_reset(xxh_);
			break;
		case Hash::Crc32c:
			crc_ = 0;
			break;
		case Hash::Sha256:
			sha256_init(&sha_);
			break;
		case Hash::Blake2b:
#if FERRY_HAVE_LIBB2
			blake2b_init(&b2_, 32);
#endif
			break;
		}
	}
	void update(const uint8_t *p, size_t n)
	{
		switch (h_) {
		case Hash::Xxh3_64:
			XXH3_64bits_update(xxh_, p, n);
			break;
		case Hash::Xxh3_128:
			XXH3_128bits_update(xxh_, p, n);
			break;
		case Hash::Crc32c:
#if FERRY_HAVE_ISAL
			crc_ = crc32_iscsi(const_cast<uint8_t *>(p), int(n), crc_);
#endif
			break;
		case Hash::Sha256:
			sha256_update(&sha_, n, p);
			break;
		case Hash::Blake2b:
#if FERRY_HAVE_LIBB2
			blake2b_update(&b2_, p, n);
#endif
			break;
		}
	}
	std::array<uint8_t, 16> digest()
	{
		std::array<uint8_t, 16> d{};
		switch (h_) {
		case Hash::Xxh3_64: {
			uint64_t v = XXH3_64bits_digest(xxh_);
			std::memcpy(d.data(), &v, 8);
			break;
		}
		case Hash::Xxh3_128: {
			XXH128_hash_t v = XXH3_128bits_digest(xxh_);
			std::memcpy(d.data(), &v, 16);
			break;
		}
		case Hash::Crc32c:
			std::memcpy(d.data(), &crc_, 4);
			break;
		case Hash::Sha256: {
			uint8_t full[SHA256_DIGEST_SIZE];
			sha256_digest(&sha_, sizeof full, full);
			std::memcpy(d.data(), full, 16);
			break;
		}
		case Hash::Blake2b: {
#if FERRY_HAVE_LIBB2
			uint8_t full[32];
			blake2b_final(&b2_, full, sizeof full);
			std::memcpy(d.data(), full, 16);
#endif
			break;
		}
		}
		return d;
	}

private:
	Hash h_;
	XXH3_state_t *xxh_ = nullptr;
	uint32_t crc_ = 0;
	sha256_ctx sha_{};
#if FERRY_HAVE_LIBB2
	blake2b_state b2_{};
#endif
};

uint64_t hashRegionSize()
{
	return (gQuick ? 64 : 256) * kMiB;
}

// Writes one byte in 1% of the pages (every 100th), different each call.
uint64_t writeOnePercent(uint8_t *base, uint64_t size, uint8_t value)
{
	uint64_t pages = 0;
	for (uint64_t p = 0; p < size / kPage; p += 100, pages++)
		base[p * kPage + (p % kPage)] = value;
	return pages;
}

// #2/#3 per chunk: args hash, chunk KiB. One pass hashes every chunk after 1% of the pages
// were written, and compares with the previous pass: what it detects is whole chunks.
void BM_HashChunks(benchmark::State &state)
{
	const Hash h = Hash(state.range(0));
	const uint32_t chunk = uint32_t(state.range(1)) * 1024;
	if (!hashAvailable(h))
		return state.SkipWithError(fmt::format("{}: no Debian 12 library in this build", hashName(h)).c_str());
	const uint64_t size = hashRegionSize();
	std::vector<uint8_t> region(size);
	fillRandom(region.data(), size, 5);
	const uint64_t chunks = size / chunk;
	std::vector<std::array<uint8_t, 16>> prev(chunks), cur(chunks);
	Hasher hasher(h);
	auto pass = [&](std::vector<std::array<uint8_t, 16>> &out) {
		for (uint64_t c = 0; c < chunks; c++) {
			hasher.reset();
			hasher.update(region.data() + c * chunk, chunk);
			out[c] = hasher.digest();
		}
	};
	pass(prev);
	double totalSec = 0, detected = 0, written = 0;
	uint8_t value = 1;
	for (auto _ : state) {
		written += double(writeOnePercent(region.data(), size, value++) * kPage);
		auto t0 = Clock::now();
		pass(cur);
		double sec = secondsSince(t0);
		uint64_t changed = 0;
		for (uint64_t c = 0; c < chunks; c++)
			changed += cur[c] != prev[c];
		std::swap(prev, cur);
		state.SetIterationTime(sec);
		totalSec += sec;
		detected += double(changed) * chunk;
	}
	reportRegionPasses(state, size, totalSec, detected);
	state.counters["written_page_bytes"] = written / double(state.iterations());
	state.SetLabel(hashName(h));
}

// #3 whole region: arg hash. One digest over the region: it tells that something changed,
// so the whole region is what must move.
void BM_HashWhole(benchmark::State &state)
{
	const Hash h = Hash(state.range(0));
	if (!hashAvailable(h))
		return state.SkipWithError(fmt::format("{}: no Debian 12 library in this build", hashName(h)).c_str());
	const uint64_t size = hashRegionSize();
	std::vector<uint8_t> region(size);
	fillRandom(region.data(), size, 5);
	Hasher hasher(h);
	hasher.update(region.data(), size);
	auto prev = hasher.digest();
	double totalSec = 0, detected = 0;
	uint8_t value = 1;
	for (auto _ : state) {
		writeOnePercent(region.data(), size, value++);
		auto t0 = Clock::now();
		hasher.reset();
		for (uint64_t at = 0; at < size; at += kMiB)
			hasher.update(region.data() + at, size_t(std::min<uint64_t>(kMiB, size - at)));
		auto cur = hasher.digest();
		double sec = secondsSince(t0);
		detected += cur != prev ? double(size) : 0;
		prev = cur;
		state.SetIterationTime(sec);
		totalSec += sec;
	}
	reportRegionPasses(state, size, totalSec, detected);
	state.SetLabel(hashName(h));
}

// #2 exact tracking: arg chunk KiB. One uffd-wp + PAGEMAP_SCAN pass after 1% of the pages
// were written: it reports the written pages themselves.
void BM_ExactPass(benchmark::State &state)
{
	const uint32_t chunk = uint32_t(state.range(0)) * 1024;
	if (!PagemapScanner::supported())
		return state.SkipWithError("PAGEMAP_SCAN not supported by this kernel");
	const uint64_t size = hashRegionSize();
	auto mem = MemfdMapping::create("thesis-exact", size);
	if (skipOn(state, statusOf(mem)))
		return;
	fillRandom(mem->data(), size, 5);
	TrackedRegion region{0, reinterpret_cast<uintptr_t>(mem->data()), size, chunk};
	auto tracker = makeUffdWpTracker(region, Userfaultfd());
	if (skipOn(state, statusOf(tracker)) || skipOn(state, (*tracker)->start()))
		return;
	std::vector<uint32_t> chunks;
	std::vector<uint64_t> masks;
	double totalSec = 0, detected = 0;
	uint8_t value = 1;
	for (auto _ : state) {
		writeOnePercent(mem->data(), size, value++);
		auto t0 = Clock::now();
		Status st = (*tracker)->collectPages(chunks, masks);
		double sec = secondsSince(t0);
		if (skipOn(state, st))
			return;
		uint64_t pages = 0;
		for (size_t i = 0; i < chunks.size(); i++)
			pages += i < masks.size() && masks[i] ? uint64_t(__builtin_popcountll(masks[i]))
							      : chunk / kPage;
		detected += double(pages * kPage);
		state.SetIterationTime(sec);
		totalSec += sec;
	}
	reportRegionPasses(state, size, totalSec, detected);
	state.SetLabel("uffd-wp+PAGEMAP_SCAN");
}

// #4: a file-backed region (on disk, 4 KiB chunks, hashing tracker) is pulled once; then
// every 100th page is overwritten (in the seeder's suspend hook, so the change lands between
// the first pass and the final dirty scan) and the finalize fetches what changed. Reports the
// bytes the link carried and the time from the change to the destination being complete;
// arg region MiB.
void BM_DeltaSync(benchmark::State &state)
{
	const uint64_t size = uint64_t(state.range(0)) * kMiB;
	const uint32_t chunk = 4096;
	std::vector<double> deltaBytes, deltaMs, firstBytes, changedBytes;
	for (auto _ : state) {
		LinkEmulator *linkp = nullptr; // set before the pull that calls the hook
		uint64_t atChange = 0, changed = 0;
		Clock::time_point changedAt;
		LocalSeeder src;
		auto change = [&]() -> Status {
			atChange = linkp->bytesRelayed();
			std::mt19937_64 rng(99);
			for (uint64_t p = 0; p < size / kPage; p += 100) {
				fillRandom(src.data + p * kPage, kPage, rng());
				changed += kPage;
			}
			if (::msync(src.data, size, MS_SYNC) < 0)
				return Error::fromErrno("msync");
			changedAt = Clock::now();
			return {};
		};
		if (skipOn(state, src.start(size, chunk, Backing::FileWarm, change)))
			return;
		auto link = linkTo(src, 0);
		if (skipOn(state, statusOf(link)))
			return;
		linkp = link->get();
		auto rep = pullOnce(src, linkp->endpoint(), 2, 256);
		if (skipOn(state, statusOf(rep)))
			return;
		if (changed == 0)
			return state.SkipWithError("the change never ran (no finalize?)");
		double ms = secondsSince(changedAt) * 1e3;
		state.SetIterationTime(ms / 1e3);
		deltaBytes.push_back(double(linkp->bytesRelayed() - atChange));
		firstBytes.push_back(double(atChange));
		deltaMs.push_back(ms);
		changedBytes.push_back(double(changed));
	}
	state.counters["delta_wire_bytes"] = percentile(deltaBytes, 0.5);
	state.counters["first_sync_wire_bytes"] = percentile(firstBytes, 0.5);
	state.counters["delta_ms"] = percentile(deltaMs, 0.5);
	state.counters["changed_bytes"] = percentile(changedBytes, 0.5);
}

std::vector<int64_t> usFromMs(std::initializer_list<int> ms)
{
	std::vector<int64_t> v;
	for (int m : ms)
		v.push_back(int64_t(m) * 1000);
	return v;
}

void registerAll()
{
	using benchmark::RegisterBenchmark;
	auto manual = [](benchmark::internal::Benchmark *b, int iters) {
		b->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(iters);
	};
	// The thesis' grids: latency 0-40 ms in 2 ms steps, throughput 0-14 ms in 2 ms steps and
	// 22-40 ms in 6 ms steps, worker sweep 0-30 ms.
	const auto touchRtts = gQuick ? usFromMs({0, 10, 40})
				      : usFromMs({0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40});
	const auto rtts = gQuick ? usFromMs({0, 20, 40}) : usFromMs({0, 2, 4, 6, 8, 10, 12, 14, 22, 28, 34, 40});
	const auto workerRtts = gQuick ? usFromMs({0, 30}) : usFromMs({0, 5, 10, 15, 20, 30});
	const auto startupRtts = gQuick ? usFromMs({0, 10, 40}) : usFromMs({0, 2, 5, 10, 20, 30, 40});
	const int reps = gQuick ? 1 : 3;

	manual(RegisterBenchmark("BM_FirstTouch", BM_FirstTouch)
		       ->ArgNames({"rtt_us", "pulled", "chunk_kib"})
		       ->ArgsProduct({touchRtts, {0, 1}, {64}}),
	       reps);
	manual(RegisterBenchmark("BM_FirstTouchDirect", BM_FirstTouch)
		       ->ArgNames({"rtt_us", "pulled", "chunk_kib"})
		       ->ArgsProduct({{-1}, {0, 1}, {4, 64}}),
	       reps);
	manual(RegisterBenchmark("BM_FirstTouchLocal", BM_FirstTouchLocal)
		       ->ArgNames({"backing", "chunk_kib"})
		       ->ArgsProduct({{0, 1, 2}, {4, 64}}),
	       reps);
	manual(RegisterBenchmark("BM_ReadWhilePulling", BM_ReadWhilePulling)->ArgNames({"rtt_us"})->ArgsProduct({rtts}), reps);
	manual(RegisterBenchmark("BM_ReadLocal", BM_ReadLocal)->ArgNames({"backing"})->ArgsProduct({{0, 1, 2}}), reps);
	manual(RegisterBenchmark("BM_Startup", BM_Startup)->ArgNames({"rtt_us"})->ArgsProduct({startupRtts}), gQuick ? 1 : 3);
	std::vector<int64_t> chunkKib = gQuick ? std::vector<int64_t>{4, 64, 2048}
					       : std::vector<int64_t>{4, 16, 64, 256, 1024, 2048};
	manual(RegisterBenchmark("BM_PullChunk", BM_PullChunk)
		       ->ArgNames({"chunk_kib", "rtt_us"})
		       ->ArgsProduct({chunkKib, usFromMs({0, 20})}),
	       reps);
	manual(RegisterBenchmark("BM_FaultChunk", BM_FirstTouch)
		       ->ArgNames({"rtt_us", "pulled", "chunk_kib"})
		       ->ArgsProduct({{0}, {0}, chunkKib}),
	       1);
	manual(RegisterBenchmark("BM_PullBacking", BM_PullBacking)->ArgNames({"backing"})->ArgsProduct({{0, 1}}), reps);
	manual(RegisterBenchmark("BM_PullRtt", BM_PullRtt)
		       ->ArgNames({"rtt_us", "depth", "conns", "mbit"})
		       ->ArgsProduct({rtts, {64}, {2}, {0}}),
	       reps);
	manual(RegisterBenchmark("BM_RawStream", BM_RawStream)->ArgNames({"rtt_us", "mbit"})->ArgsProduct({rtts, {0}}), reps);
	// 4 connections x 256 chunks of 64 KiB is 64 MiB in flight: the thesis' 16384 workers x 4 KiB.
	auto *workers = RegisterBenchmark("BM_PullWorkers", BM_PullRtt)
				->ArgNames({"rtt_us", "depth", "conns", "mbit"})
				->ArgsProduct({workerRtts,
					       gQuick ? std::vector<int64_t>{1, 64} : std::vector<int64_t>{1, 8, 64, 256}, {2}, {0}});
	if (!gQuick)
		workers->ArgsProduct({workerRtts, {256}, {4}, {0}});
	manual(workers, 1);
	const std::vector<int64_t> hashes = {0, 1, 2, 3, 4};
	manual(RegisterBenchmark("BM_HashChunks", BM_HashChunks)
		       ->ArgNames({"hash", "chunk_kib"})
		       ->ArgsProduct({hashes, {4, 64}}),
	       gQuick ? 2 : 5);
	manual(RegisterBenchmark("BM_HashWhole", BM_HashWhole)->ArgNames({"hash"})->ArgsProduct({hashes}), gQuick ? 2 : 5);
	manual(RegisterBenchmark("BM_ExactPass", BM_ExactPass)->ArgNames({"chunk_kib"})->ArgsProduct({{4, 64}}),
	       gQuick ? 5 : 20);
	manual(RegisterBenchmark("BM_DeltaSync", BM_DeltaSync)->ArgNames({"size_mib"})->Arg(gQuick ? 32 : 256),
	       gQuick ? 1 : 3);
}

} // namespace

int main(int argc, char **argv)
{
	std::vector<char *> args;
	for (int i = 0; i < argc; i++) {
		if (std::string_view(argv[i]) == "--thesis_quick")
			gQuick = true;
		else
			args.push_back(argv[i]);
	}
	int n = int(args.size());
	setLogLevel(LogLevel::Warn); // the roles' state changes would drown the results
	registerAll();
	benchmark::Initialize(&n, args.data());
	if (benchmark::ReportUnrecognizedArguments(n, args.data()))
		return 1;
	benchmark::RunSpecifiedBenchmarks();
	benchmark::Shutdown();
	return 0;
}
