// SPDX-License-Identifier: GPL-2.0-or-later
// The link emulator relays real sockets: integrity, delay, bandwidth, cuts, blocking.
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "ferry/link/link_emulator.h"
#include "support/wire_bytes.h"
#include "ferry/wire/connection.h"
#include "ferry/wire/endpoint.h"

using namespace ferry;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint32_t kLimit = 1 << 20;

uint8_t pattern(uint64_t i) { return uint8_t((i * 2654435761u) >> 13); }

using ferry::test::sendAll;

// A server behind the link plus a client through it.
struct Rig {
	Listener server;
	std::unique_ptr<LinkEmulator> link;

	static Rig make(LinkParams params, Endpoint::Kind upstreamKind = Endpoint::Kind::Tcp)
	{
		Rig r;
		Endpoint up = upstreamKind == Endpoint::Kind::Tcp
				      ? Endpoint::tcp("127.0.0.1", 0)
				      : Endpoint::unixPath(fmt::format("/tmp/ferry-link-test-{}.sock", ::getpid()));
		auto l = Listener::listen(up);
		EXPECT_TRUE(l.ok()) << l.error().message();
		r.server = std::move(l).value();
		auto link = LinkEmulator::start(Endpoint::tcp("127.0.0.1", 0), r.server.boundEndpoint(), params);
		EXPECT_TRUE(link.ok()) << link.error().message();
		r.link = std::move(link).value();
		return r;
	}

	// Connects a client through the link and accepts the relayed connection on the server.
	std::pair<Connection, Connection> connectPair()
	{
		auto c = connectTo(link->endpoint(), 5000);
		EXPECT_TRUE(c.ok()) << c.error().message();
		auto s = server.accept(5000);
		EXPECT_TRUE(s.ok()) << s.error().message();
		return {std::move(c).value(), std::move(s).value()};
	}
};

LinkDirection oneWay(std::chrono::microseconds delay, uint64_t bytesPerSec = 0)
{
	LinkDirection d;
	d.delay = delay;
	d.bytesPerSec = bytesPerSec;
	return d;
}

// Sends `total` pattern bytes over `from` while reading them on `to`; returns the receive
// rate measured from the first to the last byte, and checks every byte.
double transfer(int from, int to, size_t total)
{
	std::thread tx([&] {
		std::vector<uint8_t> buf(1 << 20);
		for (size_t off = 0; off < total;) {
			size_t n = std::min(buf.size(), total - off);
			for (size_t i = 0; i < n; i++)
				buf[i] = pattern(off + i);
			if (!sendAll(from, buf.data(), n)) {
				ADD_FAILURE() << "send: " << strerror(errno);
				return;
			}
			off += n;
		}
	});
	std::vector<uint8_t> buf(1 << 20);
	size_t got = 0;
	size_t firstRead = 0; // arrived before the clock started: not part of the rate
	Clock::time_point first{}, last{};
	while (got < total) {
		pollfd p{to, POLLIN, 0};
		if (::poll(&p, 1, 10000) <= 0) {
			ADD_FAILURE() << "no data for 10 s after " << got << " bytes";
			break;
		}
		ssize_t n = ::recv(to, buf.data(), std::min(buf.size(), total - got), 0);
		if (n <= 0) {
			ADD_FAILURE() << "recv after " << got << " bytes: " << (n == 0 ? "EOF" : strerror(errno));
			break;
		}
		if (got == 0) {
			first = Clock::now();
			firstRead = size_t(n);
		}
		for (ssize_t i = 0; i < n; i++) {
			if (buf[size_t(i)] != pattern(got + size_t(i))) {
				ADD_FAILURE() << "byte " << got + size_t(i) << " corrupted";
				tx.join();
				return 0;
			}
		}
		got += size_t(n);
		last = Clock::now();
	}
	tx.join();
	double secs = std::chrono::duration<double>(last - first).count();
	return secs > 0 ? double(got - firstRead) / secs : 0;
}

