// SPDX-License-Identifier: GPL-2.0-or-later
// Benchmarks of the migration roles on loopback:
//  - BM_FaultService: post-copy page-fault service. The destination application touches one
//    byte of every chunk, none of which is local (pure post-copy, no background pull), so
//    every touch is a userfaultfd fault served by fetching the chunk from the seeder.
//    Reports latency p50/p99 (µs, seen by the faulting thread) and throughput (GB/s).
//    BM_FaultServiceStale: the same faults on chunks the destination holds an older copy of
//    (pulled once, then written at the source before the switch-over), a hybrid migration's
//    usual post-copy fault.
//  - BM_Pull: pre-copy pull throughput through the link emulator for a given RTT, bandwidth
//    cap and requests in flight, next to BM_RawStream, a plain TCP stream through the same
//    emulated link (the ceiling any protocol can reach), and BM_RawStreamIntoMemory, the same
//    stream landing in fresh memory as a pull's does (BM_RawStreamIntoHeldMemory: in memory
//    allocated and mapped beforehand, the landing's cost without the allocation).
//  - BM_RawRoundTrip: the floor under BM_FaultService: a plain TCP request (32 bytes) and reply
//    (one chunk) between two threads on loopback, blocking or busy-polling, with no protocol.
//  - BM_PullTls: the pull of BM_Pull (no delay) plaintext or over mutual TLS (x509), with
//    both roles' credentials from one throwaway PKI per process.
//  - BM_TlsStream: one Connection streaming Chunk frames over loopback TCP, plaintext or TLS.
#include <algorithm>
#include <benchmark/benchmark.h>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <random>
#include <sys/mman.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <thread>

#include "../common/raw_tcp.h"
#include "baselines.h"
#include "ferry/base/log.h"
#include "ferry/dirty/tracker.h"
#include "ferry/link/link_emulator.h"
#include "ferry/roles/leecher.h"
#include "ferry/roles/seeder.h"
#include "ferry/sys/mapping.h"
#include "ferry/sys/userfaultfd.h"
#include "ferry/wire/compress.h"
#include "ferry/wire/connection.h"
#include "ferry/wire/tls.h"

using namespace ferry;
using Clock = std::chrono::steady_clock;

namespace {

// Log-like text: compresses about 4x with zstd level 1, like a guest's kernel and page cache
// rather than like a constant.
void fillText(uint8_t *p, size_t len, uint64_t seed)
{
	static constexpr const char *kWords[] = {"alpha", "bravo", "charlie", "delta", "echo", "foxtrot",
						 "golf", "hotel", "india", "juliet", "kilo", "lima"};
	std::mt19937_64 rng(seed);
	size_t at = 0;
	while (at < len) {
		std::string line = fmt::format("{:08x} {} {} {}\n", at / 4096, kWords[rng() % 12], kWords[rng() % 12],
					       rng() % 1000);
		size_t take = std::min(line.size(), len - at);
		std::memcpy(p + at, line.data(), take);
		at += take;
	}
}

// A seeder over a region of this process, served from a background thread.
struct LocalSeeder {
	MemfdMapping region;
	std::unique_ptr<Seeder> seeder;
	std::optional<Listener> listener;
	std::thread thread;
	// Called when the seeder suspends the "application", before it takes the final dirty set.
	std::function<void()> onSuspend;

