// SPDX-License-Identifier: GPL-2.0-or-later
// io_uring against plain syscalls on ferry's two hot paths, from the same binary and run as the
// baselines in bench_roles.cpp (docs/benchmarks.md 13.2). Built only when liburing is
// installed: ferry itself does not use io_uring.
//  - BM_UringRoundTrip/KIB/MODE: BM_RawRoundTrip's 32-byte request answered by one chunk, each
//    of the two threads sending and receiving through a ring of its own, the send and the
//    receive that follows it in one submission. MODE 0: submit and wait in one io_uring_enter;
//    1: submit, then busy-poll the completion queue (no waiting syscall); 2: both rings share
//    one SQPOLL kernel thread that submits for them, the threads sleep until a completion;
//    3: SQPOLL and busy-polling threads (three spinners).
//  - BM_RawChunkStream/WAITALL: 64 KiB chunks streamed one way over one loopback TCP
//    connection with send() and recv() (1: with MSG_WAITALL, 0: without, a recv per piece that
//    has arrived): the plain-syscall figures BM_UringStream compares with.
//    Unlike BM_RawStream/0/0 (1 MiB sends through the link emulator's relay) it has the same
//    shape as BM_UringStream.
//  - BM_UringStream/DEPTH/MODE: the same stream through a ring on each side, up to DEPTH
//    chunks per submission, linked so that they leave and land in stream order. MODE, sender
//    and receiver: 0 send and recv; 1 zero-copy send (IORING_OP_SEND_ZC) and recv; 2 zero-copy
//    send from registered buffers and recv; 3 send and READ_FIXED into registered buffers.
// Every chunk carries its index in its first and last 8 bytes, checked on arrival, and every
// 64th is compared whole, so a broken variant fails instead of reporting a fast nonsense.
#include <liburing.h>

#include <benchmark/benchmark.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cassert>
#include <chrono>
#include <cstring>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "baselines.h"
#include "ferry/base/result.h"
#include "ferry/wire/endpoint.h"

using namespace ferry;
using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kRequestBytes = 32;
constexpr size_t kStreamChunk = 64 * 1024;
constexpr uint64_t kStreamChunks = (256ull << 20) / kStreamChunk; // BM_RawStream/0/0's 256 MiB
constexpr uint64_t kCheckWholeEvery = 64;

// Chunk `index` carries index in its first 8 bytes and ~index in its last 8 (len >= 16).
void stamp(uint8_t *chunk, size_t len, uint64_t index)
{
	const uint64_t tail = ~index;
	std::memcpy(chunk, &index, 8);
	std::memcpy(chunk + len - 8, &tail, 8);
}

// A received chunk against what was sent: its stamps, and with `whole` every byte between
// them against `pattern` (what the sender's buffers hold outside the stamps).
Status checkChunk(const uint8_t *chunk, std::span<const uint8_t> pattern, uint64_t index, bool whole)
{
	const size_t len = pattern.size();
	uint64_t head, tail;
	std::memcpy(&head, chunk, 8);
	std::memcpy(&tail, chunk + len - 8, 8);
	if (head != index || tail != ~index)
		return Error::format(EIO, "chunk {}: stamps {:#x}/{:#x}, not its index", index, head, tail);
	if (whole && std::memcmp(chunk + 8, pattern.data() + 8, len - 16) != 0)
		return Error::format(EIO, "chunk {}: payload differs from what was sent", index);
	return {};
}

struct Completion {
	uint64_t tag;
	int res;
	unsigned flags;
};

// One io_uring instance: its submission and completion rings and their fd. Move-only.
// Teardown (io_uring_queue_exit) unmaps the rings and closes the fd, which cancels what is
// still in flight; so a ring is declared after the buffers and before the sockets its
// requests use, and is torn down before them.
class Ring {
public:
	struct Options {
		bool spin = false;   // busy-poll the completion queue instead of waiting in the kernel
		bool sqpoll = false; // a kernel thread submits; io_uring_enter only wakes it
		int shareSqThreadOf = -1; // with sqpoll: the ring fd whose SQPOLL thread to share
	};

