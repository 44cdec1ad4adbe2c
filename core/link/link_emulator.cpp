// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/base/clock.h"
#include "ferry/link/link_emulator.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <list>
#include <mutex>
#include <system_error>
#include <thread>

#include "ferry/base/log.h"

namespace ferry {

namespace {

constexpr int64_t kNsPerSec = 1000000000;
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

// SO_LINGER {on, 0} makes close() send RST and drop unsent data: an abrupt cut, as a failed
// link or a killed peer looks to the other side.
void resetAndClose(UniqueFd &fd)
{
	if (!fd)
		return;
	linger l{1, 0};
	::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	fd.reset();
}

Status setNonBlocking(int fd)
{
	int flags = ::fcntl(fd, F_GETFL);
	if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return Error::fromErrno("fcntl O_NONBLOCK");
	return {};
}

// One direction of a relayed connection: bytes read from `in` wait in a ring until the link
// model releases them, then go to `out`.
class Direction {
public:
	// `line` is the transmission schedule shared by every connection over this direction of
	// the link: they share its bandwidth as flows over one real link do.
	Direction(const char *name, const LinkDirection &p, std::atomic<uint64_t> &relayed,
		  std::atomic<int64_t> &line)
		: name_(name), delayNs_(std::chrono::nanoseconds(p.delay).count()),
		  bw_(p.bytesPerSec), relayed_(relayed), txFree_(line)
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

	Status attach(int in, int out)
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

	bool done() const { return outShut_; }
	bool wantsPollOut() const { return outBlocked_; }
	void pollOutReady() { outBlocked_ = false; }

	bool canRead(int64_t now) const
	{
		if (pipeW_)
			return !inEof_ && !pipeFull_;
		if (inEof_ || inPos_ - outPos_ >= cap_ || segs_.size() >= kMaxSegments)
			return false;
		return bw_ == 0 || txFree_ <= now + kMaxQueueNs;
	}

	// Moves whatever the link model allows right now. Error: the connection must be reset.
	Status pump(int64_t now)
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

	// When this direction next needs attention without any fd event; INT64_MAX: never.
	int64_t nextWake(int64_t now) const
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

private:
	struct Segment {
		uint64_t start, end;    // stream offsets [start, end)
		int64_t txStart, txEnd; // when its first byte starts / last byte ends transmission
	};

	Status pumpSplice(int64_t now)
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

	// Returns whether another read may find more data.
	Result<bool> readOnce(int64_t now)
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

	// Advances relPos_ to the last byte whose (transmission end + delay) has passed.
	void release(int64_t now)
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

// One relayed connection and its thread. The thread owns the sockets' I/O; other threads
// only set cut_ and poke wake_.
struct Relay {
	Relay(UniqueFd c, UniqueFd s, const LinkParams &p, std::atomic<uint64_t> &relayed,
	      std::atomic<int64_t> &upLine, std::atomic<int64_t> &downLine)
		: client(std::move(c)), server(std::move(s)), up("up", p.up, relayed, upLine),
		  down("down", p.down, relayed, downLine)
	{
	}

	void run();

