// SPDX-License-Identifier: GPL-2.0-or-later
// What bench-roles' files share, so that a baseline in one file and its variant in another
// send the same bytes and report the same counters. Header-only, bench-roles only.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace ferry::bench {

// Incompressible test data, the same for the same seed (whole 8-byte words; a tail shorter
// than 8 bytes is left as it was).
inline void fillRandom(uint8_t *p, size_t len, uint64_t seed)
{
	std::mt19937_64 rng(seed);
	for (size_t i = 0; i + 8 <= len; i += 8) {
		uint64_t v = rng();
		std::memcpy(p + i, &v, 8);
	}
}

// The p-quantile (0 <= p <= 1) of v by rank; 0 for no samples.
inline double percentile(std::vector<double> v, double p)
{
	if (v.empty())
		return 0;
	std::sort(v.begin(), v.end());
	return v[std::min(v.size() - 1, size_t(p * double(v.size())))];
}

// The counters of every round-trip benchmark: p50_us and p99_us over the latency (µs) of each
// round trip timed, and GB_per_s of the `bytes` moved in `seconds` of timed rounds.
inline void reportRoundTrips(benchmark::State &state, const std::vector<double> &latencyUs, double bytes,
			     double seconds)
{
	state.counters["p50_us"] = percentile(latencyUs, 0.50);
	state.counters["p99_us"] = percentile(latencyUs, 0.99);
	state.counters["GB_per_s"] = bytes / seconds / 1e9;
}

} // namespace ferry::bench
