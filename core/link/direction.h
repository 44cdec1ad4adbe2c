// SPDX-License-Identifier: GPL-2.0-or-later
// One direction of a relayed connection (internal to core/link): where the link model lives.
//
// Bytes read from `in` wait in a ring until the model releases them, then go to `out`. The
// model is a serial line followed by a delay line. A read of n bytes claims the line from
// max(now, line free) for n / bytesPerSec; every connection relayed in the same direction
// claims the same line (one atomic "free at" time), so they share its bandwidth as flows over
// one real link do. Each read becomes a Segment (its stream offsets and transmission times),
// and a byte may leave once its transmission has ended and `delay` has passed. Back-to-back
// segments merge, which is exact, so a busy line costs one segment rather than one per read.
//
// With neither delay nor a cap there is nothing to model: the ring gives way to a pipe and
// bytes move socket -> pipe -> socket with splice(2).
//
// Thread: a Direction belongs to its relay's thread; only the shared line is touched by
// others (atomically).
#pragma once
#ifndef FERRY_CORE_INTERNAL
#error "an internal header of ferry-core: include the public ones (ferry/...) instead"
#endif

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>

#include "ferry/base/clock.h"
#include "ferry/base/result.h"
#include "ferry/link/link_emulator.h"
#include "ferry/sys/fd.h"

namespace ferry::link {

class Direction {
public:
	// `relayed` counts bytes delivered (over all connections); `line` is the transmission
	// schedule shared by every connection over this direction of the link.
	Direction(const char *name, const LinkDirection &p, std::atomic<uint64_t> &relayed,
		  std::atomic<int64_t> &line);

	// Borrows the two sockets (non-blocking; the relay owns them) and, for a plain relay,
	// creates the splice pipe.
	Status attach(int in, int out);

	// The FIN has been passed on: nothing more will come out of this direction.
	bool done() const { return outShut_; }
	// The last send hit EAGAIN: poll `out` for POLLOUT, then call pollOutReady().
	bool wantsPollOut() const { return outBlocked_; }
	void pollOutReady() { outBlocked_ = false; }

	// Whether to poll `in` for input: false after EOF, while the ring (or pipe) is full, or,
	// with a bandwidth cap, while more than a router's buffer of transmission time is queued.
	bool canRead(int64_t now) const;
	// Moves whatever the link model allows right now. Error: the connection must be reset.
	Status pump(int64_t now);
	// When this direction next needs attention without any fd event; INT64_MAX: never.
	int64_t nextWake(int64_t now) const;

private:
	struct Segment {
		uint64_t start, end;    // stream offsets [start, end)
		int64_t txStart, txEnd; // when its first byte starts / last byte ends transmission
	};

	Status pumpSplice(int64_t now);
	// Returns whether another read may find more data.
	Result<bool> readOnce(int64_t now);
	// Advances relPos_ to the last byte whose (transmission end + delay) has passed.
	void release(int64_t now);

	const char *name_;
	int64_t delayNs_;
	uint64_t bw_;
	std::atomic<uint64_t> &relayed_;
	size_t cap_;
	size_t maxRead_;
	int in_ = -1;
	int out_ = -1;
	std::unique_ptr<uint8_t[]> ring_;
	// Stream offsets: outPos_ <= relPos_ <= inPos_, inPos_ - outPos_ <= cap_.
	uint64_t inPos_ = 0;
	uint64_t relPos_ = 0;
	uint64_t outPos_ = 0;
	std::deque<Segment> segs_; // not yet fully released, in stream order
	std::atomic<int64_t> &txFree_; // when the (shared) line finishes what is queued
	bool inEof_ = false;
	int64_t finAt_ = 0;
	bool outShut_ = false;
	bool outBlocked_ = false; // last send hit EAGAIN: wait for POLLOUT
	// Splice mode (no delay, no cap): the pipe replaces the ring; inPos_ - outPos_ is in it.
	UniqueFd pipeR_;
	UniqueFd pipeW_;
	bool pipeFull_ = false;
};

} // namespace ferry::link
