// SPDX-License-Identifier: GPL-2.0-or-later
// ferry migrating real QEMU guests (TCG, 256 MiB): guest RAM pulled by ferry, device state by
// QEMU with x-ignore-shared, post-copy faults served through the agent shim's userfaultfd.
// Each run checks the guest afterwards: heartbeat continuing on the destination (not
// restarted), no verify errors; with RAM verification, guest RAM compared byte for byte.
#include <chrono>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "harness/vm_scenario.h"

#include "ferry/sys/userfaultfd.h"
#include "harness/vm_modes.h"
#include "support/guest_image.h"
#include "support/kernel_features.h"

using namespace std::chrono_literals;
using namespace ferry;

namespace {

// A guest image, and the userfaultfd features ferry's VM modes use (exact tracking, post-copy
// faults on guest RAM's memfd).
#define REQUIRE_VM_SUPPORT(img)    \
	REQUIRE_GUEST_IMAGE(img); \
	REQUIRE_UFFD(UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_MINOR_SHMEM)

ScenarioConfig baseConfig(const GuestImage &image, const std::string &mode, const std::string &workload)
{
	ScenarioConfig cfg;
	cfg.image = image;
	cfg.mode = mode;
	cfg.memMib = 256;
	cfg.workload.mode = workload;
	cfg.workload.rateMBps = workload == "verify" ? 20 : 50;
	cfg.workload.wssMib = workload == "verify" ? 32 : 64;
	cfg.migrationTimeout = 60s;
	cfg.bootTimeout = 60s;
	return prepareFerryConfig(cfg);
}

// One ferry migration (a mode of addFerryModes with `params`) between two fresh guests.
MigrationRecord runFerry(const FerryVmParams &params, const ScenarioConfig &cfg)
{
	ScenarioRunner runner;
	addFerryModes(runner, params);
	return runner.run(cfg);
}

// After a failure before the switch-over: an error, and the guest still on the source, alive
// and intact.
void expectSourceGuestRunsOn(const MigrationRecord &rec)
{
	std::string json = rec.toJson().toString();
	EXPECT_TRUE(rec.error.has_value()) << json;
	EXPECT_EQ(rec.guestRunsOn, "source");
	EXPECT_TRUE(rec.guestAlive) << "source heartbeat stopped: " << json;
	EXPECT_TRUE(rec.verifyOk) << json;
}

struct Case {
	const char *mode;
	const char *workload;
	bool ramVerify;
};

} // namespace

class FerryVm : public ::testing::TestWithParam<Case> {};

TEST_P(FerryVm, MigratesLiveGuestIntact)
{
	REQUIRE_VM_SUPPORT(image);
	const Case c = GetParam();
	FerryVmParams params;
	params.verify = c.ramVerify;
	MigrationRecord rec = runFerry(params, baseConfig(image, c.mode, c.workload));
	std::string json = rec.toJson().toString();
	EXPECT_FALSE(rec.error.has_value()) << *rec.error << "\n" << json;
	EXPECT_TRUE(rec.completed) << json;
	EXPECT_EQ(rec.guestRunsOn, "destination");
	EXPECT_TRUE(rec.guestAlive) << "heartbeat did not continue on the destination: " << json;
	EXPECT_EQ(rec.verifyErrorLines, 0u) << json;
	EXPECT_TRUE(rec.verifyOk) << json;
	ASSERT_TRUE(rec.ferryReport.has_value());
	if (c.ramVerify) {
		EXPECT_EQ(rec.ferryReport->verified, std::optional<bool>(true)) << json;
	}
}

INSTANTIATE_TEST_SUITE_P(, FerryVm,
			 ::testing::Values(Case{"ferry-hybrid", "dirty", true}, Case{"ferry-hybrid", "verify", false},
					   Case{"ferry-precopy", "dirty", true}, Case{"ferry-precopy", "verify", false}),
			 [](const auto &info) {
				 std::string n = info.param.mode;
				 n = n.substr(6) + "_" + info.param.workload + (info.param.ramVerify ? "_RamVerified" : "");
				 return n;
			 });

