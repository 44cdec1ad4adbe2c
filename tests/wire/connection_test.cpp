// SPDX-License-Identifier: GPL-2.0-or-later
// Connection, Listener and connectTo over real sockets (socketpair, UNIX, TCP loopback).
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <random>
#include <thread>

#include "ferry/wire/connection.h"
#include "support/wire_bytes.h"
#include "ferry/wire/endpoint.h"

using namespace ferry;
using namespace std::chrono_literals;

namespace {

constexpr uint32_t kLimit = 1 << 20;

std::pair<Connection, UniqueFd> connectionAndRawPeer()
{
	int sv[2];
	EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	return {Connection(UniqueFd(sv[0])), UniqueFd(sv[1])};
}

std::pair<Connection, Connection> connectedPair()
{
	int sv[2];
	EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	return {Connection(UniqueFd(sv[0])), Connection(UniqueFd(sv[1]))};
}

void writeAll(int fd, const std::vector<uint8_t> &b)
{
	size_t off = 0;
	while (off < b.size()) {
		ssize_t n = ::send(fd, b.data() + off, b.size() - off, MSG_NOSIGNAL);
		ASSERT_GT(n, 0) << strerror(errno);
		off += size_t(n);
	}
}

std::vector<uint8_t> rawHeader(MsgType type, uint32_t len, uint16_t version = 1)
{
	return test::headerBytes(type, len, 0, version);
}

// Reads from a raw socket until EOF (the peer shut down); bounded by a poll timeout.
std::vector<uint8_t> readUntilEof(int fd)
{
	std::vector<uint8_t> out;
	uint8_t buf[4096];
	for (;;) {
		pollfd p{fd, POLLIN, 0};
		if (::poll(&p, 1, 5000) <= 0)
			break;
		ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
		if (n <= 0)
			break;
		out.insert(out.end(), buf, buf + n);
	}
	return out;
}

uint8_t patternByte(uint32_t chunk, size_t i) { return uint8_t((chunk * 131 + i * 7 + (i >> 9)) & 0xff); }

} // namespace

TEST(WireConnection, EveryMessageRoundTripsThroughASocket)
{
	auto [a, b] = connectedPair();
	HelloMsg hello{1, 1, 99, "leecher"};
	HelloReplyMsg reply{1, 99, 1 << 24, 1 << 16, HelloReplyMsg::kFlagTracking};
	DirtyListMsg dirty{{1, 5, 255}, {}};
	FinalizedMsg fin{123, {2, 3}, {}};
	ErrorMsg err{EIO, "bad things"};
	PingMsg ping{555};

	ASSERT_TRUE(a.send(MsgType::Hello, 1, encode(hello)).ok());
	ASSERT_TRUE(a.send(MsgType::HelloReply, 2, encode(reply)).ok());
	ASSERT_TRUE(a.send(MsgType::TrackStart, 3, {}).ok());
	ASSERT_TRUE(a.send(MsgType::GetChunk, 4, encode(GetChunkMsg{7})).ok());
	ASSERT_TRUE(a.send(MsgType::DirtyList, 5, encode(dirty)).ok());
	ASSERT_TRUE(a.send(MsgType::Finalized, 6, encode(fin)).ok());
	ASSERT_TRUE(a.sendError(7, Error(err.errnoValue, err.message)).ok());
	ASSERT_TRUE(a.send(MsgType::Ping, 8, encode(ping)).ok());
	ASSERT_TRUE(a.send(MsgType::Done, 9, {}).ok());

	auto next = [&](MsgType type, uint64_t id) {
		auto f = recvFrame(b, kLimit, 5000);
		EXPECT_TRUE(f.ok()) << f.error().message();
		EXPECT_EQ(f->header.type, type);
		EXPECT_EQ(f->header.requestId, id);
		return f.ok() ? f->payload : std::vector<uint8_t>{};
	};
	auto h = decodeHello(next(MsgType::Hello, 1));
	ASSERT_TRUE(h.ok());
	EXPECT_EQ(h->clientName, "leecher");
	EXPECT_EQ(h->resumeSessionId, 99u);
	auto r = decodeHelloReply(next(MsgType::HelloReply, 2));
	ASSERT_TRUE(r.ok());
	EXPECT_EQ(r->chunkSize, 1u << 16);
	EXPECT_TRUE(next(MsgType::TrackStart, 3).empty());
	auto g = decodeGetChunk(next(MsgType::GetChunk, 4), 256);
	ASSERT_TRUE(g.ok());
	EXPECT_EQ(g->chunkIndex, 7u);
	auto d = decodeDirtyList(next(MsgType::DirtyList, 5), 256);
	ASSERT_TRUE(d.ok());
	EXPECT_EQ(d->chunks, dirty.chunks);
	auto f = decodeFinalized(next(MsgType::Finalized, 6), 256);
	ASSERT_TRUE(f.ok());
	EXPECT_EQ(f->chunks, fin.chunks);
	EXPECT_EQ(f->suspendedAtUnixNs, 123u);
	auto e = decodeError(next(MsgType::Error, 7));
	ASSERT_TRUE(e.ok());
	EXPECT_EQ(e->errnoValue, EIO);
	EXPECT_EQ(e->message, "bad things");
	auto p = decodePing(next(MsgType::Ping, 8));
	ASSERT_TRUE(p.ok());
	EXPECT_EQ(p->sendTimeNs, 555u);
	EXPECT_TRUE(next(MsgType::Done, 9).empty());

	EXPECT_EQ(a.bytesSent(), b.bytesReceived());
	EXPECT_GT(a.bytesSent(), 9 * kHeaderSize);
}

