// SPDX-License-Identifier: GPL-2.0-or-later
// Byte-range helpers shared inside core (internal).
#pragma once
#ifndef FERRY_CORE_INTERNAL
#error "an internal header of ferry-core: include the public ones (ferry/...) instead"
#endif

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace ferry {

// True if len bytes at p are all zero. Word-wise; len need not be aligned.
inline bool isZero(const uint8_t *p, size_t len)
{
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t w;
		std::memcpy(&w, p + i, 8);
		if (w)
			return false;
	}
	for (; i < len; i++)
		if (p[i])
			return false;
	return true;
}

} // namespace ferry
