// SPDX-License-Identifier: GPL-2.0-or-later
// Plain TCP for the benchmarks' baselines (bench-roles, bench-thesis): what ferry's own figures
// are measured against, with no protocol in the way. Header-only.
#pragma once

#include <sys/socket.h>

#include <algorithm>
#include <cstdint>
#include <span>

#include "ferry/wire/endpoint.h"

namespace ferry::bench {

// Connects to `to`, sends `size` bytes (cycling through `buf`), then waits for the receiver's
// one-byte acknowledgement that it has everything. Meant for a thread of its own; a failure
// shows as the receiver getting fewer bytes.
inline void sendRawStream(const Endpoint &to, std::span<const uint8_t> buf, uint64_t size)
{
	auto c = connectTo(to);
	if (!c.ok())
		return;
	for (uint64_t sent = 0; sent < size;) {
		ssize_t n = ::send(c->fd(), buf.data(), std::min<uint64_t>(buf.size(), size - sent), MSG_NOSIGNAL);
		if (n <= 0)
			return;
		sent += uint64_t(n);
	}
	uint8_t ack;
	(void)::recv(c->fd(), &ack, 1, 0);
}

} // namespace ferry::bench
