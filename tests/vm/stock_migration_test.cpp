// SPDX-License-Identifier: GPL-2.0-or-later
// Real guests (TCG, 256 MiB) driven over QMP: boot, stop/cont, stock pre-copy and post-copy
// with the `verify` workload, and failures that must end in a recorded error, never a hang.
// The guest image comes from vm-images/build-image via FERRY_VM_IMAGE_DIR.
#include <cerrno>
#include <chrono>

#include <gtest/gtest.h>

#include "harness/console_watcher.h"
#include "harness/qemu_launcher.h"
#include "harness/vm_scenario.h"
#include "support/guest_image.h"

using namespace std::chrono_literals;
using namespace ferry;

namespace {

ScenarioConfig baseConfig(const GuestImage &image, const char *mode)
{
	ScenarioConfig cfg;
	cfg.image = image;
	cfg.mode = mode;
	cfg.memMib = 256;
	cfg.workload.mode = "verify";
	cfg.workload.rateMBps = 20;
	cfg.workload.wssMib = 32;
	cfg.migrationTimeout = 60s;
	cfg.bootTimeout = 60s;
	return cfg;
}

std::string describe(const MigrationRecord &rec)
{
	return rec.toJson().toString();
}

// One stock QEMU migration (a mode of addStockModes) between two fresh guests.
MigrationRecord runStock(const ScenarioConfig &cfg)
{
	ScenarioRunner runner;
	addStockModes(runner);
	return runner.run(cfg);
}

// A migration that must fail: it ends, well within the test's time, with a recorded error.
void runToAnError(const ScenarioConfig &cfg, MigrationRecord &rec)
{
	auto start = std::chrono::steady_clock::now();
	rec = runStock(cfg);
	EXPECT_LT(std::chrono::steady_clock::now() - start, 90s);
	EXPECT_FALSE(rec.completed) << describe(rec);
	ASSERT_TRUE(rec.error) << describe(rec);
	EXPECT_FALSE(rec.success());
}

// The guest goes on where it stopped, on the destination: its checks found nothing wrong and
// its heartbeat continued (not restarted), at most one line split between the two consoles.
void expectGuestContinuedOnDestination(const MigrationRecord &rec)
{
	EXPECT_TRUE(rec.guestAlive) << describe(rec);
	EXPECT_TRUE(rec.verifyOk) << describe(rec);
	EXPECT_EQ(rec.verifyErrorLines, 0u) << describe(rec);
	ASSERT_TRUE(rec.firstDestSeq && rec.lastSourceSeq) << describe(rec);
	EXPECT_GE(*rec.firstDestSeq, *rec.lastSourceSeq + 1) << describe(rec);
	EXPECT_LE(*rec.firstDestSeq, *rec.lastSourceSeq + 2) << describe(rec);
}

} // namespace

TEST(VmGuest, HeartbeatStopsOnQmpStopAndContinuesAfterCont)
{
	REQUIRE_GUEST_IMAGE(image);
	auto dir = makeRunDir("ferry-vm-test");
	ASSERT_TRUE(dir.ok()) << dir.error().message();
	{
		QemuConfig cfg;
		cfg.name = "guest";
		cfg.runDir = dir.value();
		cfg.image = image;
		cfg.extraAppend = "ferry.mode=idle";
		cfg.memMib = 256;
		auto qemu = QemuProcess::launch(cfg);
		ASSERT_TRUE(qemu.ok()) << qemu.error().message();
		auto console = ConsoleWatcher::open(qemu->consoleLogPath());
		ASSERT_TRUE(console.ok()) << console.error().message();
		auto qmp = qemu->connectQmp(10s);
		ASSERT_TRUE(qmp.ok()) << qmp.error().message();

		auto first = console->waitHeartbeat(60s);
		ASSERT_TRUE(first.ok()) << first.error().message();
		EXPECT_EQ(qmp->queryStatus().value(), "running");

		ASSERT_TRUE(qmp->stop().ok());
		ASSERT_TRUE(qmp->waitEvent("STOP", 5s).ok());
		ASSERT_TRUE(console->poll().ok());
		uint64_t stoppedAt = console->lastHeartbeat()->seq;
		// While paused the guest cannot print: no heartbeat two beyond the last (>= 10 Hz,
		// so 500 ms would hold ~5 of them). Waiting for an absence needs a bounded wait.
		auto none = console->waitHeartbeat(500ms, stoppedAt + 2);
		EXPECT_FALSE(none.ok()) << "heartbeat " << none->seq << " while paused";

		ASSERT_TRUE(qmp->cont().ok());
		ASSERT_TRUE(qmp->waitEvent("RESUME", 5s).ok());
		auto after = console->waitHeartbeat(10s, stoppedAt + 3);
		ASSERT_TRUE(after.ok()) << after.error().message();
		EXPECT_EQ(console->errorLineCount(), 0u) << console->lastLines(5);
	}
	removeRunDir(dir.value());
}