TEST(FerryVmFailure, SourceKeepsRunningWhenDestinationQemuDiesBeforeSwitchOver)
{
	REQUIRE_VM_SUPPORT(image);
	FerryVmParams params;
	bool killed = false;
	params.inject = [&](VmPair &pair, LinkEmulator *, const LeecherProgress &p) {
		if (!killed && p.state == LeecherState::PreCopy && p.chunksLocal > 0) {
			killed = true;
			(void)pair.dest().kill(9);
		}
	};
	params.finalize = "threshold"; // keeps pre-copy going long enough to be interrupted
	MigrationRecord rec = runFerry(params, baseConfig(image, "ferry-hybrid", "verify"));
	ASSERT_TRUE(killed) << "migration ended before the failure could be injected";
	expectSourceGuestRunsOn(rec); // a dead destination must be an error
}

TEST(FerryVmFailure, SourceKeepsRunningWhenConnectionIsCutBeforeSwitchOver)
{
	REQUIRE_VM_SUPPORT(image);
	FerryVmParams params;
	params.reconnectTimeout = 1500ms;
	bool cut = false;
	params.inject = [&](VmPair &, LinkEmulator *link, const LeecherProgress &p) {
		if (!cut && link && p.state == LeecherState::PreCopy && p.chunksLocal > 0) {
			cut = true;
			link->setBlocked(true); // no reconnect possible: the network is gone
			link->cutAll();
		}
	};
	params.finalize = "threshold";
	ScenarioConfig cfg = baseConfig(image, "ferry-hybrid", "verify");
	cfg.linkRttMs = 2;
	cfg.linkMbit = 1000;
	MigrationRecord rec = runFerry(params, cfg);
	ASSERT_TRUE(cut) << "migration ended before the connection could be cut";
	expectSourceGuestRunsOn(rec);
}

// `--finalize cycle` on a guest whose workload alternates 100 MB/s and 1 MB/s every second:
// the analyser must find the cycle from ferry's exact dirty series and finalize inside a low
// window (not at the deadline), and the guest must arrive intact, RAM compared byte for byte.
TEST(FerryVmCycle, CyclePolicyFinalizesACyclicGuestInALowWindowIntact)
{
	REQUIRE_VM_SUPPORT(image);
	FerryVmParams params;
	params.verify = true;
	params.finalize = "cycle:warmup=6";
	params.deadlineSec = 20;
	std::vector<std::string> statuses;
	params.inject = [&](VmPair &, LinkEmulator *, const LeecherProgress &p) {
		statuses.push_back(p.policyStatus);
	};
	ScenarioConfig cfg = baseConfig(image, "ferry-hybrid", "cycle");
	cfg.workload.rateMBps = 100;
	cfg.workload.lowRateMBps = 1;
	cfg.workload.wssMib = 32;
	cfg.workload.periodS = 2;
	cfg.workload.duty = 0.5;
	cfg.linkMbit = 1000;
	MigrationRecord rec = runFerry(params, cfg);
	std::string json = rec.toJson().toString();
	ASSERT_FALSE(rec.error.has_value()) << *rec.error << "\n" << json;
	EXPECT_TRUE(rec.completed) << json;
	EXPECT_TRUE(rec.guestAlive) << json;
	EXPECT_TRUE(rec.verifyOk) << json;
	ASSERT_TRUE(rec.ferryReport.has_value());
	EXPECT_EQ(rec.ferryReport->verified, std::optional<bool>(true)) << json;
	EXPECT_EQ(rec.ferryReport->finalizeReason.rfind("low window", 0), 0u) << json;
	// The verdict was visible in the progress output while it decided.
	bool sawPeriodic = false;
	for (const auto &s : statuses)
		sawPeriodic |= s.rfind("periodic T=", 0) == 0;
	EXPECT_TRUE(sawPeriodic) << (statuses.empty() ? "no progress" : statuses.back());
}
