// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/wire/connection.h"

#include <poll.h>
#include <sched.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <mutex>

#include "ferry/base/clock.h"
#include "ferry/sys/poll.h"
#include "ferry/wire/tls.h"
#include "wire/deadline.h"
#include "wire/tls_session.h"

namespace ferry {

namespace {

// Receive-side read-ahead. Small frames (requests, headers, the chunk index prefix) are served
// from it so a GetChunk costs one recv, not two; payloads larger than half of it bypass it and
// land directly in the caller's memory.
constexpr size_t kRecvBufSize = 64 << 10;
// How far a read for a header looks ahead. Small, so that a stream of chunk frames costs one
// small read for each header and prefix and one read of the body straight into its place,
// not a second copy of most of every chunk through the buffer; a run of small frames
// (requests) still comes in one read.
constexpr size_t kReadAhead = 2 << 10;

// SO_RCVTIMEO/SO_SNDTIMEO expiry surfaces as EAGAIN on a blocking socket.
int mapTimeout(int err) { return (err == EAGAIN || err == EWOULDBLOCK) ? ETIMEDOUT : err; }

// The first bytes of a TLS record: content type 20..23, then protocol major version 3.
bool looksLikeTlsRecord(const uint8_t *b) { return b[0] >= 0x14 && b[0] <= 0x17 && b[1] == 0x03; }

} // namespace

struct Connection::State {
	UniqueFd fd;
	// After startTls(); borrows fd, so it is declared after it and destroyed first.
	std::unique_ptr<TlsSession> tls;
	std::mutex sendLock; // one frame at a time on the wire
	std::atomic<uint64_t> sent{0};
	std::atomic<uint64_t> received{0};
	// Read-ahead; only the (single) receiving thread touches these.
	std::unique_ptr<uint8_t[]> buf;
	size_t bufPos = 0;
	size_t bufLen = 0;
	std::atomic<int64_t> busyPollNs{0};

	size_t buffered() const { return bufLen - bufPos; }

	Result<bool> socketReadable()
	{
		if (tls && tls->pending() > 0)
			return true;
		FERRY_ASSIGN(short ready, pollOne(fd.get(), POLLIN, 0));
		return ready != 0;
	}

	// The busy-poll window before a receive blocks (setBusyPoll).
	Status spinUntilReadable(int64_t deadlineMs)
	{
		const int64_t window = busyPollNs.load(std::memory_order_relaxed);
		if (window <= 0)
			return {};
		const int64_t until = monotonicNs() + window;
		for (;;) {
			FERRY_ASSIGN(bool ready, socketReadable());
			if (ready)
				return {};
			const int64_t now = monotonicNs();
			if (now >= until || (deadlineMs >= 0 && now / 1000000 >= deadlineMs))
				return {};
			::sched_yield();
		}
	}

	// One recv into dst. deadlineMs < 0: no deadline. Returns bytes read (0 = EOF).
	Result<size_t> recvSome(void *dst, size_t len, int64_t deadlineMs)
	{
		FERRY_TRY(spinUntilReadable(deadlineMs));
		if (tls) {
			FERRY_ASSIGN(size_t n, tls->recv(dst, len, deadlineMs));
			received.fetch_add(n, std::memory_order_relaxed);
			return n;
		}
		for (;;) {
			if (deadlineMs >= 0) {
				FERRY_ASSIGN(short ready, pollOne(fd.get(), POLLIN,
								  wire::pollTimeoutUntil(deadlineMs)));
				if (ready == 0)
					return Error(ETIMEDOUT, "timed out waiting for data");
			}
			ssize_t n = ::recv(fd.get(), dst, len, 0);
			if (n >= 0) {
				received.fetch_add(size_t(n), std::memory_order_relaxed);
				return size_t(n);
			}
			if (errno == EINTR)
				continue;
			return Error::fromErrno("recv", mapTimeout(errno));
		}
	}

	// Makes at least `need` (<= kRecvBufSize) bytes available in the read-ahead buffer without
	// consuming them, so a timeout leaves the stream intact for the next attempt.
	// frameStart: an EOF before any byte is a clean close between frames, not a truncation.
	Status fill(size_t need, int64_t deadlineMs, bool frameStart)
	{
		if (buffered() >= need)
			return {};
		if (bufPos > 0) {
			std::memmove(buf.get(), buf.get() + bufPos, buffered());
			bufLen -= bufPos;
			bufPos = 0;
		}
		while (bufLen < need) {
			const size_t want = std::min(kRecvBufSize - bufLen, std::max(need - bufLen, kReadAhead));
			FERRY_ASSIGN(size_t n, recvSome(buf.get() + bufLen, want, deadlineMs));
			if (n == 0) {
				if (bufLen == 0 && frameStart)
					return Error(ECONNRESET, "peer closed the connection");
				return Error(ECONNRESET, "peer closed mid-frame");
			}
			bufLen += n;
		}
		return {};
	}

