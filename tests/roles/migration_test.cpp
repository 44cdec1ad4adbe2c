// SPDX-License-Identifier: GPL-2.0-or-later
// Whole migrations between real processes: a source application writing into its region,
// a seeder tracking it exactly (uffd-wp + PAGEMAP_SCAN on the application's pid), a leecher
// pulling over TCP (optionally through the link emulator), and a destination application
// whose page faults the leecher serves. Every test checks the result byte for byte.
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <thread>

#include "support/result_checks.h"
#include "support/roles_rig.h"
#include "ferry/link/link_emulator.h"
#include "ferry/dirty/tracker.h"
#include "ferry/roles/seeder.h"
#include "ferry/sys/mapping.h"
#include "ferry/sys/userfaultfd.h"
#include "ferry/wire/connection.h"
#include "ferry/wire/protocol.h"

using namespace ferry;
using namespace ferry::test;

namespace {

constexpr uint32_t kChunk = 64 * 1024;

void requireKernelFeatures()
{
	if (ferryBinary().empty())
		GTEST_SKIP() << "FERRY_BIN not set (run through meson test)";
	auto f = Userfaultfd::probeFeatures();
	if (!f.ok())
		GTEST_SKIP() << "userfaultfd unavailable: " << f.error().message();
	uint64_t need = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_MINOR_SHMEM;
	if ((*f & need) != need)
		GTEST_SKIP() << "kernel lacks UFFD_FEATURE_WP_ASYNC or MINOR_SHMEM";
}

LeecherOptions leecherOptions(const Endpoint &ep, MigrationMode mode)
{
	LeecherOptions o;
	o.seeder = ep;
	o.mode = mode;
	o.connections = 2;
	o.depth = 32;
	o.verify = true;
	o.sampleInterval = std::chrono::milliseconds(50);
	o.policy.deadlineSec = 20;
	o.reconnectTimeout = std::chrono::milliseconds(5000);
	return o;
}

// A source application writing `writeMBps` at random into its `size` bytes.
SourceAppOptions sourceApp(uint64_t size, double writeMBps)
{
	SourceAppOptions so;
	so.size = size;
	so.writeMBps = writeMBps;
	return so;
}

// One migration's two ends: a seeder over a real source application, optionally behind the
// link emulator, and a leecher rig with a real destination application. Members go in
// reverse: the destination first, then the link, then the seeder.
struct Migration {
	SeederRig seed;
	std::unique_ptr<LinkEmulator> link; // null: the leecher connects to the seeder directly
	LeecherRig dest;

	Status start(const SourceAppOptions &app, std::optional<LinkParams> linkParams = {})
	{
		FERRY_TRY(seed.start(app, kChunk));
		if (!linkParams)
			return {};
		FERRY_ASSIGN(link, LinkEmulator::start(Endpoint::tcp("127.0.0.1", 0), seed.endpoint(), *linkParams));
		return {};
	}
	// A leecher's options for this migration: through the link, if there is one.
	LeecherOptions options(MigrationMode mode) const
	{
		return leecherOptions(link ? link->endpoint() : seed.endpoint(), mode);
	}
	// The link goes down for good: every connection reset, no new one accepted.
	void cutLinkForGood()
	{
		link->setBlocked(true);
		link->cutAll();
	}
};

// A leecher's hooks that pull into the file `fd` (a destination's memory file), mapped into
// `map`; no application (resume: set it).
LeecherHooks hooksIntoFile(int fd, Mapping &map)
{
	LeecherHooks hooks;
	hooks.prepare = [fd, &map](uint64_t size, uint32_t) -> Result<DestinationRegion> {
		FERRY_ASSIGN(map, Mapping::map(fd, size, PROT_READ | PROT_WRITE, MAP_SHARED));
		return DestinationRegion{map.data(), fd};
	};
	return hooks;
}

// `count` free 2 MiB huge pages for a test: the pool grows through vm.nr_hugepages when it
// lacks them (as root) and shrinks back when the test ends.
class HugePagePool {
public:
	explicit HugePagePool(uint64_t count)
	{
		old_ = readNumber("/proc/sys/vm/nr_hugepages");
		uint64_t free = meminfo("HugePages_Free:");
		if (free < count && std::ofstream("/proc/sys/vm/nr_hugepages") << old_ + count - free) {
			grown_ = true;
			free = meminfo("HugePages_Free:");
		}
		if (meminfo("Hugepagesize:") != 2048)
			why_ = "huge pages here are not 2 MiB";
		else if (free < count)
			why_ = fmt::format("{} free 2 MiB huge pages needed, {} available (vm.nr_hugepages)", count, free);
	}
	~HugePagePool()
	{
		if (grown_)
			std::ofstream("/proc/sys/vm/nr_hugepages") << old_;
	}
	const std::string &why() const { return why_; } // empty: the pages are there

private:
	static uint64_t readNumber(const char *path)
	{
		uint64_t v = 0;
		std::ifstream(path) >> v;
		return v;
	}
	static uint64_t meminfo(const std::string &key)
	{
		std::ifstream in("/proc/meminfo");
		for (std::string k; in >> k;) {
			uint64_t v = 0;
			in >> v;
			if (k == key)
				return v;
			in.ignore(256, '\n');
		}
		return 0;
	}

