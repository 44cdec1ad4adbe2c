// SPDX-License-Identifier: GPL-2.0-or-later
// ferry's VM migration: guest RAM moved by ferry's seeder/leecher, device state (and QEMU's
// small non-shared RAM blocks) by QEMU's own migration stream with x-ignore-shared.
//
// Both QEMUs keep guest RAM in a shared memfd and run ferry's agent shim (LD_PRELOAD,
// FERRY_AGENT_SOCKET), which hands ferry the RAM's address, a file descriptor of it, and
// userfaultfds created inside QEMU: write-protect-async on the source (exact dirty tracking
// with PAGEMAP_SCAN on QEMU's pid), missing+minor on the destination (post-copy faults).
//
// Sequence: the destination QEMU waits (-incoming defer, -S); ferry pulls RAM while the source
// runs; finalize = source `stop` + final dirty scan; at the switch-over the source starts
// QEMU's device-state migration; the destination loads it (faults served by ferry), is `cont`ed,
// and ferry pulls the rest. The source stays paused and intact until the destination holds
// every chunk. Before the switch-over any failure resumes the source.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <sys/types.h>

#include "vm/agent_client.h"
#include "ferry/qmp/qmp_client.h"
#include "ferry/roles/leecher.h"
#include "ferry/roles/seeder.h"
#include "ferry/sys/mapping.h"
#include "ferry/wire/endpoint.h"

namespace ferry {

// Where libferry-agent.so is: $FERRY_AGENT_LIB, else the build-time path.
std::string agentLibraryPath();

// The agent and a QMP connection of one QEMU.
struct VmHandle {
	QmpClient *qmp = nullptr;
	std::string agentSocket;
	std::string ramMatch = "memory-backend-memfd"; // substring of the RAM mapping's path
};

// Capabilities both QEMUs need for ferry modes (x-ignore-shared, events).
Status configureFerryCapabilities(QmpClient &qmp);

// Source side. Owns the mapping of guest RAM and the Seeder.
class VmSeeder {
public:
	// deviceUri: where QEMU's device-state stream goes at the switch-over (the destination
	// QEMU's incoming URI, possibly through a link emulator).
	// quitOnRelease: shut the source QEMU down (QMP quit) once the destination holds every
	// chunk; otherwise whoever started it does.
	static Result<std::unique_ptr<VmSeeder>> create(VmHandle vm, pid_t qemuPid, std::string deviceUri,
							  SeederOptions opts, bool quitOnRelease = false);
	// With the caller's hooks (e.g. ferryd under libvirt, where libvirt starts QEMU's
	// migration and stops the source); x-ignore-shared is set on the source QEMU all the same.
	static Result<std::unique_ptr<VmSeeder>> createWithHooks(VmHandle vm, pid_t qemuPid, SeederHooks hooks,
								   SeederOptions opts);
	Status serve(Listener &listener) { return seeder_->serve(listener); }
	void stop() { seeder_->stop(); }
	Seeder &seeder() { return *seeder_; }
	uint64_t ramSize() const { return map_.size(); }

private:
	VmSeeder() = default;
	VmHandle vm_;
	std::optional<AgentClient> agent_;
	UniqueFd ramFile_; // the guest RAM's memfd (the seeder looks for its holes)
	Mapping map_;
	std::unique_ptr<Seeder> seeder_;
};

struct VmReceiveOptions {
	bool verify = false; // keep the guest paused until RAM was compared with the source
	bool configure = true; // set the migration capabilities (before migrate-incoming)
	std::chrono::milliseconds deviceStateTimeout{60000};
	// Replaces the default resume (wait for QEMU's device-state load, then `cont`): e.g.
	// ferryd under libvirt releases the held device-state stream; libvirt resumes the guest.
	std::function<Status()> resume;
};

// Destination side: runs a Leecher into the destination QEMU's RAM. Returns its report; with
// verify, the guest is resumed only after the comparison (and stays paused if it failed).
Result<LeecherReport> receiveVm(VmHandle vm, LeecherOptions lo, const VmReceiveOptions &opts);

} // namespace ferry