	static Result<Ring> create(const Options &o, unsigned entries = 64)
	{
		io_uring_params p{};
		if (o.sqpoll) {
			p.flags |= IORING_SETUP_SQPOLL;
			p.sq_thread_idle = 2000; // ms: the thread does not go to sleep within a benchmark
			if (o.shareSqThreadOf >= 0) {
				p.flags |= IORING_SETUP_ATTACH_WQ;
				p.wq_fd = unsigned(o.shareSqThreadOf);
			}
		}
		auto ring = std::make_unique<io_uring>();
		int err = io_uring_queue_init_params(entries, ring.get(), &p);
		if (err < 0)
			return Error::fromErrno(o.sqpoll ? "io_uring_queue_init (SQPOLL)" : "io_uring_queue_init", -err);
		return Ring(Owned(ring.release()), o);
	}

	int fd() const { return ring_->ring_fd; }

	bool supports(int opcode) const
	{
		io_uring_probe *probe = io_uring_get_probe_ring(ring_.get());
		const bool yes = probe && io_uring_opcode_supported(probe, opcode);
		io_uring_free_probe(probe);
		return yes;
	}

	// Pins `buffers` for READ_FIXED and fixed-buffer sends (buffer index = position in the
	// span). They must outlive the ring.
	Status registerBuffers(std::span<const iovec> buffers)
	{
		int err = io_uring_register_buffers(ring_.get(), buffers.data(), unsigned(buffers.size()));
		return err < 0 ? Error::fromErrno("io_uring_register_buffers", -err) : Status();
	}

	// A free submission entry. Callers queue fewer entries between submits than the ring has.
	io_uring_sqe *entry()
	{
		io_uring_sqe *sqe = io_uring_get_sqe(ring_.get());
		assert(sqe);
		return sqe;
	}

	// Submits what is queued. Waiting rings without SQPOLL also wait, in the same syscall,
	// until `completions` completions are there to reap.
	Status submit(unsigned completions)
	{
		int err = opts_.spin || opts_.sqpoll ? io_uring_submit(ring_.get())
						     : io_uring_submit_and_wait(ring_.get(), completions);
		return err < 0 ? Error::fromErrno("io_uring_submit", -err) : Status();
	}

	Result<Completion> next()
	{
		io_uring_cqe *cqe = nullptr;
		int err;
		if (opts_.spin) {
			// Without IORING_SETUP_COOP_TASKRUN (not set) peeking an empty queue makes no
			// syscall: the kernel posts completions by interrupting the spinning thread.
			while ((err = io_uring_peek_cqe(ring_.get(), &cqe)) == -EAGAIN) {
			}
		} else {
			err = io_uring_wait_cqe(ring_.get(), &cqe);
		}
		if (err < 0)
			return Error::fromErrno("io_uring_wait_cqe", -err);
		Completion c{cqe->user_data, cqe->res, cqe->flags};
		io_uring_cqe_seen(ring_.get(), cqe);
		return c;
	}

private:
	struct Exit {
		void operator()(io_uring *r) const
		{
			io_uring_queue_exit(r);
			delete r;
		}
	};
	using Owned = std::unique_ptr<io_uring, Exit>;

	Ring(Owned ring, const Options &o) : ring_(std::move(ring)), opts_(o) {}

	Owned ring_;
	Options opts_;
};

// --- Round trips ----------------------------------------------------------------------------

// A send or receive of `len` bytes, re-issued for its remainder until it has moved them all
// (a stream socket may move fewer bytes than asked, even with MSG_WAITALL).
struct Transfer {
	bool send;
	uint8_t *buf;
	size_t len;
	size_t done = 0;
};

void queue(Ring &ring, int fd, Transfer &t, uint64_t tag)
{
	io_uring_sqe *sqe = ring.entry();
	if (t.send)
		io_uring_prep_send(sqe, fd, t.buf + t.done, t.len - t.done, MSG_NOSIGNAL | MSG_WAITALL);
	else
		io_uring_prep_recv(sqe, fd, t.buf + t.done, t.len - t.done, MSG_WAITALL);
	io_uring_sqe_set_data64(sqe, tag);
}