	uint64_t old_ = 0;
	bool grown_ = false;
	std::string why_;
};

// A symmetric emulated link: round trip `rttMs`, `mbit` Mbit/s each way (0: unlimited).
LinkParams linkOf(int rttMs, double mbit) { return LinkParams::symmetric(std::chrono::milliseconds(rttMs), mbit); }

// What a hybrid leecher run with an injected failure returned, and whether it was injected.
struct InjectedRun {
	Result<LeecherReport> report;
	bool injected;
};

// Runs a hybrid leecher of `m` with `opts`; `inject` runs once, at the first progress report
// that `when` accepts (on the leecher's progress callback).
InjectedRun runInjecting(Migration &m, LeecherOptions opts, const std::function<bool(const LeecherProgress &)> &when,
			 const std::function<void(const LeecherProgress &)> &inject)
{
	std::atomic<bool> injected{false};
	opts.onProgress = [&](const LeecherProgress &p) {
		if (!injected && when(p)) {
			injected = true;
			inject(p);
		}
	};
	Leecher leecher(m.dest.hooks(MigrationMode::Hybrid), opts);
	auto report = leecher.run();
	return {std::move(report), injected.load()};
}

// A bare destination's control connection: Hello as `name`, then TrackStart. Returns the
// connection and the seeder's HelloReply.
struct RawControl {
	Connection conn;
	HelloReplyMsg hello;
};
Result<RawControl> openTracking(const Endpoint &ep, const char *name)
{
	FERRY_ASSIGN(Connection c, connectTo(ep));
	HelloMsg hello;
	hello.clientName = name;
	FERRY_TRY(c.send(MsgType::Hello, 1, encode(hello)));
	FERRY_ASSIGN(Frame reply, recvFrame(c, 1 << 20, 5000));
	FERRY_ASSIGN(HelloReplyMsg hr, decodeHelloReply(reply.payload));
	FERRY_TRY(c.send(MsgType::TrackStart, 2, {}));
	FERRY_ASSIGN(Frame started, recvFrame(c, 1 << 20, 5000));
	if (started.header.type != MsgType::TrackStarted)
		return Error::format(EPROTO, "expected TrackStarted, got {}", msgTypeName(started.header.type));
	return RawControl{std::move(c), hr};
}

} // namespace

class MigrationModes : public ::testing::TestWithParam<MigrationMode> {};

TEST_P(MigrationModes, RegionUnderRandomWritesArrivesByteIdentical)
{
	requireKernelFeatures();
	Migration m;
	ASSERT_OK(m.start(sourceApp(64ull << 20, 60))); // 60 MB/s: above the 50 the acceptance asks for
	Leecher leecher(m.dest.hooks(GetParam()), m.options(GetParam()));
	auto rep = leecher.run();
	ASSERT_TRUE(rep.ok()) << rep.error().message();
	EXPECT_TRUE(rep->completed);
	ASSERT_TRUE(rep->verified.has_value());
	EXPECT_TRUE(*rep->verified) << rep->verifyMismatchedChunks << " chunks differ";
	EXPECT_GT(rep->staleChunksAtFinalize, 0u) << "the source should have dirtied chunks during pre-copy";
	// The pull was quiesced before Finalize: nothing was left queued ahead of the reply.
	EXPECT_EQ(rep->inFlightChunksAtFinalize, 0u) << rep->inFlightChunksAtDecision << " in flight at the decision";
	EXPECT_GT(m.seed.seeder->stats().dirtyChunksReported, 0u);
	// Hybrid hands over within the Finalize round trip; pre-copy drains first, then switches.
	EXPECT_EQ(rep->switchedOverAtFinalize, GetParam() == MigrationMode::Hybrid);
	EXPECT_EQ(m.seed.switchOvers.load(), 1);
	ASSERT_TRUE(m.seed.waitFinished(std::chrono::seconds(10))) << "seeder did not finish after Done";
	EXPECT_TRUE(m.seed.result.ok()) << m.seed.result.error().message();
	EXPECT_EQ(m.seed.seeder->state(), SeederState::Released);
}

// The two-round-trip handover (Finalize, then SwitchOver) still works when asked for.
TEST(Leecher, HybridWithTheAckedSwitchOverArrivesByteIdentical)
{
	requireKernelFeatures();
	Migration m;
	ASSERT_OK(m.start(sourceApp(32ull << 20, 40)));
	auto opts = m.options(MigrationMode::Hybrid);
	opts.switchOverAtFinalize = false;
	Leecher leecher(m.dest.hooks(MigrationMode::Hybrid), opts);
	auto rep = leecher.run();
	ASSERT_TRUE(rep.ok()) << rep.error().message();
	EXPECT_FALSE(rep->switchedOverAtFinalize);
	EXPECT_EQ(m.seed.switchOvers.load(), 1);
	ASSERT_TRUE(rep->verified.has_value());
	EXPECT_TRUE(*rep->verified) << rep->verifyMismatchedChunks << " chunks differ";
}

INSTANTIATE_TEST_SUITE_P(, MigrationModes, ::testing::Values(MigrationMode::Hybrid, MigrationMode::PreCopy),
			 [](const auto &info) { return std::string(migrationModeName(info.param)); });

// Compressible memory crosses the wire compressed, arrives byte for byte, and both ends
// agree on what was compressed; the pages written during the migration (whose content
// compresses too) keep flowing through GetPages and faults, uncompressed.
TEST(Compression, TextRegionArrivesByteIdenticalInAFractionOfItsSize)
{
	requireKernelFeatures();
	SourceAppOptions so = sourceApp(32ull << 20, 20);
	so.textFill = true;
	Migration m;
	ASSERT_OK(m.start(so));
	Leecher leecher(m.dest.hooks(MigrationMode::Hybrid), m.options(MigrationMode::Hybrid));
	auto rep = leecher.run();
	ASSERT_TRUE(rep.ok()) << rep.error().message();
	ASSERT_TRUE(rep->verified.has_value());
	EXPECT_TRUE(*rep->verified) << rep->verifyMismatchedChunks << " chunks differ";
	ASSERT_TRUE(m.seed.waitFinished(std::chrono::seconds(10)));
	SeederStats st = m.seed.seeder->stats();
	// Every chunk of the first pass is text: all of them go compressed.
	EXPECT_GE(rep->compressedChunks, so.size / kChunk);
	EXPECT_EQ(rep->compressedChunks, st.compressedChunks);
	EXPECT_EQ(rep->compressedRawBytes, st.compressedRawBytes);
	EXPECT_LT(st.compressedWireBytes * 2, st.compressedRawBytes);
	EXPECT_LT(rep->bytesTransferred, so.size / 2) << "text should cross in well under half its size";
}

