// SPDX-License-Identifier: GPL-2.0-or-later
// One relayed connection and its thread (internal to core/link).
//
// The relay thread owns both sockets' I/O: it pumps the two Directions and sleeps in ppoll
// on the sockets that have something to wait for, with a timeout at the next moment the link
// model releases bytes, so it never busy-waits. A reset or error on one side becomes a reset
// on the other, as end to end. Other threads only call cut() and read `finished`.
#pragma once
#ifndef FERRY_CORE_INTERNAL
#error "an internal header of ferry-core: include the public ones (ferry/...) instead"
#endif

#include <atomic>
#include <thread>

#include "ferry/link/link_emulator.h"
#include "ferry/sys/fd.h"
#include "link/direction.h"

namespace ferry::link {

// SO_LINGER {on, 0} makes close() send RST and drop unsent data: an abrupt cut, as a failed
// link or a killed peer looks to the other side.
void resetAndClose(UniqueFd &fd);

Status setNonBlocking(int fd);

struct Relay {
	Relay(UniqueFd c, UniqueFd s, const LinkParams &p, std::atomic<uint64_t> &relayed,
	      std::atomic<int64_t> &upLine, std::atomic<int64_t> &downLine)
		: client(std::move(c)), server(std::move(s)), up("up", p.up, relayed, upLine),
		  down("down", p.down, relayed, downLine)
	{
	}

	// The thread's body: relays until both directions are done (then closes both sockets)
	// or until cut or an error (then resets both). Sets `finished` last.
	void run();
	// From any thread: makes run() reset both sockets and return.
	void cut();

	UniqueFd client;
	UniqueFd server;
	UniqueFd wake; // eventfd: cut() -> relay thread
	Direction up;
	Direction down;
	std::atomic<bool> cutRequested{false};
	std::atomic<bool> finished{false};
	std::thread thread;
};

} // namespace ferry::link