TEST(WireConnection, ChunkBytesLandInCallerMemoryByteForByte)
{
	auto [a, b] = connectedPair();
	ChunkGeometry g{3 * (1u << 20) + 1000, 1u << 20};
	std::vector<uint8_t> src(g.regionSize);
	for (size_t i = 0; i < src.size(); i++)
		src[i] = patternByte(uint32_t(i >> 20), i);
	std::vector<uint8_t> dst(g.regionSize, 0);

	std::thread sender([&] {
		for (uint32_t c = g.chunkCount(); c-- > 0;) {
			auto st = a.sendChunk(100 + c, c,
					      std::span(src).subspan(g.chunkOffset(c), g.chunkLength(c)));
			ASSERT_TRUE(st.ok()) << st.error().message();
		}
	});
	for (uint32_t n = 0; n < g.chunkCount(); n++) {
		auto h = b.recvHeader(maxPayloadFor(g.chunkSize), 5000);
		ASSERT_TRUE(h.ok()) << h.error().message();
		auto idx = b.recvChunkPrefix(*h, g);
		ASSERT_TRUE(idx.ok()) << idx.error().message();
		EXPECT_EQ(h->requestId, 100u + *idx);
		ASSERT_TRUE(b.recvExact(dst.data() + g.chunkOffset(*idx), g.chunkLength(*idx)).ok());
	}
	sender.join();
	EXPECT_TRUE(src == dst);
}

TEST(WireConnection, MalformedHeaderIsRejectedAndThePeerToldWhy)
{
	struct Case {
		const char *name;
		std::vector<uint8_t> bytes;
		int code;
		const char *needle;
	};
	std::vector<Case> cases;
	auto badMagic = rawHeader(MsgType::Ping, 8);
	badMagic[1] = 'X';
	cases.push_back({"magic", badMagic, EPROTO, "bad frame magic"});
	auto reserved = rawHeader(MsgType::Ping, 8);
	reserved[23] = 1;
	cases.push_back({"reserved", reserved, EPROTO, "reserved header field"});
	auto type = rawHeader(MsgType::Ping, 8);
	type[6] = 200;
	cases.push_back({"type", type, EPROTO, "unknown message type 200"});
	cases.push_back({"version", rawHeader(MsgType::Hello, 18, 2), EPROTONOSUPPORT,
			 "unsupported protocol version 2; this side speaks 1..1"});
	cases.push_back({"oversized", rawHeader(MsgType::Chunk, kLimit + 1), EMSGSIZE,
			 "exceeds the limit"});
	cases.push_back({"wrong length", rawHeader(MsgType::GetChunk, 3), EPROTO,
			 "requires exactly 4"});

	for (auto &c : cases) {
		SCOPED_TRACE(c.name);
		auto [conn, raw] = connectionAndRawPeer();
		writeAll(raw.get(), c.bytes);
		auto h = conn.recvHeader(kLimit, 5000);
		ASSERT_FALSE(h.ok());
		EXPECT_EQ(h.error().code(), c.code);
		EXPECT_NE(h.error().message().find(c.needle), std::string::npos) << h.error().message();

		// The peer gets an Error frame with the same text, then EOF.
		auto reply = readUntilEof(raw.get());
		ASSERT_GE(reply.size(), kHeaderSize);
		auto rh = decodeHeader(reply, kLimit);
		ASSERT_TRUE(rh.ok()) << rh.error().message();
		EXPECT_EQ(rh->type, MsgType::Error);
		ASSERT_EQ(reply.size(), kHeaderSize + rh->payloadLen);
		auto em = decodeError(std::span(reply).subspan(kHeaderSize));
		ASSERT_TRUE(em.ok());
		EXPECT_EQ(em->errnoValue, c.code);
		EXPECT_NE(em->message.find(c.needle), std::string::npos) << em->message;
	}
}

