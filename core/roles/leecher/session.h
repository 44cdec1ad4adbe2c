// SPDX-License-Identifier: GPL-2.0-or-later
// The leecher's session with its seeder (internal): every connection of the leecher (control,
// data, verify) opens with a Hello that names the session, and the control requests
// (TrackStart, GetDirty, Finalize, SwitchOver, Done) go over one control connection that is
// re-opened and retried within the reconnect window. Every control request is idempotent on
// the seeder, so a retry after a lost reply is safe.
//
// Threads: open() and request() from run()'s thread; connect() from any thread.
#pragma once
#ifndef FERRY_CORE_INTERNAL
#error "an internal header of ferry-core: include the public ones (ferry/...) instead"
#endif

#include <atomic>
#include <optional>
#include <string>

#include "ferry/roles/leecher.h"
#include "ferry/wire/connection.h"

namespace ferry {

class SeederSession {
public:
	SeederSession(const LeecherOptions &opts, const std::atomic<bool> &stopping)
		: opts_(opts), stopping_(stopping) {}

	// The first connection: learns the session id and the region (the reply's checks are
	// the caller's). Keeps the connection as the control connection.
	// `features` go into the Hello of every control connection, the re-opened ones too.
	Result<HelloReplyMsg> open(uint32_t features = 0);
	// A further connection of this session (`role` goes into the Hello's client name).
	// ESTALE when the seeder restarted or its region changed: nothing can be resumed.
	Result<Connection> connect(const char *role, uint32_t features = 0, HelloReplyMsg *reply = nullptr);
	// One request/reply on the control connection, reconnecting until the reconnect window
	// ends. A peer Error or a reply of the wrong type is EPROTO, never retried.
	Result<std::vector<uint8_t>> request(MsgType type, MsgType expect, std::span<const uint8_t> payload = {});
	void close();
	// The seeder's authenticated identity ("x509 CN=..."), or "insecure"; set by open().
	const std::string &peerIdentity() const { return peerIdentity_; }

	// Bytes received on the control connection (open or closed) and reconnects so far.
	uint64_t bytesReceived() const;
	uint64_t reconnects() const { return reconnects_.load(); }
	void countReconnect() { reconnects_++; }

private:
	const LeecherOptions &opts_;
	const std::atomic<bool> &stopping_;
	uint64_t sessionId_ = 0;
	uint32_t controlFeatures_ = 0;
	uint64_t size_ = 0;
	uint32_t chunkSize_ = 0;
	std::string peerIdentity_ = "insecure";
	std::optional<Connection> ctrl_;
	uint64_t nextId_ = 1;
	std::atomic<uint64_t> closedBytes_{0};
	std::atomic<uint64_t> reconnects_{0};
};

} // namespace ferry
