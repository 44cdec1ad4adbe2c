// SPDX-License-Identifier: GPL-2.0-or-later
// One migration run between two QEMUs on this host, as a library: boot a source guest with a
// workload, start a destination with -incoming defer, optionally put the link emulator between
// them, run a *mode* (how the migration is driven), then check the guest on the side it should
// run on (heartbeat continues; no verify error) and produce one MigrationRecord.
//
// Modes are plain functions registered on a ScenarioRunner, so ferry's own modes can sit beside
// the stock ones ("stock-precopy", "stock-postcopy", from addStockModes()) in one invocation.
// A run never hangs: every wait is bounded by ScenarioConfig's timeouts, a QEMU that dies is
// noticed through its pidfd/QMP socket, and every failure ends up in record.error.
//
// Threading: a ScenarioRunner and everything it creates are used from one thread.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ferry/base/result.h"
#include "ferry/roles/leecher.h"
#include "harness/console_watcher.h"
#include "harness/process_usage.h"
#include "ferry/base/json.h"
#include "harness/qemu_launcher.h"
#include "ferry/qmp/qmp_client.h"

namespace ferry {

class LinkEmulator;

// The guest workload, passed on the kernel command line (docs/vm-images.md).
struct WorkloadParams {
	std::string mode = "idle"; // idle | dirty | verify | cycle
	double rateMBps = 50;
	uint64_t wssMib = 64;
	std::string pattern = "random"; // random | seq
	double periodS = 4;
	double duty = 0.5;
	double lowRateMBps = 0; // cycle: write rate in the low phase

	// "ferry.mode=... ferry.rate=... ..." for QemuConfig::extraAppend.
	std::string kernelArgs() const;
};

struct ScenarioConfig {
	std::string mode = "stock-precopy";
	GuestImage image;
	uint64_t memMib = 256;
	WorkloadParams workload;
	std::string extraAppend; // more kernel arguments (e.g. "loglevel=7" to see warnings)
	Accel accel = Accel::Tcg;
	std::string accelProps; // QemuConfig::accelProps
	// Private by default: stock QEMU does not need shared RAM, and with memfd share=on stock
	// post-copy crashed the destination guest in 2 of 7 runs here (QEMU 7.2, TCG, Linux 6.18;
	// 0 of 6 with private RAM). Ferry's modes choose Memfd/ShmFile explicitly.
	RamBackend ram = RamBackend::Private;
	// Migration transport between the QEMUs: "unix" (a socket in the run dir) or "tcp"
	// (127.0.0.1, free port).
	std::string transport = "unix";
	// Link emulator between source and destination when rttMs > 0 or mbit > 0.
	double linkRttMs = 0;
	double linkMbit = 0;
	// QEMU's max-bandwidth in Mbit/s. Unset: unlimited, as libvirt does (QEMU's own default
	// of 32 MiB/s would make the stock modes look artificially slow).
	std::optional<double> maxBandwidthMbps;
	std::optional<int64_t> downtimeLimitMs; // QEMU's downtime-limit; unset: QEMU default (300)
	// Post-copy: switch once QEMU reports this many dirty-bitmap syncs (MIGRATION_PASS).
	// Pass 1 is the setup sync, so 2 means "after the first full pass over RAM".
	int64_t postcopyAfterPass = 2;
	std::chrono::milliseconds migrationTimeout = std::chrono::seconds(120);
	std::chrono::milliseconds bootTimeout = std::chrono::seconds(60);
	// Wait this long after the guest booted before migrating (e.g. a random phase of a
	// cyclic workload).
	std::chrono::milliseconds startDelay{0};
	// After the migration, this many new heartbeats must appear on the side the guest runs
	// on (20 Hz heartbeats: 10 ~ 0.5 s).
	int heartbeatsAfter = 10;
	std::chrono::milliseconds aliveTimeout = std::chrono::seconds(30);
	std::string runDir;   // empty: a fresh one per run under $FERRY_RUN_DIR or /tmp
	bool keepRunDir = false;
	std::vector<std::pair<std::string, std::string>> sourceEnv, destEnv;
	std::vector<std::string> sourceArgs, destArgs;
	// Test hook: called right after the migration was started (fault injection).
	std::function<void(class VmPair &)> afterMigrateStarted;
};

// Outcome of one run. Times in ms; optional fields are absent when not measured/reported.
struct MigrationRecord {
	std::string mode;
	int run = 0;
	ScenarioConfig config; // copy, for the record (hooks not serialized)
	bool completed = false;
	bool timedOut = false;
	bool cancelled = false;
	std::string finalStatus; // QEMU's last migration status on the source
	std::optional<std::string> error;
	std::string guestRunsOn = "source"; // where the guest should be running afterwards

