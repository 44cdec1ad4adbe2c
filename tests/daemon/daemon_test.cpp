// SPDX-License-Identifier: GPL-2.0-or-later
// ferryd's daemon core with real sockets and real TLS: two daemons ("a" and "b") on loopback,
// a stand-in for libvirtd connecting to a's migrate socket, and a stand-in for the incoming
// QEMU listening on b's. libvirt itself is exercised by the libvirt suite (tests/libvirt).
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "daemon/config.h"
#include "daemon/daemon.h"
#include "daemon/peer_link.h"
#include "ferry/base/clock.h"
#include "ferry/base/json.h"
#include "ferry/wire/daemon_protocol.h"
#include "ferry/wire/endpoint.h"
#include "ferry/wire/tls.h"

using namespace ferry;
using namespace ferry::daemon;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

std::vector<uint8_t> pattern(uint32_t seed, size_t len)
{
	std::vector<uint8_t> v(len);
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		v[i] = uint8_t(x);
	}
	return v;
}

LocalDomain localDomain(std::string name, std::string uuid = "", bool prepared = false, std::string qmp = "",
		       std::string agent = "")
{
	LocalDomain d;
	d.name = std::move(name);
	d.uuid = std::move(uuid);
	d.preparedForFerry = prepared;
	d.qmpSocket = std::move(qmp);
	d.agentSocket = std::move(agent);
	return d;
}

Status writeAll(int fd, std::span<const uint8_t> data)
{
	size_t done = 0;
	while (done < data.size()) {
		ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
		if (n < 0)
			return Error::fromErrno("send");
		done += size_t(n);
	}
	return {};
}

// Reads until EOF (or `limit` bytes).
std::vector<uint8_t> readToEof(int fd, size_t limit = SIZE_MAX)
{
	std::vector<uint8_t> out;
	uint8_t buf[65536];
	while (out.size() < limit) {
		ssize_t n = ::read(fd, buf, std::min(sizeof(buf), limit - out.size()));
		if (n <= 0)
			break;
		out.insert(out.end(), buf, buf + n);
	}
	return out;
}

Result<UniqueFd> connectUnix(const std::string &path)
{
	FERRY_ASSIGN(Connection c, connectTo(Endpoint::unixPath(path), 2000));
	return c.releaseFd();
}

bool waitForPath(const std::string &path, bool present, std::chrono::milliseconds timeout = 5s)
{
	auto until = std::chrono::steady_clock::now() + timeout;
	while (std::chrono::steady_clock::now() < until) {
		if (fs::exists(path) == present)
			return true;
		std::this_thread::sleep_for(10ms);
	}
	return false;
}

// One daemon on loopback with its own socket directory, running on its own thread.
struct RunningDaemon {
	std::unique_ptr<Daemon> daemon;
	std::thread thread;
	Status result;

	~RunningDaemon() { halt(); }
	void halt()
	{
		if (!thread.joinable())
			return;
		daemon->stop();
		thread.join();
	}
	const DaemonConfig &config() const { return daemon->config(); }
};

class Daemons : public ::testing::Test {
protected:
	void SetUp() override
	{
		char tmpl[] = "/tmp/ferryd-test-XXXXXX";
		ASSERT_NE(::mkdtemp(tmpl), nullptr);
		dir_ = tmpl;
		ASSERT_TRUE(writeThrowawayPki(dir_ + "/pki").ok());
		domainsA_ = {localDomain("vm1", "11111111-2222-3333-4444-555555555555")};
	}
	void TearDown() override
	{
		a_.reset();
		b_.reset();
		fs::remove_all(dir_);
	}

	DaemonConfig configFor(const std::string &name, const std::string &peer, uint16_t peerPort,
			       const std::string &tls = "")
	{
		DaemonConfig c;
		c.name = name;
		c.listen = Endpoint::tcp("127.0.0.1", 0);
		c.socketDir = dir_ + "/" + name;
		c.tls = *parseTlsConfig(tls.empty() ? "x509:" + dir_ + "/pki" : tls);
		c.peers.push_back({peer, Endpoint::tcp("127.0.0.1", peerPort)});
		return c;
	}

