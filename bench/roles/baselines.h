// SPDX-License-Identifier: GPL-2.0-or-later
// What bench-roles' files share, so that a baseline in one file and its variant in another
// send the same bytes and report the same counters. Header-only, bench-roles only.
#pragma once

#include <benchmark/benchmark.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "../common/samples.h"

namespace ferry::bench {

// Receives exactly len bytes with recv(2) `flags`: MSG_DONTWAIT busy-polls the socket instead
// of sleeping in recv, MSG_WAITALL sleeps until all of len is there (or a signal or error).
// False: the peer closed or an error other than EAGAIN/EINTR.
inline bool recvAll(int fd, uint8_t *p, size_t len, int flags)
{
	while (len > 0) {
		ssize_t n = ::recv(fd, p, len, flags);
		if (n > 0) {
			p += n;
			len -= size_t(n);
		} else if (n == 0 || !(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
			return false;
		}
	}
	return true;
}

inline bool sendAll(int fd, const uint8_t *p, size_t len)
{
	while (len > 0) {
		ssize_t n = ::send(fd, p, len, MSG_NOSIGNAL);
		if (n <= 0)
			return false;
		p += n;
		len -= size_t(n);
	}
	return true;
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