TEST(StockMigration, PrecopyKeepsVerifiedGuestAliveOnDestination)
{
	REQUIRE_GUEST_IMAGE(image);
	ScenarioConfig cfg = baseConfig(image, "stock-precopy");
	// QEMU 7.2 under TCG loses guest writes once pre-copy needs a fourth dirty sync (fixed
	// upstream in 9.0, 03bfc2188f; docs/benchmarks.md). A generous downtime limit switches over
	// after the first pass, so this test checks our runner, not that QEMU bug.
	cfg.downtimeLimitMs = 5000;
	MigrationRecord rec = runStock(cfg);
	ASSERT_TRUE(rec.completed) << describe(rec);
	EXPECT_FALSE(rec.error) << describe(rec);
	EXPECT_EQ(rec.guestRunsOn, "destination");
	EXPECT_EQ(rec.guestErrorCount, 0) << describe(rec);
	ASSERT_NO_FATAL_FAILURE(expectGuestContinuedOnDestination(rec));
	// QEMU's own figures are recorded, and RAM actually moved.
	EXPECT_GT(rec.totalTimeMs.value_or(0), 0) << describe(rec);
	EXPECT_TRUE(rec.downtimeMs.has_value()) << describe(rec);
	EXPECT_TRUE(rec.eventDowntimeMs.has_value()) << describe(rec);
	EXPECT_GE(rec.passes.value_or(0), 2) << describe(rec);
	EXPECT_GT(rec.bytesTransferred.value_or(0), 32 << 20) << describe(rec);
	EXPECT_TRUE(rec.success()) << describe(rec);
}

TEST(StockMigration, PostcopyKeepsVerifiedGuestAliveOnDestination)
{
	REQUIRE_GUEST_IMAGE(image);
	ScenarioConfig cfg = baseConfig(image, "stock-postcopy");
	// Switch right after the setup sync, so post-copy really runs instead of pre-copy
	// converging first on this small guest.
	cfg.postcopyAfterPass = 1;
	MigrationRecord rec = runStock(cfg);
	ASSERT_TRUE(rec.completed) << describe(rec);
	EXPECT_FALSE(rec.error) << describe(rec);
	EXPECT_TRUE(rec.postcopyStarted) << describe(rec);
	ASSERT_NO_FATAL_FAILURE(expectGuestContinuedOnDestination(rec));
	EXPECT_TRUE(rec.success()) << describe(rec);
}

TEST(StockMigration, KilledDestinationEndsWithErrorAndSourceGuestRunsOn)
{
	REQUIRE_GUEST_IMAGE(image);
	ScenarioConfig cfg = baseConfig(image, "stock-precopy");
	// Slow the stream so the kill surely lands mid-migration.
	cfg.maxBandwidthMbps = 80;
	cfg.afterMigrateStarted = [](VmPair &p) { ASSERT_TRUE(p.dest().kill().ok()); };
	MigrationRecord rec;
	ASSERT_NO_FATAL_FAILURE(runToAnError(cfg, rec));
	// Stock pre-copy leaves the source running when the stream breaks.
	EXPECT_EQ(rec.guestRunsOn, "source");
	EXPECT_TRUE(rec.guestAlive) << describe(rec);
	EXPECT_EQ(rec.verifyErrorLines, 0u) << describe(rec);
}

TEST(StockMigration, KilledSourceEndsWithErrorNotAHang)
{
	REQUIRE_GUEST_IMAGE(image);
	ScenarioConfig cfg = baseConfig(image, "stock-precopy");
	cfg.maxBandwidthMbps = 80;
	cfg.aliveTimeout = 5s;
	cfg.afterMigrateStarted = [](VmPair &p) { ASSERT_TRUE(p.source().kill().ok()); };
	MigrationRecord rec;
	ASSERT_NO_FATAL_FAILURE(runToAnError(cfg, rec));
	EXPECT_FALSE(rec.guestAlive) << describe(rec);
}

TEST(StockMigration, NonConvergingMigrationTimesOutIsCancelledAndSourceRunsOn)
{
	REQUIRE_GUEST_IMAGE(image);
	ScenarioConfig cfg = baseConfig(image, "stock-precopy");
	cfg.workload.mode = "dirty";
	cfg.workload.rateMBps = 30;
	// 16 Mbit/s = 2 MB/s against 30 MB/s of dirtying: cannot converge.
	cfg.maxBandwidthMbps = 16;
	cfg.migrationTimeout = 3s;
	MigrationRecord rec = runStock(cfg);
	EXPECT_TRUE(rec.timedOut) << describe(rec);
	EXPECT_TRUE(rec.cancelled) << describe(rec);
	EXPECT_FALSE(rec.completed) << describe(rec);
	EXPECT_EQ(rec.finalStatus, "cancelled");
	EXPECT_EQ(rec.guestRunsOn, "source");
	EXPECT_TRUE(rec.guestAlive) << describe(rec);
	EXPECT_FALSE(rec.success());
}