	std::unique_ptr<RunningDaemon> start(DaemonConfig c, std::function<std::vector<LocalDomain>()> domains)
	{
		auto creds = PeerCredentials::load(c.tls);
		EXPECT_TRUE(creds.ok()) << creds.error().message();
		auto d = Daemon::create(std::move(c), std::move(*creds),
					[domains]() -> Result<std::vector<LocalDomain>> { return domains(); });
		EXPECT_TRUE(d.ok()) << d.error().message();
		auto r = std::make_unique<RunningDaemon>();
		r->daemon = std::move(*d);
		r->thread = std::thread([p = r.get()] { p->result = p->daemon->run(); });
		return r;
	}

	// b first (a calls it and needs its port), then a.
	void startPair(const std::string &tlsA = "", const std::string &tlsB = "")
	{
		b_ = start(configFor("b", "a", 1, tlsB), [] { return std::vector<LocalDomain>{}; });
		a_ = start(configFor("a", "b", b_->daemon->peerEndpoint().port, tlsA), [this] {
			std::lock_guard lock(mu_);
			return domainsA_;
		});
	}

	// b with no domains, then a running vm1 prepared for ferry (its QMP and agent sockets
	// absent), a's configuration adjusted by `adjust`.
	static constexpr const char *kVm1Uuid = "11111111-2222-3333-4444-555555555555";
	void startWithPreparedVm1(const std::function<void(DaemonConfig &)> &adjust)
	{
		{
			std::lock_guard lock(mu_);
			domainsA_ = {localDomain("vm1", kVm1Uuid, true, dir_ + "/nowhere.qmp", dir_ + "/nowhere-agent.sock")};
		}
		b_ = start(configFor("b", "a", 1), [] { return std::vector<LocalDomain>{}; });
		DaemonConfig ca = configFor("a", "b", b_->daemon->peerEndpoint().port);
		adjust(ca);
		a_ = start(ca, [this] {
			std::lock_guard lock(mu_);
			return domainsA_;
		});
	}

	std::string sourcePath(const std::string &domain) { return a_->config().migrateSocketPath("b", domain); }
	std::string incomingPath(const std::string &domain) { return b_->config().migrateSocketPath("b", domain); }

	JsonValue ask(RunningDaemon &d, const std::string &request)
	{
		auto fd = connectUnix(d.config().controlSocketPath());
		EXPECT_TRUE(fd.ok());
		std::string line = request + "\n";
		EXPECT_TRUE(writeAll(fd->get(), {reinterpret_cast<const uint8_t *>(line.data()), line.size()}).ok());
		auto bytes = readToEof(fd->get());
		auto j = JsonValue::parse(std::string(bytes.begin(), bytes.end()));
		EXPECT_TRUE(j.ok());
		return j.ok() ? std::move(*j) : JsonValue();
	}

	// The last migration `d` reports, once it reached a final phase.
	JsonValue finishedMigration(RunningDaemon &d, const std::string &domain)
	{
		for (int i = 0; i < 500; i++) {
			JsonValue s = ask(d, R"({"cmd":"status","domain":")" + domain + R"("})");
			auto list = s.get("migrations");
			if (list.ok() && list->size() > 0) {
				auto m = list->at(list->size() - 1);
				auto phase = m->getString("phase");
				if (phase.ok() && (*phase == "done" || *phase == "failed"))
					return std::move(*m);
			}
			std::this_thread::sleep_for(20ms);
		}
		ADD_FAILURE() << "no finished migration of " << domain;
		return JsonValue();
	}