// Issues every transfer in one submission and returns once each has moved all its bytes.
Status runTransfers(Ring &ring, int fd, std::span<Transfer> transfers)
{
	for (size_t i = 0; i < transfers.size(); i++)
		queue(ring, fd, transfers[i], i);
	FERRY_TRY(ring.submit(unsigned(transfers.size())));
	for (size_t open = transfers.size(); open > 0;) {
		FERRY_ASSIGN(Completion c, ring.next());
		Transfer &t = transfers[c.tag];
		const char *what = t.send ? "send" : "recv";
		if (c.res < 0)
			return Error::fromErrno(what, -c.res);
		if (c.res == 0)
			return Error(ECONNRESET, fmt::format("{}: connection closed", what));
		t.done += size_t(c.res);
		if (t.done < t.len) {
			queue(ring, fd, t, c.tag);
			FERRY_TRY(ring.submit(1));
		} else {
			open--;
		}
	}
	return {};
}

// The server side: answers each request (byte 0: 1 go on, 0 stop; bytes 8-15: its sequence
// number) with `pattern` stamped with that number, and receives the next request in the same
// submission as the reply.
Status serveRoundTrips(Listener &listener, Ring::Options opts, std::span<const uint8_t> pattern)
{
	std::vector<uint8_t> reply(pattern.begin(), pattern.end()), req(kRequestBytes);
	FERRY_ASSIGN(Connection c, listener.accept(10000));
	FERRY_ASSIGN(Ring ring, Ring::create(opts));
	Transfer first{false, req.data(), req.size()};
	Status s = runTransfers(ring, c.fd(), {&first, 1});
	while (s.ok() && req[0] == 1) {
		uint64_t seq;
		std::memcpy(&seq, req.data() + 8, 8);
		stamp(reply.data(), reply.size(), seq);
		Transfer t[] = {{true, reply.data(), reply.size()}, {false, req.data(), req.size()}};
		s = runTransfers(ring, c.fd(), t);
	}
	if (!s.ok())
		::shutdown(c.fd(), SHUT_RDWR); // the client is not left waiting for a reply
	return s;
}

void BM_UringRoundTrip(benchmark::State &state)
{
	const size_t chunk = size_t(state.range(0)) * 1024;
	const int mode = int(state.range(1));
	const int rounds = 2000; // per iteration, as BM_RawRoundTrip
	Ring::Options opts{.spin = mode % 2 == 1, .sqpoll = mode >= 2};

	std::vector<uint8_t> pattern(chunk), req(kRequestBytes), reply(chunk);
	bench::fillRandom(pattern.data(), pattern.size(), 5);
	auto l = Listener::listen(Endpoint::tcp("127.0.0.1", 0));
	if (!l.ok()) {
		state.SkipWithError(l.error().message().c_str());
		return;
	}
	auto ring = Ring::create(opts);
	if (!ring.ok()) {
		state.SkipWithError(ring.error().message().c_str());
		return;
	}
	// With SQPOLL the server's ring shares this ring's kernel thread: one spinner, not two.
	Ring::Options serverOpts = opts;
	serverOpts.shareSqThreadOf = ring->fd();
	Status served;
	std::thread server([&] { served = serveRoundTrips(*l, serverOpts, pattern); });

	std::vector<double> lat;
	double totalSec = 0;
	auto c = connectTo(l->boundEndpoint());
	Status ran = c.ok() ? Status() : c.error();
	uint64_t seq = 0;
	for (auto _ : state) {
		if (!ran.ok())
			break;
		const auto t0 = Clock::now();
		for (int i = 0; i < rounds && ran.ok(); i++, seq++) {
			req[0] = 1;
			std::memcpy(req.data() + 8, &seq, 8);
			const auto a = Clock::now();
			Transfer t[] = {{true, req.data(), req.size()}, {false, reply.data(), reply.size()}};
			ran = runTransfers(*ring, c->fd(), t);
			lat.push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
			if (ran.ok())
				ran = checkChunk(reply.data(), pattern, seq, seq % kCheckWholeEvery == 0);
		}
		const double sec = std::chrono::duration<double>(Clock::now() - t0).count();
		state.SetIterationTime(sec);
		totalSec += sec;
	}
	if (ran.ok()) {
		req[0] = 0;
		(void)bench::sendAll(c->fd(), req.data(), req.size());
	} else if (c.ok()) {
		::shutdown(c->fd(), SHUT_RDWR);
	} else {
		l->shutdown(); // the server is still in accept
	}
	server.join();
	if (!ran.ok() || !served.ok()) {
		state.SkipWithError((ran.ok() ? served.error().context("server") : ran.error()).message().c_str());
		return;
	}
	bench::reportRoundTrips(state, lat, double(lat.size()) * double(chunk), totalSec);
}

