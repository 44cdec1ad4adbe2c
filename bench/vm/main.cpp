// SPDX-License-Identifier: GPL-2.0-or-later
// ferry-bench: scenario runner. `ferry-bench vm ...` migrates a guest between two QEMUs on this
// host with each requested mode and prints one JSON object per run (also appended to
// --json-out). Exit status: 0 if every run succeeded, 1 if any failed, 2 on usage errors.
#include <cstdio>
#include <fstream>
#include <random>

#include <CLI/CLI.hpp>

#include "ferry/base/log.h"
#include "harness/vm_scenario.h"

#include "cli/options.h"
#include "harness/vm_modes.h"

using namespace ferry;

int main(int argc, char **argv)
{
	CLI::App app{"ferry benchmark scenarios"};
	app.require_subcommand(1);
	std::string logLevel = "warn";
	app.add_option("--log-level", logLevel, "debug|info|warn|error|off");

	CLI::App *vm = app.add_subcommand("vm", "migrate a QEMU guest between two local QEMUs");
	vm->fallthrough(); // --log-level after "vm" too
	ScenarioConfig cfg;
	std::vector<std::string> modes = {"stock-precopy"};
	std::string imageDir;
	double maxBw = 0;
	int64_t downtimeLimit = 0;
	double timeoutS = 120;
	double bootTimeoutS = 60;
	int runs = 1;
	int firstRun = 0;
	double startDelayS = 0, randomStartS = 0;
	uint64_t startSeed = 1;
	std::string jsonOut;
	bool kvm = false;
	std::string ram = "private";

	vm->add_option("--mode", modes, "stock-precopy|stock-postcopy|ferry-hybrid|ferry-hybrid-acked|ferry-precopy (repeatable / comma list; -acked: Finalize, then SwitchOver)")
		->delimiter(',');
	vm->add_option("--mem-mib", cfg.memMib, "guest RAM in MiB")->check(CLI::Range(64, 1 << 16));
	vm->add_option("--workload", cfg.workload.mode, "idle|dirty|verify|cycle")
		->check(CLI::IsMember({"idle", "dirty", "verify", "cycle"}));
	vm->add_option("--rate", cfg.workload.rateMBps, "guest write rate in MB/s")->check(CLI::NonNegativeNumber);
	vm->add_option("--wss", cfg.workload.wssMib, "guest working set in MiB");
	vm->add_option("--pattern", cfg.workload.pattern, "random|seq")->check(CLI::IsMember({"random", "seq"}));
	vm->add_option("--period-s", cfg.workload.periodS, "cycle workload period");
	vm->add_option("--duty", cfg.workload.duty, "cycle workload high-phase fraction")->check(CLI::Range(0.0, 1.0));
	vm->add_option("--low-rate", cfg.workload.lowRateMBps, "cycle workload write rate in the low phase, MB/s")
		->check(CLI::NonNegativeNumber);
	vm->add_option("--start-delay-s", startDelayS, "wait this long after boot before migrating")
		->check(CLI::NonNegativeNumber);
	vm->add_option("--random-start-s", randomStartS,
		       "add a delay drawn uniformly from [0, this) per run (e.g. one period: a random "
		       "phase); the same for every mode of a run")
		->check(CLI::NonNegativeNumber);
	vm->add_option("--start-seed", startSeed, "seed of the --random-start-s draws")->capture_default_str();
	vm->add_option("--rtt-ms", cfg.linkRttMs, "link emulator round-trip time")->check(CLI::NonNegativeNumber);
	vm->add_option("--mbit", cfg.linkMbit, "link emulator bandwidth in Mbit/s (0: unlimited)")
		->check(CLI::NonNegativeNumber);
	vm->add_option("--transport", cfg.transport, "unix|tcp")->check(CLI::IsMember({"unix", "tcp"}));
	vm->add_option("--max-bandwidth-mbps", maxBw, "QEMU max-bandwidth in Mbit/s (default unlimited)")
		->check(CLI::PositiveNumber);
	vm->add_option("--downtime-limit-ms", downtimeLimit, "QEMU downtime-limit")->check(CLI::PositiveNumber);
	vm->add_option("--postcopy-after-pass", cfg.postcopyAfterPass,
		       "stock-postcopy: switch at this MIGRATION_PASS (1 = setup sync, 2 = after first full pass)")
		->check(CLI::Range(1, 1000));
	vm->add_option("--timeout-s", timeoutS, "migration timeout (then migrate_cancel)")->check(CLI::PositiveNumber);
	vm->add_option("--boot-timeout-s", bootTimeoutS, "guest boot timeout")->check(CLI::PositiveNumber);
	vm->add_option("--runs", runs, "runs per mode")->check(CLI::Range(1, 1000));
	FerryVmParams ferryParams;
	vm->add_option("--chunk-kib", ferryParams.chunkKib, "ferry modes: chunk size")->capture_default_str();
	vm->add_option("--connections", ferryParams.connections, "ferry modes: data connections")->capture_default_str();
	vm->add_option("--depth", ferryParams.depth, "ferry modes: requests in flight per connection")->capture_default_str();
	vm->add_option("--finalize", ferryParams.finalize, "ferry modes: finalize policy")->capture_default_str();
	vm->add_option("--finalize-deadline-s", ferryParams.deadlineSec, "ferry modes: finalize anyway after this long")->capture_default_str();
	vm->add_flag("--ferry-verify", ferryParams.verify, "ferry modes: compare guest RAM byte for byte before resuming");
	std::string compress = "auto";
	vm->add_option("--compress", compress, "ferry modes: compression of the pre-copy pull (none|zstd|zstd:LEVEL)")
		->capture_default_str()
		->check(ferry::compressionValidator());
	// Matrix drivers (bench/vm/stock-matrix) call us once per run, interleaving cases so that
	// load drift on the host spreads over all of them; this keeps the records' run numbers right.
	vm->add_option("--first-run", firstRun, "run number of the first run (records are numbered from it)")
		->check(CLI::Range(0, 1000000));
	vm->add_option("--json-out", jsonOut, "append one JSON line per run to this file");
	vm->add_option("--image-dir", imageDir, "guest image dir (default $FERRY_VM_IMAGE_DIR)");
	vm->add_option("--ram", ram, "guest RAM backing: private|memfd|shm")
		->check(CLI::IsMember({"private", "memfd", "shm"}));
	vm->add_option("--append", cfg.extraAppend, "extra guest kernel arguments");
	vm->add_option("--accel-props", cfg.accelProps, "extra -accel properties, e.g. thread=single");
	vm->add_flag("--kvm", kvm, "use KVM if a probe shows guests boot under it (default TCG)");
	vm->add_flag("--keep-run-dir", cfg.keepRunDir, "keep sockets and console logs");

	CLI11_PARSE(app, argc, argv);
	ferryParams.compression = ferry::parseCompressionSpec(compress).value(); // checked above

	LogLevel level;
	if (!parseLogLevel(logLevel, &level)) {
		fmt::print(stderr, "ferry-bench: bad --log-level {}\n", logLevel);
		return 2;
	}
	setLogLevel(level);

	auto image = imageDir.empty() ? GuestImage::fromEnv() : GuestImage::fromDir(imageDir);
	if (!image) {
		fmt::print(stderr, "ferry-bench: {}\n", image.error().message());
		return 2;
	}
	cfg.image = image.value();
	cfg.ram = ram == "private" ? RamBackend::Private : ram == "shm" ? RamBackend::ShmFile : RamBackend::Memfd;
	if (maxBw > 0)
		cfg.maxBandwidthMbps = maxBw;
	if (downtimeLimit > 0)
		cfg.downtimeLimitMs = downtimeLimit;
	cfg.migrationTimeout = std::chrono::milliseconds(static_cast<int64_t>(timeoutS * 1000));
	cfg.bootTimeout = std::chrono::milliseconds(static_cast<int64_t>(bootTimeoutS * 1000));
	if (kvm) {
		if (kvmUsable(cfg.image)) {
			cfg.accel = Accel::Kvm;
		} else {
			fmt::print(stderr, "ferry-bench: KVM does not boot guests here; using TCG\n");
		}
	}

	ScenarioRunner runner;
	addStockModes(runner);
	addFerryModes(runner, ferryParams);
	for (const auto &m : modes) {
		if (!runner.hasMode(m)) {
			fmt::print(stderr, "ferry-bench: unknown mode '{}' (known: {})\n", m,
				   fmt::join(runner.modeNames(), ", "));
			return 2;
		}
	}

	std::ofstream out;
	if (!jsonOut.empty()) {
		out.open(jsonOut, std::ios::app);
		if (!out) {
			fmt::print(stderr, "ferry-bench: cannot open {}\n", jsonOut);
			return 2;
		}
	}

	bool allOk = true;
	// Modes interleaved run by run, so that every mode sees the same machine conditions.
	for (int i = firstRun; i < firstRun + runs; i++) {
		// One draw per run number (not per mode), so runs of different modes pair up.
		std::mt19937_64 rng(startSeed * 1'000'003 + static_cast<uint64_t>(i));
		const double delayS = startDelayS + std::uniform_real_distribution<double>(0, randomStartS)(rng);
		for (const auto &m : modes) {
			ScenarioConfig c = isFerryMode(m) ? prepareFerryConfig(cfg) : cfg;
			c.mode = m;
			c.startDelay = std::chrono::milliseconds(static_cast<int64_t>(delayS * 1000));
			MigrationRecord rec = runner.run(c, i);
			std::string line = rec.toJson().toString();
			fmt::print("{}\n", line);
			std::fflush(stdout);
			if (out) {
				out << line << '\n';
				out.flush();
			}
			if (!rec.success()) {
				allOk = false;
				fmt::print(stderr, "ferry-bench: {} run {} failed: {}\n", m, i,
					   rec.error.value_or(rec.completed ? "guest check failed" : "did not complete"));
			}
		}
	}
	return allOk ? 0 : 1;
}