	// libvirtd's side: sends `out`, half-closes, reads what comes back until EOF.
	std::vector<uint8_t> migrateThrough(const std::string &domain, const std::vector<uint8_t> &out)
	{
		EXPECT_TRUE(waitForPath(sourcePath(domain), true));
		auto fd = connectUnix(sourcePath(domain));
		EXPECT_TRUE(fd.ok()) << fd.error().message();
		if (!fd.ok())
			return {};
		std::thread writer([&] {
			EXPECT_TRUE(writeAll(fd->get(), out).ok());
			::shutdown(fd->get(), SHUT_WR);
		});
		auto back = readToEof(fd->get());
		writer.join();
		return back;
	}

	// The incoming QEMU's side: accepts once, reads until EOF, sends `reply`, closes.
	std::thread incomingQemu(const std::string &domain, std::vector<uint8_t> *received, std::vector<uint8_t> reply)
	{
		auto l = Listener::listen(Endpoint::unixPath(incomingPath(domain)), 1);
		EXPECT_TRUE(l.ok()) << l.error().message();
		return std::thread([l = std::make_shared<Listener>(std::move(*l)), received, reply] {
			auto c = l->accept(20000);
			ASSERT_TRUE(c.ok()) << c.error().message();
			UniqueFd fd = c->releaseFd();
			*received = readToEof(fd.get());
			EXPECT_TRUE(writeAll(fd.get(), reply).ok());
		});
	}

	std::string dir_;
	std::mutex mu_;
	std::vector<LocalDomain> domainsA_;
	std::unique_ptr<RunningDaemon> a_, b_;
};

TEST(DaemonConfig, ParsesAFullConfigurationAndDefaults)
{
	auto c = parseDaemonConfig(R"({"name":"a","listen":"tcp:0.0.0.0:7100","socket_dir":"/run/ferry/",
		"tls":"psk:/etc/ferry/keys.psk","qemu_user":"libvirt-qemu",
		"peers":[{"name":"b","address":"10.0.0.2:7077"},{"name":"c","address":"tcp:host-c:0"}]})");
	ASSERT_TRUE(c.ok()) << c.error().message();
	EXPECT_EQ(c->name, "a");
	EXPECT_EQ(c->listen.port, 7100);
	EXPECT_EQ(c->socketDir, "/run/ferry");
	EXPECT_EQ(c->tls.mode, TlsMode::Psk);
	EXPECT_EQ(c->qemuUser, "libvirt-qemu");
	ASSERT_EQ(c->peers.size(), 2u);
	EXPECT_EQ(c->peers[1].address.port, kDefaultPeerPort);
	EXPECT_EQ(c->migrateSocketPath("b", "web1"), "/run/ferry/migrate/b/web1.sock");
	EXPECT_EQ(c->controlSocketPath(), "/run/ferry/ferryd.sock");

	auto d = parseDaemonConfig(R"({"name":"a","peers":[]})");
	ASSERT_TRUE(d.ok());
	EXPECT_EQ(d->tls.mode, TlsMode::X509);
	EXPECT_EQ(d->socketDir, "/run/ferry");
	EXPECT_EQ(d->listen.port, kDefaultPeerPort);
}

TEST(DaemonConfig, RejectsWhatCannotWorkNamingTheKey)
{
	struct Case {
		const char *json;
		const char *mentions;
	};
	for (const Case &c : std::initializer_list<Case>{
		     {R"({"peers":[]})", "name"},
		     {R"({"name":"a"})", "peers"},
		     {R"({"name":"a/b","peers":[]})", "name"},
		     {R"({"name":"a","peers":[{"name":"a","address":"h:1"}]})", "own name"},
		     {R"({"name":"a","peers":[{"name":"b","address":"h:1"},{"name":"b","address":"h:2"}]})", "twice"},
		     {R"({"name":"a","peers":[{"name":"b","address":"h:1","tls":"insecure"}]})", "per daemon"},
		     {R"({"name":"a","tls":"tls13","peers":[]})", "tls"},
		     {R"({"name":"a","socket_dir":"run","peers":[]})", "absolute"},
		     {R"({"name":"a","socket_dir":"/a/very/long/socket/directory/that/cannot/hold/the/sockets/of/its/migrations/at/all","peers":[]})",
		      "too long"},
		     {R"({"name":"a","peers":[{"name":"b"}]})", "address"},
	     }) {
		auto r = parseDaemonConfig(c.json);
		ASSERT_FALSE(r.ok()) << c.json;
		EXPECT_NE(r.error().message().find(c.mentions), std::string::npos) << r.error().message();
	}
}