	UniqueFd client;
	UniqueFd server;
	UniqueFd wake; // eventfd: cutAll/destructor -> relay thread
	Direction up;
	Direction down;
	std::atomic<bool> cut{false};
	std::atomic<bool> finished{false};
	std::thread thread;
};

void Relay::run()
{
	// splice() into a socket whose peer is gone raises SIGPIPE (it has no MSG_NOSIGNAL).
	// Blocked in this thread only, the signal stays pending here and dies with the thread;
	// the error itself still comes back as EPIPE.
	sigset_t pipeSet;
	sigemptyset(&pipeSet);
	sigaddset(&pipeSet, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipeSet, nullptr);

	bool abort = false;
	Status init = up.attach(client.get(), server.get());
	if (init.ok())
		init = down.attach(server.get(), client.get());
	if (!init.ok()) {
		FERRY_LOG(Warn, "link", "relay setup: {}", init.error().message());
		abort = true;
	}
	while (!abort) {
		if (cut.load()) {
			abort = true;
			break;
		}
		int64_t now = monotonicNs();
		Status st = up.pump(now);
		if (st.ok())
			st = down.pump(now);
		if (!st.ok()) {
			// A reset or error on one side becomes a reset on the other, as end to end.
			FERRY_LOG(Debug, "link", "relay reset: {}", st.error().message());
			abort = true;
			break;
		}
		if (up.done() && down.done())
			break;

		now = monotonicNs();
		// Only fds with interest are polled (fd -1 is ignored), so a hung-up socket we are
		// not reading cannot make ppoll return immediately over and over.
		short cev = short((up.canRead(now) ? POLLIN : 0) | (down.wantsPollOut() ? POLLOUT : 0));
		short sev = short((down.canRead(now) ? POLLIN : 0) | (up.wantsPollOut() ? POLLOUT : 0));
		pollfd fds[3] = {{cev ? client.get() : -1, cev, 0},
				 {sev ? server.get() : -1, sev, 0},
				 {wake.get(), POLLIN, 0}};
		int64_t wakeAt = std::min(up.nextWake(now), down.nextWake(now));
		timespec ts;
		timespec *tsp = nullptr;
		if (wakeAt != INT64_MAX) {
			int64_t d = std::max<int64_t>(0, wakeAt - now);
			ts = {time_t(d / kNsPerSec), long(d % kNsPerSec)};
			tsp = &ts;
		}
		if (::ppoll(fds, 3, tsp, nullptr) < 0 && errno != EINTR) {
			FERRY_LOG(Warn, "link", "ppoll: {}", std::strerror(errno));
			abort = true;
			break;
		}
		if (fds[0].revents & (POLLOUT | POLLERR | POLLHUP))
			down.pollOutReady();
		if (fds[1].revents & (POLLOUT | POLLERR | POLLHUP))
			up.pollOutReady();
	}
	if (abort) {
		resetAndClose(client);
		resetAndClose(server);
	} else {
		client.reset();
		server.reset();
	}
	finished.store(true);
}

} // namespace

struct LinkEmulator::Impl {
	Listener listener;
	Endpoint upstream;
	LinkParams params;
	UniqueFd stopFd; // eventfd: destructor -> acceptor thread
	std::thread acceptor;
	std::atomic<bool> blocked{false};
	std::atomic<uint64_t> relayed{0};
	std::atomic<int64_t> upLine{0}, downLine{0}; // shared transmission schedule per direction
	std::atomic<uint64_t> accepted{0};

	mutable std::mutex lock;
	std::list<std::unique_ptr<Relay>> relays; // guarded by lock

