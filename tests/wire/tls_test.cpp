// SPDX-License-Identifier: GPL-2.0-or-later
// Mutual TLS on Connection over real sockets with real handshakes: frames byte for byte, full
// duplex, who is refused and why, timeouts, shutdown, and the credential files' errors.
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include <gnutls/gnutls.h>

#include "ferry/wire/connection.h"
#include "ferry/wire/endpoint.h"
#include "ferry/wire/tls.h"
#include "support/result_checks.h"
#include "support/wire_bytes.h"

using namespace ferry;
using ferry::test::failsWith;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint32_t kChunk = 1 << 20;
const uint32_t kLimit = maxPayloadFor(kChunk);
// Generous: the machine is shared with other builds; a refusal is never slow, only a hang is.
constexpr int kHandshakeMs = 20000;

uint8_t patternByte(uint32_t seed, size_t i) { return uint8_t((seed * 131 + i * 7 + (i >> 9)) & 0xff); }

std::vector<uint8_t> pattern(uint32_t seed, size_t len)
{
	std::vector<uint8_t> v(len);
	for (size_t i = 0; i < len; i++)
		v[i] = patternByte(seed, i);
	return v;
}

std::pair<UniqueFd, UniqueFd> socketPair()
{
	int sv[2];
	EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

// client, server over loopback TCP (what a migration uses) or a UNIX socketpair.
std::pair<Connection, Connection> connectedPair(bool tcp = false)
{
	if (!tcp) {
		auto [a, b] = socketPair();
		return {Connection(std::move(a)), Connection(std::move(b))};
	}
	auto l = Listener::listen(Endpoint::tcp("127.0.0.1", 0));
	EXPECT_TRUE(l.ok()) << l.error().message();
	auto c = connectTo(l->boundEndpoint(), 5000);
	EXPECT_TRUE(c.ok()) << c.error().message();
	auto s = l->accept(5000);
	EXPECT_TRUE(s.ok()) << s.error().message();
	return {std::move(c).value(), std::move(s).value()};
}

struct Handshakes {
	Status client;
	Status server;
};

// Both ends at once, as two hosts would.
Handshakes handshake(Connection &client, const TlsCredentials &cc, Connection &server,
		     const TlsCredentials &sc, int timeoutMs = kHandshakeMs)
{
	Handshakes h;
	std::thread t([&] { h.server = server.startTls(sc, timeoutMs); });
	h.client = client.startTls(cc, timeoutMs);
	t.join();
	return h;
}

std::string messageOf(const Status &st) { return st.ok() ? "ok" : st.error().message(); }

void writeText(const std::string &path, const std::string &text)
{
	std::ofstream(path, std::ios::trunc) << text;
}

// Copies bytes between two sockets in both directions; the client-to-server direction can be
// held back to a byte budget, which is how a test cuts a TLS record in two.
class Relay {
public:
	Relay(UniqueFd toClient, UniqueFd toServer) : c_(std::move(toClient)), s_(std::move(toServer))
	{
		up_ = std::thread([this] { pumpUp(); });
		down_ = std::thread([this] { pumpDown(); });
	}
	~Relay()
	{
		{
			std::lock_guard l(m_);
			stop_ = true;
		}
		cv_.notify_all();
		::shutdown(c_.get(), SHUT_RDWR);
		::shutdown(s_.get(), SHUT_RDWR);
		up_.join();
		down_.join();
	}

	// Client-to-server bytes passed so far.
	uint64_t passedUp()
	{
		std::lock_guard l(m_);
		return passed_;
	}
	// From now on pass at most n more client-to-server bytes (SIZE_MAX: no limit).
	void allowUp(size_t n)
	{
		{
			std::lock_guard l(m_);
			budget_ = n;
		}
		cv_.notify_all();
	}
	bool waitPassedUp(uint64_t total)
	{
		std::unique_lock l(m_);
		return cv_.wait_for(l, 10s, [&] { return passed_ >= total; });
	}

private:
	static bool writeAll(int fd, const uint8_t *p, size_t n) { return test::sendAll(fd, p, n); }
	void pumpUp()
	{
		uint8_t buf[64 << 10];
		for (;;) {
			// Wait for data first and size the read after, so a budget set while we
			// wait applies to the bytes that arrive.
			pollfd p{c_.get(), POLLIN, 0};
			if (::poll(&p, 1, -1) < 0)
				return;
			size_t want;
			{
				std::unique_lock l(m_);
				cv_.wait(l, [&] { return stop_ || budget_ > 0; });
				if (stop_)
					return;
				want = std::min(sizeof(buf), budget_);
			}
			ssize_t n = ::recv(c_.get(), buf, want, 0);
			if (n <= 0 || !writeAll(s_.get(), buf, size_t(n)))
				return;
			{
				std::lock_guard l(m_);
				passed_ += uint64_t(n);
				if (budget_ != SIZE_MAX)
					budget_ -= size_t(n);
			}
			cv_.notify_all();
		}
	}
	void pumpDown()
	{
		uint8_t buf[64 << 10];
		for (;;) {
			ssize_t n = ::recv(s_.get(), buf, sizeof(buf), 0);
			if (n <= 0 || !writeAll(c_.get(), buf, size_t(n)))
				return;
		}
	}

	UniqueFd c_, s_;
	std::mutex m_;
	std::condition_variable cv_;
	bool stop_ = false;
	size_t budget_ = SIZE_MAX;
	uint64_t passed_ = 0;
	std::thread up_, down_;
};

// A TLS peer that is not ferry, for what ferry itself never does: a client with no
// certificate, or a server presenting a client certificate. Empty file names present nothing.
// Returns the handshake's result and, when that succeeded, the first receive's (in TLS 1.3 a
// client learns only there that the server refused it).
struct RawResult {
	int handshake = 0;
	int firstRecv = 0;
};

RawResult rawGnutlsPeer(int fd, bool server, const std::string &ca, const std::string &cert,
			const std::string &key)
{
	RawResult out;
	gnutls_certificate_credentials_t cred;
	gnutls_certificate_allocate_credentials(&cred);
	if (!ca.empty())
		gnutls_certificate_set_x509_trust_file(cred, ca.c_str(), GNUTLS_X509_FMT_PEM);
	if (!cert.empty())
		gnutls_certificate_set_x509_key_file(cred, cert.c_str(), key.c_str(), GNUTLS_X509_FMT_PEM);
	gnutls_session_t s;
	gnutls_init(&s, server ? GNUTLS_SERVER : GNUTLS_CLIENT);
	gnutls_priority_set_direct(s, "NORMAL:-VERS-ALL:+VERS-TLS1.3", nullptr);
	gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred);
	gnutls_transport_set_int(s, fd);
	gnutls_handshake_set_timeout(s, kHandshakeMs);
	do
		out.handshake = gnutls_handshake(s);
	while (out.handshake < 0 && !gnutls_error_is_fatal(out.handshake));
	if (out.handshake == 0) {
		char b[64];
		out.firstRecv = int(gnutls_record_recv(s, b, sizeof(b)));
	}
	gnutls_deinit(s);
	gnutls_certificate_free_credentials(cred);
	return out;
}

} // namespace