// "auto" (the CLI's default) compresses where the link, not the CPU, is the bottleneck: over
// a 100 Mbit/s link, text memory crosses in well under half its size, byte for byte. And it
// decides after one range: each data connection asks for a single range first, the seeder
// measures the link by the next request, and everything after that first range goes
// compressed (without the probe, a connection's whole first window went raw: here 32 chunks).
TEST(Compression, AutoCompressesTextOverASlowLinkFromEachConnectionsSecondRange)
{
	requireKernelFeatures();
	SourceAppOptions so = sourceApp(32ull << 20, 0);
	so.textFill = true;
	Migration m;
	m.seed.compression = CompressionSpec::automatic();
	ASSERT_OK(m.start(so, linkOf(2, 100)));
	Leecher leecher(m.dest.hooks(MigrationMode::PreCopy), m.options(MigrationMode::PreCopy));
	auto rep = leecher.run();
	ASSERT_TRUE(rep.ok()) << rep.error().message();
	ASSERT_TRUE(rep->verified.has_value());
	EXPECT_TRUE(*rep->verified) << rep->verifyMismatchedChunks << " chunks differ";
	const LeecherOptions lo = m.options(MigrationMode::PreCopy);
	// A range is at most 1 MiB and at most the window (LeecherOptions::depth).
	const uint64_t firstRanges = uint64_t(lo.connections) * std::min<uint64_t>(lo.depth, (1u << 20) / kChunk);
	EXPECT_GE(rep->compressedChunks, so.size / kChunk - firstRanges)
		<< "more than each connection's first 1 MiB range went raw";
	EXPECT_LT(rep->bytesTransferred, so.size / 2) << "over a slow link, text should cross compressed";
}

TEST(Compression, EitherSideCanTurnItOff)
{
	requireKernelFeatures();
	for (bool leecherWants : {false, true}) {
		SCOPED_TRACE(leecherWants ? "seeder says none" : "leecher says no");
		Migration m;
		if (leecherWants)
			m.seed.compression = CompressionSpec{0};
		SourceAppOptions so = sourceApp(8ull << 20, 5);
		so.textFill = true;
		ASSERT_OK(m.start(so));
		auto lo = m.options(MigrationMode::PreCopy);
		lo.compression = leecherWants;
		Leecher leecher(m.dest.hooks(MigrationMode::PreCopy), lo);
		auto rep = leecher.run();
		ASSERT_TRUE(rep.ok()) << rep.error().message();
		EXPECT_TRUE(rep->verified.value_or(false));
		EXPECT_EQ(rep->compressedChunks, 0u);
		EXPECT_EQ(m.seed.seeder->stats().compressedChunks, 0u);
		EXPECT_GE(rep->bytesTransferred, so.size);
	}
}

namespace {

// A seeder that negotiates (or not) compression and answers every chunk request with a
// ChunkZstd frame whose body is `body`. Enough protocol to reach the data path.
class FakeZstdSeeder {
public:
	FakeZstdSeeder(bool negotiate, std::vector<uint8_t> body) : negotiate_(negotiate), body_(std::move(body))
	{
		auto l = Listener::listen(Endpoint::tcp("127.0.0.1", 0));
		if (!l.ok())
			return;
		listener_.emplace(std::move(l).value());
		thread_ = std::thread([this] { acceptLoop(); });
	}
	~FakeZstdSeeder()
	{
		stop_ = true;
		if (thread_.joinable())
			thread_.join();
		for (auto &t : conns_)
			t.join();
	}
	bool ok() const { return listener_.has_value(); }
	Endpoint endpoint() const { return listener_->boundEndpoint(); }

private:
	static constexpr uint64_t kSize = 1 << 20;

	void acceptLoop()
	{
		while (!stop_) {
			auto c = listener_->accept(100);
			if (c.ok())
				conns_.emplace_back([this, conn = std::move(c).value()]() mutable { serve(conn); });
		}
	}
	void serve(Connection &conn)
	{
		while (!stop_) {
			auto h = conn.recvHeader(1 << 16, 100);
			if (!h.ok()) {
				if (h.error().code() == ETIMEDOUT)
					continue;
				return;
			}
			auto pl = conn.recvPayload(*h);
			if (!pl.ok())
				return;
			Status st;
			switch (h->type) {
			case MsgType::Hello: {
				auto hello = decodeHello(*pl);
				HelloReplyMsg r{kProtocolVersion, 42, kSize, kChunk, HelloReplyMsg::kFlagTracking};
				if (negotiate_ && hello.ok() && (hello->features & HelloMsg::kFeatureZstd))
					r.flags |= HelloReplyMsg::kFlagZstd;
				st = conn.send(MsgType::HelloReply, h->requestId, encode(r));
				break;
			}
			case MsgType::TrackStart: st = conn.send(MsgType::TrackStarted, h->requestId, {}); break;
			case MsgType::GetDirty: st = conn.send(MsgType::DirtyList, h->requestId, encode(DirtyListMsg{})); break;
			case MsgType::GetRange:
			case MsgType::GetChunk: {
				std::vector<uint8_t> p(4);
				std::memcpy(p.data(), pl->data(), 4); // the first chunk asked for
				p.insert(p.end(), body_.begin(), body_.end());
				st = conn.send(MsgType::ChunkZstd, h->requestId, p);
				break;
			}
			default: break;
			}
			if (!st.ok())
				return;
		}
	}

	bool negotiate_;
	std::vector<uint8_t> body_;
	std::optional<Listener> listener_;
	std::atomic<bool> stop_{false};
	std::thread thread_;
	std::vector<std::thread> conns_;
};

} // namespace

