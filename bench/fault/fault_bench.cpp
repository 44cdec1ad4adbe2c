// SPDX-License-Identifier: GPL-2.0-or-later
// The userfaultfd fault-serving mechanism alone, with the data already local: how long a
// faulting thread waits for its chunk, and how many bytes per second one handler thread can
// serve. bench/roles' BM_FaultService measures the same path with the network fetch through
// the seeder added; the difference between the two is the cost of the fetch.
//
//   BM_MissingCopy/<chunk KiB>/<threads>
//       Private anonymous region registered MISSING; every fault is served by UFFDIO_COPY of
//       the whole chunk containing the fault address, from a local source buffer.
//   BM_MinorContinue/<chunk KiB>/<threads>
//       A memfd whose page cache is filled through a first mapping (as ferry's leecher
//       writes pulled chunks); a second mapping registered MINOR|MISSING takes the faults,
//       served by UFFDIO_CONTINUE of the chunk (no copy: the pages only get mapped).
//
// In both, <threads> threads touch one byte (at a random offset) of every chunk of the
// region in shuffled order; one handler thread waits in poll() on the userfaultfd. The region
// is max(256 MiB, 512 chunks).
//
//   ninja -C build-x bench/fault/bench-fault && build-x/bench/fault/bench-fault
//
// Counters: p50_us, p99_us, mean_us (wait of the faulting thread per touch, steady_clock
// around the load; on a loaded machine the mean shows the preemption tail beyond p99),
// serve_p50_us (the handler's ioctl per fault), GB_per_s (region bytes / wall time from
// first to last touch), faults (faults served per iteration).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <latch>
#include <poll.h>
#include <random>
#include <sys/eventfd.h>
#include <thread>
#include <vector>

#include "ferry/sys/mapping.h"
#include "ferry/sys/userfaultfd.h"
#include "../common/samples.h"

using namespace ferry;
using bench::percentile;

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMinRegion = size_t(256) << 20;
constexpr size_t kMinChunks = 512;

enum class Kind { MissingCopy, MinorContinue };

size_t regionSize(size_t chunk)
{
	return std::max(kMinRegion, kMinChunks * chunk);
}

double micros(Clock::duration d)
{
	return std::chrono::duration<double, std::micro>(d).count();
}

// Pseudo-random bytes (splitmix64): every page differs, so a chunk copied to the wrong place
// or a zero page left behind fails the byte-for-byte check.
void fillPattern(uint8_t *p, size_t len, uint64_t seed)
{
	uint64_t x = seed;
	for (size_t i = 0; i + 8 <= len; i += 8) {
		x += 0x9e3779b97f4a7c15ull;
		uint64_t z = x;
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
		z ^= z >> 31;
		std::memcpy(p + i, &z, 8);
	}
}

// What stays the same across the iterations of one benchmark case.
struct Fixture {
	size_t size = 0;
	Mapping source; // the bytes every chunk must end up holding
	UniqueFd memfd; // MinorContinue: the shared backing whose page cache is filled
	Mapping fillMap; // MinorContinue: the mapping the page cache was filled through
};

Result<Fixture> makeFixture(Kind kind, size_t size)
{
	Fixture fx;
	fx.size = size;
	FERRY_ASSIGN(fx.source, Mapping::anonymous(size));
	fillPattern(fx.source.data(), size, 0xfe77);
	if (kind == Kind::MinorContinue) {
		FERRY_ASSIGN(fx.memfd, createMemfd("bench-fault", size));
		FERRY_ASSIGN(fx.fillMap, Mapping::map(fx.memfd.get(), size, PROT_READ | PROT_WRITE,
						      MAP_SHARED));
		// Writing through this mapping puts every page in the shmem page cache; a
		// second mapping of the same memfd then has no PTEs for them, so its first
		// touch of each page is a *minor* fault.
		std::memcpy(fx.fillMap.data(), fx.source.data(), size);
	}
	return fx;
}