	// Reads exactly len bytes: first what the read-ahead holds, then large remainders straight
	// into dst, small ones through the buffer.
	Status readExact(void *dst, size_t len)
	{
		if (len == 0)
			return {}; // empty payloads come with dst == nullptr (empty vector)
		auto *out = static_cast<uint8_t *>(dst);
		size_t done = std::min(len, buffered());
		std::memcpy(out, buf.get() + bufPos, done);
		bufPos += done;
		while (done < len) {
			size_t want = len - done;
			if (want >= kRecvBufSize / 2) {
				FERRY_ASSIGN(size_t n, recvSome(out + done, want, -1));
				if (n == 0)
					return Error::format(ECONNRESET,
							     "peer closed mid-frame (got {} of {} bytes)",
							     done, len);
				done += n;
			} else {
				FERRY_TRY_CTX(fill(want, -1, false), "{} of {} bytes read", done, len);
				std::memcpy(out + done, buf.get() + bufPos, want);
				bufPos += want;
				done += want;
			}
		}
		return {};
	}

	Status sendAll(iovec *iov, size_t iovcnt)
	{
		std::lock_guard lock(sendLock);
		if (tls)
			return tls->sendAll(iov, iovcnt, sent);
		while (iovcnt > 0) {
			msghdr msg{};
			msg.msg_iov = iov;
			msg.msg_iovlen = std::min<size_t>(iovcnt, IOV_MAX);
			// MSG_NOSIGNAL: a vanished peer must be an EPIPE we report, not a SIGPIPE
			// that kills the process.
			ssize_t n = ::sendmsg(fd.get(), &msg, MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				return Error::fromErrno("send", mapTimeout(errno));
			}
			sent.fetch_add(size_t(n), std::memory_order_relaxed);
			// Partial write: skip what went out and resend the rest of the frame.
			size_t left = size_t(n);
			while (iovcnt > 0 && left >= iov->iov_len) {
				left -= iov->iov_len;
				iov++;
				iovcnt--;
			}
			if (iovcnt > 0) {
				iov->iov_base = static_cast<uint8_t *>(iov->iov_base) + left;
				iov->iov_len -= left;
			}
		}
		return {};
	}
};

Connection::Connection() = default;

Connection::Connection(UniqueFd fd) : s_(std::make_unique<State>())
{
	s_->fd = std::move(fd);
	s_->buf.reset(new uint8_t[kRecvBufSize]);
}

Connection::Connection(Connection &&) noexcept = default;
Connection &Connection::operator=(Connection &&) noexcept = default;
Connection::~Connection() = default;

bool Connection::valid() const { return s_ && s_->fd.valid(); }

Status Connection::startTls(const TlsCredentials &creds, int timeoutMs)
{
	if (!valid())
		return Error(EBADF, "start TLS on a closed connection");
	if (!creds.valid())
		return Error(EINVAL, "start TLS: no credentials (load them; TlsMode::Insecure keeps "
				     "the connection plaintext on purpose)");
	if (creds.mode() == TlsMode::Insecure)
		return {};
	if (s_->tls)
		return Error(EALREADY, "start TLS: the connection already uses TLS");
	if (s_->buffered() > 0)
		return Error(EPROTO, "start TLS: plaintext bytes arrived before the handshake");
	bool plaintextPeer = false;
	auto t = TlsSession::handshake(s_->fd.get(), creds, timeoutMs, &plaintextPeer);
	if (!t.ok()) {
		// A plaintext ferry cannot read a TLS alert: tell it in a frame it understands
		// (the mode only: paths are none of an unauthenticated peer's business).
		if (plaintextPeer)
			(void)sendError(0, Error(EPROTO, fmt::format("this side requires TLS ({})",
								       tlsModeName(creds.mode()))));
		// Half a handshake leaves nothing usable; the peer sees EOF.
		shutdown();
		return t.error();
	}
	s_->tls = std::move(t).value();
	return {};
}

bool Connection::encrypted() const { return s_ && s_->tls; }

std::string Connection::peerIdentity() const
{
	return encrypted() ? s_->tls->peerIdentity() : std::string();
}

Status Connection::sendParts(MsgType type, uint64_t requestId, std::span<const iovec> parts)
{
	if (!valid())
		return Error(EBADF, "send on a closed connection");
	uint64_t total = 0;
	for (const iovec &v : parts)
		total += v.iov_len;
	if (total > UINT32_MAX)
		return Error::format(EMSGSIZE, "{} payload of {} bytes does not fit a frame",
				     msgTypeName(type), total);
	FrameHeader h;
	h.type = type;
	h.requestId = requestId;
	h.payloadLen = uint32_t(total);
	uint8_t hdr[kHeaderSize];
	encodeHeader(h, hdr);

	iovec small[8];
	std::vector<iovec> large;
	iovec *iov = small;
	if (parts.size() + 1 > std::size(small)) {
		large.resize(parts.size() + 1);
		iov = large.data();
	}
	iov[0] = {hdr, kHeaderSize};
	std::copy(parts.begin(), parts.end(), iov + 1);
	return s_->sendAll(iov, parts.size() + 1).context(fmt::format("send {}", msgTypeName(type)));
}

Status Connection::sendFrames(std::span<iovec> frames)
{
	if (!valid())
		return Error(EBADF, "send on a closed connection");
	return s_->sendAll(frames.data(), frames.size()).context("send frames");
}

Status Connection::send(MsgType type, uint64_t requestId, std::span<const uint8_t> payload)
{
	iovec part{const_cast<uint8_t *>(payload.data()), payload.size()};
	return sendParts(type, requestId, std::span<const iovec>(&part, payload.empty() ? 0 : 1));
}

Status Connection::sendChunk(uint64_t requestId, uint32_t chunkIndex, std::span<const uint8_t> data)
{
	std::vector<uint8_t> prefix;
	PayloadWriter(prefix).u32(chunkIndex);
	iovec parts[2] = {{prefix.data(), prefix.size()},
			  {const_cast<uint8_t *>(data.data()), data.size()}};
	return sendParts(MsgType::Chunk, requestId, parts);
}

Status Connection::sendError(uint64_t requestId, const ferry::Error &e)
{
	ErrorMsg m{e.code(), e.message()};
	return send(MsgType::Error, requestId, encode(m));
}

Result<FrameHeader> Connection::recvHeader(uint32_t maxPayload, int timeoutMs)
{
	if (!valid())
		return Error(EBADF, "receive on a closed connection");
	int64_t deadline = timeoutMs < 0 ? -1 : wire::monotonicMs() + timeoutMs;
	FERRY_TRY_CTX(s_->fill(kHeaderSize, deadline, true), "recv header");
	const uint8_t *raw = s_->buf.get() + s_->bufPos;
	auto h = decodeHeader(std::span<const uint8_t>(raw, kHeaderSize), maxPayload);
	s_->bufPos += kHeaderSize;
	if (!h.ok()) {
		Error e = h.error();
		if (!s_->tls && looksLikeTlsRecord(raw))
			e = Error(e.code(), fmt::format("{} (the bytes look like TLS: the peer uses TLS "
							"and this side does not)",
							e.message()));
		// The stream cannot be resynchronised after a bad header. Tell the peer why (it
		// may be an older or newer ferry), then close our side. Best effort: the peer may
		// already be gone, and the error we return matters more.
		(void)sendError(0, e);
		shutdown();
		return e.context("recv header");
	}
	return h;
}

Status Connection::recvExact(void *dst, size_t len)
{
	if (!valid())
		return Error(EBADF, "receive on a closed connection");
	return s_->readExact(dst, len).context("recv payload");
}

Result<std::vector<uint8_t>> Connection::recvPayload(const FrameHeader &h)
{
	std::vector<uint8_t> out(h.payloadLen);
	FERRY_TRY_CTX(recvExact(out.data(), out.size()), "{}", msgTypeName(h.type));
	return out;
}

Result<uint32_t> Connection::recvChunkPrefix(const FrameHeader &h, const ChunkGeometry &g)
{
	uint8_t prefix[kChunkPrefixSize];
	FERRY_TRY(recvExact(prefix, sizeof(prefix)));
	return decodeChunkPrefix(h, prefix, g);
}

Status Connection::discard(size_t len)
{
	uint8_t scratch[16 << 10];
	while (len > 0) {
		size_t n = std::min(len, sizeof(scratch));
		FERRY_TRY(recvExact(scratch, n));
		len -= n;
	}
	return {};
}

Status Connection::setIoTimeout(int timeoutMs)
{
	if (!valid())
		return Error(EBADF, "set timeout on a closed connection");
	timeval tv{timeoutMs / 1000, (timeoutMs % 1000) * 1000};
	if (::setsockopt(s_->fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
		return Error::fromErrno("setsockopt SO_RCVTIMEO");
	if (::setsockopt(s_->fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
		return Error::fromErrno("setsockopt SO_SNDTIMEO");
	return {};
}

void Connection::setBusyPoll(std::chrono::microseconds window)
{
	if (s_)
		s_->busyPollNs.store(int64_t(window.count()) * 1000, std::memory_order_relaxed);
}

Result<bool> Connection::readable()
{
	if (!valid())
		return Error(EBADF, "poll a closed connection");
	if (s_->buffered() > 0)
		return true;
	return s_->socketReadable();
}

void Connection::shutdown()
{
	if (valid())
		::shutdown(s_->fd.get(), SHUT_RDWR);
}

int Connection::fd() const { return s_ ? s_->fd.get() : -1; }

UniqueFd Connection::releaseFd()
{
	if (!s_ || s_->tls)
		return UniqueFd();
	return UniqueFd(s_->fd.release());
}

uint64_t Connection::bytesSent() const { return s_ ? s_->sent.load(std::memory_order_relaxed) : 0; }

uint64_t Connection::bytesReceived() const
{
	return s_ ? s_->received.load(std::memory_order_relaxed) : 0;
}

Result<Frame> recvFrame(Connection &c, uint32_t maxPayload, int timeoutMs)
{
	Frame f;
	FERRY_ASSIGN(f.header, c.recvHeader(maxPayload, timeoutMs));
	FERRY_ASSIGN(f.payload, c.recvPayload(f.header));
	return f;
}

} // namespace ferry