// Two PKIs: "a" is the deployment's, "b" another CA's, for the refusals.
class Tls : public ::testing::Test {
protected:
	void SetUp() override
	{
		char tmpl[] = "/tmp/ferry-tls-test-XXXXXX";
		ASSERT_NE(::mkdtemp(tmpl), nullptr);
		root_ = tmpl;
		a_ = root_ + "/a";
		b_ = root_ + "/b";
		auto st = writeThrowawayPki(a_);
		ASSERT_TRUE(st.ok()) << st.error().message();
		st = writeThrowawayPki(b_);
		ASSERT_TRUE(st.ok()) << st.error().message();
	}
	void TearDown() override
	{
		std::error_code ec;
		std::filesystem::remove_all(root_, ec);
	}

	TlsCredentials load(TlsMode mode, const std::string &path, TlsRole role)
	{
		auto c = TlsCredentials::load(TlsConfig{mode, path}, role);
		if (!c.ok()) {
			ADD_FAILURE() << "load " << path << ": " << c.error().message();
			return TlsCredentials();
		}
		return std::move(c).value();
	}
	TlsCredentials x509(const std::string &dir, TlsRole role) { return load(TlsMode::X509, dir, role); }

	// A directory holding `ca`'s CA certificate and `own`'s certificate and key for role.
	std::string mixedDir(const std::string &name, const std::string &ca, const std::string &own,
			     TlsRole role)
	{
		std::string dir = root_ + "/" + name;
		std::filesystem::create_directory(dir);
		std::string who = role == TlsRole::Server ? "server" : "client";
		std::filesystem::copy_file(ca + "/ca-cert.pem", dir + "/ca-cert.pem");
		std::filesystem::copy_file(own + "/" + who + "-cert.pem", dir + "/" + who + "-cert.pem");
		std::filesystem::copy_file(own + "/" + who + "-key.pem", dir + "/" + who + "-key.pem");
		return dir;
	}

	// Both ends trust CA a, but `foreign`'s certificate and key come from CA b: the handshake
	// over loopback TCP that a refusal test inspects.
	struct ForeignHandshake {
		Connection client, server;
		Handshakes h;
	};
	ForeignHandshake handshakeWithForeign(TlsRole foreign)
	{
		const bool client = foreign == TlsRole::Client;
		std::string dir = mixedDir(client ? "client-b" : "server-b", a_, b_, foreign);
		auto [c, s] = connectedPair(true);
		auto cc = x509(client ? dir : a_, TlsRole::Client), sc = x509(client ? a_ : dir, TlsRole::Server);
		Handshakes h = handshake(c, cc, s, sc);
		return {std::move(c), std::move(s), h};
	}

	// An x509 session whose client-to-server bytes pass through a Relay the test can count
	// and hold back. Members go in reverse: the relay before the connections.
	struct RelayedSession {
		Connection client, server;
		std::unique_ptr<Relay> relay;
		Handshakes h;
	};
	RelayedSession relayedSession()
	{
		auto [c1, c2] = socketPair();
		auto [s1, s2] = socketPair();
		RelayedSession s{Connection(std::move(c1)), Connection(std::move(s2)),
				 std::make_unique<Relay>(std::move(c2), std::move(s1)), {}};
		auto cc = x509(a_, TlsRole::Client), sc = x509(a_, TlsRole::Server);
		s.h = handshake(s.client, cc, s.server, sc);
		return s;
	}

