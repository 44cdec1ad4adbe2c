// SPDX-License-Identifier: GPL-2.0-or-later
#include "link/direction.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>

namespace ferry::link {

namespace {

constexpr uint64_t kMinInFlight = 8u << 20;
// Largest single read. Bigger reads mean fewer syscalls; the pacing below releases the bytes
// of one read gradually anyway, so this only bounds how far ahead of the line we queue.
constexpr size_t kMaxRead = 512u << 10;
// With a bandwidth cap, stop reading once this much transmission time is queued ahead of the
// line (a router's buffer). Without it a slow link would queue the whole ring, i.e. seconds.
constexpr int64_t kMaxQueueNs = 10 * 1000000;
// Segments are merged whenever exact; this bounds bookkeeping for many tiny delayed writes.
constexpr size_t kMaxSegments = 1u << 16;

__extension__ typedef unsigned __int128 U128;

} // namespace

Direction::Direction(const char *name, const LinkDirection &p, std::atomic<uint64_t> &relayed,
		     std::atomic<int64_t> &line)
	: name_(name), delayNs_(std::chrono::nanoseconds(p.delay).count()), bw_(p.bytesPerSec),
	  relayed_(relayed), txFree_(line)
{
	uint64_t cap = p.maxInFlightBytes;
	if (cap == 0) {
		U128 bdp = U128(bw_) * uint64_t(delayNs_) / kNsPerSec;
		cap = std::max<uint64_t>(kMinInFlight, uint64_t(std::min<U128>(2 * bdp, 1ull << 32)));
	}
	cap_ = size_t(cap);
	maxRead_ = kMaxRead;
	if (bw_ > 0) {
		uint64_t q = uint64_t(U128(bw_) * kMaxQueueNs / kNsPerSec);
		maxRead_ = size_t(std::clamp<uint64_t>(q, 1500, kMaxRead));
	}
}

Status Direction::attach(int in, int out)
{
	in_ = in;
	out_ = out;
	if (delayNs_ != 0 || bw_ != 0)
		return {};
	// With neither delay nor a cap the link is a plain relay: bytes move socket -> pipe
	// -> socket with splice(2) as page references, never copied through user space.
	// That is what lets an unlimited link keep up with loopback TCP.
	int fds[2];
	if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0)
		return Error::fromErrno("pipe2");
	pipeR_.reset(fds[0]);
	pipeW_.reset(fds[1]);
	// Best effort: a bigger pipe means fewer splices; 1 MiB is the unprivileged maximum.
	(void)::fcntl(pipeW_.get(), F_SETPIPE_SZ, 1 << 20);
	return {};
}

bool Direction::canRead(int64_t now) const
{
	if (pipeW_)
		return !inEof_ && !pipeFull_;
	if (inEof_ || inPos_ - outPos_ >= cap_ || segs_.size() >= kMaxSegments)
		return false;
	return bw_ == 0 || txFree_ <= now + kMaxQueueNs;
}

Status Direction::pump(int64_t now)
{
	if (pipeW_)
		return pumpSplice(now);
	// A few reads per round, so one busy direction cannot starve the other.
	for (int i = 0; i < 4 && canRead(now); i++) {
		FERRY_ASSIGN(bool more, readOnce(now));
		if (!more)
			break;
	}
	release(now);
	while (relPos_ > outPos_ && !outBlocked_) {
		size_t off = size_t(outPos_ % cap_);
		size_t n = size_t(std::min<uint64_t>(relPos_ - outPos_, cap_ - off));
		ssize_t w = ::send(out_, ring_.get() + off, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				outBlocked_ = true;
				break;
			}
			return Error::fromErrno(fmt::format("{}: send", name_));
		}
		outPos_ += uint64_t(w);
		relayed_.fetch_add(uint64_t(w), std::memory_order_relaxed);
	}
	// The FIN travels the link like data: after the last byte and after the delay.
	if (inEof_ && !outShut_ && outPos_ == inPos_ && now >= finAt_) {
		::shutdown(out_, SHUT_WR);
		outShut_ = true;
	}
	return {};
}

int64_t Direction::nextWake(int64_t now) const
{
	int64_t t = INT64_MAX;
	if (pipeW_) {
		if (inPos_ > outPos_ && !outBlocked_)
			return now;
		if (inEof_ && !outShut_ && outPos_ == inPos_)
			return now;
		return t;
	}
	if (relPos_ > outPos_ && !outBlocked_)
		return now;
	if (!segs_.empty()) {
		const Segment &s = segs_.front();
		if (bw_ == 0) {
			t = s.txEnd + delayNs_;
		} else {
			// Wake when another quantum (or the rest of the segment) is released,
			// not for every byte.
			uint64_t quantum = std::max<uint64_t>(maxRead_ / 4, 1500);
			uint64_t target = std::min(s.end, std::max(relPos_, s.start) + quantum);
			U128 ns = (U128(target - s.start) * kNsPerSec + bw_ - 1) / bw_;
			t = s.txStart + int64_t(ns) + delayNs_;
		}
	} else if (inEof_ && !outShut_ && outPos_ == inPos_) {
		t = finAt_;
	}
	// Reading was paused by the queue limit: resume once the line has drained enough.
	if (!inEof_ && bw_ > 0 && txFree_ > now + kMaxQueueNs && inPos_ - outPos_ < cap_)
		t = std::min(t, txFree_ - kMaxQueueNs);
	return std::max(t, now);
}