TEST(Compression, LeecherRejectsBadCompressedChunksWithAClearError)
{
	if (ferryBinary().empty())
		GTEST_SKIP() << "FERRY_BIN not set";
	struct Case {
		const char *what;
		bool negotiate;
		std::vector<uint8_t> body;
		const char *expect;
	};
	std::vector<uint8_t> notZstd(100, 0x42);
	// A valid frame of 100 text bytes: it decodes, but to fewer bytes than the chunk holds.
	std::vector<uint8_t> small(ChunkCompressor::bound(100));
	std::vector<uint8_t> text(100, 'a');
	auto n = ChunkCompressor(1).compress(text, small);
	ASSERT_TRUE(n.has_value());
	small.resize(*n);
	for (const Case &c : {Case{"not negotiated", false, notZstd, "did not negotiate"},
			      Case{"not a zstd frame", true, notZstd, "zstd"},
			      Case{"wrong size", true, small, "holds 100 bytes, the chunk has 65536"}}) {
		SCOPED_TRACE(c.what);
		FakeZstdSeeder fake(c.negotiate, c.body);
		ASSERT_TRUE(fake.ok());
		LeecherRig dest;
		auto opts = leecherOptions(fake.endpoint(), MigrationMode::PreCopy);
		opts.reconnectTimeout = std::chrono::milliseconds(2000);
		Leecher leecher(dest.hooks(MigrationMode::PreCopy), opts);
		auto rep = leecher.run();
		ASSERT_FALSE(rep.ok());
		EXPECT_EQ(rep.error().code(), EPROTO) << rep.error().message();
		EXPECT_NE(rep.error().message().find(c.expect), std::string::npos) << rep.error().message();
	}
}

TEST(Leecher, DestinationReadsStaleChunksBeforeBackgroundPullThroughA20msLink)
{
	requireKernelFeatures();
	Migration m;
	ASSERT_OK(m.start(sourceApp(64ull << 20, 60), linkOf(20, 0)));
	m.dest.appOpts.readMBps = 400; // reads hit stale chunks while they are still being pulled
	Leecher leecher(m.dest.hooks(MigrationMode::Hybrid), m.options(MigrationMode::Hybrid));
	auto rep = leecher.run();
	ASSERT_TRUE(rep.ok()) << rep.error().message();
	EXPECT_GT(rep->staleChunksAtFinalize, 0u);
	EXPECT_GT(rep->faults, 0u) << "the destination should have faulted on stale chunks";
	EXPECT_GT(rep->faultChannelChunks, 0u) << "faulted chunks should come on the fault channel";
	ASSERT_TRUE(rep->verified.has_value());
	EXPECT_TRUE(*rep->verified);
}

// The fault channel is an optimisation, not a dependency: when every connection drops in
// post-copy, the faults it owed go to the (reconnecting) data connections, and the copy
// completes byte for byte.
TEST(Leecher, FaultsOwedByALostFaultChannelArriveOnTheDataConnections)
{
	requireKernelFeatures();
	Migration m;
	ASSERT_OK(m.start(sourceApp(32ull << 20, 0), linkOf(2, 100)));
	m.dest.appOpts.readMBps = 50; // faults keep arriving while the link is cut
	auto opts = m.options(MigrationMode::Hybrid);
	opts.postcopyOnly = true;
	opts.backgroundPull = false; // every chunk comes by fault
	auto [rep, cut] = runInjecting(
		m, opts,
		[](const LeecherProgress &p) { return p.state == LeecherState::PostCopy && p.chunksLocal > 16; },
		[&](const LeecherProgress &) { m.link->cutAll(); });
	ASSERT_TRUE(cut) << "post-copy never got going";
	ASSERT_TRUE(rep.ok()) << rep.error().message();
	EXPECT_GE(rep->reconnects, 1u);
	EXPECT_GT(rep->faultChannelChunks, 0u) << "the channel served faults before the cut";
	EXPECT_LT(rep->faultChannelChunks, rep->faults) << "after the cut, faults must have taken the data connections";
	ASSERT_TRUE(rep->verified.has_value());
	EXPECT_TRUE(*rep->verified);
}

// A faulted chunk that ferry never stored is placed with UFFDIO_COPY, which fills only the
// pages missing from the region's file. A destination whose file already held pages of it
// (its QEMU wrote them, say) must still end with the source's bytes in every page: the
// leecher empties it first.
TEST(Leecher, PostCopyReplacesWhatTheDestinationRegionHeldBefore)
{
	requireKernelFeatures();
	Migration m;
	ASSERT_OK(m.start(sourceApp(16ull << 20, 0), linkOf(2, 0)));
	m.dest.appOpts.readMBps = 200;
	auto opts = m.options(MigrationMode::Hybrid);
	opts.postcopyOnly = true;
	opts.backgroundPull = false; // every chunk comes by fault, most on the fault channel
	LeecherHooks hooks = m.dest.hooks(MigrationMode::Hybrid);
	hooks.prepare = [prepare = hooks.prepare](uint64_t size, uint32_t chunk) -> Result<DestinationRegion> {
		FERRY_ASSIGN(DestinationRegion dest, prepare(size, chunk));
		uint8_t *base = dest.base;
		// Every other chunk holds bytes before the migration: all of it, or its second page.
		for (uint64_t i = 0; i * chunk < size; i += 2) {
			if (i % 4 == 0)
				std::memset(base + i * chunk, 0xee, chunk);
			else
				std::memset(base + i * chunk + 4096, 0xee, 4096);
		}
		return dest;
	};
	Leecher leecher(std::move(hooks), opts);
	auto rep = leecher.run();
	ASSERT_TRUE(rep.ok()) << rep.error().message();
	EXPECT_GT(rep->faultChannelChunks, (16ull << 20) / kChunk / 2) << "most chunks should come on the fault channel";
	ASSERT_TRUE(rep->verified.has_value());
	EXPECT_TRUE(*rep->verified);
}