	std::string root_, a_, b_;
};

TEST_F(Tls, ThrowawayPkiHasTheLibvirtLayoutWithPrivateKeys)
{
	for (const char *f : {"ca-cert.pem", "server-cert.pem", "server-key.pem", "client-cert.pem",
			      "client-key.pem"}) {
		struct stat st;
		ASSERT_EQ(::stat((a_ + "/" + f).c_str(), &st), 0) << f;
		bool key = std::string_view(f).ends_with("-key.pem");
		EXPECT_EQ(st.st_mode & 0777, key ? 0600u : 0644u) << f;
	}
	EXPECT_NE(::access((a_ + "/ca-key.pem").c_str(), F_OK), 0) << "the CA key must not be kept";
}

class TlsTransport : public Tls, public ::testing::WithParamInterface<bool> {};

TEST_P(TlsTransport, FramesRoundTripByteForByte)
{
	auto [client, server] = connectedPair(GetParam());
	auto cc = x509(a_, TlsRole::Client), sc = x509(a_, TlsRole::Server);
	auto h = handshake(client, cc, server, sc);
	ASSERT_TRUE(h.client.ok()) << messageOf(h.client);
	ASSERT_TRUE(h.server.ok()) << messageOf(h.server);
	EXPECT_TRUE(client.encrypted());
	EXPECT_TRUE(server.encrypted());
	EXPECT_NE(server.peerIdentity().find("x509 CN=ferry throwaway client"), std::string::npos)
		<< server.peerIdentity();
	EXPECT_NE(client.peerIdentity().find("x509 CN=ferry throwaway server"), std::string::npos)
		<< client.peerIdentity();

	// Many small iovecs of odd sizes, 1 MiB chunks, and several frames in one gathered write.
	std::vector<std::vector<uint8_t>> parts;
	std::vector<iovec> iov;
	for (uint32_t i = 0; i < 40; i++) {
		parts.push_back(pattern(i, size_t(i) * i * 37 + 1));
		iov.push_back({parts.back().data(), parts.back().size()});
	}
	std::vector<uint8_t> whole;
	for (auto &p : parts)
		whole.insert(whole.end(), p.begin(), p.end());
	std::vector<uint8_t> chunks[3] = {pattern(100, kChunk), pattern(101, kChunk), pattern(102, 12345)};
	auto ping = encode(PingMsg{77});
	auto err = encode(ErrorMsg{EIO, "far side"});
	std::vector<uint8_t> framed(2 * kHeaderSize + ping.size() + err.size());
	FrameHeader fh;
	fh.type = MsgType::Ping;
	fh.requestId = 900;
	fh.payloadLen = uint32_t(ping.size());
	encodeHeader(fh, framed.data());
	std::memcpy(framed.data() + kHeaderSize, ping.data(), ping.size());
	fh.type = MsgType::Error;
	fh.requestId = 901;
	fh.payloadLen = uint32_t(err.size());
	encodeHeader(fh, framed.data() + kHeaderSize + ping.size());
	std::memcpy(framed.data() + 2 * kHeaderSize + ping.size(), err.data(), err.size());

	std::thread sender([&] {
		ASSERT_TRUE(client.send(MsgType::Hello, 1, encode(HelloMsg{1, 1, 7, "leecher"})).ok());
		ASSERT_TRUE(client.send(MsgType::TrackStart, 2, {}).ok());
		ASSERT_TRUE(client.sendParts(MsgType::DirtyList, 3, iov).ok());
		for (uint32_t c = 0; c < 3; c++) {
			auto st = client.sendChunk(10 + c, c, chunks[c]);
			ASSERT_TRUE(st.ok()) << st.error().message();
		}
		iovec frames[1] = {{framed.data(), framed.size()}};
		ASSERT_TRUE(client.sendFrames(frames).ok());
	});

	auto f = recvFrame(server, kLimit, 10000);
	ASSERT_TRUE(f.ok()) << f.error().message();
	auto hello = decodeHello(f->payload);
	ASSERT_TRUE(hello.ok());
	EXPECT_EQ(hello->clientName, "leecher");
	f = recvFrame(server, kLimit, 10000);
	ASSERT_TRUE(f.ok()) << f.error().message();
	EXPECT_EQ(f->header.type, MsgType::TrackStart);
	EXPECT_TRUE(f->payload.empty());
	f = recvFrame(server, kLimit, 10000);
	ASSERT_TRUE(f.ok()) << f.error().message();
	EXPECT_EQ(f->header.requestId, 3u);
	EXPECT_TRUE(f->payload == whole);
	ChunkGeometry g{2 * uint64_t(kChunk) + 12345, kChunk};
	for (uint32_t c = 0; c < 3; c++) {
		auto hdr = server.recvHeader(kLimit, 10000);
		ASSERT_TRUE(hdr.ok()) << hdr.error().message();
		EXPECT_EQ(hdr->requestId, 10u + c);
		auto idx = server.recvChunkPrefix(*hdr, g);
		ASSERT_TRUE(idx.ok()) << idx.error().message();
		ASSERT_EQ(*idx, c);
		std::vector<uint8_t> got(g.chunkLength(c));
		ASSERT_TRUE(server.recvExact(got.data(), got.size()).ok());
		EXPECT_TRUE(got == chunks[c]) << "chunk " << c;
	}
	f = recvFrame(server, kLimit, 10000);
	ASSERT_TRUE(f.ok()) << f.error().message();
	EXPECT_EQ(f->header.requestId, 900u);
	EXPECT_EQ(decodePing(f->payload)->sendTimeNs, 77u);
	f = recvFrame(server, kLimit, 10000);
	ASSERT_TRUE(f.ok()) << f.error().message();
	EXPECT_EQ(decodeError(f->payload)->message, "far side");
	sender.join();
	EXPECT_FALSE(client.releaseFd().valid()) << "a TLS session cannot leave with its socket";
	// Plaintext bytes on both counters.
	EXPECT_EQ(client.bytesSent(), server.bytesReceived());
	EXPECT_EQ(client.bytesSent(), 8 * kHeaderSize + encode(HelloMsg{1, 1, 7, "leecher"}).size() +
					      whole.size() + 3 * 4 + 2 * kChunk + 12345 + ping.size() +
					      err.size());
}