	void acceptLoop();
	void startRelay(Connection client);
	void reapFinished();
	void cutAll();
};

void LinkEmulator::Impl::reapFinished()
{
	std::list<std::unique_ptr<Relay>> done;
	{
		std::lock_guard g(lock);
		for (auto it = relays.begin(); it != relays.end();) {
			auto next = std::next(it);
			if ((*it)->finished.load())
				done.splice(done.end(), relays, it);
			it = next;
		}
	}
	for (auto &r : done)
		r->thread.join();
}

void LinkEmulator::Impl::startRelay(Connection clientConn)
{
	UniqueFd client = clientConn.releaseFd();
	if (blocked.load()) {
		resetAndClose(client);
		return;
	}
	auto up = connectTo(upstream, 5000);
	if (!up.ok()) {
		FERRY_LOG(Warn, "link", "upstream {}: {}", upstream.str(), up.error().message());
		resetAndClose(client);
		return;
	}
	UniqueFd server = up->releaseFd();
	auto relay = std::make_unique<Relay>(std::move(client), std::move(server), params, relayed,
						   upLine, downLine);
	relay->wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	Status st;
	if (!relay->wake)
		st = Error::fromErrno("eventfd");
	if (st.ok())
		st = setNonBlocking(relay->client.get());
	if (st.ok())
		st = setNonBlocking(relay->server.get());
	if (!st.ok()) {
		FERRY_LOG(Warn, "link", "relay setup: {}", st.error().message());
		resetAndClose(relay->client);
		resetAndClose(relay->server);
		return;
	}
	Relay *r = relay.get();
	std::lock_guard g(lock);
	try {
		r->thread = std::thread([r] { r->run(); });
	} catch (const std::system_error &e) {
		FERRY_LOG(Warn, "link", "relay thread: {}", e.what());
		resetAndClose(r->client);
		resetAndClose(r->server);
		return;
	}
	relays.push_back(std::move(relay));
}

void LinkEmulator::Impl::acceptLoop()
{
	for (;;) {
		pollfd fds[2] = {{listener.fd(), POLLIN, 0}, {stopFd.get(), POLLIN, 0}};
		if (::poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			FERRY_LOG(Error, "link", "poll: {}", std::strerror(errno));
			return;
		}
		if (fds[1].revents)
			return;
		reapFinished();
		if (!fds[0].revents)
			continue;
		auto c = listener.accept(0);
		if (!c.ok()) {
			if (c.error().code() == ETIMEDOUT)
				continue;
			FERRY_LOG(Warn, "link", "accept: {}", c.error().message());
			if (c.error().code() == ECANCELED)
				return;
			continue;
		}
		accepted.fetch_add(1);
		startRelay(std::move(c).value());
	}
}

void LinkEmulator::Impl::cutAll()
{
	std::list<std::unique_ptr<Relay>> all;
	{
		std::lock_guard g(lock);
		all.swap(relays);
	}
	for (auto &r : all) {
		r->cut.store(true);
		uint64_t one = 1;
		// The eventfd counter cannot overflow from a handful of writes; EAGAIN is harmless.
		(void)!::write(r->wake.get(), &one, sizeof(one));
	}
	for (auto &r : all)
		r->thread.join();
}

LinkParams LinkParams::symmetric(std::chrono::microseconds rtt, double mbitPerSec)
{
	LinkDirection d;
	d.delay = rtt / 2;
	d.bytesPerSec = mbitPerSec > 0 ? uint64_t(mbitPerSec * 1e6 / 8) : 0;
	return {d, d};
}

LinkEmulator::LinkEmulator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<LinkEmulator>> LinkEmulator::start(const Endpoint &listenAt,
							   const Endpoint &upstream,
							   LinkParams params)
{
	auto impl = std::make_unique<Impl>();
	FERRY_ASSIGN(impl->listener, Listener::listen(listenAt));
	impl->upstream = upstream;
	impl->params = params;
	impl->stopFd.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	if (!impl->stopFd)
		return Error::fromErrno("eventfd");
	Impl *p = impl.get();
	try {
		impl->acceptor = std::thread([p] { p->acceptLoop(); });
	} catch (const std::system_error &e) {
		return Error(e.code().value(), fmt::format("link acceptor thread: {}", e.what()));
	}
	return std::unique_ptr<LinkEmulator>(new LinkEmulator(std::move(impl)));
}

LinkEmulator::~LinkEmulator()
{
	uint64_t one = 1;
	(void)!::write(impl_->stopFd.get(), &one, sizeof(one));
	impl_->acceptor.join();
	impl_->cutAll();
	impl_->listener.close();
}

Endpoint LinkEmulator::endpoint() const { return impl_->listener.boundEndpoint(); }

void LinkEmulator::cutAll() { impl_->cutAll(); }

void LinkEmulator::setBlocked(bool blocked) { impl_->blocked.store(blocked); }

uint64_t LinkEmulator::bytesRelayed() const { return impl_->relayed.load(); }

size_t LinkEmulator::activeConnections() const
{
	std::lock_guard g(impl_->lock);
	return size_t(std::count_if(impl_->relays.begin(), impl_->relays.end(),
				    [](const auto &r) { return !r->finished.load(); }));
}

uint64_t LinkEmulator::acceptedConnections() const { return impl_->accepted.load(); }

} // namespace ferry