TEST(DaemonProtocol, NamesThatBecomePathsAreChecked)
{
	EXPECT_TRUE(checkPathName("d", "web-1.prod_a+b", 64).ok());
	for (const char *bad : {"", ".", "..", "-x", "a/b", "a b", "x\n"})
		EXPECT_FALSE(checkPathName("d", bad, 64).ok()) << bad;
	EXPECT_FALSE(checkPathName("d", std::string(65, 'a'), 64).ok());
	auto open = decodeRelayOpen(encode(RelayOpenMsg{"../../etc", ""}));
	ASSERT_FALSE(open.ok());
	EXPECT_EQ(open.error().code(), EPROTO);
	auto good = decodeRelayOpen(encode(RelayOpenMsg{"vm1", "11111111-2222-3333-4444-555555555555"}));
	ASSERT_TRUE(good.ok());
	EXPECT_EQ(good->domain, "vm1");
}

TEST_F(Daemons, CarriesAStreamBothWaysByteForByteOverTls)
{
	startPair();
	std::vector<uint8_t> atQemu;
	auto reply = pattern(2, 100000);
	std::thread qemu = incomingQemu("vm1", &atQemu, reply);
	auto stream = pattern(1, 48u << 20);
	auto back = migrateThrough("vm1", stream);
	qemu.join();
	EXPECT_TRUE(atQemu == stream) << "forward stream differs: " << atQemu.size() << " of " << stream.size();
	EXPECT_TRUE(back == reply) << "return path differs: " << back.size() << " of " << reply.size();

	JsonValue m = finishedMigration(*a_, "vm1");
	EXPECT_EQ(*m.getString("phase"), "done");
	EXPECT_EQ(*m.getString("direction"), "outgoing");
	EXPECT_EQ(*m.getString("peer"), "b");
	EXPECT_EQ(*m.getInt("stream_bytes"), int64_t(stream.size()));
	EXPECT_EQ(*m.getInt("return_bytes"), int64_t(reply.size()));
	JsonValue mb = finishedMigration(*b_, "vm1");
	EXPECT_EQ(*mb.getString("direction"), "incoming");
	EXPECT_EQ(*mb.getString("peer"), "a");
	EXPECT_EQ(*mb.getInt("stream_bytes"), int64_t(stream.size()));
	EXPECT_NE(ask(*a_, R"({"cmd":"status"})").getString("tls")->find("x509"), std::string::npos);
}

TEST_F(Daemons, TwoDomainsMigrateAtTheSameTime)
{
	{
		std::lock_guard lock(mu_);
		domainsA_.push_back(localDomain("vm2"));
	}
	startPair();
	std::vector<uint8_t> got1, got2;
	std::thread q1 = incomingQemu("vm1", &got1, pattern(11, 999));
	std::thread q2 = incomingQemu("vm2", &got2, pattern(12, 777));
	auto s1 = pattern(21, 16u << 20), s2 = pattern(22, 12u << 20);
	std::vector<uint8_t> back1, back2;
	std::thread m1([&] { back1 = migrateThrough("vm1", s1); });
	std::thread m2([&] { back2 = migrateThrough("vm2", s2); });
	m1.join();
	m2.join();
	q1.join();
	q2.join();
	EXPECT_TRUE(got1 == s1);
	EXPECT_TRUE(got2 == s2);
	EXPECT_TRUE(back1 == pattern(11, 999));
	EXPECT_TRUE(back2 == pattern(12, 777));
}