INSTANTIATE_TEST_SUITE_P(Transports, TlsTransport, ::testing::Values(true, false),
			 [](const auto &info) { return info.param ? "Tcp" : "Unix"; });

TEST_F(Tls, FullDuplexWithConcurrentSendersAndReceivers)
{
	auto [client, server] = connectedPair(true);
	auto cc = x509(a_, TlsRole::Client), sc = x509(a_, TlsRole::Server);
	auto h = handshake(client, cc, server, sc);
	ASSERT_TRUE(h.client.ok() && h.server.ok()) << messageOf(h.client) << " / " << messageOf(h.server);

	// Each side: two sender threads (256 KiB chunks, small pings) and a receiver, all at once
	// on one session; a stream this size outgrows the socket buffers, so a side whose receive
	// waited for its send to finish would deadlock.
	constexpr uint32_t kChunks = 48, kPings = 200, kSize = 256 << 10;
	ChunkGeometry g{uint64_t(kChunks) * kSize, kSize};
	auto sendChunks = [&](Connection &c, uint32_t seed) -> std::string {
		for (uint32_t i = 0; i < kChunks; i++) {
			auto st = c.sendChunk(i, i, pattern(seed + i, kSize));
			if (!st.ok())
				return "send chunk: " + st.error().message();
		}
		return "";
	};
	auto sendPings = [&](Connection &c) -> std::string {
		for (uint32_t i = 0; i < kPings; i++) {
			auto st = c.send(MsgType::Ping, 1000 + i, encode(PingMsg{i}));
			if (!st.ok())
				return "send ping: " + st.error().message();
		}
		return "";
	};
	auto receiveAll = [&](Connection &c, uint32_t peerSeed) -> std::string {
		uint32_t gotChunks = 0, gotPings = 0;
		std::vector<uint8_t> buf(kSize);
		while (gotChunks < kChunks || gotPings < kPings) {
			auto hdr = c.recvHeader(kLimit, 20000);
			if (!hdr.ok())
				return "recv: " + hdr.error().message();
			if (hdr->type == MsgType::Ping) {
				auto p = c.recvPayload(*hdr);
				if (!p.ok() || !decodePing(*p).ok() || decodePing(*p)->sendTimeNs != gotPings)
					return fmt::format("ping {} out of order or unreadable", gotPings);
				gotPings++;
				continue;
			}
			auto idx = c.recvChunkPrefix(*hdr, g);
			if (!idx.ok() || *idx != gotChunks || !c.recvExact(buf.data(), kSize).ok())
				return fmt::format("chunk {} out of order or unreadable", gotChunks);
			if (buf != pattern(peerSeed + *idx, kSize))
				return fmt::format("chunk {} differs", *idx);
			gotChunks++;
		}
		return "";
	};
	// A failed receiver shuts its connection down, so the peer's senders cannot hang.
	auto receive = [&](Connection &c, uint32_t peerSeed) {
		std::string r = receiveAll(c, peerSeed);
		if (!r.empty())
			c.shutdown();
		return r;
	};
	std::string result[6];
	std::vector<std::thread> threads;
	threads.emplace_back([&] { result[0] = sendChunks(client, 1000); });
	threads.emplace_back([&] { result[1] = sendPings(client); });
	threads.emplace_back([&] { result[2] = sendChunks(server, 5000); });
	threads.emplace_back([&] { result[3] = sendPings(server); });
	threads.emplace_back([&] { result[4] = receive(client, 5000); });
	result[5] = receive(server, 1000);
	for (auto &t : threads)
		t.join();
	for (const auto &r : result)
		EXPECT_EQ(r, "");
	EXPECT_EQ(client.bytesSent(), server.bytesReceived());
	EXPECT_EQ(server.bytesSent(), client.bytesReceived());
}

