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
//
// The seeder trusts no peer. A connection must say Hello before anything else; the first
// Hello of a new session makes its client the session's owner, and from then on only Hellos
// carrying the session id get in (the id is the only credential until the connection is
// authenticated). Connections are capped in total and per peer address, idle or stalled
// ones are closed, and a leecher that vanishes during pre-copy ends the migration with the
// source running untouched.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <list>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ferry/base/json.h"
#include "ferry/base/result.h"
#include "ferry/base/state_machine.h"
#include "ferry/dirty/tracker.h"
#include "ferry/wire/compress.h"
#include "ferry/wire/connection.h"
#include "ferry/wire/endpoint.h"
#include "ferry/wire/protocol.h"
#include "ferry/wire/tls.h"

namespace ferry {

enum class SeederState { Serving, Tracking, Suspended, SwitchedOver, Released, RolledBack, Failed };
const char *seederStateName(SeederState s);

struct SeederHooks {
	std::function<Status()> suspend;  // stop the application writing; return once quiescent
	std::function<Status()> resume;   // undo suspend (rollback before switch-over)
	std::function<void()> release;    // destination holds everything: shut the source down
	// Optional, at the switch-over (before it is acknowledged, or before the Finalized reply
	// when the leecher finalizes and switches over in one step): e.g. start QEMU's own
	// migration of device state. On error the switch-over is refused and, if the
	// destination then goes away, the source is resumed.
	std::function<Status()> switchOver;
};

struct SeederOptions {
	std::string name = "seeder";
	uint32_t chunkSize = 64 * 1024;
	std::chrono::milliseconds rollbackTimeout{10000};
	bool sendZeroChunksAsMarkers = true;
	// Compress GetRange replies (the pre-copy pull) on connections whose Hello asks for it;
	// adaptive (the default, "auto"): only while that moves the region faster on this
	// connection. Replies to GetChunk (a destination's page fault) and GetPages stay raw: a
	// fault must not wait for a compressor.
	CompressionSpec compression = CompressionSpec::automatic();
	// The file the region maps from offset 0 (a memfd; borrowed, open while the seeder runs),
	// or -1. Its holes are zero chunks found with SEEK_DATA, never read: reading a hole of a
	// shared memory file through a mapping allocates it, which would inflate the source
	// (an idle guest's untouched RAM) to its full size and cost the time of clearing it.
	int regionFd = -1;

	// Connections served at once, in total and from one peer address (host); more are
	// refused at accept with an Error frame (EMFILE, EBUSY) and get no thread.
	int maxConnections = 64;
	int maxConnectionsPerPeer = 16;
	// A connection with no frame for idleTimeout is closed; so is one whose frame (header
	// or payload), or Hello, does not arrive within frameTimeout of its first byte (or of
	// the connect, for the Hello). frameTimeout also bounds each blocking send.
	std::chrono::milliseconds idleTimeout{60000};
	std::chrono::milliseconds frameTimeout{10000};
	// Pre-copy (Tracking) with no connection of the session for this long: tracking stops
	// and serve() fails, the source running as before. Warned about from a third of it.
	// After the switch-over the seeder never gives up (it holds the only copy).
	std::chrono::milliseconds reconnectTimeout{15000};
	// Server credentials every connection must authenticate with (mutual TLS, or PSK)
	// before its first frame; null: plaintext, any peer (tests, loopback benchmarks).
	std::shared_ptr<const TlsCredentials> tls;
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

	SeederState state() const { return state_.get(); }
	SeederStats stats() const;
	uint64_t sessionId() const { return sessionId_.load(); }

private:
	struct ConnState; // per connection: admitted or not, its ChunkServer (core/roles/seeder/)
	// One accepted connection and the thread serving it; serve() owns the list.
	struct Worker {
		Connection conn;
		std::string peer; // PeerAddress::str()
		std::string host; // PeerAddress::host, for the per-peer cap
		std::thread thread;
		bool finished = false; // guarded by workersLock_
	};
	Status handleConnection(Worker &w);
	// Whether this Hello may join: the one place that decides who is a peer of the session.
	Status admitHello(const Worker &w, ConnState &cs, const HelloMsg &hello);
	void leaveSession(ConnState &cs);
	// Accepts a connection into a worker, or refuses it (caps, no thread); never throws.
	void startWorker(Connection conn);
	// Joins the threads of finished workers.
	void reapWorkers();
	// Pre-copy and post-copy watch on the session's leecher; an error ends serve().
	Status watchSession();
	Status handleFrame(Worker &w, ConnState &cs, const FrameHeader &h);
	void count(const SeederStats &sent); // what a ChunkServer sent, into stats_
	Status transition(SeederState to) { return state_.moveTo(to, opts_.name); }
	// The dirty set as a DirtyList (chunks + page masks); see seeder.cpp.
	Status takeDirty(bool final, DirtyListMsg &out);
	// The switch-over point (SwitchOver, or Finalize asking for it): see seeder.cpp.
	Status switchOver();

	const uint8_t *data_;
	uint64_t size_;
	uint32_t chunkCount_;
	std::unique_ptr<DirtyTracker> tracker_;
	SeederHooks hooks_;
	SeederOptions opts_;
	std::atomic<uint64_t> sessionId_; // changes only when an abandoned, untracked session is taken over

	static bool legalMove(SeederState from, SeederState to);
	StateMachine<SeederState> state_{SeederState::Serving, seederStateName, legalMove};
	std::atomic<bool> stop_{false};
	std::atomic<bool> doneAcked_{false}; // the DoneAck went out (or could not): serve() may end

	std::mutex workersLock_; // guards workers_' finished flags and list shape
	std::mutex controlLock_; // one control request (TrackStart ... Done) at a time
	std::condition_variable workerFinished_;
	std::list<Worker> workers_; // stable addresses: each thread holds its Worker

	// The session's owner and its live connections (lock_).
	bool owned_ = false;
	std::string ownerName_, ownerPeer_;
	int sessionConnections_ = 0;
	int64_t sessionLastSeenNs_ = 0; // when the last session connection closed
	// serve()'s thread only: what watchSession() already said.
	bool preCopyGoneWarned_ = false;
	int64_t postCopyWarnAtNs_ = 0;
	bool leecherGone_ = false; // pre-copy abandoned: tracking is torn down when serve() ends

	mutable std::mutex lock_;          // guards the dirty sets and stats below
	std::vector<uint64_t> pending_;    // written pages per chunk, not yet reported (0: clean)
	DirtyListMsg lastSent_;            // last DirtyList, owed again after a reconnect
	DirtyListMsg final_;               // the Finalized list (idempotent Finalize)
	int64_t suspendedAtNs_ = 0;
	SeederStats stats_;
};

} // namespace ferry
