// SPDX-License-Identifier: GPL-2.0-or-later
// Test data and sample statistics shared by the benchmarks (bench-roles, bench-thesis,
// bench-fault), so that their figures are made the same way. Header-only.
#pragma once

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
	const size_t k = std::min(v.size() - 1, size_t(p * double(v.size())));
	std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(k), v.end());
	return v[k];
}

} // namespace ferry::bench
