// SPDX-License-Identifier: GPL-2.0-or-later
// ferry's modes for the VM scenario runner (`ferry-bench vm --mode ferry-hybrid,...`), beside
// the stock QEMU modes, on identical guests, workloads and links.
#pragma once

#include <functional>
#include <string>

#include "ferry/link/link_emulator.h"
#include "harness/vm_scenario.h"
#include "ferry/roles/leecher.h"
#include "ferry/wire/compress.h"

namespace ferry {

struct FerryVmParams {
	// 16 KiB: guests write 4 KiB pages at random, and a stale chunk is re-sent whole, so
	// smaller chunks mean fewer bytes; deeper pipelining keeps the pull rate up.
	unsigned chunkKib = 16;
	unsigned connections = 2;
	unsigned depth = 256; // chunks in flight per connection: 4 MiB
	std::string finalize = "immediate";
	double deadlineSec = 30;
	bool verify = false;
	CompressionSpec compression; // of the pre-copy pull (seeder side; the leecher asks iff enabled)
	std::chrono::milliseconds reconnectTimeout{15000};
	// Failure injection for tests: called with every progress sample of the leecher, with
	// the link emulator ferry's connections cross (null without --rtt-ms/--mbit).
	std::function<void(VmPair &, LinkEmulator *, const LeecherProgress &)> inject;
};

// True for "ferry-hybrid", "ferry-hybrid-acked" and "ferry-precopy".
bool isFerryMode(const std::string &mode);
// What a ferry mode needs from the VMs: shared memfd RAM, the agent shim preloaded in both
// QEMUs (unique socket paths), and a destination that stays paused after loading (-S).
ScenarioConfig prepareFerryConfig(ScenarioConfig cfg);
void addFerryModes(ScenarioRunner &runner, FerryVmParams params);

} // namespace ferry