TEST_F(Tls, GatheredSendIsOneRecordNotOnePerIovec)
{
	auto [client, server, relay, h] = relayedSession();
	ASSERT_TRUE(h.client.ok() && h.server.ok()) << messageOf(h.client) << " / " << messageOf(h.server);

	// 64 iovecs of 16 bytes: one record per iovec would add 64 record overheads (22 bytes each
	// in TLS 1.3), i.e. more than doubles the wire bytes.
	std::vector<uint8_t> data = pattern(3, 64 * 16);
	std::vector<iovec> iov;
	for (size_t i = 0; i < 64; i++)
		iov.push_back({data.data() + 16 * i, 16});
	uint64_t before = relay->passedUp();
	ASSERT_TRUE(client.sendParts(MsgType::DirtyList, 5, iov).ok());
	auto f = recvFrame(server, kLimit, 10000);
	ASSERT_TRUE(f.ok()) << f.error().message();
	EXPECT_TRUE(f->payload == data);
	uint64_t wire = relay->passedUp() - before;
	EXPECT_LE(wire, kHeaderSize + data.size() + 2 * 22) << "plaintext " << kHeaderSize + data.size();

	// A 1 MiB chunk: full-size records, so about 0.14% overhead.
	std::vector<uint8_t> chunk = pattern(4, kChunk);
	before = relay->passedUp();
	std::thread sender([&] { ASSERT_TRUE(client.sendChunk(6, 0, chunk).ok()); });
	auto hdr = server.recvHeader(kLimit, 10000);
	ASSERT_TRUE(hdr.ok()) << hdr.error().message();
	ASSERT_TRUE(server.discard(hdr->payloadLen).ok());
	sender.join();
	wire = relay->passedUp() - before;
	double plain = double(kHeaderSize + 4 + kChunk);
	EXPECT_LT(double(wire), plain * 1.002) << wire << " wire bytes for " << plain;
}

TEST_F(Tls, RefusesClientFromAnotherCa)
{
	// The client trusts our CA, but its own certificate comes from CA b.
	auto [client, server, h] = handshakeWithForeign(TlsRole::Client);
	ASSERT_TRUE(failsWith(h.server, EACCES, "refused the peer's certificate"));
	EXPECT_TRUE(failsWith(h.server, EACCES, "issuer is unknown"));
	EXPECT_FALSE(server.encrypted());
	// TLS 1.3: the client's handshake may complete before the server's verdict; its first
	// receive then carries the refusal.
	Status clientSide = h.client;
	if (clientSide.ok()) {
		auto hdr = client.recvHeader(kLimit, 10000);
		ASSERT_FALSE(hdr.ok());
		clientSide = hdr.error();
	}
	EXPECT_TRUE(failsWith(clientSide, EACCES, "the peer refused this side's credentials"));
}

TEST_F(Tls, RefusesServerFromAnotherCa)
{
	// The server trusts our CA, but presents a certificate from CA b.
	auto [client, server, h] = handshakeWithForeign(TlsRole::Server);
	ASSERT_TRUE(failsWith(h.client, EACCES, "issuer is unknown"));
	ASSERT_TRUE(failsWith(h.server, EACCES, "the peer refused this side's credentials"));
	EXPECT_FALSE(client.encrypted());
}

TEST_F(Tls, RefusesClientWithoutCertificate)
{
	auto [cfd, sfd] = socketPair();
	Connection server(std::move(sfd));
	auto sc = x509(a_, TlsRole::Server);
	RawResult raw;
	std::thread client([&] { raw = rawGnutlsPeer(cfd.get(), false, a_ + "/ca-cert.pem", "", ""); });
	Status st = server.startTls(sc, kHandshakeMs);
	client.join();
	ASSERT_TRUE(failsWith(st, EACCES, "presented no certificate"));
	// The client is told why: certificate_required, at its handshake or first receive.
	int seen = raw.handshake < 0 ? raw.handshake : raw.firstRecv;
	EXPECT_EQ(seen, GNUTLS_E_FATAL_ALERT_RECEIVED) << gnutls_strerror(seen);
}

TEST_F(Tls, RefusesServerPresentingAClientCertificate)
{
	// Same CA, but a client certificate: whoever holds one must not pass for a server.
	auto [cfd, sfd] = socketPair();
	Connection client(std::move(cfd));
	auto cc = x509(a_, TlsRole::Client);
	std::thread server([&] {
		(void)rawGnutlsPeer(sfd.get(), true, a_ + "/ca-cert.pem", a_ + "/client-cert.pem",
				    a_ + "/client-key.pem");
	});
	Status st = client.startTls(cc, kHandshakeMs);
	server.join();
	ASSERT_TRUE(failsWith(st, EACCES, "purpose"));
}

TEST_F(Tls, PskRoundTripNamesTheIdentity)
{
	std::string keys = root_ + "/keys.psk";
	ASSERT_TRUE(writeThrowawayPsk(keys, "dst-host").ok());
	struct stat st;
	ASSERT_EQ(::stat(keys.c_str(), &st), 0);
	EXPECT_EQ(st.st_mode & 0777, 0600u);
	auto [client, server] = connectedPair(true);
	auto cc = load(TlsMode::Psk, keys, TlsRole::Client), sc = load(TlsMode::Psk, keys, TlsRole::Server);
	auto h = handshake(client, cc, server, sc);
	ASSERT_TRUE(h.client.ok()) << messageOf(h.client);
	ASSERT_TRUE(h.server.ok()) << messageOf(h.server);
	EXPECT_EQ(server.peerIdentity(), "psk dst-host");
	EXPECT_EQ(client.peerIdentity(), "psk dst-host");
	auto chunk = pattern(9, kChunk);
	std::thread sender([&] { ASSERT_TRUE(client.sendChunk(1, 0, chunk).ok()); });
	auto hdr = server.recvHeader(kLimit, 10000);
	ASSERT_TRUE(hdr.ok()) << hdr.error().message();
	std::vector<uint8_t> got(hdr->payloadLen - 4);
	ASSERT_TRUE(server.recvChunkPrefix(*hdr, ChunkGeometry{kChunk, kChunk}).ok());
	ASSERT_TRUE(server.recvExact(got.data(), got.size()).ok());
	sender.join();
	EXPECT_TRUE(got == chunk);
}