// The kernel completes the TCP handshake before the relay accepts and resets, so the reset
// shows up either in connect (SO_ERROR) or in the first receive. Returns the errno seen.
int resetCode(Result<Connection> &c)
{
	if (!c.ok())
		return c.error().code();
	auto h = c->recvHeader(kLimit, 5000);
	return h.ok() ? 0 : h.error().code();
}

} // namespace

class LinkIntegrity : public ::testing::TestWithParam<Endpoint::Kind> {};

TEST_P(LinkIntegrity, RelaysMegabytesByteForByteBothWays)
{
	LinkParams p{oneWay(500us), oneWay(500us)};
	Rig rig = Rig::make(p, GetParam());
	auto [c, s] = rig.connectPair();
	const size_t total = 32u << 20;
	// Both directions at once: full duplex through the relay.
	double upRate = 0;
	std::thread up([&] { upRate = transfer(c.fd(), s.fd(), total); });
	double downRate = transfer(s.fd(), c.fd(), total);
	up.join();
	EXPECT_GT(upRate, 0);
	EXPECT_GT(downRate, 0);
	EXPECT_GE(rig.link->bytesRelayed(), 2 * total);
	EXPECT_EQ(rig.link->acceptedConnections(), 1u);
}

INSTANTIATE_TEST_SUITE_P(Upstream, LinkIntegrity,
			 ::testing::Values(Endpoint::Kind::Tcp, Endpoint::Kind::Unix),
			 [](const auto &info) {
				 return info.param == Endpoint::Kind::Tcp ? "Tcp" : "Unix";
			 });

TEST(LinkEmulator, HoldsTheSetRoundTripTime)
{
	// Asymmetric on purpose: 6 ms up + 14 ms down = 20 ms RTT.
	Rig rig = Rig::make({oneWay(6ms), oneWay(14ms)});
	auto [c, s] = rig.connectPair();
	std::thread echo([&s = s] {
		for (;;) {
			auto f = recvFrame(s, kLimit, 5000);
			if (!f.ok() || f->header.type != MsgType::Ping)
				return;
			if (!s.send(MsgType::Pong, f->header.requestId, f->payload).ok())
				return;
		}
	});
	std::vector<double> rttMs;
	for (int i = 0; i < 25; i++) {
		auto t0 = Clock::now();
		ASSERT_TRUE(c.send(MsgType::Ping, uint64_t(i), encode(PingMsg{uint64_t(i)})).ok());
		auto f = recvFrame(c, kLimit, 5000);
		ASSERT_TRUE(f.ok()) << f.error().message();
		ASSERT_EQ(f->header.type, MsgType::Pong);
		ASSERT_EQ(f->header.requestId, uint64_t(i));
		rttMs.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
	}
	c.shutdown();
	echo.join();
	std::sort(rttMs.begin(), rttMs.end());
	double median = rttMs[rttMs.size() / 2];
	RecordProperty("rtt_median_ms", std::to_string(median));
	std::printf("RTT min %.3f ms, median %.3f ms, max %.3f ms (set: 20 ms)\n", rttMs.front(), median,
		    rttMs.back());
	// 0.2 ms of slack for the measurement, not for the relay: one CI run read 19.915 ms. The
	// relay then stamped bytes with the start of its pass, not when it took them, which let
	// bytes taken late in a pass leave that much early (fixed: Direction::readOnce); the
	// client's two clock reads, on a 2-vCPU VM whose threads move between CPUs, may also
	// differ by some microseconds from the relay's.
	EXPECT_GE(rttMs.front(), 20.0 - 0.2) << "a byte left the link before its delay";
	EXPECT_LE(median, 23.0);
}

