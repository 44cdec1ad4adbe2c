// SPDX-License-Identifier: GPL-2.0-or-later
// The destination's record of which chunks it holds. It lives at the destination, so a
// dropped connection loses nothing: on reconnect the leecher pulls what is not Local.
//
// States:  Missing --request--> InFlight --reply--> Local --dirty--> Stale --request--> InFlight
//          Missing --reported zero (markZero)--> Local
// A chunk reported dirty while InFlight is re-queued when its reply lands (the reply may
// hold data read before the write). Thread-safe: every method takes the map's lock.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

namespace ferry {

enum class ChunkState : uint8_t { Missing, InFlight, Local, Stale };

// What to request for a chunk: all of it, or (pageMask != 0) only those pages of a chunk held
// intact locally whose bits the seeder reported written since.
struct ChunkRequest {
	uint32_t index = 0;
	uint64_t pageMask = 0;
	uint32_t count = 1; // > 1: the never-pulled chunks index .. index+count-1 (pageMask 0)
};

struct ChunkCounts {
	uint64_t missing = 0, inFlight = 0, local = 0, stale = 0;
	uint64_t total() const { return missing + inFlight + local + stale; }
};

class ChunkMap {
public:
	explicit ChunkMap(uint32_t chunkCount);

	// Order in which next() hands out work. Urgent chunks (faults) always come first.
	//  - PreCopy: never-pulled chunks in index order, then stale ones;
	//  - StaleFirst: stale chunks first (what finalize reported), then never-pulled ones;
	//  - UrgentOnly: nothing but prioritized chunks (pure demand paging, for measurements).
	enum class Order { PreCopy, StaleFirst, UrgentOnly };
	void setOrder(Order order);
	// Never-pulled chunks are handed out in runs of up to this many (first pass). Default 1.
	void setMaxRun(uint32_t n);

	// Blocks until a chunk needs requesting and marks it InFlight, or returns nullopt when
	// there is nothing to request now and `wait` is false, when close() was called, or when
	// `cancel` is set (checked whenever wakeAll() is called).
	std::optional<ChunkRequest> next(bool wait, const std::atomic<bool> *cancel = nullptr);
	// Wakes every next() waiter so it can re-check its cancel flag.
	void wakeAll();
	// A requested chunk's data is in place (`whole`: the entire chunk was written, so later
	// page-only updates may apply to it). Returns true if it became Local (false when it was
	// dirtied meanwhile and went back to Stale).
	bool completed(uint32_t index, bool whole = true);
	// Never-pulled chunks the seeder reported zero (holes of its region): Local at once, as
	// if a ChunkZero reply had landed (the destination's fresh memory is zero). Chunks in
	// any other state are left as they are.
	void markZero(uint32_t first, uint32_t count);
	// A request was lost (connection dropped): the chunk goes back to be requested again, in
	// full (its local bytes may be half-written).
	void requestFailed(uint32_t index);
	// Chunks written at the source since they were pulled; pageMasks (parallel, optional)
	// say which pages.
	void markDirty(std::span<const uint32_t> indices, std::span<const uint64_t> pageMasks = {});
	// Moves a chunk to the front (a page fault waits on it). Returns its state.
	ChunkState prioritize(uint32_t index);
	// Takes a Missing or Stale chunk for an immediate request (marks it InFlight) and returns
	// true; returns false (and changes nothing) for any other state.
	std::optional<ChunkRequest> claim(uint32_t index);
	// Blocks until every chunk is Local (true) or close() is called / timeout (false).
	bool waitAllLocal(std::chrono::milliseconds timeout);
	// Stops handing out work (pause) or resumes it.
	void setPaused(bool paused);
	// The hot-chunk hold. markDirty() stamps every chunk it names -- in any state, a
	// never-pulled one too -- with the clock last set here (seconds, any origin).
	void setClock(double nowSec);
	// Hot chunks are those written within the last hotWindowSec (infinity: ever written since
	// the map was made). While hotWindowSec > 0, next() hands out no hot chunk (strict) or
	// only once no other chunk is left to request (!strict: never-pulled hot chunks first,
	// so that the first pass ends as soon as it can); urgent chunks are never held back and
	// chunks never reported written always flow. 0 lifts the hold. A held chunk is not lost:
	// it is handed out once it has cooled down (checked at every setClock()) or the hold is
	// lifted.
	void setHotHold(double hotWindowSec, bool strict = true);
	// Wakes every waiter for good; next() returns nullopt from then on.
	void close();

	ChunkState state(uint32_t index) const;
	ChunkCounts counts() const;
	// Chunks not Local that are not hot under the current hot-chunk hold (all of them when
	// there is none): what is left of the migration apart from the working set.
	uint64_t coldPendingCount() const;
	uint32_t chunkCount() const { return static_cast<uint32_t>(state_.size()); }
	bool allLocal() const;
	// Every chunk has been received at least once (the first pre-copy pass is over), whether
	// or not it went stale since.
	bool firstPassDone() const;
	// When the first pass ended (monotonicNs), 0 before.
	int64_t firstPassDoneNs() const;
	// Blocks until firstPassDone() or the timeout; returns firstPassDone().
	bool waitFirstPass(std::chrono::milliseconds timeout);
	// Indices of Local chunks in [from, to) grouped in runs, for batch operations.
	std::vector<std::pair<uint32_t, uint32_t>> localRuns(uint32_t from, uint32_t to) const;

private:
	static bool legalMove(ChunkState from, ChunkState to);
	void setState(uint32_t index, ChunkState s); // checks the move, keeps counts_ in step; lock held
	std::optional<ChunkRequest> takeLocked();
	bool heldLocked(uint32_t index) const; // the hot-chunk hold applies to it
	void deferLocked(uint32_t index);
	void releaseDeferredLocked();          // deferred chunks back to requeue_ for a re-check
	ChunkRequest startRequest(uint32_t index); // lock held; index is Missing or Stale

	mutable std::mutex lock_;
	std::condition_variable workCv_;  // next() waiters
	std::condition_variable localCv_; // waitAllLocal()/waitFirstPass() waiters
	std::vector<ChunkState> state_;
	std::vector<uint8_t> redo_;       // dirtied while InFlight
	std::vector<uint8_t> received_;   // received at least once
	std::vector<uint8_t> intact_;     // local bytes are a whole chunk as read at some point
	std::vector<uint64_t> staleMask_; // pages written since the local copy was read
	uint64_t receivedCount_ = 0;
	int64_t firstPassDoneNs_ = 0; // when receivedCount_ reached the chunk count
	std::deque<uint32_t> urgent_;
	std::deque<uint32_t> requeue_;    // stale or failed chunks, in report order
	std::vector<uint32_t> deferredMissing_, deferredStale_; // passed over by the hot-chunk hold
	bool holdStrict_ = true;
	std::vector<double> lastWritten_; // clock at the last markDirty() naming the chunk
	double clock_ = 0;
	double hotWindow_ = 0;
	uint32_t cursor_ = 0;             // first-pass scan position
	ChunkCounts counts_;
	Order order_ = Order::PreCopy;
	uint32_t maxRun_ = 1;
	bool paused_ = false;
	bool closed_ = false;
};

} // namespace ferry