// --- Streams --------------------------------------------------------------------------------

// One stream over a fresh loopback TCP connection: `send` runs on a thread of its own with the
// connected socket, `receive` on this one with the accepted socket. Returns the seconds from
// the sender's start until the receiver holds every byte (as BM_RawStream times it).
template<class Send, class Receive>
Result<double> timeStream(Send send, Receive receive)
{
	FERRY_ASSIGN(Listener l, Listener::listen(Endpoint::tcp("127.0.0.1", 0)));
	Status sent;
	const auto t0 = Clock::now();
	std::thread sender([&] {
		auto c = connectTo(l.boundEndpoint());
		if (!c.ok()) {
			sent = c.error();
			return;
		}
		sent = send(c->fd());
		if (!sent.ok()) {
			::shutdown(c->fd(), SHUT_RDWR);
			return;
		}
		uint8_t ack; // the receiver has every byte
		(void)::recv(c->fd(), &ack, 1, 0);
	});
	Result<double> seconds = 0.0;
	if (auto c = l.accept(10000); !c.ok()) {
		seconds = c.error().context("accept");
		l.close(); // resets a connection made too late
	} else if (Status got = receive(c->fd()); !got.ok()) {
		seconds = got.error().context("receiver");
		::shutdown(c->fd(), SHUT_RDWR);
	} else {
		seconds = std::chrono::duration<double>(Clock::now() - t0).count();
		uint8_t ack = 1;
		(void)::send(c->fd(), &ack, 1, MSG_NOSIGNAL);
	}
	sender.join();
	// When both fail, one side's error is usually the other's cause: say both.
	if (!sent.ok() && !seconds.ok())
		return Error(seconds.error().code(),
			     fmt::format("{}; sender: {}", seconds.error().message(), sent.error().message()));
	if (!sent.ok())
		return sent.error().context("sender");
	return seconds;
}

template<class Send, class Receive>
void runStream(benchmark::State &state, Send send, Receive receive)
{
	double totalSec = 0, bytes = 0;
	for (auto _ : state) {
		auto sec = timeStream(send, receive);
		if (!sec.ok()) {
			state.SkipWithError(sec.error().message().c_str());
			return;
		}
		state.SetIterationTime(*sec);
		totalSec += *sec;
		bytes += double(kStreamChunks * kStreamChunk);
	}
	state.counters["MB_per_s"] = bytes / totalSec / 1e6;
}

Status syscallSend(int fd, std::span<const uint8_t> pattern)
{
	std::vector<uint8_t> buf(pattern.begin(), pattern.end());
	for (uint64_t i = 0; i < kStreamChunks; i++) {
		stamp(buf.data(), buf.size(), i);
		if (!bench::sendAll(fd, buf.data(), buf.size()))
			return Error::fromErrno(fmt::format("send chunk {}", i));
	}
	return {};
}

Status syscallReceive(int fd, std::span<const uint8_t> pattern, int recvFlags)
{
	std::vector<uint8_t> buf(pattern.size());
	for (uint64_t i = 0; i < kStreamChunks; i++) {
		if (!bench::recvAll(fd, buf.data(), buf.size(), recvFlags))
			return Error(EIO, fmt::format("recv chunk {}: connection closed or failed", i));
		FERRY_TRY(checkChunk(buf.data(), pattern, i, i % kCheckWholeEvery == 0));
	}
	return {};
}

void BM_RawChunkStream(benchmark::State &state)
{
	std::vector<uint8_t> pattern(kStreamChunk);
	bench::fillRandom(pattern.data(), pattern.size(), 7);
	runStream(state, [&](int fd) { return syscallSend(fd, pattern); },
		  [&](int fd) { return syscallReceive(fd, pattern, state.range(0) ? MSG_WAITALL : 0); });
}

