// SPDX-License-Identifier: GPL-2.0-or-later
// The leecher's puller (internal): one worker per data connection. A worker connects (and
// reconnects within the reconnect window), and runs a sender that takes requests from the
// ChunkMap while fewer than `depth` chunks are in flight, and a receiver (the worker's own
// thread) that reads replies straight into the region and reports each chunk to the map. A
// request lost with its connection goes back to the map, owed again.
//
// The post-copy fault path borrows a worker's connection: requestNow() sends from the
// calling (fault) thread, so a faulted chunk's request crosses no thread hand-off.
#pragma once
#ifndef FERRY_CORE_INTERNAL
#error "an internal header of ferry-core: include the public ones (ferry/...) instead"
#endif

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "ferry/roles/chunk_map.h"
#include "roles/leecher/local_region.h"
#include "roles/leecher/session.h"

namespace ferry {

class Puller {
public:
	Puller(SeederSession &session, LocalRegion &region, ChunkMap &map, FailureLatch &failure,
	       const LeecherOptions &opts);
	~Puller(); // stop()
	Puller(const Puller &) = delete;
	Puller &operator=(const Puller &) = delete;

	void start();
	// Stops every worker: wakes their receivers and senders and joins them. Idempotent.
	void stop();

	// Called on a receiver thread for every chunk that became Local, once set. Set it before
	// the chunks it must see can arrive (before the fault service maps anything).
	void setOnChunkLocal(std::function<void(uint32_t)> fn);
	// Requests chunk `index` now, from the calling thread, on the next connection that is up
	// (the fault path). Without one, the chunk goes back to the map, first in line.
	void requestNow(uint32_t index);

	uint64_t inFlightChunks() const;
	// Blocks until nothing is in flight, a failure is latched, or `max` passes; returns
	// whether nothing is in flight.
	bool waitIdle(std::chrono::milliseconds max);

	uint64_t bytesReceived() const; // on data connections, open or closed
	uint64_t compressedChunks() const { return compressedChunks_.load(); }
	uint64_t compressedRawBytes() const { return compressedRawBytes_.load(); }

private:
	struct Worker;

	void workerLoop(Worker *w);
	Status receiveLoop(Worker *w, Connection &conn);
	Status receiveReply(Worker *w, Connection &conn, const FrameHeader &h);
	void senderLoop(Worker *w, Connection *conn, std::atomic<bool> *dead);
	// Whether w's sender may ask for more (w->lock held): a refill's worth of its window free.
	bool hasRoom(const Worker &w) const;
	// A worker's failure that no reconnect can mend: latch it and close the map.
	void giveUp(Error e);

	SeederSession &session_;
	LocalRegion &region_;
	ChunkMap &map_;
	FailureLatch &failure_;
	const LeecherOptions &opts_;
	// A sender waits until this many chunks of its window have arrived, then refills: a
	// wake-up per refill, not per chunk (waking a thread costs tens of microseconds here).
	const uint32_t refill_;

	std::atomic<bool> stopping_{false};
	std::atomic<uint64_t> closedBytes_{0}; // bytes received on data connections already closed
	std::atomic<uint64_t> compressedChunks_{0}, compressedRawBytes_{0};
	std::function<void(uint32_t)> onChunkLocal_;
	std::atomic<bool> notifyLocal_{false}; // onChunkLocal_ is set (release/acquire)

	mutable std::mutex idleLock_;
	std::condition_variable idleCv_; // a chunk arrived or a worker failed
	std::atomic<size_t> nextFaultWorker_{0};
	std::vector<std::unique_ptr<Worker>> workers_;
};

} // namespace ferry