// The chunks a seeder reports zero (here: the untouched half of the source, holes of its
// memfd, named in TrackStarted) are never pulled. A destination whose file held bytes there
// before the migration must still read zero.
TEST(Leecher, ZeroChunksReadAsZeroWhateverTheDestinationHeldBefore)
{
	requireKernelFeatures();
	constexpr uint64_t kSize = 16ull << 20;
	Migration m;
	SourceAppOptions so = sourceApp(kSize, 0);
	so.fill = 0.5; // the second half is never written: zero runs
	ASSERT_OK(m.start(so));
	MemfdMapping dest;
	LeecherHooks hooks = LeecherHooks::intoMemory(dest, "prefilled-destination");
	hooks.prepare = [prepare = hooks.prepare](uint64_t size, uint32_t chunk) -> Result<DestinationRegion> {
		FERRY_ASSIGN(DestinationRegion d, prepare(size, chunk));
		std::memset(d.base, 0xee, size);
		return d;
	};
	Leecher leecher(std::move(hooks), m.options(MigrationMode::PreCopy));
	auto rep = leecher.run();
	ASSERT_TRUE(rep.ok()) << rep.error().message();
	EXPECT_GE(rep->zeroChunksAtStart, kSize / 2 / kChunk - 1) << "the untouched half should come as zero runs";
	ASSERT_TRUE(rep->verified.has_value());
	EXPECT_TRUE(*rep->verified);
	EXPECT_EQ(std::memcmp(dest.data(), m.seed.app->mapping().data(), kSize), 0);
}

// A chunk the destination never held lands through its memory file (pwrite). A file without a
// write path (hugetlbfs) refuses that: the chunks go through the mapping, byte for byte.
TEST(Leecher, PullsIntoAFileWithoutAWritePathThroughItsMapping)
{
	requireKernelFeatures();
	constexpr uint64_t kSize = 32ull << 20;
	HugePagePool pool(kSize >> 21);
	if (!pool.why().empty())
		GTEST_SKIP() << pool.why();
	UniqueFd fd(::memfd_create("hugetlb-destination", MFD_CLOEXEC | MFD_HUGETLB));
	ASSERT_TRUE(fd.valid()) << std::strerror(errno);
	ASSERT_EQ(::ftruncate(fd.get(), kSize), 0) << std::strerror(errno);
	uint8_t probe = 0;
	ASSERT_EQ(::pwrite(fd.get(), &probe, 1, 0), -1) << "hugetlbfs took a write(): the test tests nothing";
	ASSERT_EQ(errno, EINVAL);
	Migration m;
	ASSERT_OK(m.start(sourceApp(kSize, 0)));
	Mapping map;
	LeecherHooks hooks = hooksIntoFile(fd.get(), map);
	hooks.resume = [] { return Status(); };
	Leecher leecher(std::move(hooks), m.options(MigrationMode::PreCopy));
	auto rep = leecher.run();
	ASSERT_TRUE(rep.ok()) << rep.error().message();
	ASSERT_TRUE(rep->verified.has_value());
	EXPECT_TRUE(*rep->verified);
}

TEST(Leecher, ResumesPullAfterConnectionDrop)
{
	requireKernelFeatures();
	Migration m;
	// No writes, so no re-pulls: every byte beyond one copy is resume overhead. 100 Mbit/s: the
	// 64 MiB pull takes ~5 s, time enough to cut it in the middle.
	ASSERT_OK(m.start(sourceApp(64ull << 20, 0), linkOf(2, 100)));
	uint64_t localAtCut = 0;
	auto [rep, cut] = runInjecting(
		m, m.options(MigrationMode::Hybrid),
		[](const LeecherProgress &p) {
			return p.state == LeecherState::PreCopy && p.bytesTransferred * 3 > p.chunksTotal * kChunk;
		},
		[&](const LeecherProgress &p) {
			localAtCut = p.chunksLocal;
			m.link->cutAll();
		});
	ASSERT_TRUE(cut) << "the pull finished before it could be cut";
	ASSERT_TRUE(rep.ok()) << rep.error().message();
	EXPECT_GE(rep->reconnects, 1u);
	EXPECT_GT(localAtCut, 0u);
	// Resumed, not restarted: a restart would move at least 4/3 of the region.
	EXPECT_LT(rep->bytesTransferred, rep->bytesTotal * 6 / 5);
	ASSERT_TRUE(rep->verified.has_value());
	EXPECT_TRUE(*rep->verified);
}

TEST(Seeder, ResumesSourceWhenDestinationVanishesAfterFinalizeBeforeSwitchOver)
{
	requireKernelFeatures();
	SeederRig seed;
	ASSERT_OK(seed.start(sourceApp(8ull << 20, 20), kChunk, std::chrono::milliseconds(300)));
	{
		// A destination that asks to finalize and then dies.
		auto ctl = openTracking(seed.endpoint(), "vanishing");
		ASSERT_OK(ctl);
		ASSERT_TRUE(ctl->conn.send(MsgType::Finalize, 3, {}).ok());
		auto f = recvFrame(ctl->conn, 64 << 20, 5000);
		ASSERT_TRUE(f.ok());
		EXPECT_EQ(f->header.type, MsgType::Finalized);
		EXPECT_EQ(seed.seeder->state(), SeederState::Suspended);
	}
	ASSERT_TRUE(seed.waitFinished(std::chrono::seconds(10))) << "seeder did not roll back";
	EXPECT_FALSE(seed.result.ok());
	EXPECT_EQ(seed.seeder->state(), SeederState::RolledBack);
	// The source application runs again: it obeys a new suspend/resume cycle.
	EXPECT_TRUE(seed.app->suspend().ok());
	EXPECT_TRUE(seed.app->resume().ok());
}