TEST(WireConnection, TruncatedFrameIsAClearErrorNotAHang)
{
	{
		auto [conn, raw] = connectionAndRawPeer();
		auto b = rawHeader(MsgType::DirtyList, 100);
		b.resize(b.size() + 50, 0);
		writeAll(raw.get(), b);
		raw.reset();
		auto h = conn.recvHeader(kLimit, 5000);
		ASSERT_TRUE(h.ok());
		auto p = conn.recvPayload(*h);
		ASSERT_FALSE(p.ok());
		EXPECT_EQ(p.error().code(), ECONNRESET);
		EXPECT_NE(p.error().message().find("mid-frame"), std::string::npos) << p.error().message();
	}
	{
		// Large payload: the remainder is read straight into the caller's buffer.
		auto [conn, raw] = connectionAndRawPeer();
		auto b = rawHeader(MsgType::Chunk, 1 << 19);
		b.resize(b.size() + 100000, 1);
		std::thread w([&] {
			writeAll(raw.get(), b);
			raw.reset();
		});
		auto h = conn.recvHeader(kLimit, 5000);
		ASSERT_TRUE(h.ok());
		std::vector<uint8_t> dst(h->payloadLen);
		auto st = conn.recvExact(dst.data(), dst.size());
		w.join();
		ASSERT_FALSE(st.ok());
		EXPECT_EQ(st.error().code(), ECONNRESET);
		EXPECT_NE(st.error().message().find("mid-frame"), std::string::npos) << st.error().message();
	}
	{
		auto [conn, raw] = connectionAndRawPeer();
		auto b = rawHeader(MsgType::Ping, 8);
		b.resize(10);
		writeAll(raw.get(), b);
		raw.reset();
		auto h = conn.recvHeader(kLimit, 5000);
		ASSERT_FALSE(h.ok());
		EXPECT_EQ(h.error().code(), ECONNRESET);
		EXPECT_NE(h.error().message().find("mid-frame"), std::string::npos) << h.error().message();
	}
}

TEST(WireConnection, CleanCloseBetweenFramesSaysPeerClosed)
{
	auto [conn, raw] = connectionAndRawPeer();
	raw.reset();
	auto h = conn.recvHeader(kLimit, 5000);
	ASSERT_FALSE(h.ok());
	EXPECT_EQ(h.error().code(), ECONNRESET);
	EXPECT_NE(h.error().message().find("peer closed the connection"), std::string::npos);
}

TEST(WireConnection, VanishedPeerGivesEpipeNotSigpipe)
{
	// Over TCP, the realistic case. Without MSG_NOSIGNAL this test dies of SIGPIPE.
	auto l = Listener::listen(Endpoint::tcp("127.0.0.1", 0));
	ASSERT_TRUE(l.ok()) << l.error().message();
	auto c = connectTo(l->boundEndpoint(), 5000);
	ASSERT_TRUE(c.ok()) << c.error().message();
	{
		auto s = l->accept(5000);
		ASSERT_TRUE(s.ok());
	} // server side closed
	std::vector<uint8_t> payload(1 << 16, 0xab);
	Status st;
	for (int i = 0; i < 10000 && st.ok(); i++)
		st = c->send(MsgType::DirtyList, uint64_t(i), payload);
	ASSERT_FALSE(st.ok()) << "send kept succeeding to a closed peer";
	EXPECT_TRUE(st.error().code() == EPIPE || st.error().code() == ECONNRESET)
		<< st.error().message();
	auto h = c->recvHeader(kLimit, 5000);
	ASSERT_FALSE(h.ok());
	EXPECT_TRUE(h.error().code() == ECONNRESET || h.error().code() == EPIPE) << h.error().message();
}