TEST_F(Daemons, MigrateSocketsFollowTheRunningDomains)
{
	startPair();
	ASSERT_TRUE(waitForPath(sourcePath("vm1"), true));
	{
		std::lock_guard lock(mu_);
		domainsA_ = {localDomain("vm2", "", true)};
	}
	a_->daemon->domainsChanged();
	EXPECT_TRUE(waitForPath(sourcePath("vm2"), true));
	EXPECT_TRUE(waitForPath(sourcePath("vm1"), false));
	// The destination's incoming directory exists for QEMU to listen in.
	EXPECT_TRUE(fs::is_directory(b_->config().migrateDir("b")));
	EXPECT_EQ(fs::status(a_->config().controlSocketPath()).permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
}

TEST_F(Daemons, NoIncomingMigrationAtTheDestinationFailsTheSourceCleanly)
{
	startPair();
	auto back = migrateThrough("vm1", pattern(3, 4096)); // nobody listens on b's side
	EXPECT_TRUE(back.empty());
	JsonValue m = finishedMigration(*a_, "vm1");
	EXPECT_EQ(*m.getString("phase"), "failed");
	EXPECT_NE(m.getString("error")->find(incomingPath("vm1")), std::string::npos) << *m.getString("error");
}

TEST_F(Daemons, RefusesACallerThatIsNotAConfiguredPeer)
{
	startPair();
	DaemonConfig stranger = configFor("c", "b", b_->daemon->peerEndpoint().port);
	auto creds = PeerCredentials::load(stranger.tls);
	ASSERT_TRUE(creds.ok());
	auto conn = callPeer(stranger, stranger.peers[0], *creds);
	ASSERT_FALSE(conn.ok());
	EXPECT_EQ(conn.error().code(), EACCES) << conn.error().message();
	EXPECT_NE(conn.error().message().find("not a peer"), std::string::npos) << conn.error().message();
}

TEST_F(Daemons, RefusesACallerFromAnotherCaAndAPlaintextOne)
{
	startPair();
	ASSERT_TRUE(writeThrowawayPki(dir_ + "/other").ok());
	for (std::string tls : {"x509:" + dir_ + "/other", std::string("insecure")}) {
		DaemonConfig impostor = configFor("a", "b", b_->daemon->peerEndpoint().port, tls);
		auto creds = PeerCredentials::load(impostor.tls);
		ASSERT_TRUE(creds.ok());
		auto conn = callPeer(impostor, impostor.peers[0], *creds);
		EXPECT_FALSE(conn.ok()) << tls;
	}
	// b still serves its real peer.
	std::vector<uint8_t> got;
	std::thread q = incomingQemu("vm1", &got, {});
	auto stream = pattern(4, 1 << 20);
	migrateThrough("vm1", stream);
	q.join();
	EXPECT_TRUE(got == stream);
}

TEST_F(Daemons, SurvivesGarbageAndAFloodOfSilentConnections)
{
	startPair();
	uint16_t port = b_->daemon->peerEndpoint().port;
	// Silent connections from another loopback address hold handshake slots of theirs only.
	std::vector<UniqueFd> silent;
	for (int i = 0; i < 40; i++) {
		UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
		sockaddr_in src{}, dst{};
		src.sin_family = dst.sin_family = AF_INET;
		src.sin_addr.s_addr = htonl(0x7f000002);
		dst.sin_addr.s_addr = htonl(0x7f000001);
		dst.sin_port = htons(port);
		ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr *>(&src), sizeof(src)), 0);
		ASSERT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr *>(&dst), sizeof(dst)), 0);
		silent.push_back(std::move(fd));
	}
	// Garbage in place of a TLS handshake (not a TLS record header: such would wait out the
	// handshake deadline, which TlsHandshake tests cover).
	for (int i = 0; i < 5; i++) {
		auto c = connectTo(Endpoint::tcp("127.0.0.1", port), 2000);
		ASSERT_TRUE(c.ok());
		UniqueFd fd = c->releaseFd();
		std::string junk = "GET / HTTP/1.1\r\nHost: b\r\n\r\n" + std::string(size_t(i) * 700, char(i));
		(void)writeAll(fd.get(), {reinterpret_cast<const uint8_t *>(junk.data()), junk.size()});
		readToEof(fd.get()); // b closes
	}
	std::vector<uint8_t> got;
	std::thread q = incomingQemu("vm1", &got, pattern(5, 10));
	auto stream = pattern(6, 2 << 20);
	auto back = migrateThrough("vm1", stream);
	q.join();
	EXPECT_TRUE(got == stream);
	EXPECT_TRUE(back == pattern(5, 10));
}