// A leecher that reconnects repeats its Finalize on a new connection, maybe while the first
// is still being handled: both get the same final dirty set (one suspend, one final scan).
TEST(Seeder, AnswersTwoFinalizesAtOnceWithTheSameDirtySet)
{
	requireKernelFeatures();
	SeederRig seed;
	ASSERT_OK(seed.start(sourceApp(8ull << 20, 40), kChunk, std::chrono::seconds(5)));
	auto first = openTracking(seed.endpoint(), "first");
	ASSERT_OK(first);
	auto second = connectTo(seed.endpoint());
	ASSERT_OK(second);
	HelloMsg hello;
	hello.clientName = "second";
	hello.resumeSessionId = first->hello.sessionId;
	ASSERT_TRUE(second->send(MsgType::Hello, 1, encode(hello)).ok());
	auto joined = recvFrame(*second, 1 << 20, 5000);
	ASSERT_OK(joined);
	ASSERT_EQ(joined->header.type, MsgType::HelloReply);
	std::this_thread::sleep_for(std::chrono::milliseconds(100)); // the source writes meanwhile
	ASSERT_TRUE(first->conn.send(MsgType::Finalize, 3, {}).ok());
	ASSERT_TRUE(second->send(MsgType::Finalize, 3, {}).ok());
	auto a = recvFrame(first->conn, 64 << 20, 5000);
	auto b = recvFrame(*second, 64 << 20, 5000);
	ASSERT_OK(a);
	ASSERT_OK(b);
	ASSERT_EQ(a->header.type, MsgType::Finalized);
	ASSERT_EQ(b->header.type, MsgType::Finalized);
	auto fa = decodeFinalized(a->payload, first->hello.geometry().chunkCount());
	auto fb = decodeFinalized(b->payload, first->hello.geometry().chunkCount());
	ASSERT_OK(fa);
	ASSERT_OK(fb);
	EXPECT_FALSE(fa->chunks.empty()) << "the source wrote 40 MB/s since TrackStart";
	EXPECT_EQ(fa->chunks, fb->chunks);
	EXPECT_EQ(fa->pageMasks, fb->pageMasks);
	EXPECT_EQ(fa->suspendedAtUnixNs, fb->suspendedAtUnixNs);
	EXPECT_EQ(seed.seeder->state(), SeederState::Suspended);
}

// A Finalize that asks to switch over commits the source before its reply: the switch-over
// hook has run, a repeat changes nothing, and a destination that vanishes afterwards leaves
// the source suspended (kept, as after any switch-over), not resumed.
TEST(Seeder, SwitchesOverInAFinalizeThatAsksAndThenKeepsTheSuspendedSource)
{
	requireKernelFeatures();
	SeederRig seed;
	ASSERT_OK(seed.start(sourceApp(8ull << 20, 20), kChunk, std::chrono::milliseconds(300)));
	{
		auto ctl = openTracking(seed.endpoint(), "one-step");
		ASSERT_OK(ctl);
		EXPECT_TRUE(ctl->hello.flags & HelloReplyMsg::kFlagSwitchOverAtFinalize);
		for (uint64_t id : {3, 4}) { // the second one is a retry after a lost reply
			ASSERT_TRUE(ctl->conn.send(MsgType::Finalize, id, encode(FinalizeMsg{FinalizeMsg::kFlagSwitchOver})).ok());
			auto f = recvFrame(ctl->conn, 64 << 20, 5000);
			ASSERT_TRUE(f.ok());
			EXPECT_EQ(f->header.type, MsgType::Finalized);
			EXPECT_EQ(seed.seeder->state(), SeederState::SwitchedOver);
			EXPECT_EQ(seed.switchOvers.load(), 1);
		}
	}
	EXPECT_FALSE(seed.waitFinished(std::chrono::milliseconds(1500))) << "the seeder must keep serving";
	EXPECT_EQ(seed.seeder->state(), SeederState::SwitchedOver) << "rolled back after the switch-over";
	EXPECT_TRUE(processAlive(seed.app->pid())) << "the suspended source is kept";
}

TEST(Leecher, FailsWithClearErrorWhenSeederVanishesMidTransfer)
{
	requireKernelFeatures();
	Migration m;
	ASSERT_OK(m.start(sourceApp(64ull << 20, 0), linkOf(2, 100)));
	auto opts = m.options(MigrationMode::Hybrid);
	opts.reconnectTimeout = std::chrono::milliseconds(500);
	// The seeder's host is gone once the first chunk arrived: no reconnect possible.
	auto [rep, killed] = runInjecting(
		m, opts, [](const LeecherProgress &p) { return p.chunksLocal > 0; },
		[&](const LeecherProgress &) { m.cutLinkForGood(); });
	ASSERT_TRUE(killed);
	ASSERT_FALSE(rep.ok());
	EXPECT_NE(rep.error().message().find("gave up reconnecting"), std::string::npos) << rep.error().message();
	// Before switch-over the source is untouched: still tracking, never suspended.
	EXPECT_EQ(m.seed.seeder->state(), SeederState::Tracking);
}

TEST(Leecher, RejectsASeederThatSpeaksGarbage)
{
	if (ferryBinary().empty())
		GTEST_SKIP() << "FERRY_BIN not set";
	auto l = Listener::listen(Endpoint::tcp("127.0.0.1", 0));
	ASSERT_TRUE(l.ok());
	std::thread fake([&] {
		auto c = l->accept(5000);
		if (!c.ok())
			return;
		uint8_t junk[64];
		for (size_t i = 0; i < sizeof junk; i++)
			junk[i] = uint8_t(i * 37 + 11);
		(void)::send(c->fd(), junk, sizeof junk, MSG_NOSIGNAL);
		uint8_t sink[256];
		(void)::recv(c->fd(), sink, sizeof sink, 0);
	});
	LeecherRig dest;
	auto opts = leecherOptions(l->boundEndpoint(), MigrationMode::Hybrid);
	Leecher leecher(dest.hooks(MigrationMode::Hybrid), opts);
	auto rep = leecher.run();
	fake.join();
	ASSERT_FALSE(rep.ok());
	EXPECT_FALSE(rep.error().message().empty());
}