TEST_F(Tls, RefusesPskWithWrongKeyOrUnknownIdentity)
{
	std::string serverKeys = root_ + "/server.psk";
	ASSERT_TRUE(writeThrowawayPsk(serverKeys, "dst-host").ok());
	struct Case {
		const char *name;
		const char *identity;
	};
	for (Case c : {Case{"wrong key", "dst-host"}, Case{"unknown identity", "intruder"}}) {
		SCOPED_TRACE(c.name);
		std::string clientKeys = root_ + "/client.psk";
		ASSERT_TRUE(writeThrowawayPsk(clientKeys, c.identity).ok()); // fresh random key
		auto [client, server] = connectedPair(true);
		auto cc = load(TlsMode::Psk, clientKeys, TlsRole::Client);
		auto sc = load(TlsMode::Psk, serverKeys, TlsRole::Server);
		auto h = handshake(client, cc, server, sc);
		ASSERT_TRUE(failsWith(h.server, EACCES));
		ASSERT_TRUE(failsWith(h.client, EACCES));
	}
}

TEST_F(Tls, PlaintextClientAgainstTlsServerFailsCleanly)
{
	auto [client, server] = connectedPair(true);
	auto sc = x509(a_, TlsRole::Server);
	Status serverSide;
	std::thread t([&] { serverSide = server.startTls(sc, kHandshakeMs); });
	ASSERT_TRUE(client.send(MsgType::Hello, 1, encode(HelloMsg{1, 1, 0, "plain"})).ok());
	// The server answers in a frame the plaintext client reads.
	auto f = recvFrame(client, kLimit, 10000);
	t.join();
	ASSERT_TRUE(failsWith(serverSide, EPROTO, "plaintext ferry frame"));
	ASSERT_TRUE(f.ok()) << f.error().message();
	ASSERT_EQ(f->header.type, MsgType::Error);
	auto e = decodeError(f->payload);
	ASSERT_TRUE(e.ok());
	EXPECT_EQ(e->message, "this side requires TLS (x509)");
}

TEST_F(Tls, TlsClientAgainstPlaintextServerFailsCleanly)
{
	auto [client, server] = connectedPair(true);
	auto cc = x509(a_, TlsRole::Client);
	Status clientSide;
	std::thread t([&] { clientSide = client.startTls(cc, kHandshakeMs); });
	auto h = server.recvHeader(kLimit, 10000);
	t.join();
	ASSERT_TRUE(failsWith(h, EPROTO));
	EXPECT_NE(h.error().message().find("the peer uses TLS and this side does not"), std::string::npos)
		<< h.error().message();
	ASSERT_TRUE(failsWith(clientSide, EPROTO, "plaintext ferry frame"));
}

TEST_F(Tls, HandshakeTimesOutAgainstASilentPeer)
{
	auto sc = x509(a_, TlsRole::Server), cc = x509(a_, TlsRole::Client);
	for (bool asServer : {true, false}) {
		SCOPED_TRACE(asServer ? "server waits for a ClientHello" : "client waits for a ServerHello");
		auto [client, server] = connectedPair(true);
		Connection &me = asServer ? server : client;
		auto t0 = Clock::now();
		Status st = me.startTls(asServer ? sc : cc, 200);
		auto waited = Clock::now() - t0;
		ASSERT_TRUE(failsWith(st, ETIMEDOUT));
		EXPECT_GE(waited, 190ms);
		EXPECT_LT(waited, 5s);
	}
}

TEST_F(Tls, RecvHeaderTimesOutAndTheStreamSurvives)
{
	auto [client, server, relay, h] = relayedSession();
	ASSERT_TRUE(h.client.ok() && h.server.ok()) << messageOf(h.client) << " / " << messageOf(h.server);

	// Nothing sent.
	auto t0 = Clock::now();
	auto hdr = server.recvHeader(kLimit, 50);
	ASSERT_TRUE(failsWith(hdr, ETIMEDOUT));
	EXPECT_GE(Clock::now() - t0, 45ms);

	// Ten bytes of the record, a timeout, then the rest: GnuTLS keeps the partial record.
	uint64_t base = relay->passedUp();
	relay->allowUp(10);
	ASSERT_TRUE(client.send(MsgType::Ping, 42, encode(PingMsg{4242})).ok());
	ASSERT_TRUE(relay->waitPassedUp(base + 10));
	t0 = Clock::now();
	hdr = server.recvHeader(kLimit, 50);
	ASSERT_TRUE(failsWith(hdr, ETIMEDOUT));
	EXPECT_GE(Clock::now() - t0, 45ms);
	relay->allowUp(SIZE_MAX);
	auto f = recvFrame(server, kLimit, 10000);
	ASSERT_TRUE(f.ok()) << f.error().message();
	EXPECT_EQ(f->header.requestId, 42u);
	EXPECT_EQ(decodePing(f->payload)->sendTimeNs, 4242u);
}