TEST(WireConnection, RecvHeaderTimesOutAndTheStreamSurvives)
{
	auto [conn, raw] = connectionAndRawPeer();
	auto t0 = std::chrono::steady_clock::now();
	auto h = conn.recvHeader(kLimit, 50);
	auto waited = std::chrono::steady_clock::now() - t0;
	ASSERT_FALSE(h.ok());
	EXPECT_EQ(h.error().code(), ETIMEDOUT);
	EXPECT_GE(waited, 45ms);
	EXPECT_LT(waited, 2s);

	// Half a header, a timeout, then the rest: no byte is lost.
	std::vector<uint8_t> frame = rawHeader(MsgType::Ping, 8);
	auto payload = encode(PingMsg{4242});
	frame.insert(frame.end(), payload.begin(), payload.end());
	writeAll(raw.get(), std::vector<uint8_t>(frame.begin(), frame.begin() + 10));
	h = conn.recvHeader(kLimit, 30);
	ASSERT_FALSE(h.ok());
	EXPECT_EQ(h.error().code(), ETIMEDOUT);
	writeAll(raw.get(), std::vector<uint8_t>(frame.begin() + 10, frame.end()));
	auto f = recvFrame(conn, kLimit, 5000);
	ASSERT_TRUE(f.ok()) << f.error().message();
	auto p = decodePing(f->payload);
	ASSERT_TRUE(p.ok());
	EXPECT_EQ(p->sendTimeNs, 4242u);
}

TEST(WireConnection, IoTimeoutBoundsRecvExact)
{
	auto [conn, raw] = connectionAndRawPeer();
	ASSERT_TRUE(conn.setIoTimeout(50).ok());
	uint8_t b[16];
	auto st = conn.recvExact(b, sizeof(b));
	ASSERT_FALSE(st.ok());
	EXPECT_EQ(st.error().code(), ETIMEDOUT);
}

TEST(WireConnection, ShutdownWakesABlockedReceiver)
{
	auto [conn, raw] = connectionAndRawPeer();
	Status result;
	std::thread t([&] {
		auto h = conn.recvHeader(kLimit, 10000);
		result = h.ok() ? Status() : Status(h.error());
	});
	// The shutdown may land before or after the receiver blocks: either way it must fail.
	conn.shutdown();
	t.join();
	ASSERT_FALSE(result.ok());
	EXPECT_EQ(result.error().code(), ECONNRESET);
}

// Many requests in flight from several sender threads; the server answers in a random order;
// every reply must match its request by requestId and carry the right bytes.
class WirePipelining : public ::testing::TestWithParam<Endpoint::Kind> {};

TEST_P(WirePipelining, OutOfOrderRepliesMatchTheirRequests)
{
	Endpoint ep = GetParam() == Endpoint::Kind::Tcp
			      ? Endpoint::tcp("127.0.0.1", 0)
			      : Endpoint::unixPath(fmt::format("/tmp/ferry-wire-test-{}.sock", ::getpid()));
	auto l = Listener::listen(ep);
	ASSERT_TRUE(l.ok()) << l.error().message();
	ChunkGeometry g{512 * 4096 - 17, 4096};
	const uint32_t n = g.chunkCount();

	std::thread server([&] {
		auto c = l->accept(5000);
		ASSERT_TRUE(c.ok()) << c.error().message();
		std::vector<std::pair<uint64_t, uint32_t>> reqs;
		while (reqs.size() < n) {
			auto f = recvFrame(*c, kLimit, 5000);
			ASSERT_TRUE(f.ok()) << f.error().message();
			ASSERT_EQ(f->header.type, MsgType::GetChunk);
			auto m = decodeGetChunk(f->payload, n);
			ASSERT_TRUE(m.ok()) << m.error().message();
			reqs.emplace_back(f->header.requestId, m->chunkIndex);
		}
		std::shuffle(reqs.begin(), reqs.end(), std::mt19937(7));
		std::vector<uint8_t> data(g.chunkSize);
		for (auto [id, idx] : reqs) {
			for (size_t i = 0; i < g.chunkLength(idx); i++)
				data[i] = patternByte(idx, i);
			auto st = c->sendChunk(id, idx, std::span(data).first(g.chunkLength(idx)));
			ASSERT_TRUE(st.ok()) << st.error().message();
		}
	});

	auto c = connectTo(l->boundEndpoint(), 5000);
	ASSERT_TRUE(c.ok()) << c.error().message();
	// Two threads send interleaved requests on one connection: frames must stay whole.
	auto sendRange = [&](uint32_t from, uint32_t step) {
		for (uint32_t i = from; i < n; i += step)
			ASSERT_TRUE(c->send(MsgType::GetChunk, 1000000 + i, encode(GetChunkMsg{i})).ok());
	};
	std::thread s1(sendRange, 0, 2), s2(sendRange, 1, 2);
	std::vector<uint8_t> region(g.regionSize);
	std::vector<int> seen(n, 0);
	for (uint32_t k = 0; k < n; k++) {
		auto h = c->recvHeader(kLimit, 5000);
		ASSERT_TRUE(h.ok()) << h.error().message();
		auto idx = c->recvChunkPrefix(*h, g);
		ASSERT_TRUE(idx.ok()) << idx.error().message();
		ASSERT_EQ(h->requestId, 1000000u + *idx);
		seen[*idx]++;
		ASSERT_TRUE(c->recvExact(region.data() + g.chunkOffset(*idx), g.chunkLength(*idx)).ok());
	}
	s1.join();
	s2.join();
	server.join();
	EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int s) { return s == 1; }));
	for (uint32_t idx = 0; idx < n; idx++)
		for (size_t i = 0; i < g.chunkLength(idx); i++)
			ASSERT_EQ(region[g.chunkOffset(idx) + i], patternByte(idx, i))
				<< "chunk " << idx << " byte " << i;
}