// A destination that runs out of memory mid-pull (its memory file on a full tmpfs: the
// guest RAM's memfd under a memory limit fails the same way) is not a network hiccup: the
// leecher gives up at once with the file's error, before any switch-over, and the source
// goes on running, never suspended.
TEST(Leecher, ADestinationOutOfMemoryFailsBeforeTheSwitchOverAndLeavesTheSourceRunning)
{
	requireKernelFeatures();
	constexpr uint64_t kSize = 32ull << 20;
	char dir[] = "/tmp/ferry-full-tmpfs-XXXXXX";
	ASSERT_NE(::mkdtemp(dir), nullptr) << std::strerror(errno);
	if (::mount("tmpfs", dir, "tmpfs", 0, "size=8m") != 0) {
		int e = errno;
		::rmdir(dir);
		GTEST_SKIP() << "cannot mount a small tmpfs (needs root): " << std::strerror(e);
	}
	struct Unmount {
		const char *dir;
		~Unmount()
		{
			::umount2(dir, MNT_DETACH);
			::rmdir(dir);
		}
	} unmount{dir};
	for (MigrationMode mode : {MigrationMode::PreCopy, MigrationMode::Hybrid}) {
		SCOPED_TRACE(mode == MigrationMode::PreCopy ? "precopy" : "hybrid");
		const std::string path = std::string(dir) + "/region";
		::unlink(path.c_str());
		UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
		ASSERT_TRUE(fd.valid()) << std::strerror(errno);
		ASSERT_EQ(::ftruncate(fd.get(), kSize), 0) << std::strerror(errno); // sparse: fits
		Migration m;
		ASSERT_OK(m.start(sourceApp(kSize, 5)));
		Mapping map;
		LeecherHooks hooks = hooksIntoFile(fd.get(), map);
		bool resumed = false;
		hooks.resume = [&] {
			resumed = true;
			return Status();
		};
		Leecher leecher(std::move(hooks), m.options(mode));
		auto rep = leecher.run();
		ASSERT_FALSE(rep.ok()) << "32 MiB pulled into an 8 MiB tmpfs";
		EXPECT_EQ(rep.error().code(), ENOSPC) << rep.error().message();
		EXPECT_NE(rep.error().message().find("destination's memory file"), std::string::npos) << rep.error().message();
		EXPECT_FALSE(resumed) << "nothing may run on a destination that lacks its memory";
		EXPECT_EQ(m.seed.switchOvers.load(), 0);
		EXPECT_EQ(m.seed.seeder->state(), SeederState::Tracking) << "the source must not be suspended";
		EXPECT_TRUE(processAlive(m.seed.app->pid())) << "the source application must keep running";
	}
}

namespace {

// A raw client of the seeder: Hello (new or resumed session) and one control request.
struct RawSession {
	Connection conn;
	HelloReplyMsg hello;

	static Result<RawSession> open(const Endpoint &ep, uint64_t sessionId)
	{
		FERRY_ASSIGN(Connection c, connectTo(ep, 5000));
		FERRY_TRY(c.send(MsgType::Hello, 0, encode(HelloMsg{kProtocolVersion, kProtocolVersion, sessionId, "test/raw", 0})));
		FERRY_ASSIGN(Frame f, recvFrame(c, 64 * 1024, 5000));
		if (f.header.type != MsgType::HelloReply)
			return Error::format(EPROTO, "expected HelloReply, got {}", msgTypeName(f.header.type));
		FERRY_ASSIGN(HelloReplyMsg r, decodeHelloReply(f.payload));
		return RawSession{std::move(c), r};
	}
	Result<Frame> request(MsgType type, uint64_t id)
	{
		FERRY_TRY(conn.send(type, id, {}));
		return recvFrame(conn, 64u << 20, 5000);
	}
};

} // namespace

// The seeder hands out a dirty list only once; if the reply is lost with its connection, the
// chunks in it must be owed again to the session, or the destination would keep stale copies.
TEST(Seeder, ResendsADirtyListLostWithItsConnectionWhileTheSourceKeepsWriting)
{
	requireKernelFeatures();
	SeederRig seed;
	SourceAppOptions so = sourceApp(16ull << 20, 20); // the source keeps writing throughout
	ASSERT_OK(seed.start(so, kChunk));
	auto first = RawSession::open(seed.endpoint(), 0);
	ASSERT_TRUE(first.ok()) << first.error().message();
	auto started = first->request(MsgType::TrackStart, 1);
	ASSERT_TRUE(started.ok()) << started.error().message();
	ASSERT_EQ(started->header.type, MsgType::TrackStarted);
	const uint32_t chunks = uint32_t(so.size / kChunk);
	// Wait (bounded) for a non-empty dirty list: the one that will be "lost".
	DirtyListMsg lost;
	for (uint64_t id = 2; lost.chunks.empty() && id < 200; id++) {
		auto f = first->request(MsgType::GetDirty, id);
		ASSERT_TRUE(f.ok()) << f.error().message();
		ASSERT_EQ(f->header.type, MsgType::DirtyList);
		auto d = decodeDirtyList(f->payload, chunks);
		ASSERT_TRUE(d.ok()) << d.error().message();
		lost = std::move(*d);
	}
	ASSERT_FALSE(lost.chunks.empty()) << "the source wrote nothing";
	// The connection dies before its owner could use the list; the session resumes.
	first->conn.shutdown();
	auto again = RawSession::open(seed.endpoint(), first->hello.sessionId);
	ASSERT_TRUE(again.ok()) << again.error().message();
	auto f = again->request(MsgType::GetDirty, 1);
	ASSERT_TRUE(f.ok()) << f.error().message();
	ASSERT_EQ(f->header.type, MsgType::DirtyList);
	auto resent = decodeDirtyList(f->payload, chunks);
	ASSERT_TRUE(resent.ok()) << resent.error().message();
	for (size_t k = 0; k < lost.chunks.size(); k++) {
		auto it = std::lower_bound(resent->chunks.begin(), resent->chunks.end(), lost.chunks[k]);
		ASSERT_TRUE(it != resent->chunks.end() && *it == lost.chunks[k])
			<< "chunk " << lost.chunks[k] << " of the lost list is not owed again";
		uint64_t mask = resent->pageMasks.empty() ? kAllPages : resent->pageMasks[size_t(it - resent->chunks.begin())];
		uint64_t lostMask = lost.pageMasks.empty() ? kAllPages : lost.pageMasks[k];
		EXPECT_EQ(mask & lostMask, lostMask) << "chunk " << lost.chunks[k] << ": pages of the lost list missing";
	}
	EXPECT_TRUE(processAlive(seed.app->pid())) << "the source application must keep running";
}