enum class StreamMode { Copy = 0, ZeroCopy = 1, ZeroCopyFixed = 2, ReadFixed = 3 };

std::vector<iovec> slotsOf(std::vector<uint8_t> &bufs, size_t slots)
{
	std::vector<iovec> v(slots);
	for (size_t s = 0; s < slots; s++)
		v[s] = {bufs.data() + s * kStreamChunk, kStreamChunk};
	return v;
}

// Sends the stream's chunks, `depth` per submission, linked so that they leave in order (two
// sends on one socket in flight unlinked may interleave their bytes). The next batch waits for
// this one's sends; a zero-copy send's buffer is stamped again only after its notification,
// which comes once the data has left the buffer (on loopback: once the receiver has copied
// it), so the batches alternate between two halves of 2 x depth buffers.
Status uringSend(int fd, StreamMode mode, unsigned depth, std::span<const uint8_t> pattern)
{
	const unsigned slots = 2 * depth;
	std::vector<uint8_t> bufs(slots * kStreamChunk);
	for (unsigned s = 0; s < slots; s++)
		std::memcpy(bufs.data() + s * kStreamChunk, pattern.data(), kStreamChunk);
	std::vector<unsigned> owed(slots, 0); // completions still to come per buffer
	FERRY_ASSIGN(Ring ring, Ring::create({}));
	const bool zeroCopy = mode == StreamMode::ZeroCopy || mode == StreamMode::ZeroCopyFixed;
	if (zeroCopy && !ring.supports(IORING_OP_SEND_ZC))
		return Error(EOPNOTSUPP, "IORING_OP_SEND_ZC not supported by this kernel");
	if (mode == StreamMode::ZeroCopyFixed)
		FERRY_TRY(ring.registerBuffers(slotsOf(bufs, slots)));

	unsigned sending = 0;
	auto reap = [&]() -> Status {
		FERRY_ASSIGN(Completion c, ring.next());
		if (c.flags & IORING_CQE_F_NOTIF) {
			owed[c.tag]--;
			return {};
		}
		sending--;
		if (!(c.flags & IORING_CQE_F_MORE)) // no notification follows
			owed[c.tag]--;
		if (c.res < 0)
			return Error::fromErrno("send", -c.res);
		if (size_t(c.res) != kStreamChunk)
			return Error::format(EIO, "send: {} of {} bytes in a linked batch", c.res, kStreamChunk);
		return {};
	};
	for (uint64_t next = 0, batch = 0; next < kStreamChunks; batch++) {
		const unsigned n = unsigned(std::min<uint64_t>(depth, kStreamChunks - next));
		io_uring_sqe *sqe = nullptr;
		for (unsigned k = 0; k < n; k++) {
			const unsigned slot = unsigned(batch % 2) * depth + k;
			while (owed[slot] > 0)
				FERRY_TRY(reap());
			uint8_t *buf = bufs.data() + slot * kStreamChunk;
			stamp(buf, kStreamChunk, next + k);
			sqe = ring.entry();
			const int flags = MSG_NOSIGNAL | MSG_WAITALL;
			if (mode == StreamMode::ZeroCopy)
				io_uring_prep_send_zc(sqe, fd, buf, kStreamChunk, flags, 0);
			else if (mode == StreamMode::ZeroCopyFixed)
				io_uring_prep_send_zc_fixed(sqe, fd, buf, kStreamChunk, flags, 0, slot);
			else
				io_uring_prep_send(sqe, fd, buf, kStreamChunk, flags);
			io_uring_sqe_set_data64(sqe, slot);
			sqe->flags |= IOSQE_IO_LINK;
			owed[slot] = 1;
		}
		sqe->flags &= ~IOSQE_IO_LINK; // the batch's last send ends the chain
		sending = n;
		FERRY_TRY(ring.submit(n));
		while (sending > 0)
			FERRY_TRY(reap());
		next += n;
	}
	// Every notification, so that no buffer is freed while the kernel may still read it.
	for (unsigned s = 0; s < slots; s++)
		while (owed[s] > 0)
			FERRY_TRY(reap());
	return {};
}