TEST_F(Daemons, StoppingTheDestinationDaemonCutsTheStreamAndTheSourceSeesIt)
{
	startPair();
	std::vector<uint8_t> got;
	auto l = Listener::listen(Endpoint::unixPath(incomingPath("vm1")), 1);
	ASSERT_TRUE(l.ok());
	std::thread qemu([&] {
		auto c = l->accept(20000);
		ASSERT_TRUE(c.ok());
		UniqueFd fd = c->releaseFd();
		got = readToEof(fd.get(), 1 << 20); // reads some, then the daemon goes
		b_->halt();
		readToEof(fd.get());
	});
	ASSERT_TRUE(waitForPath(sourcePath("vm1"), true));
	auto fd = connectUnix(sourcePath("vm1"));
	ASSERT_TRUE(fd.ok());
	auto stream = pattern(7, 64u << 20);
	Status st = writeAll(fd->get(), stream); // fails once the stream is cut
	auto back = readToEof(fd->get());
	qemu.join();
	EXPECT_FALSE(st.ok()) << "the whole stream went through although the destination daemon stopped";
	EXPECT_TRUE(back.empty());
	JsonValue m = finishedMigration(*a_, "vm1");
	EXPECT_EQ(*m.getString("phase"), "failed");
}

TEST_F(Daemons, ControlSocketAnswersStatusAndRejectsUnknownRequests)
{
	startPair();
	JsonValue s = ask(*a_, R"({"cmd":"status"})");
	EXPECT_TRUE(*s.getBool("ok"));
	EXPECT_EQ(*s.getString("name"), "a");
	EXPECT_EQ(s.get("peers")->size(), 1u);
	JsonValue bad = ask(*a_, R"({"cmd":"format-disk"})");
	EXPECT_FALSE(*bad.getBool("ok"));
	JsonValue junk = ask(*a_, "not json");
	EXPECT_FALSE(*junk.getBool("ok"));
}

} // namespace

