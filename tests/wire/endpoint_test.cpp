// SPDX-License-Identifier: GPL-2.0-or-later
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <thread>

#include "ferry/sys/fd.h"
#include "ferry/wire/connection.h"
#include "ferry/wire/endpoint.h"

using namespace ferry;

TEST(Endpoint, ParsesEveryAcceptedForm)
{
	struct Case {
		const char *in;
		Endpoint::Kind kind;
		const char *host;
		uint16_t port;
		const char *path;
		const char *str;
	};
	const Case cases[] = {
		{"tcp:10.0.0.1:4000", Endpoint::Kind::Tcp, "10.0.0.1", 4000, "", "tcp:10.0.0.1:4000"},
		{"tcp://host.example:1", Endpoint::Kind::Tcp, "host.example", 1, "", "tcp:host.example:1"},
		{"localhost:65535", Endpoint::Kind::Tcp, "localhost", 65535, "", "tcp:localhost:65535"},
		{":0", Endpoint::Kind::Tcp, "", 0, "", "tcp::0"},
		{"[::1]:80", Endpoint::Kind::Tcp, "::1", 80, "", "tcp:[::1]:80"},
		{"tcp:[fe80::1]:80", Endpoint::Kind::Tcp, "fe80::1", 80, "", "tcp:[fe80::1]:80"},
		{"unix:/run/ferry.sock", Endpoint::Kind::Unix, "", 0, "/run/ferry.sock",
		 "unix:/run/ferry.sock"},
		{"unix:///run/ferry.sock", Endpoint::Kind::Unix, "", 0, "/run/ferry.sock",
		 "unix:/run/ferry.sock"},
		{"unix:rel/x.sock", Endpoint::Kind::Unix, "", 0, "rel/x.sock", "unix:rel/x.sock"},
		{"unix:////run/x.sock", Endpoint::Kind::Unix, "", 0, "//run/x.sock", "unix:////run/x.sock"},
		{"[fe80::1%eth0]:22", Endpoint::Kind::Tcp, "fe80::1%eth0", 22, "", "tcp:[fe80::1%eth0]:22"},
		{"[::ffff:10.0.0.1]:9", Endpoint::Kind::Tcp, "::ffff:10.0.0.1", 9, "", "tcp:[::ffff:10.0.0.1]:9"},
		{"tcp:vm_1-a.example:7", Endpoint::Kind::Tcp, "vm_1-a.example", 7, "", "tcp:vm_1-a.example:7"},
	};
	for (const Case &c : cases) {
		SCOPED_TRACE(c.in);
		auto e = parseEndpoint(c.in);
		ASSERT_TRUE(e.ok()) << e.error().message();
		EXPECT_EQ(e->kind, c.kind);
		EXPECT_EQ(e->host, c.host);
		EXPECT_EQ(e->port, c.port);
		EXPECT_EQ(e->path, c.path);
		EXPECT_EQ(e->str(), c.str);
		// str() is itself parseable into the same endpoint.
		auto again = parseEndpoint(e->str());
		ASSERT_TRUE(again.ok());
		EXPECT_EQ(again->str(), e->str());
	}
}

TEST(Endpoint, RejectsMalformedInputWithAReason)
{
	const char *bad[] = {"", "nohost", "host:", "host:65536", "host:12x", "host:-1", "::1:80",
			     "[::1", "[::1]80", "unix:", "unix://relative", "tcp:"};
	for (const char *s : bad) {
		SCOPED_TRACE(s);
		auto e = parseEndpoint(s);
		ASSERT_FALSE(e.ok()) << "accepted as " << e->str();
		EXPECT_EQ(e.error().code(), EINVAL);
		EXPECT_NE(e.error().message().find("endpoint"), std::string::npos);
	}
	auto longPath = parseEndpoint("unix:/" + std::string(200, 'p'));
	ASSERT_FALSE(longPath.ok());
	EXPECT_NE(longPath.error().message().find("longer than"), std::string::npos);
}