Status Direction::pumpSplice(int64_t now)
{
	constexpr unsigned kFlags = SPLICE_F_NONBLOCK | SPLICE_F_MOVE;
	for (int i = 0; i < 4 && canRead(now); i++) {
		ssize_t n = ::splice(in_, nullptr, pipeW_.get(), nullptr, kMaxRead, kFlags);
		if (n > 0) {
			inPos_ += uint64_t(n);
			continue;
		}
		if (n == 0) {
			inEof_ = true;
			finAt_ = now;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return Error::fromErrno(fmt::format("{}: splice from socket", name_));
		// EAGAIN means "socket empty" or "pipe full". If the socket still holds data
		// the pipe is full: stop polling for input until a splice out makes room,
		// or ppoll would report the readable socket over and over.
		int avail = 0;
		if (inPos_ > outPos_ && ::ioctl(in_, FIONREAD, &avail) == 0 && avail > 0)
			pipeFull_ = true;
		break;
	}
	while (inPos_ > outPos_ && !outBlocked_) {
		ssize_t n = ::splice(pipeR_.get(), nullptr, out_, nullptr,
				     size_t(inPos_ - outPos_), kFlags);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				outBlocked_ = true;
				break;
			}
			return Error::fromErrno(fmt::format("{}: splice to socket", name_));
		}
		outPos_ += uint64_t(n);
		pipeFull_ = false;
		relayed_.fetch_add(uint64_t(n), std::memory_order_relaxed);
	}
	if (inEof_ && !outShut_ && outPos_ == inPos_) {
		::shutdown(out_, SHUT_WR);
		outShut_ = true;
	}
	return {};
}

Result<bool> Direction::readOnce(int64_t now)
{
	if (!ring_)
		ring_.reset(new uint8_t[cap_]); // lazily: idle directions cost nothing
	size_t off = size_t(inPos_ % cap_);
	size_t room = size_t(std::min<uint64_t>(cap_ - (inPos_ - outPos_), cap_ - off));
	ssize_t n = ::recv(in_, ring_.get() + off, std::min(room, maxRead_), MSG_DONTWAIT);
	if (n < 0) {
		if (errno == EINTR)
			return true;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return false;
		return Error::fromErrno(fmt::format("{}: recv", name_));
	}
	// Stamped when the bytes were taken, not when this pass of the relay began: a pass that
	// first writes the other direction may find bytes here that arrived after its start, and
	// stamping those with the pass's start would release them that much before their delay.
	now = std::max(now, monotonicNs());
	if (n == 0) {
		inEof_ = true;
		finAt_ = std::max(now, txFree_.load()) + delayNs_;
		return false;
	}
	// Serial-line model: the burst starts when the line is free and takes n/bw. The line
	// is shared with the other connections (other relay threads): claim it atomically.
	int64_t dur = bw_ > 0 ? int64_t(U128(uint64_t(n)) * kNsPerSec / bw_) : 0;
	int64_t txStart, txEnd;
	int64_t free = txFree_.load(std::memory_order_relaxed);
	do {
		txStart = std::max(now, free);
		txEnd = txStart + dur;
	} while (bw_ > 0 && !txFree_.compare_exchange_weak(free, txEnd, std::memory_order_relaxed));
	uint64_t start = inPos_;
	inPos_ += uint64_t(n);
	// Back-to-back bursts on a busy line form one linear transmission: merging is exact.
	if (!segs_.empty() && segs_.back().txEnd == txStart &&
	    (bw_ > 0 || segs_.back().txStart == txStart)) {
		segs_.back().end = inPos_;
		segs_.back().txEnd = txEnd;
	} else {
		segs_.push_back({start, inPos_, txStart, txEnd});
	}
	return size_t(n) == std::min(room, maxRead_);
}

void Direction::release(int64_t now)
{
	int64_t t = now - delayNs_;
	while (!segs_.empty()) {
		const Segment &s = segs_.front();
		if (t >= s.txEnd) {
			relPos_ = s.end;
			segs_.pop_front();
			continue;
		}
		if (bw_ > 0 && t > s.txStart) {
			uint64_t sent = uint64_t(U128(uint64_t(t - s.txStart)) * bw_ / kNsPerSec);
			relPos_ = std::max(relPos_, s.start + std::min(sent, s.end - s.start));
		}
		break;
	}
}

} // namespace ferry::link