	std::optional<double> bootMs;          // source launch -> first heartbeat
	std::optional<double> wallMs;          // migrate command -> completion event, our clock
	std::optional<int64_t> totalTimeMs;    // QEMU's figures
	std::optional<int64_t> downtimeMs;
	std::optional<int64_t> setupTimeMs;
	std::optional<double> eventDowntimeMs; // source STOP -> destination RESUME, event timestamps
	std::optional<int64_t> bytesTransferred;
	std::optional<int64_t> passes;         // dirty-sync-count
	std::optional<double> mbps;
	std::optional<int64_t> postcopyRequests;
	bool postcopyStarted = false;
	std::optional<double> postcopyStartMs; // after the migrate command
	std::optional<uint64_t> linkBytesRelayed;

	bool guestAlive = false;               // heartbeats continued where the guest runs
	std::optional<uint64_t> lastSourceSeq; // last heartbeat seen on the source console
	std::optional<uint64_t> firstDestSeq;  // first heartbeat seen on the destination console
	uint64_t verifyErrorLines = 0;         // FERRY-VERIFY-ERROR / panic lines, both consoles
	std::optional<int64_t> guestErrorCount; // errors= of the last heartbeat
	bool verifyOk = false;                 // verify workload: no error line and errors=0
	std::vector<std::string> errorLines;   // a few, for the reader
	std::optional<LeecherReport> ferryReport; // ferry modes: the leecher's report
	// This process (harness, link emulators and, in ferry modes, ferry's roles) while the mode
	// ran: CPU by thread name ("ferry-seeder", "ferry-leecher", "link-ferry", "link-qemu", the
	// harness's own), resident memory before and at its peak.
	std::optional<ProcessUsage> benchUsage;
	std::string runDir;

	// One JSON object (the record format of ferry-bench's output).
	JsonValue toJson() const;
	// True if the run achieved what it was meant to: completed, guest alive, verified.
	bool success() const;
};

// Source and destination QEMUs of one run, booted and connected.
class VmPair {
public:
	VmPair(const VmPair &) = delete;
	VmPair &operator=(const VmPair &) = delete;
	~VmPair(); // destination first, then source; the link emulator before both

	// Boots the source (waiting for its first heartbeat), starts the destination
	// (-incoming defer) and connects QMP to both.
	static Result<std::unique_ptr<VmPair>> start(const ScenarioConfig &cfg, const std::string &runDir,
						     MigrationRecord *record);

	QemuProcess &source() { return *source_.qemu; }
	QemuProcess &dest() { return *dest_.qemu; }
	QmpClient &sourceQmp() { return *source_.qmp; }
	QmpClient &destQmp() { return *dest_.qmp; }
	ConsoleWatcher &sourceConsole() { return *source_.console; }
	ConsoleWatcher &destConsole() { return *dest_.console; }
	const std::string &runDir() const { return runDir_; }

	// Puts the destination into listening state (migrate-incoming) and, if configured, the
	// link emulator in front of it. Returns the URI the source must migrate to.
	Result<std::string> listenIncoming(const ScenarioConfig &cfg);
	LinkEmulator *link() { return link_.get(); }

	// Non-blocking: an error naming the QEMU that exited, if one did.
	Status checkAlive();

private:
	VmPair() = default;

	// One QEMU and what the runner watches it through; the process outlives both.
	struct Side {
		std::optional<QemuProcess> qemu;
		std::optional<ConsoleWatcher> console;
		std::optional<QmpClient> qmp;

		// Launches the QEMU, opens its console log and connects QMP.
		Status launch(const QemuConfig &cfg);
	};

	std::string runDir_;
	// Declaration order is teardown order in reverse: the link goes first (so the QEMUs see
	// their migration stream reset, not hang), then destination, then source.
	Side source_;
	Side dest_;
	std::unique_ptr<LinkEmulator> link_;
};

// Drives one migration on a started pair and fills the migration fields of the record
// (completed/timedOut/cancelled, times, bytes, guestRunsOn ...). An Error return is recorded
// as record.error by the runner; the runner then checks the guest.
using ModeFn = std::function<Status(VmPair &, const ScenarioConfig &, MigrationRecord &)>;

class ScenarioRunner {
public:
	void addMode(std::string name, ModeFn fn);
	bool hasMode(const std::string &name) const { return modes_.count(name) != 0; }
	std::vector<std::string> modeNames() const;

	// One complete run (fresh QEMUs). Always returns a record; failures are in record.error.
	MigrationRecord run(const ScenarioConfig &cfg, int runIndex = 0);

private:
	std::map<std::string, ModeFn> modes_;
};

// Registers "stock-precopy" and "stock-postcopy".
void addStockModes(ScenarioRunner &runner);

// The stock migration itself, for modes that want to wrap it. postcopy selects
// postcopy-ram and migrate-start-postcopy after cfg.postcopyAfterPass passes.
Status runStockMigration(VmPair &pair, const ScenarioConfig &cfg, MigrationRecord &rec, bool postcopy);

} // namespace ferry