TEST(Endpoint, RejectsHostsThatWouldNotPrintBackTheSame)
{
	// Each of these used to be accepted, and its str() parsed to another endpoint or not at
	// all (tests/fuzz/endpoint_fuzz.cpp checks that round trip on every input it makes).
	const std::string bad[] = {
		"[[[[2]:707", "tcp:a b:80", "tcp:[]:80", "[localhost]:80", "[1.2.3.4]:80",
		"[::1%]:80", "[::1%a b]:80", "[::1]]:80", "tcp:a]:80", "tcp:a[:80", "tcp:a/b:80",
		"tcp:a\tb:80", "tcp:a%b:80", "tcp:h\xc3\xa9:80", std::string("[::1\0x]:80", 10),
		std::string("tcp:a\0b:80", 10), "tcp:" + std::string(254, 'h') + ":80",
	};
	for (const std::string &s : bad) {
		SCOPED_TRACE(s);
		auto e = parseEndpoint(s);
		ASSERT_FALSE(e.ok()) << "accepted as " << e->str();
		EXPECT_EQ(e.error().code(), EINVAL);
	}
	auto longest = parseEndpoint("tcp:" + std::string(253, 'h') + ":80");
	ASSERT_TRUE(longest.ok()) << longest.error().message();
}

TEST(Endpoint, PrintsAUnixPathWithLeadingSlashesSoItParsesBack)
{
	Endpoint e = Endpoint::unixPath("//run/x.sock");
	auto again = parseEndpoint(e.str());
	ASSERT_TRUE(again.ok()) << again.error().message();
	EXPECT_EQ(again->path, e.path);
}

// --- socket buffers -------------------------------------------------------------------------

namespace {

// Lowers the host-wide caps net.core.[rw]mem_max to a stock Debian host's 212992 for the
// test's duration and restores them: this machine may have raised them, which would hide
// what an operator's host does.
class StockBufferCaps {
public:
	StockBufferCaps()
	{
		for (auto &[path, saved] : caps_) {
			std::ifstream in(path);
			if (!(in >> saved))
				return;
		}
		lowered_ = write("212992", "212992");
	}
	~StockBufferCaps()
	{
		if (lowered_)
			(void)write(caps_[0].second, caps_[1].second);
	}
	bool lowered() const { return lowered_; }

private:
	bool write(const std::string &w, const std::string &r)
	{
		std::ofstream(caps_[0].first) << w;
		std::ofstream(caps_[1].first) << r;
		std::string now;
		return bool(std::ifstream(caps_[0].first) >> now) && now == w;
	}
	std::pair<std::string, std::string> caps_[2] = {{"/proc/sys/net/core/wmem_max", ""},
							{"/proc/sys/net/core/rmem_max", ""}};
	bool lowered_ = false;
};

int bufferOf(int fd, int opt)
{
	int v = 0;
	socklen_t len = sizeof(v);
	EXPECT_EQ(::getsockopt(fd, SOL_SOCKET, opt, &v, &len), 0);
	return v;
}

// Drops CAP_NET_ADMIN from the calling thread's effective set (capabilities are per thread).
bool dropNetAdminOnThisThread()
{
	__user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
	__user_cap_data_struct data[2]{};
	if (::syscall(SYS_capget, &hdr, data) != 0)
		return false;
	data[CAP_NET_ADMIN / 32].effective &= ~(1u << (CAP_NET_ADMIN % 32));
	return ::syscall(SYS_capset, &hdr, data) == 0;
}

} // namespace

TEST(SocketBuffers, TcpConnectionsGetTheFullBuffersUnderAStockHostsCaps)
{
	if (::geteuid() != 0)
		GTEST_SKIP() << "needs root: the FORCE options and lowering the host's caps";
	// With the caps lowered this is a stock host; where /proc/sys is read-only, the host as it
	// is (the FORCE options do not depend on the caps either way).
	StockBufferCaps caps;
	auto l = Listener::listen(Endpoint::tcp("127.0.0.1", 0));
	ASSERT_TRUE(l.ok()) << l.error().message();
	auto c = connectTo(l->boundEndpoint(), 5000);
	ASSERT_TRUE(c.ok()) << c.error().message();
	auto s = l->accept(5000);
	ASSERT_TRUE(s.ok()) << s.error().message();
	// The kernel doubles what it is given (bookkeeping); clamped, it would be 2 * 212992.
	for (int fd : {c->fd(), s->fd()}) {
		EXPECT_EQ(bufferOf(fd, SO_SNDBUF), 2 * kSocketBufferBytes);
		EXPECT_EQ(bufferOf(fd, SO_RCVBUF), 2 * kSocketBufferBytes);
	}
}