namespace {

// A blocking connect, as libvirtd's: it waits while a gate holds the socket's only slot.
Result<UniqueFd> blockingConnectUnix(const std::string &path)
{
	UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
	sockaddr_un sa{};
	sa.sun_family = AF_UNIX;
	std::copy(path.begin(), path.end(), sa.sun_path);
	if (::connect(fd.get(), reinterpret_cast<sockaddr *>(&sa), sizeof(sa)) != 0)
		return Error::fromErrno("connect");
	return fd;
}

// libvirtd connecting to a migrate socket on a thread of its own: `through` once its connect
// completed; it then reads until the far end closes (a failed gate, the daemon stopping).
struct WaitingLibvirtd {
	std::atomic<bool> through{false};
	std::thread thread;
	explicit WaitingLibvirtd(std::string path)
		: thread([this, path] {
			  auto fd = blockingConnectUnix(path);
			  through = true;
			  if (fd.ok())
				  readToEof(fd->get());
		  })
	{
	}
	~WaitingLibvirtd() { thread.join(); }
};

TEST_F(Daemons, APreparedDomainsMigrationWaitsAtTheGateAndAFailedFerryOfferFailsIt)
{
	startWithPreparedVm1([](DaemonConfig &) {});
	ASSERT_TRUE(waitForPath(sourcePath("vm1"), true));
	std::atomic<int> stage{0};
	std::vector<uint8_t> got;
	std::thread libvirtd([&] {
		auto fd = blockingConnectUnix(sourcePath("vm1"));
		stage = 1;
		ASSERT_TRUE(fd.ok()) << fd.error().message();
		got = readToEof(fd->get());
		stage = 2;
	});
	std::this_thread::sleep_for(500ms);
	EXPECT_EQ(stage.load(), 0) << "libvirtd's connect went through a closed gate";

	// b offers ferry mode; a cannot serve the domain (its QMP socket is not there) and fails
	// the gate: the waiting connection completes and is closed at once.
	DaemonConfig asB = configFor("b", "a", a_->daemon->peerEndpoint().port);
	auto creds = PeerCredentials::load(asB.tls);
	ASSERT_TRUE(creds.ok());
	auto conn = callPeer(asB, asB.peers[0], *creds);
	ASSERT_TRUE(conn.ok()) << conn.error().message();
	ASSERT_TRUE(conn->send(MsgType::FerryOffer, 0, encode(RelayOpenMsg{"vm1", kVm1Uuid})).ok());
	auto reply = recvFrame(*conn, 4096, 10000);
	ASSERT_TRUE(reply.ok());
	EXPECT_EQ(reply->header.type, MsgType::Error);
	libvirtd.join();
	EXPECT_EQ(stage.load(), 2);
	EXPECT_TRUE(got.empty());
	JsonValue m = finishedMigration(*a_, "vm1");
	EXPECT_EQ(*m.getString("mode"), "ferry");
	EXPECT_EQ(*m.getString("phase"), "failed");
	// The gate closes again for the next migration.
	EXPECT_TRUE(waitForPath(sourcePath("vm1"), true));
}

TEST_F(Daemons, AFerryOfferForADomainNotRunningHereIsRefusedWithEnoent)
{
	startPair();
	DaemonConfig asB = configFor("b", "a", a_->daemon->peerEndpoint().port);
	auto creds = PeerCredentials::load(asB.tls);
	ASSERT_TRUE(creds.ok());
	for (const char *domain : {"vm1", "elsewhere"}) { // vm1 runs but is not prepared
		auto conn = callPeer(asB, asB.peers[0], *creds);
		ASSERT_TRUE(conn.ok());
		ASSERT_TRUE(conn->send(MsgType::FerryOffer, 0, encode(RelayOpenMsg{domain, ""})).ok());
		auto reply = recvFrame(*conn, 4096, 10000);
		ASSERT_TRUE(reply.ok());
		ASSERT_EQ(reply->header.type, MsgType::Error);
		EXPECT_EQ(peerError(reply->payload).code(), ENOENT) << domain;
	}
}

} // namespace