INSTANTIATE_TEST_SUITE_P(Transports, WirePipelining,
			 ::testing::Values(Endpoint::Kind::Tcp, Endpoint::Kind::Unix),
			 [](const auto &info) {
				 return info.param == Endpoint::Kind::Tcp ? "Tcp" : "Unix";
			 });

TEST(WireListener, PortZeroReportsTheRealPort)
{
	auto l = Listener::listen(Endpoint::tcp("127.0.0.1", 0));
	ASSERT_TRUE(l.ok()) << l.error().message();
	EXPECT_NE(l->boundEndpoint().port, 0);
	EXPECT_EQ(l->boundEndpoint().str(), fmt::format("tcp:127.0.0.1:{}", l->boundEndpoint().port));
}

TEST(WireListener, AcceptTimesOut)
{
	auto l = Listener::listen(Endpoint::tcp("127.0.0.1", 0));
	ASSERT_TRUE(l.ok());
	auto c = l->accept(20);
	ASSERT_FALSE(c.ok());
	EXPECT_EQ(c.error().code(), ETIMEDOUT);
}

TEST(WireListener, ShutdownWakesABlockedAccept)
{
	auto l = Listener::listen(Endpoint::tcp("127.0.0.1", 0));
	ASSERT_TRUE(l.ok());
	int code = 0;
	std::thread t([&] {
		auto c = l->accept(10000);
		code = c.ok() ? 0 : c.error().code();
	});
	l->shutdown();
	t.join();
	EXPECT_EQ(code, ECANCELED);
}

TEST(WireListener, StaleUnixSocketIsReplacedLiveOneIsNot)
{
	std::string path = fmt::format("/tmp/ferry-wire-stale-{}.sock", ::getpid());
	{
		// A socket file whose owner is gone (fd closed without unlink).
		int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
		sockaddr_un sa{};
		sa.sun_family = AF_UNIX;
		std::strcpy(sa.sun_path, path.c_str());
		::unlink(path.c_str());
		ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr *>(&sa), sizeof(sa)), 0);
		::close(fd);
	}
	auto l = Listener::listen(Endpoint::unixPath(path));
	ASSERT_TRUE(l.ok()) << l.error().message();
	auto busy = Listener::listen(Endpoint::unixPath(path));
	ASSERT_FALSE(busy.ok());
	EXPECT_EQ(busy.error().code(), EADDRINUSE);

	auto c = connectTo(Endpoint::unixPath(path), 1000);
	ASSERT_TRUE(c.ok()) << c.error().message();
	l->close();
	EXPECT_NE(::access(path.c_str(), F_OK), 0) << "close() must unlink the socket file";
}

TEST(WireConnect, RefusedAndUnresolvableAreClearErrors)
{
	auto l = Listener::listen(Endpoint::tcp("127.0.0.1", 0));
	ASSERT_TRUE(l.ok());
	Endpoint ep = l->boundEndpoint();
	l->close();
	auto c = connectTo(ep, 1000);
	ASSERT_FALSE(c.ok());
	EXPECT_EQ(c.error().code(), ECONNREFUSED);
	EXPECT_NE(c.error().message().find(ep.str()), std::string::npos) << c.error().message();

	auto u = connectTo(Endpoint::unixPath("/nonexistent/ferry.sock"), 1000);
	ASSERT_FALSE(u.ok());
	EXPECT_EQ(u.error().code(), ENOENT);
}