TEST_F(Tls, IoTimeoutBoundsRecvExact)
{
	auto [client, server] = connectedPair(true);
	auto cc = x509(a_, TlsRole::Client), sc = x509(a_, TlsRole::Server);
	auto h = handshake(client, cc, server, sc);
	ASSERT_TRUE(h.client.ok() && h.server.ok()) << messageOf(h.client) << " / " << messageOf(h.server);
	ASSERT_TRUE(server.setIoTimeout(50).ok());
	uint8_t b[16];
	Status st = server.recvExact(b, sizeof(b));
	ASSERT_TRUE(failsWith(st, ETIMEDOUT));
}

TEST_F(Tls, ShutdownWakesABlockedReceiverAndSender)
{
	auto [client, server] = connectedPair(true);
	auto cc = x509(a_, TlsRole::Client), sc = x509(a_, TlsRole::Server);
	auto h = handshake(client, cc, server, sc);
	ASSERT_TRUE(h.client.ok() && h.server.ok()) << messageOf(h.client) << " / " << messageOf(h.server);

	// The receiver first gets a frame, so it is inside the TLS session when it blocks next.
	std::mutex m;
	std::condition_variable cv;
	bool gotFirst = false;
	Status recvResult;
	std::thread receiver([&] {
		auto f = recvFrame(server, kLimit, 30000);
		{
			std::lock_guard l(m);
			gotFirst = f.ok();
		}
		cv.notify_all();
		auto hdr = server.recvHeader(kLimit, 30000);
		recvResult = hdr.ok() ? Status() : Status(hdr.error());
	});
	ASSERT_TRUE(client.send(MsgType::Ping, 1, encode(PingMsg{1})).ok());
	{
		std::unique_lock l(m);
		ASSERT_TRUE(cv.wait_for(l, 10s, [&] { return gotFirst; }));
	}
	// A sender that fills the socket buffers of a peer that no longer reads, then blocks.
	Status sendResult;
	std::thread sender([&] {
		auto chunk = pattern(1, kChunk);
		while (sendResult.ok())
			sendResult = server.sendChunk(2, 0, chunk);
	});
	auto t0 = Clock::now();
	server.shutdown();
	receiver.join();
	sender.join();
	EXPECT_LT(Clock::now() - t0, 10s);
	ASSERT_TRUE(failsWith(recvResult, ECONNRESET));
	ASSERT_FALSE(sendResult.ok());
	EXPECT_TRUE(sendResult.error().code() == EPIPE || sendResult.error().code() == ECONNRESET)
		<< messageOf(sendResult);
}

TEST_F(Tls, PeerClosingBetweenFramesIsACleanCloseAndInsideOneIsATruncation)
{
	auto cc = x509(a_, TlsRole::Client), sc = x509(a_, TlsRole::Server);
	{
		auto [client, server] = connectedPair(true);
		auto h = handshake(client, cc, server, sc);
		ASSERT_TRUE(h.client.ok() && h.server.ok());
		client = Connection(); // closes without close_notify
		auto hdr = server.recvHeader(kLimit, 10000);
		ASSERT_TRUE(failsWith(hdr, ECONNRESET));
		EXPECT_NE(hdr.error().message().find("peer closed the connection"), std::string::npos)
			<< hdr.error().message();
	}
	{
		auto [client, server] = connectedPair(true);
		auto h = handshake(client, cc, server, sc);
		ASSERT_TRUE(h.client.ok() && h.server.ok());
		// A header announcing 100 bytes of which 50 come.
		std::vector<uint8_t> frame(kHeaderSize + 50);
		FrameHeader fh;
		fh.type = MsgType::DirtyList;
		fh.payloadLen = 100;
		encodeHeader(fh, frame.data());
		iovec v{frame.data(), frame.size()};
		ASSERT_TRUE(client.sendFrames(std::span(&v, 1)).ok());
		client = Connection();
		auto hdr = server.recvHeader(kLimit, 10000);
		ASSERT_TRUE(hdr.ok()) << hdr.error().message();
		auto p = server.recvPayload(*hdr);
		ASSERT_TRUE(failsWith(p, ECONNRESET));
		EXPECT_NE(p.error().message().find("mid-frame"), std::string::npos) << p.error().message();
	}
}

TEST_F(Tls, InsecureIsExplicitAndLeavesThePlaintext)
{
	auto [client, server] = connectedPair();
	Status st = client.startTls(TlsCredentials(), kHandshakeMs);
	ASSERT_TRUE(failsWith(st, EINVAL));
	auto plain = load(TlsMode::Insecure, "", TlsRole::Client);
	EXPECT_EQ(plain.describe(), "insecure");
	ASSERT_TRUE(client.startTls(plain, kHandshakeMs).ok());
	EXPECT_FALSE(client.encrypted());
	EXPECT_EQ(client.peerIdentity(), "");
	ASSERT_TRUE(client.send(MsgType::Ping, 3, encode(PingMsg{3})).ok());
	auto f = recvFrame(server, kLimit, 5000);
	ASSERT_TRUE(f.ok()) << f.error().message();
	EXPECT_EQ(f->header.requestId, 3u);
}