namespace {

// FerryDecline (the destination will not run ferry mode): the gate towards the caller opens and
// the stream passes as in stream mode; the gate of the same domain towards another peer stays
// closed, so a peer can let through only a stream libvirt sends to it.
TEST_F(Daemons, AFerryDeclineOpensTheGateTowardsTheCallerOnly)
{
	startWithPreparedVm1([](DaemonConfig &ca) {
		ca.peers.push_back({"c", Endpoint::tcp("127.0.0.1", 1)}); // configured, never reached
	});
	const std::string towardsC = a_->config().migrateSocketPath("c", "vm1");
	ASSERT_TRUE(waitForPath(sourcePath("vm1"), true));
	ASSERT_TRUE(waitForPath(towardsC, true));

	// The incoming QEMU on b.
	auto l = Listener::listen(Endpoint::unixPath(incomingPath("vm1")), 1);
	ASSERT_TRUE(l.ok());
	std::vector<uint8_t> got;
	std::thread qemu([&] {
		auto c = l->accept(20000);
		ASSERT_TRUE(c.ok());
		UniqueFd fd = c->releaseFd();
		got = readToEof(fd.get());
	});
	WaitingLibvirtd libvirtdToC(towardsC);

	DaemonConfig asB = configFor("b", "a", a_->daemon->peerEndpoint().port);
	auto creds = PeerCredentials::load(asB.tls);
	ASSERT_TRUE(creds.ok());
	auto reply = askPeer(asB, asB.peers[0], *creds, MsgType::FerryDecline, RelayOpenMsg{"vm1", kVm1Uuid});
	ASSERT_TRUE(reply.ok()) << reply.error().message();
	EXPECT_EQ(reply->header.type, MsgType::RelayReady);

	auto fd = blockingConnectUnix(sourcePath("vm1")); // through the gate towards b
	ASSERT_TRUE(fd.ok()) << fd.error().message();
	auto stream = pattern(11, 3u << 20);
	ASSERT_TRUE(writeAll(fd->get(), stream).ok());
	::shutdown(fd->get(), SHUT_WR);
	readToEof(fd->get());
	qemu.join();
	EXPECT_TRUE(got == stream) << "the stream did not pass as in stream mode";
	JsonValue m = finishedMigration(*a_, "vm1");
	EXPECT_EQ(*m.getString("mode"), "stream");
	EXPECT_EQ(*m.getString("phase"), "done");

	// The gate closed behind that one stream: the next migration waits again.
	WaitingLibvirtd nextLibvirtd(sourcePath("vm1"));
	std::this_thread::sleep_for(300ms);
	EXPECT_FALSE(libvirtdToC.through.load()) << "the gate towards c opened too";
	EXPECT_FALSE(nextLibvirtd.through.load()) << "the gate towards b stayed open after its stream";
	JsonValue abort = ask(*a_, R"({"cmd":"abort","domain":"vm1"})"); // fails the gates: the waiters end
	EXPECT_TRUE(*abort.getBool("ok"));
}

// A FerryDecline whose migration never comes (libvirt gave up on the destination, say) must not
// leave the gate open, or the domain's next migration would pass it without ferry mode.
TEST_F(Daemons, AGateOpenedByADeclineClosesAgainWhenNoMigrationComes)
{
	startWithPreparedVm1([](DaemonConfig &ca) { ca.gateWindowMs = 1000; });
	ASSERT_TRUE(waitForPath(sourcePath("vm1"), true));
	DaemonConfig asB = configFor("b", "a", a_->daemon->peerEndpoint().port);
	auto creds = PeerCredentials::load(asB.tls);
	ASSERT_TRUE(creds.ok());
	auto reply = askPeer(asB, asB.peers[0], *creds, MsgType::FerryDecline, RelayOpenMsg{"vm1", kVm1Uuid});
	ASSERT_TRUE(reply.ok()) << reply.error().message();
	ASSERT_EQ(reply->header.type, MsgType::RelayReady);

	std::this_thread::sleep_for(2500ms); // the window, and the gate's re-creation
	ASSERT_TRUE(waitForPath(sourcePath("vm1"), true));
	{
		WaitingLibvirtd libvirtd(sourcePath("vm1"));
		std::this_thread::sleep_for(500ms);
		EXPECT_FALSE(libvirtd.through.load()) << "the gate a FerryDecline opened was still open after its window";
		JsonValue abort = ask(*a_, R"({"cmd":"abort","domain":"vm1"})");
		EXPECT_TRUE(*abort.getBool("ok"));
	}
	JsonValue status = ask(*a_, R"({"cmd":"status","domain":"vm1"})");
	EXPECT_EQ(status.get("migrations")->size(), 0u) << "a stream passed: " << status.toString();
}

} // namespace