	// compression: none unless a benchmark asks (a default-constructed CompressionSpec is zstd
	// level 1, which BM_Pull, "no compression", ran with until 2026-11-30: every chunk of its
	// random region was copied and compressed, then sent raw as it did not shrink;
	// docs/benchmarks.md 21).
	Status start(uint64_t size, uint32_t chunk, bool text = false, CompressionSpec compression = {0},
		     std::shared_ptr<const TlsCredentials> tls = {})
	{
		FERRY_ASSIGN(region, MemfdMapping::create("bench-source", size));
		if (text)
			fillText(region.data(), size, 42);
		else
			bench::fillRandom(region.data(), size, 42);
		TrackedRegion r{0, reinterpret_cast<uintptr_t>(region.data()), size, chunk};
		// ferry's exact tracker, as in a real migration (the hash tracker would rehash the
		// whole region at every sample and compete with the pull for the CPU).
		FERRY_ASSIGN(auto tracker, makeUffdWpTracker(r, Userfaultfd()));
		SeederOptions so;
		so.chunkSize = chunk;
		so.compression = compression;
		so.tls = std::move(tls);
		seeder = std::make_unique<Seeder>(region.data(), size, std::move(tracker),
						  SeederHooks{[this] {
								      if (onSuspend)
									      onSuspend();
								      return Status();
							      },
							      [] { return Status(); }, [] {}, {}},
						  so);
		FERRY_ASSIGN(Listener l, Listener::listen(Endpoint::tcp("127.0.0.1", 0)));
		listener.emplace(std::move(l));
		thread = std::thread([this] { (void)seeder->serve(*listener); });
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

// The fault-service benchmarks' body: `threads` threads touch one byte of every chunk of a
// region of `chunks` chunks (0: 256 MiB, at least 256 chunks) in random order, through a link
// of `rttMs` (0: straight loopback), with the fault channel or, for comparison, with faults
// sharing the data connection. stale: the destination pulls the whole region first, and the
// source writes every page of it as it suspends, so each fault is on a chunk the destination
// holds an older copy of (its pages allocated); otherwise none was ever pulled.
void runFaultService(benchmark::State &state, uint32_t chunk, int threads, int rttMs, bool channel, uint32_t regionChunks,
		     bool stale = false)
{
	const uint64_t size = regionChunks ? uint64_t(chunk) * regionChunks : std::max<uint64_t>(256ull << 20, uint64_t(chunk) * 256);
	auto f = Userfaultfd::probeFeatures();
	if (!f.ok() || !(*f & UFFD_FEATURE_MINOR_SHMEM)) {
		state.SkipWithError("userfaultfd MINOR_SHMEM unavailable");
		return;
	}
	std::vector<double> lat;
	double totalSec = 0, bytes = 0;
	for (auto _ : state) {
		LocalSeeder src;
		if (stale)
			src.onSuspend = [&] {
				for (uint64_t off = 0; off < size; off += 4096)
					src.region.data()[off]++;
			};
		if (auto st = src.start(size, chunk); !st.ok()) {
			state.SkipWithError(st.error().message().c_str());
			return;
		}
		MemfdMapping dest; // the leecher's mapping
		Mapping appMap;    // the "application's" mapping of the same memfd
		std::promise<void> resumed; // the leecher let the application run
		LeecherHooks hooks = LeecherHooks::intoGuardedMemory(dest, appMap, "bench-destination", [&]() -> Status {
			resumed.set_value();
			return {};
		});
		LeecherOptions lo;
		std::unique_ptr<LinkEmulator> link;
		if (rttMs > 0) {
			auto l = LinkEmulator::start(Endpoint::tcp("127.0.0.1", 0), src.listener->boundEndpoint(),
						     LinkParams::symmetric(std::chrono::milliseconds(rttMs), 0));
			if (!l.ok()) {
				state.SkipWithError(l.error().message().c_str());
				return;
			}
			link = std::move(l).value();
		}
		lo.name = "bench";
		lo.seeder = link ? link->endpoint() : src.listener->boundEndpoint();
		lo.faultChannel = channel;
		lo.mode = MigrationMode::Hybrid;
		lo.postcopyOnly = !stale; // stale: one pre-copy pass, then finalize ("immediate")
		lo.backgroundPull = false;
		lo.connections = 1;
		lo.depth = 64;
		lo.sampleInterval = std::chrono::milliseconds(10);
		Leecher leecher(std::move(hooks), lo);
		Result<LeecherReport> rep = Error(0, "");
		std::thread runner([&] { rep = leecher.run(); });
		resumed.get_future().wait();
		const uint32_t chunks = uint32_t(size / chunk);
		std::vector<std::vector<double>> perThread(threads);
		auto t0 = Clock::now();
		std::vector<std::thread> touchers;
		for (int t = 0; t < threads; t++) {
			touchers.emplace_back([&, t] {
				std::vector<uint32_t> order;
				for (uint32_t i = uint32_t(t); i < chunks; i += uint32_t(threads))
					order.push_back(i);
				std::shuffle(order.begin(), order.end(), std::mt19937(uint32_t(t) + 1));
				volatile uint64_t sink = 0;
				for (uint32_t i : order) {
					auto a = Clock::now();
					sink = sink + *reinterpret_cast<volatile uint64_t *>(appMap.data() + uint64_t(i) * chunk);
					perThread[t].push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
				}
			});
		}
		for (auto &t : touchers)
			t.join();
		double sec = std::chrono::duration<double>(Clock::now() - t0).count();
		runner.join();
		if (!rep.ok()) {
			state.SkipWithError(rep.error().message().c_str());
			return;
		}
		if (std::memcmp(appMap.data(), src.region.data(), size) != 0) {
			state.SkipWithError("destination differs from source");
			return;
		}
		state.SetIterationTime(sec);
		totalSec += sec;
		bytes += double(size);
		for (auto &v : perThread)
			lat.insert(lat.end(), v.begin(), v.end());
	}
	bench::reportRoundTrips(state, lat, bytes, totalSec);
	state.counters["faults"] = double(lat.size());
}

void BM_FaultService(benchmark::State &state)
{
	runFaultService(state, uint32_t(state.range(0)) * 1024, int(state.range(1)), 0, true, 0);
}

// BM_FaultService's faults on chunks the destination holds an older copy of.
void BM_FaultServiceStale(benchmark::State &state)
{
	runFaultService(state, uint32_t(state.range(0)) * 1024, int(state.range(1)), 0, true, 0, true);
}

// BM_FaultService's faults sharing the data connection (the path before the fault channel).
void BM_FaultServiceShared(benchmark::State &state)
{
	runFaultService(state, uint32_t(state.range(0)) * 1024, int(state.range(1)), 0, false, 0);
}

// One thread's faults through an emulated round trip (a region of 128 chunks).
void BM_FaultServiceRtt(benchmark::State &state)
{
	runFaultService(state, uint32_t(state.range(0)) * 1024, 1, int(state.range(1)), true, 128);
}

// A 32-byte request answered by one chunk, over loopback TCP between two threads: what one
// fault's round trip costs with no protocol, no userfaultfd and no hand-off (busy = 1: both
// sides busy-poll their socket, the floor on a machine whose threads wake slowly; busy = 2:
// blocking, each side's recv with MSG_WAITALL, as the io_uring baselines receive).
void BM_RawRoundTrip(benchmark::State &state)
{
	const size_t chunk = size_t(state.range(0)) * 1024;
	const bool busy = state.range(1) == 1;
	const int recvFlags = busy ? MSG_DONTWAIT : state.range(1) == 2 ? MSG_WAITALL : 0;
	const int rounds = 2000;
	auto l = Listener::listen(Endpoint::tcp("127.0.0.1", 0));
	if (!l.ok()) {
		state.SkipWithError(l.error().message().c_str());
		return;
	}
	std::thread server([&] {
		auto c = l->accept(10000);
		if (!c.ok())
			return;
		int one = 1;
		::setsockopt(c->fd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		std::vector<uint8_t> reply(chunk, 0x5a), req(32);
		while (bench::recvAll(c->fd(), req.data(), req.size(), recvFlags) && req[0] == 1)
			if (!bench::sendAll(c->fd(), reply.data(), reply.size()))
				return;
	});
	auto c = connectTo(l->boundEndpoint());
	if (!c.ok()) {
		state.SkipWithError(c.error().message().c_str());
		server.join();
		return;
	}
	int one = 1;
	::setsockopt(c->fd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	std::vector<uint8_t> req(32, 1), reply(chunk);
	std::vector<double> lat;
	double totalSec = 0;
	bool ok = true;
	for (auto _ : state) {
		auto t0 = Clock::now();
		for (int i = 0; i < rounds && ok; i++) {
			auto a = Clock::now();
			ok = bench::sendAll(c->fd(), req.data(), req.size()) && bench::recvAll(c->fd(), reply.data(), chunk, recvFlags);
			lat.push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
		}
		double sec = std::chrono::duration<double>(Clock::now() - t0).count();
		state.SetIterationTime(sec);
		totalSec += sec;
	}
	req[0] = 0;
	(void)bench::sendAll(c->fd(), req.data(), req.size());
	server.join();
	if (!ok) {
		state.SkipWithError("round trip failed");
		return;
	}
	bench::reportRoundTrips(state, lat, double(lat.size()) * double(chunk), totalSec);
}

// Pre-copy pull of a region of random data (no writes) through the link emulator.
// One pre-copy pull of `src`'s region through a fresh link emulator; the destination must
// end up identical to the source. Returns the leecher's report.
// With tls, every connection authenticates with these client credentials (the seeder must
// have been started with the server's).
Result<LeecherReport> pullOnce(LocalSeeder &src, int rttMs, double mbit, unsigned conns, unsigned depth,
			       std::shared_ptr<const TlsCredentials> tls = {})
{
	FERRY_ASSIGN(auto link, LinkEmulator::start(Endpoint::tcp("127.0.0.1", 0), src.listener->boundEndpoint(),
						    LinkParams::symmetric(std::chrono::milliseconds(rttMs), mbit)));
	MemfdMapping dest;
	LeecherOptions lo;
	lo.name = "bench";
	lo.seeder = link->endpoint();
	lo.mode = MigrationMode::PreCopy;
	lo.connections = conns;
	lo.depth = depth;
	lo.sampleInterval = std::chrono::milliseconds(10);
	const bool wantTls = tls != nullptr;
	lo.tls = std::move(tls);
	Leecher leecher(LeecherHooks::intoMemory(dest, "bench-destination"), lo);
	FERRY_ASSIGN(LeecherReport rep, leecher.run());
	if (wantTls && (rep.tls.empty() || rep.tls == "insecure"))
		return Error(EPROTO, "pull with TLS credentials reports a plaintext session");
	if (std::memcmp(dest.data(), src.region.data(), src.region.map.size()) != 0)
		return Error(EIO, "destination differs from source");
	return rep;
}

// The pull benchmarks' loop: each iteration starts a fresh seeder with `start`, pulls its
// `size` bytes once with `pull`, and is timed by the pull's first pass (first request to every
// chunk received: no session set-up, finalize or release round trips, which a longer region
// would amortise). Reports MB_per_s, region bytes per second, and with `wireRatio` the bytes on
// the wire over region bytes. False: an iteration failed, and the benchmark was skipped with its
// error.
bool runPulls(benchmark::State &state, uint64_t size, bool wireRatio,
	      const std::function<Status(LocalSeeder &)> &start,
	      const std::function<Result<LeecherReport>(LocalSeeder &)> &pull)
{
	double totalSec = 0, bytes = 0, wire = 0;
	for (auto _ : state) {
		LocalSeeder src;
		if (auto st = start(src); !st.ok()) {
			state.SkipWithError(st.error().message().c_str());
			return false;
		}
		auto rep = pull(src);
		if (!rep.ok()) {
			state.SkipWithError(rep.error().message().c_str());
			return false;
		}
		double sec = rep->firstPassMs / 1e3;
		state.SetIterationTime(sec);
		totalSec += sec;
		bytes += double(size);
		wire += double(rep->bytesTransferred);
	}
	state.counters["MB_per_s"] = bytes / totalSec / 1e6;
	if (wireRatio)
		state.counters["wire_ratio"] = wire / bytes;
	return true;
}

void BM_Pull(benchmark::State &state)
{
	const int rttMs = int(state.range(0));
	const unsigned depth = unsigned(state.range(1));
	const double mbit = double(state.range(2));
	const unsigned conns = unsigned(state.range(3));
	const uint32_t chunk = 64 * 1024;
	const uint64_t size = mbit > 0 && mbit <= 1000 ? (128ull << 20) : (256ull << 20);
	runPulls(
		state, size, false, [&](LocalSeeder &src) { return src.start(size, chunk); },
		[&](LocalSeeder &src) { return pullOnce(src, rttMs, mbit, conns, depth); });
}

// The pre-copy pull of random or text memory with and without zstd, over a 1 Gbit/s link
// or none: what compression buys on a slow link and costs on a fast one. MB_per_s is
// region bytes per second (what a migration cares about); wire_ratio is bytes on the wire
// over region bytes.
void BM_PullCompressed(benchmark::State &state)
{
	const double mbit = double(state.range(0));
	const bool text = state.range(1) != 0;
	const int mode = int(state.range(2)); // 0 none, 1 zstd, 2 auto
	const uint64_t size = 128ull << 20;
	runPulls(
		state, size, true,
		[&](LocalSeeder &src) { return src.start(size, 64 * 1024, text, mode == 2 ? CompressionSpec::automatic() : CompressionSpec{mode}); },
		[&](LocalSeeder &src) { return pullOnce(src, 0, mbit, 2, 64); });
}

// A throwaway PKI written once per process into a temporary directory, removed at exit, and
// the credentials of both roles loaded from it. Read-only once built; status says why the
// credentials are null if it could not be.
class BenchPki {
public:
	BenchPki()
	{
		char tmpl[] = "/tmp/ferry-bench-pki-XXXXXX";
		if (!::mkdtemp(tmpl)) {
			status_ = Error::fromErrno("mkdtemp");
			return;
		}
		dir_ = tmpl;
		status_ = load();
	}
	BenchPki(const BenchPki &) = delete;
	BenchPki &operator=(const BenchPki &) = delete;
	~BenchPki()
	{
		if (dir_.empty())
			return;
		std::error_code ec;
		std::filesystem::remove_all(dir_, ec);
	}

	static const BenchPki &instance()
	{
		static const BenchPki pki;
		return pki;
	}

	const Status &status() const { return status_; }
	const std::shared_ptr<const TlsCredentials> &server() const { return server_; }
	const std::shared_ptr<const TlsCredentials> &client() const { return client_; }

private:
	Status load()
	{
		FERRY_TRY(writeThrowawayPki(dir_));
		const TlsConfig config{TlsMode::X509, dir_};
		FERRY_ASSIGN(TlsCredentials server, TlsCredentials::load(config, TlsRole::Server));
		FERRY_ASSIGN(TlsCredentials client, TlsCredentials::load(config, TlsRole::Client));
		server_ = std::make_shared<const TlsCredentials>(std::move(server));
		client_ = std::make_shared<const TlsCredentials>(std::move(client));
		return {};
	}

	std::string dir_;
	Status status_;
	std::shared_ptr<const TlsCredentials> server_, client_;
};

// The pull of BM_Pull (64 KiB chunks, depth 64, no delay) plaintext or over mutual TLS 1.3
// (x509, AES-256-GCM), in the same binary and run: what TLS costs the pull, uncapped (CPU
// bound: two roles' AES-GCM and copies on 2 cores) and at 1 Gbit/s. With zstd the region is
// log-like text compressed at level 1 (BM_PullCompressed's case), otherwise random bytes and
// no compression. MB_per_s is region bytes per second of the first pass.
void BM_PullTls(benchmark::State &state)
{
	const double mbit = double(state.range(0));
	const unsigned conns = unsigned(state.range(1));
	const bool tls = state.range(2) != 0;
	const bool zstd = state.range(3) != 0;
	const uint32_t chunk = 64 * 1024;
	const uint64_t size = mbit > 0 && mbit <= 1000 ? (128ull << 20) : (256ull << 20);
	const BenchPki &pki = BenchPki::instance();
	if (tls && !pki.status().ok()) {
		state.SkipWithError(pki.status().error().message().c_str());
		return;
	}
	bool ran = runPulls(
		state, size, false,
		[&](LocalSeeder &src) {
			return src.start(size, chunk, zstd, CompressionSpec{zstd ? 1 : 0}, tls ? pki.server() : nullptr);
		},
		[&](LocalSeeder &src) { return pullOnce(src, 0, mbit, conns, 64, tls ? pki.client() : nullptr); });
	if (ran)
		state.SetLabel(tls ? "x509" : "plaintext");
}

// One core's zstd level-1 speed on a 64 KiB chunk (what bounds the pull on a fast link).
void BM_CompressChunk(benchmark::State &state)
{
	const bool text = state.range(0) != 0;
	std::vector<uint8_t> src(64 * 1024), out(ChunkCompressor::bound(src.size()));
	if (text)
		fillText(src.data(), src.size(), 1);
	else
		bench::fillRandom(src.data(), src.size(), 1);
	ChunkCompressor c(1);
	size_t wire = 0;
	for (auto _ : state) {
		auto n = c.compress(src, out);
		wire += n ? *n : src.size();
		benchmark::DoNotOptimize(out.data());
	}
	state.SetBytesProcessed(int64_t(state.iterations() * src.size()));
	state.counters["wire_ratio"] = double(wire) / double(state.iterations() * src.size());
}

// The same bytes as one plain TCP stream through the same emulated link, received into one
// reused 1 MiB buffer, or (intoMemory) into a fresh memfd of the stream's size, as a pull
// lands its bytes in a destination that has never held them: every page is then faulted,
// allocated and cleared before the bytes are copied in.
void runRawStream(benchmark::State &state, bool intoMemory, bool held = false)
{
	const int rttMs = int(state.range(0));
	const double mbit = double(state.range(1));
	const uint64_t size = mbit > 0 && mbit <= 1000 ? (64ull << 20) : (256ull << 20);
	std::vector<uint8_t> buf(1 << 20);
	bench::fillRandom(buf.data(), buf.size(), 7);
	double totalSec = 0, bytes = 0;
	for (auto _ : state) {
		auto l = Listener::listen(Endpoint::tcp("127.0.0.1", 0));
		if (!l.ok()) {
			state.SkipWithError(l.error().message().c_str());
			return;
		}
		auto link = LinkEmulator::start(Endpoint::tcp("127.0.0.1", 0), l->boundEndpoint(),
						LinkParams::symmetric(std::chrono::milliseconds(rttMs), mbit));
		if (!link.ok()) {
			state.SkipWithError(link.error().message().c_str());
			return;
		}
		MemfdMapping dest;
		if (intoMemory) {
			auto m = MemfdMapping::create("bench-raw-destination", size);
			if (!m.ok()) {
				state.SkipWithError(m.error().message().c_str());
				return;
			}
			dest = std::move(m).value();
			if (held && ::madvise(dest.data(), size, MADV_POPULATE_WRITE) != 0) {
				state.SkipWithError("MADV_POPULATE_WRITE failed");
				return;
			}
		}
		auto t0 = Clock::now();
		std::thread sender([&] { bench::sendRawStream((*link)->endpoint(), buf, size); });
		auto c = l->accept(10000);
		uint64_t got = 0;
		std::vector<uint8_t> rbuf(1 << 20);
		while (c.ok() && got < size) {
			uint8_t *into = intoMemory ? dest.data() + got : rbuf.data();
			ssize_t n = ::recv(c->fd(), into, std::min<uint64_t>(rbuf.size(), size - got), 0);
			if (n <= 0)
				break;
			got += uint64_t(n);
		}
		double sec = std::chrono::duration<double>(Clock::now() - t0).count();
		if (c.ok()) {
			uint8_t ack = 1;
			(void)::send(c->fd(), &ack, 1, MSG_NOSIGNAL);
		}
		sender.join();
		if (got != size) {
			state.SkipWithError("raw stream incomplete");
			return;
		}
		state.SetIterationTime(sec);
		totalSec += sec;
		bytes += double(size);
	}
	state.counters["MB_per_s"] = bytes / totalSec / 1e6;
}

void BM_RawStream(benchmark::State &state) { runRawStream(state, false); }
void BM_RawStreamIntoMemory(benchmark::State &state) { runRawStream(state, true); }
void BM_RawStreamIntoHeldMemory(benchmark::State &state) { runRawStream(state, true, true); }

// One Connection streaming 256 KiB Chunk frames over loopback TCP, plaintext or TLS 1.3 (x509
// negotiates AES-256-GCM, PSK AES-128-GCM: an external PSK is bound to SHA-256). One run gives
// the ratio TLS/plaintext on the same machine and load. An iteration is 128 MiB of chunks and
// a Ping/Pong round trip, so it ends when the receiver has every byte. There is no kTLS row:
// Debian's GnuTLS 3.7.9 is built without kTLS, and the kernel must offer the "tls" ULP.
void BM_TlsStream(benchmark::State &state)
{
	static constexpr TlsMode kModes[] = {TlsMode::Insecure, TlsMode::X509, TlsMode::Psk};
	const TlsMode mode = kModes[state.range(0)];
	constexpr uint32_t kSize = 256 << 10;
	constexpr uint32_t kFrames = 512;
	auto fail = [&](const Error &e) { state.SkipWithError(e.message().c_str()); };

	char tmpl[] = "/tmp/ferry-bench-tls-XXXXXX";
	if (!::mkdtemp(tmpl))
		return fail(Error::fromErrno("mkdtemp"));
	const std::string dir = tmpl;
	struct Cleanup {
		std::string dir;
		~Cleanup()
		{
			std::error_code ec;
			std::filesystem::remove_all(dir, ec);
		}
	} cleanup{dir};
	TlsConfig config{mode, mode == TlsMode::Psk ? dir + "/keys.psk" : dir};
	if (auto st = mode == TlsMode::Psk ? writeThrowawayPsk(config.path) : writeThrowawayPki(dir); !st.ok())
		return fail(st.error());
	auto cc = TlsCredentials::load(config, TlsRole::Client);
	auto sc = TlsCredentials::load(config, TlsRole::Server);
	if (!cc.ok() || !sc.ok())
		return fail(cc.ok() ? sc.error() : cc.error());

	auto l = Listener::listen(Endpoint::tcp("127.0.0.1", 0));
	if (!l.ok())
		return fail(l.error());
	auto c = connectTo(l->boundEndpoint(), 5000);
	auto s = l->accept(5000);
	if (!c.ok() || !s.ok())
		return fail(c.ok() ? s.error() : c.error());
	Status serverTls;
	std::thread hs([&] { serverTls = s->startTls(*sc, 10000); });
	Status clientTls = c->startTls(*cc, 10000);
	hs.join();
	if (!clientTls.ok() || !serverTls.ok())
		return fail(clientTls.ok() ? serverTls.error() : clientTls.error());

	// The receiver: chunks into one buffer, a Pong for every Ping, until Done or an error
	// (then the shutdown fails the sender rather than leaving it blocked).
	std::thread receiver([&] {
		std::vector<uint8_t> buf(kSize + 4);
		for (;;) {
			auto h = s->recvHeader(maxPayloadFor(kSize), 30000);
			if (!h.ok() || h->type == MsgType::Done || !s->recvExact(buf.data(), h->payloadLen).ok())
				break;
			if (h->type == MsgType::Ping &&
			    !s->send(MsgType::Pong, h->requestId, std::span(buf.data(), h->payloadLen)).ok())
				break;
		}
		s->shutdown();
	});
	std::vector<uint8_t> data(kSize);
	bench::fillRandom(data.data(), data.size(), 11);
	double totalSec = 0, bytes = 0;
	for (auto _ : state) {
		auto t0 = Clock::now();
		Status st;
		for (uint32_t i = 0; i < kFrames && st.ok(); i++)
			st = c->sendChunk(i, i, data);
		if (st.ok())
			st = c->send(MsgType::Ping, 1, encode(PingMsg{1}));
		auto pong = st.ok() ? recvFrame(*c, 64, 30000) : Result<Frame>(st.error());
		if (!pong.ok()) {
			c->shutdown();
			receiver.join();
			return fail(pong.error());
		}
		double sec = std::chrono::duration<double>(Clock::now() - t0).count();
		state.SetIterationTime(sec);
		totalSec += sec;
		bytes += double(kFrames) * kSize;
	}
	(void)c->send(MsgType::Done, 2, {});
	receiver.join();
	state.SetLabel(config.mode == TlsMode::Insecure ? "plaintext" : tlsModeName(mode));
	state.SetBytesProcessed(int64_t(bytes));
	state.counters["MB_per_s"] = bytes / totalSec / 1e6;
}

} // namespace

// chunk KiB, faulting threads
BENCHMARK(BM_FaultService)
	->ArgsProduct({{4, 16, 64, 256, 1024, 2048}, {1}})
	->Args({64, 4})
	->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK(BM_FaultServiceStale)
	->Args({4, 1})->Args({64, 1})->Args({64, 4})
	->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK(BM_FaultServiceShared)
	->Args({64, 1})->Args({64, 4})
	->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(2);
// chunk KiB, rtt ms
BENCHMARK(BM_FaultServiceRtt)
	->ArgsProduct({{64}, {2, 20}})
	->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(1);
// chunk KiB, busy-poll (2: blocking with MSG_WAITALL)
BENCHMARK(BM_RawRoundTrip)
	->ArgsProduct({{4, 16, 64, 256, 1024, 2048}, {0, 1}})
	->ArgsProduct({{4, 64, 1024}, {2}})
	->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(2);
// rtt ms, depth, Mbit/s cap (0 = none), connections
BENCHMARK(BM_Pull)
	->ArgsProduct({{0, 2, 10, 20, 40}, {64}, {1000}, {2}})
	->ArgsProduct({{0, 40}, {1, 8, 64, 256}, {1000}, {2}})
	->ArgsProduct({{0, 2, 10, 20, 40}, {256}, {0}, {4}})
	->ArgsProduct({{0}, {256}, {0}, {1, 2}})
	->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK(BM_PullCompressed)
	->ArgNames({"mbit", "text", "zstd"}) // zstd: 0 none, 1 zstd, 2 auto
	->ArgsProduct({{1000, 0}, {0, 1}, {0, 1, 2}})
	->UseManualTime()
	->Unit(benchmark::kMillisecond)
	->Iterations(3);
BENCHMARK(BM_CompressChunk)->ArgNames({"text"})->Arg(0)->Arg(1);
BENCHMARK(BM_RawStream)
	->ArgsProduct({{0, 2, 10, 20, 40}, {1000, 0}})
	->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK(BM_RawStreamIntoMemory)->Args({0, 0})->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK(BM_RawStreamIntoHeldMemory)->Args({0, 0})->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(2);
// Mbit/s cap (0 = none), connections, TLS (0 plaintext, 1 x509), zstd (1: text memory, level 1)
BENCHMARK(BM_PullTls)
	->ArgNames({"mbit", "conns", "tls", "zstd"})
	->ArgsProduct({{0, 1000}, {1, 2}, {0, 1}, {0}})
	->ArgsProduct({{0, 1000}, {2}, {0, 1}, {1}})
	->UseManualTime()
	->Unit(benchmark::kMillisecond)
	->Iterations(2);
// 0 plaintext, 1 TLS x509, 2 TLS PSK
BENCHMARK(BM_TlsStream)->ArgNames({"tls"})->Arg(0)->Arg(1)->Arg(2)
	->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(5);

// FERRY_LOG_LEVEL=debug (or info, warn, error, off; default warn): ferry's own log lines
// during the benchmarks, e.g. `--compress auto`'s decisions.
int main(int argc, char **argv)
{
	ferry::LogLevel level = ferry::LogLevel::Warn;
	if (const char *env = std::getenv("FERRY_LOG_LEVEL"); env && !ferry::parseLogLevel(env, &level)) {
		std::fprintf(stderr, "FERRY_LOG_LEVEL=%s: not debug, info, warn, error or off\n", env);
		return 2;
	}
	ferry::setLogLevel(level);
	benchmark::Initialize(&argc, argv);
	if (benchmark::ReportUnrecognizedArguments(argc, argv))
		return 1;
	benchmark::RunSpecifiedBenchmarks();
	benchmark::Shutdown();
	return 0;
}