// Serves the faults of one registered range from its own thread, until stop().
// The thread sleeps in poll() on the userfaultfd and on an eventfd that stop() signals.
class FaultServer {
public:
	FaultServer(Kind kind, Userfaultfd &uffd, uint8_t *base, size_t size, size_t chunk,
		    const uint8_t *source)
		: kind_(kind), uffd_(uffd), base_(base), size_(size), chunk_(chunk), source_(source)
	{
	}
	FaultServer(const FaultServer &) = delete;
	FaultServer &operator=(const FaultServer &) = delete;
	~FaultServer() { (void)stop(); }

	Status start(size_t expectedFaults)
	{
		stopFd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC));
		if (!stopFd_)
			return Error::fromErrno("eventfd");
		serveUs_.reserve(expectedFaults);
		thread_ = std::thread([this] { run(); });
		return okStatus();
	}

	// Joins the handler; returns what made it stop early, if anything did.
	Status stop()
	{
		if (thread_.joinable()) {
			const uint64_t one = 1;
			if (::write(stopFd_.get(), &one, sizeof(one)) != sizeof(one))
				return Error::fromErrno("write stop eventfd");
			thread_.join();
		}
		return status_;
	}

	size_t faults() const { return serveUs_.size(); }
	std::vector<double> &serveUs() { return serveUs_; }

private:
	void run()
	{
		status_ = loop();
		if (status_.ok())
			return;
		// The handler gave up: unregistering wakes every thread blocked on the range
		// (the kernel wakes pending faults on UFFDIO_UNREGISTER) and lets later touches
		// fault normally, so the touchers finish and the caller sees this error
		// instead of a hang.
		Status u = uffd_.unregisterRange(base_, size_);
		if (!u.ok())
			status_ = status_.error().context(u.error().message());
	}

	Status loop()
	{
		std::vector<uffd_msg> msgs;
		pollfd fds[2] = { { uffd_.fd(), POLLIN, 0 }, { stopFd_.get(), POLLIN, 0 } };
		for (;;) {
			if (::poll(fds, 2, -1) < 0) {
				if (errno == EINTR)
					continue;
				return Error::fromErrno("poll userfaultfd");
			}
			if (fds[0].revents & (POLLERR | POLLHUP))
				return Error(EIO, "userfaultfd: POLLERR/POLLHUP");
			if (fds[0].revents & POLLIN) {
				FERRY_ASSIGN(size_t n, uffd_.readEvents(msgs));
				for (size_t i = 0; i < n; i++) {
					if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
						return Error::format(EPROTO,
								     "unexpected userfaultfd event {:#x}",
								     msgs[i].event);
					FERRY_TRY(serve(msgs[i].arg.pagefault.address));
				}
				continue; // drain faults before looking at stop
			}
			if (fds[1].revents & POLLIN)
				return okStatus();
		}
	}

	Status serve(uint64_t address)
	{
		const uintptr_t base = reinterpret_cast<uintptr_t>(base_);
		if (address < base || address >= base + size_)
			return Error::format(EFAULT, "fault at {:#x} outside the region", address);
		const size_t index = (address - base) / chunk_;
		const size_t offset = index * chunk_;
		const auto t0 = Clock::now();
		Result<UffdOutcome> outcome =
			kind_ == Kind::MissingCopy
				? uffd_.copy(base_ + offset, source_ + offset, chunk_)
				: uffd_.continueRange(base_ + offset, chunk_);
		if (!outcome.ok())
			return outcome.error().context(fmt::format("serve chunk {}", index));
		switch (*outcome) {
		case UffdOutcome::Done:
			break;
		case UffdOutcome::Exists:
			// Some pages were already there (cannot happen with one touch per
			// chunk, but a waiter must never be left asleep): wake explicitly.
			FERRY_TRY_CTX(uffd_.wake(base_ + offset, chunk_), "serve chunk {}", index);
			break;
		case UffdOutcome::Retry:
		case UffdOutcome::Gone:
			// No fork/remap/unmap events are enabled and the mm is our own: the
			// mm changing under us or going away is a bug of this benchmark.
			return Error::format(EAGAIN, "serve chunk {}: unexpected outcome {}", index,
					     toString(*outcome));
		}
		serveUs_.push_back(micros(Clock::now() - t0));
		return okStatus();
	}

	const Kind kind_;
	Userfaultfd &uffd_;
	uint8_t *const base_;
	const size_t size_;
	const size_t chunk_;
	const uint8_t *const source_;
	UniqueFd stopFd_;
	std::thread thread_;
	Status status_;
	std::vector<double> serveUs_;
};