TEST_F(Tls, MissingOrInvalidFilesGiveAClearError)
{
	std::string empty = root_ + "/empty";
	std::filesystem::create_directory(empty);
	auto c = TlsCredentials::load(TlsConfig{TlsMode::X509, empty}, TlsRole::Server);
	ASSERT_TRUE(failsWith(c, ENOENT));
	for (const char *needle : {"ca-cert.pem: No such file", "server-cert.pem", "server-key.pem",
				   empty.c_str(), "x509:DIR"})
		EXPECT_NE(c.error().message().find(needle), std::string::npos) << needle << " in " << c.error().message();

	auto expectError = [&](const std::string &dir, TlsRole role, int code, const std::string &needle) {
		auto r = TlsCredentials::load(TlsConfig{TlsMode::X509, dir}, role);
		ASSERT_FALSE(r.ok()) << needle;
		EXPECT_EQ(r.error().code(), code) << r.error().message();
		EXPECT_NE(r.error().message().find(needle), std::string::npos) << r.error().message();
	};
	std::string d = mixedDir("broken", a_, a_, TlsRole::Client);
	std::filesystem::remove(d + "/client-key.pem");
	expectError(d, TlsRole::Client, ENOENT, d + "/client-key.pem: No such file");
	writeText(d + "/client-key.pem", "not a key\n");
	expectError(d, TlsRole::Client, EINVAL, d + "/client-key.pem: not an unencrypted PEM private key");
	std::filesystem::copy_file(b_ + "/client-key.pem", d + "/client-key.pem",
				   std::filesystem::copy_options::overwrite_existing);
	expectError(d, TlsRole::Client, EINVAL, d + "/client-key.pem is not the private key of " + d +
							"/client-cert.pem");
	writeText(d + "/ca-cert.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
	expectError(d, TlsRole::Client, EINVAL, d + "/ca-cert.pem: not a PEM CA certificate");
	// A client certificate where the server's should be.
	std::string posing = mixedDir("posing", a_, a_, TlsRole::Client);
	std::filesystem::rename(posing + "/client-cert.pem", posing + "/server-cert.pem");
	std::filesystem::rename(posing + "/client-key.pem", posing + "/server-key.pem");
	expectError(posing, TlsRole::Server, EINVAL, "not a TLS server certificate");

	auto p = TlsCredentials::load(TlsConfig{TlsMode::Psk, root_ + "/none.psk"}, TlsRole::Server);
	ASSERT_TRUE(failsWith(p, ENOENT));
	EXPECT_NE(p.error().message().find("none.psk"), std::string::npos) << p.error().message();
	EXPECT_NE(p.error().message().find("identity:hexkey"), std::string::npos) << p.error().message();
	struct Bad {
		const char *text;
		const char *needle;
	};
	for (Bad b : {Bad{"# comment\n\nnocolon\n", "line 3: expected identity:hexkey"},
		      Bad{"id:0011\n", "line 1: the key must be 16 to 64 bytes"},
		      Bad{"id:zz112233445566778899aabbccddeeff\n", "line 1: the key must be"},
		      Bad{"# nothing\n", "holds no key"},
		      Bad{"a:00112233445566778899aabbccddeeff\na:00112233445566778899aabbccddeeff\n",
			  "line 2: identity 'a' appears twice"}}) {
		writeText(root_ + "/bad.psk", b.text);
		auto r = TlsCredentials::load(TlsConfig{TlsMode::Psk, root_ + "/bad.psk"}, TlsRole::Server);
		ASSERT_FALSE(r.ok()) << b.text;
		EXPECT_EQ(r.error().code(), EINVAL);
		EXPECT_NE(r.error().message().find(b.needle), std::string::npos) << r.error().message();
	}
}

TEST(TlsConfig, ParsesEveryModeAndRejectsTheRest)
{
	auto c = parseTlsConfig("x509");
	ASSERT_TRUE(c.ok());
	EXPECT_EQ(c->mode, TlsMode::X509);
	EXPECT_EQ(c->path, "/etc/pki/ferry");
	EXPECT_EQ(c->str(), "x509:/etc/pki/ferry");
	c = parseTlsConfig("x509:/srv/pki");
	ASSERT_TRUE(c.ok());
	EXPECT_EQ(c->path, "/srv/pki");
	c = parseTlsConfig("psk:/etc/ferry/keys.psk");
	ASSERT_TRUE(c.ok());
	EXPECT_EQ(c->mode, TlsMode::Psk);
	EXPECT_EQ(c->str(), "psk:/etc/ferry/keys.psk");
	c = parseTlsConfig("insecure");
	ASSERT_TRUE(c.ok());
	EXPECT_EQ(c->mode, TlsMode::Insecure);
	for (const char *bad : {"", "psk", "psk:", "x509:", "tls", "none"}) {
		auto r = parseTlsConfig(bad);
		ASSERT_FALSE(r.ok()) << bad;
		EXPECT_EQ(r.error().code(), EINVAL);
	}
}
