// SPDX-License-Identifier: GPL-2.0-or-later
// What every harness in tests/fuzz shares: the libFuzzer entry point it defines, and the
// check for the invariants it asserts on top of "does not crash".
//
// A harness is one file defining LLVMFuzzerTestOneInput. It is linked either with libFuzzer
// (-Dfuzz=enabled, clang) or with fuzz_driver.cpp (every other build), so it must not rely on
// anything but that entry point being called, any number of times, on any bytes.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

// An invariant of the decoder under test failed: say which and abort, which both libFuzzer
// and fuzz_driver.cpp report as a crash together with the input that caused it.
#define FUZZ_CHECK(cond)                                                                        \
	do {                                                                                    \
		if (!(cond)) {                                                                  \
			std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
			std::abort();                                                           \
		}                                                                               \
	} while (0)

namespace ferry::fuzz {

inline std::string_view asText(std::span<const uint8_t> b)
{
	return std::string_view(reinterpret_cast<const char *>(b.data()), b.size());
}

inline bool sameBytes(std::span<const uint8_t> a, std::span<const uint8_t> b)
{
	return std::ranges::equal(a, b);
}

} // namespace ferry::fuzz
