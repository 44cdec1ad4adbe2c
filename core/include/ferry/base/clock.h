// SPDX-License-Identifier: GPL-2.0-or-later
// The clocks ferry reads: CLOCK_MONOTONIC for intervals and deadlines, CLOCK_REALTIME only
// for instants two hosts compare (a source's suspend time against the destination's resume),
// and the calling thread's CPU time for what a computation costs.
#pragma once

#include <cstdint>
#include <time.h>

namespace ferry {

inline constexpr int64_t kNsPerSec = 1'000'000'000;

inline int64_t clockNs(clockid_t id)
{
	timespec ts;
	clock_gettime(id, &ts);
	return int64_t(ts.tv_sec) * kNsPerSec + ts.tv_nsec;
}

// A timeout of `ns` (>= 0) for ppoll, sigtimedwait and the like.
inline timespec timespecOfNs(int64_t ns) { return {time_t(ns / kNsPerSec), long(ns % kNsPerSec)}; }

inline int64_t monotonicNs() { return clockNs(CLOCK_MONOTONIC); }
inline int64_t realtimeNs() { return clockNs(CLOCK_REALTIME); }
// CPU time of the calling thread: what a computation cost, whatever else shared the CPU.
inline int64_t threadCpuNs() { return clockNs(CLOCK_THREAD_CPUTIME_ID); }

// Milliseconds between two monotonicNs() readings.
inline double msBetween(int64_t fromNs, int64_t toNs) { return double(toNs - fromNs) / 1e6; }

} // namespace ferry
