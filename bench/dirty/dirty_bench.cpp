// SPDX-License-Identifier: GPL-2.0-or-later
// Cost of one dirty-tracking pass over 1 GiB of populated memfd memory with ~1% of the
// pages written between passes: uffd-wp + PAGEMAP_SCAN get-and-clear vs XXH3 hashing.
//
//   ninja -C build-x bench/dirty/bench-dirty && build-x/bench/dirty/bench-dirty
//
// Counters: GiB/s (region bytes covered per second of pass) and ms/GiB.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstring>
#include <random>

#include "ferry/dirty/tracker.h"
#include "ferry/sys/mapping.h"
#include "ferry/sys/pagemap_scan.h"

using namespace ferry;

namespace {

constexpr size_t kGiB = size_t(1) << 30;
constexpr double kDirtyFraction = 0.01;

enum class Kind { UffdWp, Xxh3 };

void runPass(benchmark::State &state, Kind kind)
{
	const size_t chunk = static_cast<size_t>(state.range(0));
	const size_t page = pageSize();
	const size_t pages = kGiB / page;

	auto fd = createMemfd("bench-dirty", kGiB);
	if (!fd.ok()) {
		state.SkipWithError(fd.error().message().c_str());
		return;
	}
	auto mem = Mapping::map(fd->get(), kGiB, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE);
	if (!mem.ok()) {
		state.SkipWithError(mem.error().message().c_str());
		return;
	}
	std::memset(mem->data(), 1, kGiB); // populated and dirty in the page cache

	TrackedRegion region{ 0, reinterpret_cast<uintptr_t>(mem->data()), kGiB, chunk };
	auto tracker = kind == Kind::UffdWp ? makeUffdWpTracker(region, Userfaultfd())
					    : makeHashTracker(region);
	if (!tracker.ok()) {
		state.SkipWithError(tracker.error().message().c_str());
		return;
	}
	Status s = (*tracker)->start();
	if (!s.ok()) {
		state.SkipWithError(s.error().message().c_str());
		return;
	}

	std::mt19937_64 rng(42);
	const size_t writesPerPass = static_cast<size_t>(pages * kDirtyFraction);
	std::vector<uint32_t> dirty;
	double totalSeconds = 0;
	size_t reported = 0;
	uint8_t value = 2;
	for (auto _ : state) {
		for (size_t i = 0; i < writesPerPass; i++)
			mem->data()[(rng() % pages) * page + (i % page)] = value;
		value++;
		auto t0 = std::chrono::steady_clock::now();
		s = (*tracker)->collect(dirty);
		auto t1 = std::chrono::steady_clock::now();
		if (!s.ok()) {
			state.SkipWithError(s.error().message().c_str());
			return;
		}
		const double secs = std::chrono::duration<double>(t1 - t0).count();
		state.SetIterationTime(secs);
		totalSeconds += secs;
		reported += dirty.size();
	}
	const double passes = static_cast<double>(state.iterations());
	const double gib = static_cast<double>(kGiB) / static_cast<double>(1ull << 30);
	state.counters["GiB/s"] = passes * gib / totalSeconds;
	state.counters["ms/GiB"] = totalSeconds * 1e3 / (passes * gib);
	state.counters["chunks/pass"] = static_cast<double>(reported) / passes;
}

void BM_UffdWpPagemapScanPass(benchmark::State &state)
{
	if (!PagemapScanner::supported()) {
		state.SkipWithError("PAGEMAP_SCAN not supported by this kernel");
		return;
	}
	runPass(state, Kind::UffdWp);
}

void BM_Xxh3HashPass(benchmark::State &state)
{
	runPass(state, Kind::Xxh3);
}

// Fixed iteration counts: each run sets up (and populates) its own 1 GiB.
BENCHMARK(BM_UffdWpPagemapScanPass)->Arg(4096)->Arg(65536)->UseManualTime()
	->Iterations(50)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Xxh3HashPass)->Arg(4096)->Arg(65536)->UseManualTime()
	->Iterations(10)->Unit(benchmark::kMillisecond);

} // namespace

BENCHMARK_MAIN();