struct Iteration {
	double seconds = 0;
	size_t faults = 0;
	std::vector<double> touchUs;
	std::vector<double> serveUs;
};

Result<Iteration> runOnce(Kind kind, Fixture &fx, size_t chunk, unsigned threads, uint64_t seed)
{
	const size_t chunks = fx.size / chunk;

	// Teardown order: the server (joined) before the uffd, the uffd (its release
	// unregisters the range) before the mapping is unmapped.
	Mapping region;
	Userfaultfd uffd;
	if (kind == Kind::MissingCopy) {
		FERRY_ASSIGN(region, Mapping::anonymous(fx.size));
		FERRY_ASSIGN(uffd, Userfaultfd::create(0));
		// MISSING on private anonymous memory: reads fault too (the kernel asks us
		// instead of mapping the zero page), and UFFDIO_COPY maps small pages, so no
		// THP fills a neighbouring chunk behind our back.
		FERRY_TRY(uffd.registerRange(region.data(), fx.size, UffdMode::Missing));
	} else {
		FERRY_ASSIGN(region, Mapping::map(fx.memfd.get(), fx.size, PROT_READ | PROT_WRITE,
						  MAP_SHARED));
		FERRY_ASSIGN(uffd, Userfaultfd::create(UFFD_FEATURE_MINOR_SHMEM |
						       UFFD_FEATURE_MISSING_SHMEM));
		// MINOR: a page present in the page cache but not mapped here faults to us
		// (and the kernel turns off fault-around for such ranges, so one fault is one
		// page); MISSING as the leecher registers it, never hit since every page is
		// cached.
		FERRY_TRY(uffd.registerRange(region.data(), fx.size,
					     UffdMode::Missing | UffdMode::Minor));
	}

	// Each thread gets every threads-th chunk, shuffled, and touches one random byte of
	// each, so the handler has to find the chunk from any address in it.
	std::mt19937_64 rng(seed);
	std::vector<std::vector<const volatile uint8_t *>> plan(threads);
	for (size_t i = 0; i < chunks; i++)
		plan[i % threads].push_back(region.data() + i * chunk + rng() % chunk);
	for (auto &p : plan)
		std::shuffle(p.begin(), p.end(), rng);
	std::vector<std::vector<double>> touchUs(threads);
	for (unsigned t = 0; t < threads; t++)
		touchUs[t].reserve(plan[t].size());

	FaultServer server(kind, uffd, region.data(), fx.size, chunk, fx.source.data());
	FERRY_TRY(server.start(chunks));

	std::latch ready(threads + 1);
	std::vector<std::thread> touchers;
	std::vector<uint64_t> sinks(threads);
	for (unsigned t = 0; t < threads; t++) {
		touchers.emplace_back([&, t] {
			uint64_t sink = 0;
			ready.arrive_and_wait();
			for (const volatile uint8_t *p : plan[t]) {
				const auto a = Clock::now();
				sink += *p;
				touchUs[t].push_back(micros(Clock::now() - a));
			}
			sinks[t] = sink;
		});
	}
	ready.arrive_and_wait();
	const auto t0 = Clock::now();
	for (auto &th : touchers)
		th.join();
	const auto t1 = Clock::now();
	FERRY_TRY_CTX(server.stop(), "fault handler");
	benchmark::DoNotOptimize(sinks);

	for (size_t i = 0; i < chunks; i++) {
		const size_t off = i * chunk;
		if (std::memcmp(region.data() + off, fx.source.data() + off, chunk) != 0)
			return Error::format(EIO, "region differs from source in chunk {} of {}", i,
					     chunks);
	}

	Iteration it;
	it.seconds = std::chrono::duration<double>(t1 - t0).count();
	it.faults = server.faults();
	it.serveUs = std::move(server.serveUs());
	for (auto &v : touchUs)
		it.touchUs.insert(it.touchUs.end(), v.begin(), v.end());
	return it;
}

