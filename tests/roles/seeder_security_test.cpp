// SPDX-License-Identifier: GPL-2.0-or-later
// The seeder against hostile or broken peers: a real Seeder over loopback TCP, serving a
// region of this process whose content the test controls (hash tracker), driven by raw
// protocol clients and by a real Leecher. Every refusal is checked together with what it
// protects: the source kept running (no suspend/resume), its memory unchanged, and the
// legitimate leecher still served.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <dirent.h>

#include <cstring>
#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "ferry/base/clock.h"
#include "ferry/dirty/tracker.h"
#include "ferry/roles/leecher.h"
#include "ferry/roles/seeder.h"
#include "ferry/sys/fd.h"
#include "ferry/sys/mapping.h"
#include "ferry/wire/connection.h"
#include "ferry/wire/endpoint.h"
#include "ferry/wire/protocol.h"
#include "support/result_checks.h"

using namespace ferry;
using namespace std::chrono_literals;

namespace {

constexpr uint32_t kChunk = 64 * 1024;
constexpr uint64_t kRegionSize = 64ull * kChunk; // 4 MiB
constexpr int kReplyTimeoutMs = 5000;
// Threads of this process besides the seeder's workers: main, serve(), gtest, slack.
constexpr int kThreadSlack = 8;

int threadCount()
{
	int n = 0;
	DIR *d = ::opendir("/proc/self/task");
	if (!d)
		return -1;
	while (dirent *e = ::readdir(d))
		n += e->d_name[0] != '.';
	::closedir(d);
	return n;
}

// A TCP connection to `port` on 127.0.0.1 from `source` (another loopback address makes
// another peer for the seeder's per-peer cap).
Result<Connection> connectFrom(const char *source, uint16_t port)
{
	UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
	if (!fd)
		return Error::fromErrno("socket");
	sockaddr_in a{};
	a.sin_family = AF_INET;
	::inet_pton(AF_INET, source, &a.sin_addr);
	if (::bind(fd.get(), reinterpret_cast<sockaddr *>(&a), sizeof a) < 0)
		return Error::fromErrno("bind");
	a.sin_port = htons(port);
	::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	if (::connect(fd.get(), reinterpret_cast<sockaddr *>(&a), sizeof a) < 0)
		return Error::fromErrno("connect");
	return Connection(std::move(fd));
}

// The region the source "application" (this test) owns, with a known pattern.
struct Region {
	Mapping map;
	std::vector<uint8_t> expected;

	Status create()
	{
		FERRY_ASSIGN(map, Mapping::anonymous(kRegionSize));
		expected.resize(kRegionSize);
		for (uint64_t i = 0; i < kRegionSize; i++)
			expected[i] = uint8_t(i * 131 + i / 4096);
		std::memcpy(map.data(), expected.data(), kRegionSize);
		return {};
	}
	bool unchanged() const { return std::memcmp(map.data(), expected.data(), kRegionSize) == 0; }
};

struct Rig {
	Region region;
	SeederOptions opts;
	std::unique_ptr<Seeder> seeder;
	std::optional<Listener> listener;
	std::future<Status> done;
	std::atomic<int> suspends{0}, resumes{0}, releases{0};
	std::function<void()> onSuspend; // e.g. stop a writer

	Rig()
	{
		opts.chunkSize = kChunk;
		opts.name = "seeder test";
	}
	~Rig()
	{
		if (done.valid()) {
			seeder->stop();
			done.wait();
		}
	}

