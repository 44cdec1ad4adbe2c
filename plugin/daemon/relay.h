// SPDX-License-Identifier: GPL-2.0-or-later
// Carries one migration stream between a local UNIX socket (libvirtd's connection on the
// source host, the incoming QEMU's socket on the destination) and a peer link, in both
// directions: libvirt turns on QEMU's return path, so a few bytes flow back.
//
// run() blocks until both directions ended; it pumps local->peer on the calling thread and
// peer->local on a second thread it owns. stop() (any thread) cuts both sides; run() then
// returns ECANCELED. A direction ends with the local socket's EOF (sent on as RelayEnd) or the
// peer's RelayEnd (passed on as shutdown(SHUT_WR)). When the local side has closed the whole
// socket (QEMU does at the end of a migration), what the peer still sends is dropped.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>

#include "ferry/base/result.h"
#include "ferry/sys/fd.h"
#include "ferry/wire/connection.h"

namespace ferry::daemon {

class Relay {
public:
	Relay(UniqueFd local, Connection peer);
	Relay(const Relay &) = delete;
	Relay &operator=(const Relay &) = delete;

	Status run();
	void stop();

	uint64_t bytesToPeer() const { return toPeer_.load(std::memory_order_relaxed); }
	uint64_t bytesFromPeer() const { return fromPeer_.load(std::memory_order_relaxed); }

private:
	Status localToPeer();
	Status peerToLocal();

	UniqueFd local_;
	Connection peer_;
	std::atomic<uint64_t> toPeer_{0};
	std::atomic<uint64_t> fromPeer_{0};
	std::atomic<bool> stopped_{false};
	std::atomic<bool> localEof_{false};
};

} // namespace ferry::daemon