// How close to the cap a flow gets depends on the CPU left to the relay (a loaded 2-core CI
// machine gave 18-57 Mbit/s of 100): that is measured by the benchmarks (bench/roles
// BM_RawStream at 1 Gbit/s: 0.92-0.99 of the cap). The tests check what load cannot excuse:
// no flow and no set of flows ever gets more than the cap.
TEST(LinkEmulator, NeverLetsAFlowExceedTheCap)
{
	// 100 Mbit/s = 12.5 MB/s each way; 5 MB takes ~0.4 s.
	const uint64_t rate = 100'000'000 / 8;
	Rig rig = Rig::make({oneWay(1ms, rate), oneWay(1ms, rate)});
	auto [c, s] = rig.connectPair();
	const size_t total = 5'000'000;
	double down = transfer(s.fd(), c.fd(), total);
	double up = transfer(c.fd(), s.fd(), total);
	std::printf("capped 100 Mbit/s: down %.2f Mbit/s, up %.2f Mbit/s\n", down * 8 / 1e6, up * 8 / 1e6);
	EXPECT_LE(down, 1.1 * double(rate));
	EXPECT_LE(up, 1.1 * double(rate));
}

TEST(LinkEmulator, ConnectionsShareTheCapLikeOneLink)
{
	// Two flows over one 100 Mbit/s link get ~50 Mbit/s each, not 100 each: the cap models
	// the link, not each connection (a per-connection cap let multi-connection pulls
	// out-run the emulated link).
	const uint64_t rate = 100'000'000 / 8;
	Rig rig = Rig::make({oneWay(1ms, rate), oneWay(1ms, rate)});
	auto [c1, s1] = rig.connectPair();
	auto [c2, s2] = rig.connectPair();
	const size_t total = 4'000'000;
	double r1 = 0, r2 = 0;
	auto t0 = Clock::now();
	std::thread a([&] { r1 = transfer(s1.fd(), c1.fd(), total); });
	std::thread b([&] { r2 = transfer(s2.fd(), c2.fd(), total); });
	a.join();
	b.join();
	double aggregate = double(2 * total) / std::chrono::duration<double>(Clock::now() - t0).count();
	std::printf("two flows over 100 Mbit/s: %.1f + %.1f Mbit/s, aggregate %.1f Mbit/s\n", r1 * 8 / 1e6,
		    r2 * 8 / 1e6, aggregate * 8 / 1e6);
	EXPECT_LT(aggregate, 1.15 * double(rate));
}

// The relay's throughput on an unlimited link is a benchmark (bench/roles BM_RawStream with
// rtt 0, no cap; docs/benchmarks.md section 3), not a test: it depends on the machine's load.

TEST(LinkEmulator, CutAllMakesBothEndsSeeAnError)
{
	Rig rig = Rig::make({oneWay(2ms), oneWay(2ms)});
	auto [c, s] = rig.connectPair();
	// Traffic in flight at the moment of the cut.
	ASSERT_TRUE(c.send(MsgType::Ping, 1, encode(PingMsg{1})).ok());
	auto f = recvFrame(s, kLimit, 5000);
	ASSERT_TRUE(f.ok());
	EXPECT_EQ(rig.link->activeConnections(), 1u);

	rig.link->cutAll();
	EXPECT_EQ(rig.link->activeConnections(), 0u);
	auto hc = c.recvHeader(kLimit, 5000);
	auto hs = s.recvHeader(kLimit, 5000);
	ASSERT_FALSE(hc.ok());
	ASSERT_FALSE(hs.ok());
	EXPECT_NE(hc.error().code(), ETIMEDOUT) << hc.error().message();
	EXPECT_NE(hs.error().code(), ETIMEDOUT) << hs.error().message();
	EXPECT_EQ(hc.error().code(), ECONNRESET) << hc.error().message();
	EXPECT_EQ(hs.error().code(), ECONNRESET) << hs.error().message();

	// The link itself still works for new connections (a reconnect after a drop).
	auto [c2, s2] = rig.connectPair();
	ASSERT_TRUE(c2.send(MsgType::Ping, 2, encode(PingMsg{2})).ok());
	auto f2 = recvFrame(s2, kLimit, 5000);
	ASSERT_TRUE(f2.ok()) << f2.error().message();
	EXPECT_EQ(f2->header.requestId, 2u);
}