// Receives the stream into `depth` chunk buffers (chunk i in buffer i % depth), up to `depth`
// receives per submission, linked so that they fill the buffers in stream order. A short
// receive (READ_FIXED has no MSG_WAITALL) cancels the rest of its chain; the next submission
// goes on from where it stopped. Each chunk is checked once complete.
Status uringReceive(int fd, StreamMode mode, unsigned depth, std::span<const uint8_t> pattern)
{
	std::vector<uint8_t> bufs(depth * kStreamChunk);
	FERRY_ASSIGN(Ring ring, Ring::create({}));
	const bool fixed = mode == StreamMode::ReadFixed;
	if (fixed)
		FERRY_TRY(ring.registerBuffers(slotsOf(bufs, depth)));
	const uint64_t total = kStreamChunks * kStreamChunk;
	struct Op {
		size_t len;
		int res;
	};
	std::vector<Op> ops(depth);
	for (uint64_t pos = 0; pos < total;) {
		unsigned n = 0;
		io_uring_sqe *sqe = nullptr;
		for (uint64_t at = pos; n < depth && at < total; n++) {
			const uint64_t chunk = at / kStreamChunk;
			const size_t off = at % kStreamChunk, len = kStreamChunk - off;
			const unsigned slot = unsigned(chunk % depth);
			uint8_t *dst = bufs.data() + slot * kStreamChunk + off;
			sqe = ring.entry();
			if (fixed)
				io_uring_prep_read_fixed(sqe, fd, dst, unsigned(len), 0, int(slot));
			else
				io_uring_prep_recv(sqe, fd, dst, len, MSG_WAITALL);
			io_uring_sqe_set_data64(sqe, n);
			sqe->flags |= IOSQE_IO_LINK;
			ops[n] = {len, 0};
			at += len;
		}
		sqe->flags &= ~IOSQE_IO_LINK;
		FERRY_TRY(ring.submit(n));
		for (unsigned i = 0; i < n; i++) {
			FERRY_ASSIGN(Completion c, ring.next());
			ops[c.tag].res = c.res;
		}
		for (unsigned i = 0; i < n; i++) {
			const Op &op = ops[i];
			if (op.res < 0)
				return Error::fromErrno(fixed ? "read_fixed" : "recv", -op.res);
			if (op.res == 0)
				return Error::format(ECONNRESET, "stream ended at byte {} of {}", pos, total);
			pos += uint64_t(op.res);
			if (pos % kStreamChunk == 0) {
				const uint64_t chunk = pos / kStreamChunk - 1;
				FERRY_TRY(checkChunk(bufs.data() + (chunk % depth) * kStreamChunk, pattern, chunk,
						     chunk % kCheckWholeEvery == 0));
			}
			if (size_t(op.res) < op.len)
				break; // the rest of the chain was cancelled
		}
	}
	return {};
}

void BM_UringStream(benchmark::State &state)
{
	const unsigned depth = unsigned(state.range(0));
	const auto mode = StreamMode(state.range(1));
	std::vector<uint8_t> pattern(kStreamChunk);
	bench::fillRandom(pattern.data(), pattern.size(), 7);
	runStream(state, [&](int fd) { return uringSend(fd, mode, depth, pattern); },
		  [&](int fd) { return uringReceive(fd, mode, depth, pattern); });
}

} // namespace

// chunk KiB, mode (0 wait, 1 busy-poll, 2 SQPOLL + wait, 3 SQPOLL + busy-poll)
// (3, three spinners on two cores, takes ~30 s at 64 KiB here: only that size)
BENCHMARK(BM_UringRoundTrip)
	->ArgsProduct({{4, 64, 1024}, {0, 1, 2}})
	->Args({64, 3})
	->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(2);
// 5 iterations of 256 MiB (BM_RawStream runs 2): one takes ~0.1 s here, too short to trust alone
BENCHMARK(BM_RawChunkStream)->ArgNames({"waitall"})->Arg(1)->Arg(0)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(5);
// chunks per submission, mode (0 send/recv, 1 SEND_ZC/recv, 2 registered SEND_ZC/recv,
// 3 send/READ_FIXED)
BENCHMARK(BM_UringStream)
	->ArgsProduct({{1, 4, 16}, {0, 1, 2, 3}})
	->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(5);
