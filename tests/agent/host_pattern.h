// SPDX-License-Identifier: GPL-2.0-or-later
// The bytes agent_host writes into its regions at start, known to the tests.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ferry::test {

inline uint8_t hostPattern(unsigned region, size_t offset)
{
	return static_cast<uint8_t>(offset * 131 + (offset >> 12) * 7 + region * 0x5a + 1);
}

} // namespace ferry::test
