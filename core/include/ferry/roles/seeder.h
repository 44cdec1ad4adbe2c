// SPDX-License-Identifier: GPL-2.0-or-later
// The source role. Serves chunks of a live region to any number of leecher connections,
// tracks which chunks the application writes (after the leecher asks it to start), and at
// finalize suspends the application through a hook and returns the final dirty set. After
// finalize the region stays intact (the application is suspended) and is still served, until
// the leecher reports it holds every chunk (Done): then the release hook runs.
//
// Before switch-over nothing is lost on failure: if the leecher goes away after Finalize
// without having reported the switch-over, and does not come back within rollbackTimeout,
// the resume hook restarts the application as if nothing happened.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ferry/base/json.h"
#include "ferry/base/result.h"
#include "ferry/dirty/tracker.h"
#include "ferry/wire/compress.h"
#include "ferry/wire/connection.h"
#include "ferry/wire/endpoint.h"
#include "ferry/wire/protocol.h"

namespace ferry {

enum class SeederState { Serving, Tracking, Suspended, SwitchedOver, Released, RolledBack, Failed };
const char *seederStateName(SeederState s);

struct SeederHooks {
	std::function<Status()> suspend;  // stop the application writing; return once quiescent
	std::function<Status()> resume;   // undo suspend (rollback before switch-over)
	std::function<void()> release;    // destination holds everything: shut the source down
	// Optional, at the switch-over (before it is acknowledged): e.g. start QEMU's own
	// migration of device state. On error the switch-over is refused and, if the
	// destination then goes away, the source is resumed.
	std::function<Status()> switchOver;
};

struct SeederOptions {
	std::string name = "seeder";
	uint32_t chunkSize = 64 * 1024;
	std::chrono::milliseconds rollbackTimeout{10000};
	bool sendZeroChunksAsMarkers = true;
	// Compress GetRange replies (the pre-copy pull) on connections whose Hello asks for it.
	// Replies to GetChunk (a destination's page fault) and GetPages stay raw: a fault must
	// not wait for a compressor.
	CompressionSpec compression;
};

struct SeederStats {
	uint64_t chunksServed = 0, zeroChunksServed = 0, pagesServed = 0, bytesSent = 0, dirtyReports = 0,
		 dirtyChunksReported = 0, finalDirtyChunks = 0;
	// Chunks sent as ChunkZstd, and their bytes before and after compression.
	uint64_t compressedChunks = 0, compressedRawBytes = 0, compressedWireBytes = 0;
	JsonValue toJson() const;
};

class Seeder {
public:
	// `data` stays valid (mapped) for the seeder's lifetime; `tracker` covers the same region
	// with the same chunk size.
	Seeder(const uint8_t *data, uint64_t size, std::unique_ptr<DirtyTracker> tracker,
	       SeederHooks hooks, SeederOptions opts);
	~Seeder();

	// Accepts connections on `listener` and serves them until the leecher reported Done (ok),
	// or rolled back / failed (error). Blocks; call from one thread.
	Status serve(Listener &listener);
	// Makes serve() return (error "stopped") at the next opportunity. Any thread.
	void stop();

	SeederState state() const { return state_.load(); }
	SeederStats stats() const;
	uint64_t sessionId() const { return sessionId_; }

private:
	struct ConnState; // per connection: negotiated features, compressor, buffers
	Status handleConnection(Connection conn);
	Status handleFrame(Connection &conn, ConnState &cs, const FrameHeader &h);
	Status serveChunk(Connection &conn, uint64_t reqId, uint32_t index);
	// cs null: no compression (a GetChunk reply).
	Status serveRange(Connection &conn, ConnState *cs, uint64_t reqId, uint32_t first, uint32_t count);
	Status servePages(Connection &conn, uint64_t reqId, uint32_t index, uint64_t mask);
	Status transition(SeederState to);
	// The dirty set as a DirtyList (chunks + page masks); see seeder.cpp.
	Status takeDirty(bool final, DirtyListMsg &out);

	const uint8_t *data_;
	uint64_t size_;
	uint32_t chunkCount_;
	std::unique_ptr<DirtyTracker> tracker_;
	SeederHooks hooks_;
	SeederOptions opts_;
	uint64_t sessionId_;

	std::atomic<SeederState> state_{SeederState::Serving};
	std::atomic<bool> stop_{false};
	std::atomic<int> connections_{0};
	std::atomic<int64_t> lastDisconnectNs_{0};

	mutable std::mutex lock_;          // guards the dirty sets and stats below
	std::vector<uint64_t> pending_;    // written pages per chunk, not yet reported (0: clean)
	DirtyListMsg lastSent_;            // last DirtyList, owed again after a reconnect
	DirtyListMsg final_;               // the Finalized list (idempotent Finalize)
	int64_t suspendedAtNs_ = 0;
	SeederStats stats_;
};

} // namespace ferry