	Status start()
	{
		FERRY_TRY(region.create());
		TrackedRegion r{0, reinterpret_cast<uintptr_t>(region.map.data()), kRegionSize, kChunk};
		FERRY_ASSIGN(auto tracker, makeHashTracker(r));
		SeederHooks hooks;
		hooks.suspend = [this] {
			suspends++;
			if (onSuspend)
				onSuspend();
			return Status();
		};
		hooks.resume = [this] {
			resumes++;
			return Status();
		};
		hooks.release = [this] { releases++; };
		seeder = std::make_unique<Seeder>(region.map.data(), kRegionSize, std::move(tracker), hooks, opts);
		FERRY_ASSIGN(Listener l, Listener::listen(Endpoint::tcp("127.0.0.1", 0), 4096));
		listener.emplace(std::move(l));
		done = std::async(std::launch::async, [this] { return seeder->serve(*listener); });
		return {};
	}
	uint16_t port() const { return listener->boundEndpoint().port; }
	Endpoint endpoint() const { return listener->boundEndpoint(); }
	// The source was never stopped by anyone.
	bool sourceUntouched() const { return suspends == 0 && resumes == 0 && releases == 0; }
};

Result<Frame> request(Connection &c, MsgType type, std::span<const uint8_t> payload = {}, uint64_t id = 1)
{
	FERRY_TRY(c.send(type, id, payload));
	return recvFrame(c, kMaxListPayload, kReplyTimeoutMs);
}

Result<Frame> hello(Connection &c, uint64_t session, const char *name)
{
	HelloMsg h;
	h.resumeSessionId = session;
	h.clientName = name;
	return request(c, MsgType::Hello, encode(h));
}

// The reply is an Error frame with `code`, and the seeder then closed the connection.
void expectRefused(Result<Frame> reply, Connection &c, int code, const char *what)
{
	SCOPED_TRACE(what);
	ASSERT_TRUE(reply.ok()) << reply.error().message();
	ASSERT_EQ(reply->header.type, MsgType::Error) << msgTypeName(reply->header.type);
	auto e = decodeError(reply->payload);
	ASSERT_TRUE(e.ok());
	EXPECT_EQ(e->errnoValue, code) << e->message;
	auto next = c.recvHeader(kMaxListPayload, kReplyTimeoutMs);
	ASSERT_FALSE(next.ok()) << "connection still open after the refusal";
	EXPECT_EQ(next.error().code(), ECONNRESET) << next.error().message();
}

// Waits for `pred`, checking at short intervals (the seeder offers no event to wait on).
template <typename Pred>
bool waitFor(Pred pred, std::chrono::milliseconds timeout)
{
	const auto end = std::chrono::steady_clock::now() + timeout;
	while (!pred()) {
		if (std::chrono::steady_clock::now() > end)
			return false;
		std::this_thread::sleep_for(5ms);
	}
	return true;
}

// A legitimate raw leecher: opens the session and starts tracking.
struct RawLeecher {
	Connection ctrl;
	uint64_t session = 0;

	Status open(Rig &rig)
	{
		FERRY_ASSIGN(ctrl, connectFrom("127.0.0.1", rig.port()));
		FERRY_ASSIGN(Frame f, hello(ctrl, 0, "leecher/control"));
		if (f.header.type != MsgType::HelloReply)
			return Error::format(EPROTO, "got {}", msgTypeName(f.header.type));
		FERRY_ASSIGN(HelloReplyMsg r, decodeHelloReply(f.payload));
		session = r.sessionId;
		FERRY_ASSIGN(Frame t, request(ctrl, MsgType::TrackStart));
		if (t.header.type != MsgType::TrackStarted)
			return Error::format(EPROTO, "got {}", msgTypeName(t.header.type));
		return {};
	}
	Result<DirtyListMsg> getDirty()
	{
		FERRY_ASSIGN(Frame f, request(ctrl, MsgType::GetDirty));
		if (f.header.type != MsgType::DirtyList)
			return Error::format(EPROTO, "got {}", msgTypeName(f.header.type));
		return decodeDirtyList(f.payload, kRegionSize / kChunk);
	}
};

} // namespace

TEST(Seeder, RefusesControlFramesBeforeHello)
{
	Rig rig;
	ASSERT_OK(rig.start());
	for (MsgType t : {MsgType::TrackStart, MsgType::GetDirty, MsgType::Finalize, MsgType::SwitchOver, MsgType::Done,
			  MsgType::GetRange}) {
		auto c = connectFrom("127.0.0.2", rig.port());
		ASSERT_TRUE(c.ok()) << c.error().message();
		std::vector<uint8_t> payload;
		if (t == MsgType::GetRange)
			payload = encode(GetRangeMsg{0, 1});
		expectRefused(request(*c, t, payload), *c, EACCES, msgTypeName(t));
	}
	EXPECT_EQ(rig.seeder->state(), SeederState::Serving);
	EXPECT_TRUE(rig.sourceUntouched());
	EXPECT_TRUE(rig.region.unchanged());
	RawLeecher l;
	ASSERT_OK(l.open(rig));
	EXPECT_EQ(rig.seeder->state(), SeederState::Tracking);
}

