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

using namespace std::chrono_literals;
using namespace ferry;

namespace {

#define REQUIRE_VM_SUPPORT(img)                                                               \
	auto img##_r = GuestImage::fromEnv();                                                 \
	if (!img##_r.ok())                                                                    \
		GTEST_SKIP() << "no guest image: " << img##_r.error().message();              \
	GuestImage img = img##_r.value();                                                     \
	{                                                                                     \
		auto f = Userfaultfd::probeFeatures();                                        \
		if (!f.ok() || !(*f & UFFD_FEATURE_WP_ASYNC) || !(*f & UFFD_FEATURE_MINOR_SHMEM)) \
			GTEST_SKIP() << "kernel lacks userfaultfd WP_ASYNC/MINOR_SHMEM";      \
	}

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
	ScenarioRunner runner;
	FerryVmParams params;
	params.verify = c.ramVerify;
	addFerryModes(runner, params);
	MigrationRecord rec = runner.run(baseConfig(image, c.mode, c.workload));
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
	ScenarioRunner runner;
	FerryVmParams params;
	bool killed = false;
	params.inject = [&](VmPair &pair, LinkEmulator *, const LeecherProgress &p) {
		if (!killed && p.state == LeecherState::PreCopy && p.chunksLocal > 0) {
			killed = true;
			(void)pair.dest().kill(9);
		}
	};
	params.finalize = "threshold"; // keeps pre-copy going long enough to be interrupted
	addFerryModes(runner, params);
	ScenarioConfig cfg = baseConfig(image, "ferry-hybrid", "verify");
	MigrationRecord rec = runner.run(cfg);
	ASSERT_TRUE(killed) << "migration ended before the failure could be injected";
	EXPECT_TRUE(rec.error.has_value()) << "a dead destination must be an error";
	EXPECT_EQ(rec.guestRunsOn, "source");
	EXPECT_TRUE(rec.guestAlive) << "source heartbeat stopped: " << rec.toJson().toString();
	EXPECT_TRUE(rec.verifyOk) << rec.toJson().toString();
}

TEST(FerryVmFailure, SourceKeepsRunningWhenConnectionIsCutBeforeSwitchOver)
{
	REQUIRE_VM_SUPPORT(image);
	ScenarioRunner runner;
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
	addFerryModes(runner, params);
	ScenarioConfig cfg = baseConfig(image, "ferry-hybrid", "verify");
	cfg.linkRttMs = 2;
	cfg.linkMbit = 1000;
	MigrationRecord rec = runner.run(cfg);
	ASSERT_TRUE(cut) << "migration ended before the connection could be cut";
	EXPECT_TRUE(rec.error.has_value());
	EXPECT_EQ(rec.guestRunsOn, "source");
	EXPECT_TRUE(rec.guestAlive) << "source heartbeat stopped: " << rec.toJson().toString();
	EXPECT_TRUE(rec.verifyOk) << rec.toJson().toString();
}

// `--finalize cycle` on a guest whose workload alternates 100 MB/s and 1 MB/s every second:
// the analyser must find the cycle from ferry's exact dirty series and finalize inside a low
// window (not at the deadline), and the guest must arrive intact, RAM compared byte for byte.
TEST(FerryVmCycle, CyclePolicyFinalizesACyclicGuestInALowWindowIntact)
{
	REQUIRE_VM_SUPPORT(image);
	ScenarioRunner runner;
	FerryVmParams params;
	params.verify = true;
	params.finalize = "cycle:warmup=6";
	params.deadlineSec = 20;
	std::vector<std::string> statuses;
	params.inject = [&](VmPair &, LinkEmulator *, const LeecherProgress &p) {
		statuses.push_back(p.policyStatus);
	};
	addFerryModes(runner, params);
	ScenarioConfig cfg = baseConfig(image, "ferry-hybrid", "cycle");
	cfg.workload.rateMBps = 100;
	cfg.workload.lowRateMBps = 1;
	cfg.workload.wssMib = 32;
	cfg.workload.periodS = 2;
	cfg.workload.duty = 0.5;
	cfg.linkMbit = 1000;
	MigrationRecord rec = runner.run(cfg);
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