void runBench(benchmark::State &state, Kind kind)
{
	const size_t chunk = static_cast<size_t>(state.range(0)) * 1024;
	const unsigned threads = static_cast<unsigned>(state.range(1));
	if (chunk == 0 || chunk % pageSize() != 0 || threads == 0) {
		state.SkipWithError("chunk must be a multiple of the page size, threads > 0");
		return;
	}
	if (kind == Kind::MinorContinue) {
		// The benchmark's counterpart of GTEST_SKIP: say why, never report nothing.
		auto features = Userfaultfd::probeFeatures();
		if (!features.ok()) {
			state.SkipWithError(features.error().message().c_str());
			return;
		}
		if (!(*features & UFFD_FEATURE_MINOR_SHMEM)) {
			state.SkipWithError("kernel lacks userfaultfd MINOR_SHMEM");
			return;
		}
	}

	auto fx = makeFixture(kind, regionSize(chunk));
	if (!fx.ok()) {
		state.SkipWithError(fx.error().context("fixture").message().c_str());
		return;
	}

	std::vector<double> touchUs, serveUs;
	double seconds = 0, bytes = 0, faults = 0;
	uint64_t seed = 1;
	for (auto _ : state) {
		auto it = runOnce(kind, *fx, chunk, threads, seed++);
		if (!it.ok()) {
			state.SkipWithError(it.error().message().c_str());
			return;
		}
		state.SetIterationTime(it->seconds);
		seconds += it->seconds;
		bytes += double(fx->size);
		faults += double(it->faults);
		touchUs.insert(touchUs.end(), it->touchUs.begin(), it->touchUs.end());
		serveUs.insert(serveUs.end(), it->serveUs.begin(), it->serveUs.end());
	}
	const double iterations = double(state.iterations());
	double touchSum = 0;
	for (double us : touchUs)
		touchSum += us;
	state.counters["mean_us"] = touchUs.empty() ? 0 : touchSum / double(touchUs.size());
	state.counters["p50_us"] = percentile(touchUs, 0.50);
	state.counters["p99_us"] = percentile(touchUs, 0.99);
	state.counters["serve_p50_us"] = percentile(serveUs, 0.50);
	state.counters["GB_per_s"] = seconds > 0 ? bytes / seconds / 1e9 : 0;
	state.counters["faults"] = iterations > 0 ? faults / iterations : 0;
}

void BM_MissingCopy(benchmark::State &state)
{
	runBench(state, Kind::MissingCopy);
}

void BM_MinorContinue(benchmark::State &state)
{
	runBench(state, Kind::MinorContinue);
}

// chunk KiB, faulting threads
BENCHMARK(BM_MissingCopy)
	->ArgsProduct({ { 4, 16, 64, 256, 1024, 2048 }, { 1, 4 } })
	->UseManualTime()
	->Unit(benchmark::kMillisecond)
	->Iterations(3);
BENCHMARK(BM_MinorContinue)
	->ArgsProduct({ { 4, 16, 64, 256, 1024, 2048 }, { 1, 4 } })
	->UseManualTime()
	->Unit(benchmark::kMillisecond)
	->Iterations(3);

} // namespace

BENCHMARK_MAIN();