TEST(Seeder, RefusesASecondLeecher)
{
	Rig rig;
	ASSERT_OK(rig.start());
	RawLeecher l;
	ASSERT_OK(l.open(rig));

	auto intruder = connectFrom("127.0.0.2", rig.port());
	ASSERT_TRUE(intruder.ok());
	auto reply = hello(*intruder, 0, "intruder");
	ASSERT_TRUE(reply.ok());
	ASSERT_EQ(reply->header.type, MsgType::Error);
	auto e = decodeError(reply->payload);
	ASSERT_TRUE(e.ok());
	EXPECT_EQ(e->errnoValue, EBUSY);
	EXPECT_NE(e->message.find("already being migrated by leecher/control from 127.0.0.1"), std::string::npos)
		<< e->message;
	// A wrong session id does not get in either.
	auto guesser = connectFrom("127.0.0.2", rig.port());
	ASSERT_TRUE(guesser.ok());
	expectRefused(hello(*guesser, l.session ^ 2, "guesser"), *guesser, ESTALE, "wrong session id");

	// The first leecher carries on, and another connection of its session gets in.
	rig.region.map.data()[5 * kChunk] ^= 0xff;
	auto dirty = l.getDirty();
	ASSERT_TRUE(dirty.ok()) << dirty.error().message();
	EXPECT_EQ(dirty->chunks, std::vector<uint32_t>{5});
	auto data = connectFrom("127.0.0.1", rig.port());
	ASSERT_TRUE(data.ok());
	auto joined = hello(*data, l.session, "leecher/data");
	ASSERT_TRUE(joined.ok());
	EXPECT_EQ(joined->header.type, MsgType::HelloReply);
	EXPECT_TRUE(rig.sourceUntouched());
}

// A real leecher migrates while the source writes; an intruder polling GetDirty (with or
// without a Hello) is refused and the leecher's migration still verifies byte for byte.
TEST(Seeder, KeepsTheDirtyListForItsOwnLeecher)
{
	Rig rig;
	std::atomic<bool> writing{true};
	std::thread writer;
	rig.onSuspend = [&] {
		writing = false;
		writer.join();
	};
	ASSERT_OK(rig.start());
	uint8_t *region = rig.region.map.data();
	writer = std::thread([&] {
		for (uint64_t i = 0; writing; i++) {
			region[(i * 7919 * 4096) % kRegionSize] = uint8_t(i);
			std::this_thread::sleep_for(1ms);
		}
	});

	MemfdMapping dest;
	LeecherOptions lo;
	lo.seeder = rig.endpoint();
	lo.mode = MigrationMode::PreCopy;
	lo.verify = true;
	lo.policy.deadlineSec = 5;
	Leecher leecher(LeecherHooks::intoMemory(dest, "seeder-security-dest"), lo);
	auto run = std::async(std::launch::async, [&] { return leecher.run(); });

	ASSERT_TRUE(waitFor([&] { return rig.seeder->state() != SeederState::Serving; }, 10s));
	// At least once, however fast the migration: the refusal must hold in every state.
	for (int i = 0; i < 20 && (i == 0 || rig.seeder->state() == SeederState::Tracking); i++) {
		auto thief = connectFrom("127.0.0.2", rig.port());
		ASSERT_TRUE(thief.ok());
		expectRefused(request(*thief, MsgType::GetDirty), *thief, EACCES, "GetDirty without Hello");
		auto second = connectFrom("127.0.0.2", rig.port());
		ASSERT_TRUE(second.ok());
		auto r = hello(*second, 0, "thief");
		ASSERT_TRUE(r.ok());
		ASSERT_EQ(r->header.type, MsgType::Error);
		EXPECT_EQ(decodeError(r->payload)->errnoValue, EBUSY);
	}

	auto rep = run.get();
	ASSERT_TRUE(rep.ok()) << rep.error().message();
	ASSERT_TRUE(rep->verified.has_value());
	EXPECT_TRUE(*rep->verified) << rep->verifyMismatchedChunks << " chunks differ";
	ASSERT_EQ(rig.done.wait_for(10s), std::future_status::ready);
	Status served = rig.done.get();
	EXPECT_TRUE(served.ok()) << served.error().message();
	EXPECT_EQ(rig.seeder->state(), SeederState::Released);
	EXPECT_EQ(rig.resumes, 0);
	EXPECT_EQ(rig.releases, 1);
	EXPECT_EQ(std::memcmp(dest.data(), region, kRegionSize), 0);
}