TEST(SocketBuffers, WithoutNetAdminUnderStockCapsATcpSocketKeepsAutotuning)
{
	if (::geteuid() != 0)
		GTEST_SKIP() << "needs root: lowering the host's caps";
	StockBufferCaps caps;
	if (!caps.lowered())
		GTEST_SKIP() << "cannot lower net.core.[rw]mem_max here (read-only /proc/sys?): the fallback needs caps below 4 MiB";
	Result<bool> tcp = false, unix = false;
	int tcpRcv = 0, unixSnd = 0;
	std::thread([&] {
		ASSERT_TRUE(dropNetAdminOnThisThread());
		UniqueFd t(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
		UniqueFd u(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
		ASSERT_TRUE(t && u);
		tcp = setSocketBuffer(t.get(), SocketBuffer::Receive, kSocketBufferBytes);
		unix = setSocketBuffer(u.get(), SocketBuffer::Send, kSocketBufferBytes);
		tcpRcv = bufferOf(t.get(), SO_RCVBUF);
		unixSnd = bufferOf(u.get(), SO_SNDBUF);
	}).join();
	ASSERT_TRUE(tcp.ok()) << tcp.error().message();
	ASSERT_TRUE(unix.ok()) << unix.error().message();
	// TCP: not set at all (a set buffer, clamped, would read 2 * 212992 and stop autotuning);
	// it starts at tcp_rmem's default and grows with the connection.
	EXPECT_FALSE(*tcp);
	EXPECT_NE(tcpRcv, 2 * 212992);
	// UNIX has no autotuning: it gets the cap.
	EXPECT_FALSE(*unix);
	EXPECT_EQ(unixSnd, 2 * 212992);
}

// A relay's peer link (ferryd) leaves TCP to autotune: no buffer set on either end, so the
// kernel sizes the window by what the receiver takes, rather than fixed 4 MiB buffers filling
// up in front of a QEMU that loads slower than the link.
TEST(SocketBuffers, AutotunedSetsNoBufferWhereLargeSetsBoth)
{
	auto fresh = [] { return UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)); };
	UniqueFd reference = fresh(), autotuned = fresh();
	ASSERT_TRUE(reference && autotuned);
	ASSERT_TRUE(tuneStreamSocket(autotuned.get(), TcpBuffers::Autotuned).ok());
	// Unconnected, so nothing autotunes yet: the kernel's defaults, exactly.
	EXPECT_EQ(bufferOf(autotuned.get(), SO_SNDBUF), bufferOf(reference.get(), SO_SNDBUF));
	EXPECT_EQ(bufferOf(autotuned.get(), SO_RCVBUF), bufferOf(reference.get(), SO_RCVBUF));
	if (::geteuid() == 0) { // the FORCE options: exactly what was asked, doubled
		UniqueFd large = fresh();
		ASSERT_TRUE(tuneStreamSocket(large.get(), TcpBuffers::Large).ok());
		EXPECT_EQ(bufferOf(large.get(), SO_SNDBUF), 2 * kSocketBufferBytes);
		EXPECT_EQ(bufferOf(large.get(), SO_RCVBUF), 2 * kSocketBufferBytes);
	}
}

// ...and connectTo and a Listener pass the choice on, to both ends of a connection.
TEST(SocketBuffers, AutotunedConnectionsSetNoBufferOnEitherEnd)
{
	if (::geteuid() != 0)
		GTEST_SKIP() << "needs root: without the FORCE options a Large buffer may be left unset too";
	long wmemMax = 0;
	{
		std::ifstream in("/proc/sys/net/ipv4/tcp_wmem");
		long lo = 0, mid = 0;
		in >> lo >> mid >> wmemMax;
	}
	if (wmemMax >= 2L * kSocketBufferBytes)
		GTEST_SKIP() << "tcp_wmem's maximum (" << wmemMax << ") lets autotuning reach what a set buffer reads";
	auto l = Listener::listen(Endpoint::tcp("127.0.0.1", 0));
	ASSERT_TRUE(l.ok()) << l.error().message();
	l->setTcpBuffers(TcpBuffers::Autotuned);
	auto c = connectTo(l->boundEndpoint(), 5000, TcpBuffers::Autotuned);
	ASSERT_TRUE(c.ok()) << c.error().message();
	auto s = l->accept(5000);
	ASSERT_TRUE(s.ok()) << s.error().message();
	for (int fd : {c->fd(), s->fd()}) {
		const char *side = fd == c->fd() ? "connecting end" : "accepted end";
		// Autotuning grows the send buffer up to tcp_wmem's maximum at most; a set one reads
		// twice what was set.
		EXPECT_NE(bufferOf(fd, SO_SNDBUF), 2 * kSocketBufferBytes) << side;
		int nodelay = 0;
		socklen_t len = sizeof(nodelay);
		ASSERT_EQ(::getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &len), 0);
		EXPECT_EQ(nodelay, 1) << side;
	}
}