// After the switch-over the source is the only copy of what the destination lacks. When the
// link goes down for good, the leecher gives up after its reconnect window with a clear error,
// and the seeder keeps the suspended source and goes on serving (for a new leecher with the
// session id) instead of rolling back or releasing it.
// The seeder never reads a hole of the file its region maps (reading one through a mapping
// allocates it: an idle guest's untouched RAM would grow the source to its full size): a
// sparse region arrives byte for byte, and the source file still holds only what was written.
TEST(Seeder, SendsHolesOfItsRegionFileAsZeroWithoutAllocatingThem)
{
	requireKernelFeatures();
	constexpr uint64_t kSize = 64ull << 20;
	auto src = MemfdMapping::create("sparse-source", kSize);
	ASSERT_OK(src);
	const uint64_t written[] = {0, 5ull << 20, (33ull << 20) + 4096, kSize - 4096};
	for (uint64_t off : written)
		std::memset(src->data() + off, 0xab, 4096);
	TrackedRegion r{0, reinterpret_cast<uintptr_t>(src->data()), kSize, kChunk};
	auto tracker = makeUffdWpTracker(r, Userfaultfd());
	ASSERT_OK(tracker);
	SeederOptions so;
	so.chunkSize = kChunk;
	so.regionFd = src->fd.get();
	Seeder seeder(src->data(), kSize, std::move(*tracker), SeederHooks{[] { return Status(); }, [] { return Status(); }, [] {}, {}},
		      so);
	auto l = Listener::listen(Endpoint::tcp("127.0.0.1", 0));
	ASSERT_OK(l);
	std::thread serving([&] { (void)seeder.serve(*l); });
	MemfdMapping dest;
	LeecherOptions lo = leecherOptions(l->boundEndpoint(), MigrationMode::PreCopy);
	lo.verify = false; // the verifier would read (and so allocate) the source's holes
	// A hole written once tracking runs (the first sample comes after TrackStart): reported
	// zero at the start, then dirty, then pulled.
	constexpr uint64_t kLateWrite = (17ull << 20) + 8192;
	std::atomic<bool> lateWritten{false};
	lo.onProgress = [&](const LeecherProgress &) {
		if (!lateWritten.exchange(true))
			std::memset(src->data() + kLateWrite, 0xcd, 4096);
	};
	Leecher leecher(LeecherHooks::intoMemory(dest, "sparse-destination"), lo);
	auto rep = leecher.run();
	seeder.stop();
	serving.join();
	ASSERT_TRUE(rep.ok()) << rep.error().message();
	ASSERT_TRUE(lateWritten);
	// The holes were never requested: every chunk but the four written ones came as zero
	// runs in TrackStarted.
	EXPECT_EQ(rep->zeroChunksAtStart, kSize / kChunk - std::size(written));
	struct stat st {};
	ASSERT_EQ(::fstat(src->fd.get(), &st), 0);
	// The chunks holding the written pages are read whole; nothing else.
	EXPECT_LE(uint64_t(st.st_blocks) * 512, (std::size(written) + 1) * kChunk) << "the seeder read holes of the source";
	EXPECT_EQ(src->data()[kLateWrite], 0xcd);
	EXPECT_EQ(dest.data()[kLateWrite], 0xcd) << "a hole written after the scan was not pulled";
	// Only now (this reads, and so fills, the source's holes): byte for byte.
	EXPECT_EQ(std::memcmp(dest.data(), src->data(), kSize), 0);
}

TEST(Seeder, KeepsTheSuspendedSourceWhenTheLinkDiesForGoodInPostCopy)
{
	requireKernelFeatures();
	Migration m;
	ASSERT_OK(m.start(sourceApp(64ull << 20, 0), linkOf(2, 0)));
	m.dest.appOpts.readMBps = 50; // faults keep arriving; no background pull finishes the job
	auto opts = m.options(MigrationMode::Hybrid);
	opts.postcopyOnly = true;       // every chunk must come by fault
	opts.backgroundPull = false;
	opts.verify = false;
	opts.reconnectTimeout = std::chrono::milliseconds(1500);
	auto [rep, cut] = runInjecting(
		m, opts, [](const LeecherProgress &p) { return p.state == LeecherState::PostCopy; },
		[&](const LeecherProgress &) { m.cutLinkForGood(); });
	ASSERT_TRUE(cut) << "post-copy never started";
	ASSERT_FALSE(rep.ok()) << "every chunk arrived before the cut";
	EXPECT_NE(rep.error().message().find("gave up reconnecting"), std::string::npos) << rep.error().message();
	EXPECT_EQ(m.seed.seeder->state(), SeederState::SwitchedOver) << "neither rolled back nor released";
	EXPECT_FALSE(m.seed.waitFinished(std::chrono::milliseconds(500))) << "the seeder must keep serving";
	EXPECT_TRUE(processAlive(m.seed.app->pid())) << "the suspended source is kept";
}

// Killing the source application after the switch-over loses nothing: the seeder serves from
// its own mapping of the region, so post-copy completes and the copy verifies.
TEST(Leecher, CompletesPostCopyWhenTheSourceApplicationIsKilledAfterSwitchOver)
{
	requireKernelFeatures();
	Migration m;
	ASSERT_OK(m.start(sourceApp(32ull << 20, 40), linkOf(2, 200)));
	auto opts = m.options(MigrationMode::Hybrid);
	opts.postcopyOnly = true; // most of the region is still at the source when it dies
	const pid_t source = m.seed.app->pid();
	auto [rep, killed] = runInjecting(
		m, opts, [](const LeecherProgress &p) { return p.state == LeecherState::PostCopy; },
		[&](const LeecherProgress &) { ::kill(source, SIGKILL); });
	ASSERT_TRUE(killed) << "post-copy never started";
	ASSERT_TRUE(rep.ok()) << rep.error().message();
	ASSERT_TRUE(rep->verified.has_value());
	EXPECT_TRUE(*rep->verified) << "the destination must hold the source's last state byte for byte";
}
