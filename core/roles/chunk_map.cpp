// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/roles/chunk_map.h"

#include <cassert>
#include <cmath>
#include <limits>

#include "ferry/base/clock.h"

namespace ferry {

namespace {

// A chunk a request may be started for: never pulled, or held but written since.
bool requestable(ChunkState s)
{
	return s == ChunkState::Missing || s == ChunkState::Stale;
}

} // namespace

ChunkMap::ChunkMap(uint32_t chunkCount)
	: state_(chunkCount, ChunkState::Missing), redo_(chunkCount, 0), received_(chunkCount, 0),
	  intact_(chunkCount, 0), staleMask_(chunkCount, 0),
	  lastWritten_(chunkCount, -std::numeric_limits<double>::infinity())
{
	counts_.missing = chunkCount;
}

// The moves a chunk may make. Missing and Stale chunks are requested (InFlight); a reply makes
// a chunk Local, or Stale when it was written while in flight; a failed request makes it
// Stale (owed again, first in line); a write reported for a Local chunk makes it Stale.
// Nothing else: a Local chunk is never requested, and a Missing one becomes Local unseen only
// when the seeder reported it zero (markZero).
bool ChunkMap::legalMove(ChunkState from, ChunkState to)
{
	switch (to) {
	case ChunkState::InFlight: return from == ChunkState::Missing || from == ChunkState::Stale;
	case ChunkState::Local: return from == ChunkState::InFlight || from == ChunkState::Missing;
	case ChunkState::Stale: return from == ChunkState::InFlight || from == ChunkState::Local;
	case ChunkState::Missing: return false;
	}
	return false;
}

void ChunkMap::setState(uint32_t index, ChunkState s)
{
	// Our own invariant, not peer input: every caller has checked the state it moves from.
	assert(legalMove(state_[index], s));
	auto counter = [this](ChunkState st) -> uint64_t & {
		switch (st) {
		case ChunkState::Missing: return counts_.missing;
		case ChunkState::InFlight: return counts_.inFlight;
		case ChunkState::Local: return counts_.local;
		case ChunkState::Stale: break;
		}
		return counts_.stale;
	};
	counter(state_[index])--;
	counter(s)++;
	state_[index] = s;
}

void ChunkMap::setMaxRun(uint32_t n)
{
	std::lock_guard g(lock_);
	maxRun_ = std::max<uint32_t>(1, n);
}

void ChunkMap::setOrder(Order order)
{
	std::lock_guard g(lock_);
	order_ = order;
	workCv_.notify_all();
}

ChunkRequest ChunkMap::startRequest(uint32_t index)
{
	ChunkRequest r{index, 0};
	// Only the written pages of a chunk whose local copy is whole; the mask restarts, and
	// pages written while this request is in flight accumulate in it again.
	if (state_[index] == ChunkState::Stale && intact_[index])
		r.pageMask = staleMask_[index];
	staleMask_[index] = 0;
	setState(index, ChunkState::InFlight);
	return r;
}

bool ChunkMap::heldLocked(uint32_t index) const
{
	// lastWritten_ starts at -infinity, which no window reaches (not even an infinite one).
	return hotWindow_ > 0 && std::isfinite(lastWritten_[index]) &&
	       lastWritten_[index] >= clock_ - hotWindow_;
}

void ChunkMap::deferLocked(uint32_t index)
{
	(state_[index] == ChunkState::Missing ? deferredMissing_ : deferredStale_).push_back(index);
}

void ChunkMap::releaseDeferredLocked()
{
	if (deferredMissing_.empty() && deferredStale_.empty())
		return;
	// Never-pulled ones in front: they end the first pass.
	requeue_.insert(requeue_.begin(), deferredStale_.begin(), deferredStale_.end());
	requeue_.insert(requeue_.begin(), deferredMissing_.begin(), deferredMissing_.end());
	deferredMissing_.clear();
	deferredStale_.clear();
	workCv_.notify_all();
}

std::optional<ChunkRequest> ChunkMap::takeLocked()
{
	// Urgent chunks (a fault waits) bypass the hot-chunk hold.
	auto fromQueue = [this](std::deque<uint32_t> &q, bool hold) -> std::optional<uint32_t> {
		while (!q.empty()) {
			uint32_t i = q.front();
			q.pop_front();
			// Entries may be outdated: a chunk can be queued twice or already served.
			if (!requestable(state_[i]))
				continue;
			if (hold && heldLocked(i)) {
				deferLocked(i);
				continue;
			}
			return i;
		}
		return std::nullopt;
	};
	auto fromCursor = [this]() -> std::optional<uint32_t> {
		while (cursor_ < state_.size()) {
			uint32_t i = cursor_++;
			if (state_[i] != ChunkState::Missing)
				continue;
			if (heldLocked(i)) {
				deferLocked(i);
				continue;
			}
			return i;
		}
		return std::nullopt;
	};

	std::optional<uint32_t> pick = fromQueue(urgent_, false);
	if (!pick && order_ == Order::UrgentOnly)
		return std::nullopt;
	if (!pick && order_ == Order::StaleFirst)
		pick = fromQueue(requeue_, true);
	if (!pick) {
		pick = fromCursor();
		if (pick) {
			// A run of never-pulled chunks: one request, many replies.
			ChunkRequest r = startRequest(*pick);
			while (r.count < maxRun_ && cursor_ < state_.size() &&
			       state_[cursor_] == ChunkState::Missing && !heldLocked(cursor_)) {
				setState(cursor_++, ChunkState::InFlight);
				r.count++;
			}
			return r;
		}
	}
	if (!pick)
		pick = fromQueue(requeue_, true);
	// A lenient hold: the hot chunks once nothing else is left, never-pulled ones first.
	auto fromDeferred = [this](std::vector<uint32_t> &v) -> std::optional<uint32_t> {
		while (!v.empty()) {
			uint32_t i = v.back();
			v.pop_back();
			if (requestable(state_[i]))
				return i;
		}
		return std::nullopt;
	};
	if (!pick && !holdStrict_)
		pick = fromDeferred(deferredMissing_);
	if (!pick && !holdStrict_)
		pick = fromDeferred(deferredStale_);
	if (!pick)
		return std::nullopt;
	return startRequest(*pick);
}

std::optional<ChunkRequest> ChunkMap::next(bool wait, const std::atomic<bool> *cancel)
{
	std::unique_lock g(lock_);
	for (;;) {
		if (closed_ || (cancel && cancel->load()))
			return std::nullopt;
		if (!paused_) {
			if (auto pick = takeLocked())
				return pick;
		}
		if (!wait)
			return std::nullopt;
		workCv_.wait(g);
	}
}

bool ChunkMap::completed(uint32_t index, bool whole)
{
	std::lock_guard g(lock_);
	if (state_[index] != ChunkState::InFlight)
		return state_[index] == ChunkState::Local;
	if (whole)
		intact_[index] = 1;
	if (!received_[index]) {
		received_[index] = 1;
		if (++receivedCount_ == state_.size()) {
			firstPassDoneNs_ = monotonicNs();
			localCv_.notify_all();
		}
	}
	if (redo_[index]) {
		redo_[index] = 0;
		setState(index, ChunkState::Stale);
		requeue_.push_back(index);
		workCv_.notify_one();
		return false;
	}
	setState(index, ChunkState::Local);
	// Waiters wait for the whole map (waitAllLocal, waitFirstPass): waking them for every
	// chunk cost a thread wake-up per chunk, tens of microseconds each on this kind of VM.
	if (counts_.local == state_.size())
		localCv_.notify_all();
	return true;
}

void ChunkMap::markZero(uint32_t first, uint32_t count)
{
	std::lock_guard g(lock_);
	for (uint32_t i = first; i < first + count && i < state_.size(); i++) {
		if (state_[i] != ChunkState::Missing)
			continue;
		intact_[i] = 1;
		received_[i] = 1;
		if (++receivedCount_ == state_.size())
			firstPassDoneNs_ = monotonicNs();
		setState(i, ChunkState::Local);
	}
	if (receivedCount_ == state_.size() || counts_.local == state_.size())
		localCv_.notify_all();
}

void ChunkMap::requestFailed(uint32_t index)
{
	std::lock_guard g(lock_);
	if (state_[index] != ChunkState::InFlight)
		return;
	redo_[index] = 0;
	// Whether it was Missing or Stale before, its local bytes are not trustworthy now.
	intact_[index] = 0;
	setState(index, ChunkState::Stale);
	urgent_.push_front(index);
	workCv_.notify_one();
}

void ChunkMap::markDirty(std::span<const uint32_t> indices, std::span<const uint64_t> pageMasks)
{
	std::lock_guard g(lock_);
	for (size_t k = 0; k < indices.size(); k++) {
		uint32_t i = indices[k];
		if (i >= state_.size())
			continue; // callers validate; never index out of range
		uint64_t mask = k < pageMasks.size() ? pageMasks[k] : ~uint64_t(0);
		lastWritten_[i] = clock_;
		switch (state_[i]) {
		case ChunkState::Local:
			setState(i, ChunkState::Stale);
			staleMask_[i] |= mask;
			requeue_.push_back(i);
			break;
		case ChunkState::InFlight:
			redo_[i] = 1;
			staleMask_[i] |= mask;
			break;
		case ChunkState::Stale:
			staleMask_[i] |= mask;
			break;
		case ChunkState::Missing:
			break;
		}
	}
	workCv_.notify_all();
}

ChunkState ChunkMap::prioritize(uint32_t index)
{
	std::lock_guard g(lock_);
	ChunkState s = state_[index];
	if (requestable(s)) {
		urgent_.push_front(index);
		workCv_.notify_one();
	}
	return s;
}

std::optional<ChunkRequest> ChunkMap::claim(uint32_t index)
{
	std::lock_guard g(lock_);
	ChunkState s = state_[index];
	if (!requestable(s))
		return std::nullopt;
	return startRequest(index);
}

bool ChunkMap::waitAllLocal(std::chrono::milliseconds timeout)
{
	std::unique_lock g(lock_);
	localCv_.wait_for(g, timeout, [&] { return closed_ || counts_.local == state_.size(); });
	return counts_.local == state_.size();
}

bool ChunkMap::firstPassDone() const
{
	std::lock_guard g(lock_);
	return receivedCount_ == state_.size();
}

int64_t ChunkMap::firstPassDoneNs() const
{
	std::lock_guard g(lock_);
	return firstPassDoneNs_;
}

bool ChunkMap::waitFirstPass(std::chrono::milliseconds timeout)
{
	std::unique_lock g(lock_);
	localCv_.wait_for(g, timeout, [&] { return closed_ || receivedCount_ == state_.size(); });
	return receivedCount_ == state_.size();
}

void ChunkMap::setPaused(bool paused)
{
	std::lock_guard g(lock_);
	paused_ = paused;
	workCv_.notify_all();
}

void ChunkMap::setClock(double nowSec)
{
	std::lock_guard g(lock_);
	clock_ = nowSec;
	releaseDeferredLocked(); // some may have cooled down
}

void ChunkMap::setHotHold(double hotWindowSec, bool strict)
{
	std::lock_guard g(lock_);
	hotWindow_ = std::isnan(hotWindowSec) || hotWindowSec < 0 ? 0 : hotWindowSec;
	holdStrict_ = strict;
	releaseDeferredLocked();
}

void ChunkMap::wakeAll()
{
	std::lock_guard g(lock_);
	workCv_.notify_all();
}

void ChunkMap::close()
{
	std::lock_guard g(lock_);
	closed_ = true;
	workCv_.notify_all();
	localCv_.notify_all();
}

ChunkState ChunkMap::state(uint32_t index) const
{
	std::lock_guard g(lock_);
	return state_[index];
}

uint64_t ChunkMap::coldPendingCount() const
{
	std::lock_guard g(lock_);
	if (!(hotWindow_ > 0))
		return counts_.total() - counts_.local;
	uint64_t n = 0;
	for (uint32_t i = 0; i < state_.size(); i++)
		n += state_[i] != ChunkState::Local && !heldLocked(i);
	return n;
}

ChunkCounts ChunkMap::counts() const
{
	std::lock_guard g(lock_);
	return counts_;
}

bool ChunkMap::allLocal() const
{
	std::lock_guard g(lock_);
	return counts_.local == state_.size();
}

std::vector<std::pair<uint32_t, uint32_t>> ChunkMap::localRuns(uint32_t from, uint32_t to) const
{
	std::lock_guard g(lock_);
	std::vector<std::pair<uint32_t, uint32_t>> runs;
	to = std::min<uint32_t>(to, state_.size());
	uint32_t i = from;
	while (i < to) {
		while (i < to && state_[i] != ChunkState::Local)
			i++;
		uint32_t start = i;
		while (i < to && state_[i] == ChunkState::Local)
			i++;
		if (i > start)
			runs.emplace_back(start, i);
	}
	return runs;
}

} // namespace ferry
