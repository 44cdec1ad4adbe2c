// SPDX-License-Identifier: GPL-2.0-or-later
// What the cycle analyser costs the migration loop: one estimate() per sampling interval
// (100 ms by default), over the samples held (up to 4096). Periodic and aperiodic inputs take
// different paths (a confirmed period adds the refinement and the folded profile).
//
//   build-x/bench/cycles/bench-cycles --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <cmath>
#include <numbers>
#include <random>
#include <vector>

#include "ferry/cycles/analyser.h"
#include "ferry/finalize/policy.h"

using namespace ferry;

namespace {

constexpr double kDt = 0.1;

// A square wave (period 4 s, duty 0.5, 300 vs 5 MB/s per 100 ms) with 10% noise, or white
// noise with the same mean.
std::vector<double> series(size_t n, bool periodic)
{
	std::mt19937_64 rng(42);
	std::normal_distribution<double> gauss(0.0, 3e6);
	std::vector<double> v(n);
	for (size_t i = 0; i < n; i++) {
		double t = double(i) * kDt;
		double base = periodic ? (std::fmod(t, 4.0) < 2.0 ? 30e6 : 0.5e6) : 15e6;
		v[i] = std::max(0.0, base + gauss(rng));
	}
	return v;
}

void estimate(benchmark::State &state, bool periodic)
{
	const size_t n = size_t(state.range(0));
	CycleAnalyser a(kDt, n);
	for (double x : series(n, periodic))
		a.addSample(x);
	bool found = false;
	for (auto _ : state) {
		CycleEstimate e = a.estimate();
		benchmark::DoNotOptimize(e);
		found = e.periodic;
	}
	state.counters["samples"] = double(n);
	state.counters["periodic"] = found;
	state.counters["estimates/s"] = benchmark::Counter(double(state.iterations()), benchmark::Counter::kIsRate);
}

void BM_EstimatePeriodic(benchmark::State &state) { estimate(state, true); }
void BM_EstimateAperiodic(benchmark::State &state) { estimate(state, false); }
BENCHMARK(BM_EstimatePeriodic)->RangeMultiplier(4)->Range(64, 4096)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_EstimateAperiodic)->RangeMultiplier(4)->Range(64, 4096)->Unit(benchmark::kMicrosecond);

// The cycle policy's whole per-sample step (addSample + estimate + decision) in steady state,
// with the analyser's window full: what every 100 ms sample costs during a long pre-copy.
void BM_CyclePolicySample(benchmark::State &state)
{
	PolicyOptions o;
	o.deadlineSec = 1e9;
	auto p = makeFinalizePolicy("cycle", o);
	if (!p.ok()) {
		state.SkipWithError(p.error().message().c_str());
		return;
	}
	std::vector<double> wave = series(8192, true);
	RoundStats s;
	s.bandwidthBytesPerSec = 1e3; // never fits: the policy keeps deciding, never finalizes
	s.staleBytes = s.staleChunks = 1 << 30;
	uint32_t r = 0;
	for (auto _ : state) {
		s.round = ++r;
		s.elapsedSec = r * kDt;
		s.firstPassDone = r > 100;
		s.dirtyBytes = uint64_t(wave[r % wave.size()]);
		benchmark::DoNotOptimize((*p)->onSample(s));
	}
	state.counters["samples/s"] = benchmark::Counter(double(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_CyclePolicySample)->Iterations(6000)->Unit(benchmark::kMicrosecond);

} // namespace

BENCHMARK_MAIN();