TEST(LinkEmulator, BlockedLinkRefusesNewConnectionsOnly)
{
	Rig rig = Rig::make({});
	auto [c, s] = rig.connectPair();
	rig.link->setBlocked(true);

	auto blocked = connectTo(rig.link->endpoint(), 5000);
	EXPECT_EQ(resetCode(blocked), ECONNRESET);
	auto none = rig.server.accept(50);
	ASSERT_FALSE(none.ok()) << "a blocked link reached the server";
	EXPECT_EQ(none.error().code(), ETIMEDOUT);

	// The existing connection keeps working.
	ASSERT_TRUE(c.send(MsgType::Ping, 3, encode(PingMsg{3})).ok());
	auto f = recvFrame(s, kLimit, 5000);
	ASSERT_TRUE(f.ok()) << f.error().message();

	rig.link->setBlocked(false);
	auto [c2, s2] = rig.connectPair();
	EXPECT_TRUE(c2.valid() && s2.valid());
}

// `from` sends one frame of `type` and half-closes: `to` receives the frame, then the end of
// the stream. *sentAt is when the frame was handed to the link.
void sendThenHalfClose(Connection &from, Connection &to, MsgType type, Clock::time_point *sentAt)
{
	ASSERT_TRUE(from.send(type, 5, {}).ok());
	*sentAt = Clock::now();
	::shutdown(from.fd(), SHUT_WR);
	auto f = recvFrame(to, kLimit, 5000);
	ASSERT_TRUE(f.ok()) << f.error().message();
	EXPECT_EQ(f->header.type, type);
	auto eof = to.recvHeader(kLimit, 5000);
	ASSERT_FALSE(eof.ok());
	EXPECT_EQ(eof.error().code(), ECONNRESET);
	EXPECT_NE(eof.error().message().find("peer closed the connection"), std::string::npos)
		<< eof.error().message();
}

TEST(LinkEmulator, HalfCloseTravelsAfterTheDataAndTheDelay)
{
	Rig rig = Rig::make({oneWay(10ms), oneWay(10ms)});
	auto [c, s] = rig.connectPair();
	Clock::time_point t0;
	ASSERT_NO_FATAL_FAILURE(sendThenHalfClose(c, s, MsgType::Done, &t0));
	EXPECT_GE(Clock::now() - t0, 9ms);

	// The other direction is still open: the reply arrives, then the server's close.
	ASSERT_NO_FATAL_FAILURE(sendThenHalfClose(s, c, MsgType::DoneAck, &t0));
}

TEST(LinkEmulator, UnreachableUpstreamResetsTheClient)
{
	auto l = Listener::listen(Endpoint::tcp("127.0.0.1", 0));
	ASSERT_TRUE(l.ok());
	Endpoint dead = l->boundEndpoint();
	l->close();
	auto link = LinkEmulator::start(Endpoint::tcp("127.0.0.1", 0), dead, {});
	ASSERT_TRUE(link.ok()) << link.error().message();
	auto c = connectTo((*link)->endpoint(), 5000);
	EXPECT_EQ(resetCode(c), ECONNRESET);
}

TEST(LinkParams, SymmetricSplitsTheRttAndConvertsMbit)
{
	LinkParams p = LinkParams::symmetric(std::chrono::milliseconds(30), 800);
	EXPECT_EQ(p.up.delay, std::chrono::microseconds(15000));
	EXPECT_EQ(p.down.delay, std::chrono::microseconds(15000));
	EXPECT_EQ(p.up.bytesPerSec, 100'000'000u);
	EXPECT_EQ(LinkParams::symmetric(std::chrono::milliseconds(0), 0).down.bytesPerSec, 0u);
}
