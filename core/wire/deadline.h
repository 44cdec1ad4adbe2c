// SPDX-License-Identifier: GPL-2.0-or-later
// Receive deadlines inside core/wire (internal): absolute CLOCK_MONOTONIC milliseconds, so a
// header that arrives in pieces, or a TLS record read by several pulls, shares one budget.
// -1 means no deadline.
#pragma once

#include <time.h>

#include <algorithm>
#include <climits>
#include <cstdint>

namespace ferry::wire {

inline int64_t monotonicMs()
{
	timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// The poll() timeout left until deadlineMs: -1 (forever) without a deadline, 0 once it passed.
inline int pollTimeoutUntil(int64_t deadlineMs)
{
	if (deadlineMs < 0)
		return -1;
	return int(std::clamp<int64_t>(deadlineMs - monotonicMs(), 0, INT_MAX));
}

} // namespace ferry::wire