TEST(Seeder, StaysBoundedThroughFiftyThousandConnectCloseCycles)
{
	Rig rig;
	ASSERT_OK(rig.start());
	const int before = threadCount();
	int maxThreads = before;
	const int64_t start = monotonicNs();
	for (int i = 0; i < 50000; i++) {
		auto c = connectFrom("127.0.0.2", rig.port());
		ASSERT_TRUE(c.ok()) << "cycle " << i << ": " << c.error().message();
		if (i % 500 == 0)
			maxThreads = std::max(maxThreads, threadCount());
	}
	const double sec = double(monotonicNs() - start) / 1e9;
	EXPECT_LT(sec, 300.0) << "connect/close cycles stalled"; // a hang guard: the rate is a benchmark's business
	EXPECT_LE(maxThreads, before + rig.opts.maxConnections + kThreadSlack);
	RecordProperty("cycles_per_second", std::to_string(int(50000 / sec)));

	RawLeecher l;
	ASSERT_OK(l.open(rig));
	EXPECT_TRUE(rig.sourceUntouched());
	EXPECT_TRUE(rig.region.unchanged());
}

TEST(Seeder, BoundsThreadsUnderThreeThousandIdleConnections)
{
	rlimit rl;
	ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < 4096) {
		rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, 8192);
		::setrlimit(RLIMIT_NOFILE, &rl);
		if (rl.rlim_cur < 4096)
			GTEST_SKIP() << "RLIMIT_NOFILE hard limit " << rl.rlim_max << " is below 4096";
	}
	Rig rig;
	ASSERT_OK(rig.start());
	const int before = threadCount();
	std::vector<Connection> idle;
	idle.reserve(3000);
	// Three peers at their per-peer cap stay under the total cap: the leecher still gets in.
	const char *sources[] = {"127.0.0.2", "127.0.0.3", "127.0.0.4"};
	for (int i = 0; i < 3000; i++) {
		auto c = connectFrom(sources[i % 3], rig.port());
		ASSERT_TRUE(c.ok()) << "connection " << i << ": " << c.error().message();
		idle.push_back(std::move(c).value());
	}
	// Accepts are in order: once this one is served, all 3000 were accepted or refused.
	RawLeecher l;
	ASSERT_OK(l.open(rig));
	EXPECT_LE(threadCount(), before + rig.opts.maxConnections + kThreadSlack);
	EXPECT_TRUE(rig.sourceUntouched());
	EXPECT_TRUE(rig.region.unchanged());
}

