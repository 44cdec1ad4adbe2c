// SPDX-License-Identifier: GPL-2.0-or-later
// A user-space TCP/UNIX relay that behaves like a network link: one-way delay and a bandwidth
// cap per direction. This machine's kernel has no netem, so tests and benchmarks use this.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

#include "ferry/base/result.h"
#include "ferry/wire/endpoint.h"

namespace ferry {

struct LinkDirection {
	std::chrono::microseconds delay{0}; // one-way propagation delay
	uint64_t bytesPerSec = 0;           // 0: unlimited
	// Bytes read from the sender but not yet delivered, per relayed connection. When full the
	// relay stops reading, so the sender sees backpressure. 0: max(8 MiB, 2 x bandwidth x delay).
	uint64_t maxInFlightBytes = 0;
};

struct LinkParams {
	LinkDirection up;   // client -> server
	LinkDirection down; // server -> client

	// Symmetric link from a round-trip time and a rate in Mbit/s (0: unlimited), as in
	// `ferry link --rtt-ms T --mbit M`.
	static LinkParams symmetric(std::chrono::microseconds rtt, double mbitPerSec);
};

// Each accepted connection gets its own relay thread (poll + precise ppoll timeouts, no busy
// waiting) that copies through a bounded ring per direction. A byte read at time t leaves no
// earlier than t + delay, and each direction's output is paced like a serial line of
// bytesPerSec: byte k of a burst leaves at start + k / bytesPerSec + delay. FIN is delayed
// the same way; a reset or error on one side resets the other.
//
// Thread-safety: every method may be called from any thread.
class LinkEmulator {
public:
	// Listens on `listenAt` (port 0 allowed) and relays each accepted connection to
	// `upstream`. If the upstream connect fails, the client's connection is reset.
	static Result<std::unique_ptr<LinkEmulator>> start(const Endpoint &listenAt,
							   const Endpoint &upstream, LinkParams params);

	LinkEmulator(const LinkEmulator &) = delete;
	LinkEmulator &operator=(const LinkEmulator &) = delete;
	~LinkEmulator(); // stops all threads, resets every relayed connection

	// Where clients connect (the real port if port 0 was asked).
	Endpoint endpoint() const;
	// Abruptly resets every relayed connection, both sides (RST, so both peers see
	// ECONNRESET or EOF). Returns once they are closed. New connections are still accepted.
	void cutAll();
	// While blocked, new connections are reset right after accept. Existing ones continue.
	void setBlocked(bool blocked);
	// Bytes delivered to either side, over all connections.
	uint64_t bytesRelayed() const;
	// Connections currently relayed / accepted since start.
	size_t activeConnections() const;
	uint64_t acceptedConnections() const;

private:
	struct Impl;
	explicit LinkEmulator(std::unique_ptr<Impl> impl);
	std::unique_ptr<Impl> impl_;
};

} // namespace ferry