TEST(Seeder, ClosesAConnectionWhoseFrameStalls)
{
	Rig rig;
	rig.opts.frameTimeout = 300ms;
	ASSERT_OK(rig.start());
	RawLeecher l;
	ASSERT_OK(l.open(rig));

	FrameHeader h;
	h.type = MsgType::Ping;
	h.payloadLen = sizeof(uint64_t);
	uint8_t header[kHeaderSize];
	encodeHeader(h, header);
	struct Case {
		const char *what;
		size_t bytes; // of the header, then of the payload
	};
	for (Case k : {Case{"half a header", kHeaderSize / 2}, Case{"header and half a payload", kHeaderSize + 4}}) {
		SCOPED_TRACE(k.what);
		auto c = connectFrom("127.0.0.1", rig.port());
		ASSERT_TRUE(c.ok());
		ASSERT_EQ(hello(*c, l.session, "leecher/data")->header.type, MsgType::HelloReply);
		uint8_t bytes[kHeaderSize + sizeof(uint64_t)] = {};
		std::memcpy(bytes, header, kHeaderSize);
		ASSERT_EQ(::send(c->fd(), bytes, k.bytes, MSG_NOSIGNAL), ssize_t(k.bytes));
		const int64_t sent = monotonicNs();
		// The seeder says why (ETIMEDOUT) and closes.
		auto f = recvFrame(*c, kMaxListPayload, kReplyTimeoutMs);
		const int64_t waitedMs = (monotonicNs() - sent) / 1000000;
		ASSERT_TRUE(f.ok()) << f.error().message();
		ASSERT_EQ(f->header.type, MsgType::Error);
		EXPECT_EQ(decodeError(f->payload)->errnoValue, ETIMEDOUT);
		EXPECT_GE(waitedMs, 250);
		EXPECT_EQ(c->recvHeader(kMaxListPayload, kReplyTimeoutMs).error().code(), ECONNRESET);
	}
	// A connection that never says Hello is closed as well.
	auto mute = connectFrom("127.0.0.2", rig.port());
	ASSERT_TRUE(mute.ok());
	auto f = recvFrame(*mute, kMaxListPayload, kReplyTimeoutMs);
	ASSERT_TRUE(f.ok()) << f.error().message();
	EXPECT_EQ(f->header.type, MsgType::Error);
	// The leecher's own connection is still served.
	auto dirty = l.getDirty();
	ASSERT_TRUE(dirty.ok()) << dirty.error().message();
	EXPECT_TRUE(rig.sourceUntouched());
}

TEST(Seeder, ServeReturnsPromptlyAfterDoneDespiteIdleConnections)
{
	Rig rig;
	ASSERT_OK(rig.start());
	RawLeecher l;
	ASSERT_OK(l.open(rig));
	auto stranger = connectFrom("127.0.0.2", rig.port()); // never says anything
	ASSERT_TRUE(stranger.ok());
	auto member = connectFrom("127.0.0.1", rig.port()); // of the session, idle
	ASSERT_TRUE(member.ok());
	ASSERT_EQ(hello(*member, l.session, "leecher/data")->header.type, MsgType::HelloReply);

	ASSERT_EQ(request(l.ctrl, MsgType::Finalize)->header.type, MsgType::Finalized);
	ASSERT_EQ(request(l.ctrl, MsgType::SwitchOver)->header.type, MsgType::SwitchOverAck);
	ASSERT_EQ(request(l.ctrl, MsgType::Done)->header.type, MsgType::DoneAck);
	ASSERT_EQ(rig.done.wait_for(3s), std::future_status::ready) << "serve() waits for idle connections";
	Status served = rig.done.get();
	EXPECT_TRUE(served.ok()) << served.error().message();
	EXPECT_EQ(rig.releases, 1);
	EXPECT_EQ(rig.resumes, 0);
	// serve() shut the idle connections down.
	EXPECT_FALSE(member->recvHeader(kMaxListPayload, kReplyTimeoutMs).ok());
}

TEST(Seeder, GivesUpLeavingTheSourceRunningWhenItsLeecherVanishesInPreCopy)
{
	Rig rig;
	rig.opts.reconnectTimeout = 500ms;
	ASSERT_OK(rig.start());
	{
		RawLeecher l;
		ASSERT_OK(l.open(rig));
		// A stranger's open connection does not keep the session alive.
		auto stranger = connectFrom("127.0.0.2", rig.port());
		ASSERT_TRUE(stranger.ok());
	}
	ASSERT_EQ(rig.done.wait_for(10s), std::future_status::ready);
	Status served = rig.done.get();
	ASSERT_FALSE(served.ok());
	EXPECT_NE(served.error().message().find("leecher gone during pre-copy; source untouched"), std::string::npos)
		<< served.error().message();
	EXPECT_EQ(rig.seeder->state(), SeederState::RolledBack);
	EXPECT_TRUE(rig.sourceUntouched());
	EXPECT_TRUE(rig.region.unchanged());
}
