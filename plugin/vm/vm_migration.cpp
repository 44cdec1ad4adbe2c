// SPDX-License-Identifier: GPL-2.0-or-later
#include "vm/vm_migration.h"

#include <cstdlib>
#include <sys/mman.h>

#include "ferry/base/log.h"
#include "ferry/dirty/tracker.h"

#ifndef FERRY_AGENT_LIB_PATH
#define FERRY_AGENT_LIB_PATH "libferry-agent.so"
#endif

namespace ferry {

std::string agentLibraryPath()
{
	if (const char *p = std::getenv("FERRY_AGENT_LIB"))
		return p;
	return FERRY_AGENT_LIB_PATH;
}

Status configureFerryCapabilities(QmpClient &qmp)
{
	// x-ignore-shared: QEMU's stream skips RAM blocks backed by shared memory (guest RAM),
	// which ferry moves; it still carries device state and private blocks (ROMs, VGA...).
	return qmp.migrateSetCapabilities({{"events", true}, {"x-ignore-shared", true}});
}

namespace {

// The agent answers FIND only once QEMU has created guest RAM; the QMP greeting (which the
// caller has seen) comes after machine creation, so one attempt is enough.
Result<AgentRegion> findRam(AgentClient &agent, const VmHandle &vm)
{
	FERRY_ASSIGN(AgentRegion r, agent.find(vm.ramMatch).context("find guest RAM"));
	if (r.fileOffset != 0)
		return Error::format(ENOTSUP, "guest RAM mapping starts at file offset {}", r.fileOffset);
	return r;
}

} // namespace

Result<std::unique_ptr<VmSeeder>> VmSeeder::createWithHooks(VmHandle vm, pid_t qemuPid, SeederHooks hooks,
							     SeederOptions opts)
{
	std::unique_ptr<VmSeeder> s(new VmSeeder);
	s->vm_ = vm;
	FERRY_ASSIGN(AgentClient agent, AgentClient::connect(vm.agentSocket, std::chrono::seconds(10))
						.context("source agent"));
	s->agent_.emplace(std::move(agent));
	FERRY_ASSIGN(AgentRegion ram, findRam(*s->agent_, vm));
	FERRY_ASSIGN(s->map_, Mapping::map(ram.file.get(), ram.size, PROT_READ, MAP_SHARED));
	FERRY_ASSIGN(Userfaultfd uffd, s->agent_->track(ram.base, ram.size).context("track guest RAM"));
	TrackedRegion region{qemuPid, ram.base, ram.size, opts.chunkSize};
	FERRY_ASSIGN(auto tracker, makeUffdWpTracker(region, std::move(uffd)));
	FERRY_TRY_CTX(configureFerryCapabilities(*vm.qmp), "source QEMU");
	FERRY_LOG(Info, opts.name, "guest RAM {} MiB at {:#x} in QEMU pid {}", ram.size >> 20, ram.base, qemuPid);
	s->ramFile_ = std::move(ram.file);
	opts.regionFd = s->ramFile_.get(); // untouched guest RAM is a hole: sent as zero, never read
	s->seeder_ = std::make_unique<Seeder>(s->map_.data(), ram.size, std::move(tracker), std::move(hooks),
					      std::move(opts));
	return s;
}

Result<std::unique_ptr<VmSeeder>> VmSeeder::create(VmHandle vm, pid_t qemuPid, std::string deviceUri,
						   SeederOptions opts, bool quitOnRelease)
{
	QmpClient *qmp = vm.qmp;
	SeederHooks hooks;
	hooks.suspend = [qmp] { return qmp->stop().context("stop source VM"); };
	hooks.resume = [qmp] { return qmp->cont().context("resume source VM"); };
	hooks.switchOver = [qmp, deviceUri]() -> Status {
		// Device state only: guest RAM is shared and skipped (x-ignore-shared). QEMU sends
		// it from the stopped VM and leaves the source paused ("postmigrate").
		return qmp->migrate(deviceUri).context("start device-state migration");
	};
	hooks.release = [qmp, quitOnRelease] {
		if (quitOnRelease)
			(void)qmp->quit(); // QEMU may close the socket before replying
	};
	return createWithHooks(vm, qemuPid, std::move(hooks), std::move(opts));
}

Result<LeecherReport> receiveVm(VmHandle vm, LeecherOptions lo, const VmReceiveOptions &opts)
{
	FERRY_ASSIGN(AgentClient agent, AgentClient::connect(vm.agentSocket, std::chrono::seconds(10))
					       .context("destination agent"));
	FERRY_ASSIGN(AgentRegion ram, findRam(agent, vm));
	if (opts.configure)
		FERRY_TRY_CTX(configureFerryCapabilities(*vm.qmp), "destination QEMU");
	Mapping map;
	QmpClient *qmp = vm.qmp;
	const bool verify = lo.verify;

	LeecherHooks hooks;
	hooks.prepare = [&](uint64_t size, uint32_t) -> Result<DestinationRegion> {
		if (size != ram.size)
			return Error::format(EINVAL, "source guest RAM is {} bytes, destination's {}", size, ram.size);
		FERRY_ASSIGN(map, Mapping::map(ram.file.get(), size, PROT_READ | PROT_WRITE, MAP_SHARED));
		return DestinationRegion{map.data(), ram.file.get()};
	};
	hooks.armFaults = [&]() -> Result<FaultTarget> {
		FERRY_ASSIGN(Userfaultfd u, agent.guard(ram.base, ram.size).context("guard guest RAM"));
		return FaultTarget{std::move(u), ram.base};
	};
	hooks.resume = opts.resume ? opts.resume : [&]() -> Status {
		// The source has started sending device state; QEMU loads it (RAM reads during the
		// load fault into ferry in hybrid mode) and, started with -S, stays paused.
		auto deadline = std::chrono::steady_clock::now() + opts.deviceStateTimeout;
		for (;;) {
			FERRY_ASSIGN(MigrationInfo info, qmp->queryMigrate().context("destination"));
			if (info.status == "completed")
				break;
			if (info.status == "failed")
				return Error::format(EIO, "device state load failed: {}", info.errorDesc.value_or("?"));
			if (std::chrono::steady_clock::now() > deadline)
				return Error(ETIMEDOUT, "device state did not arrive");
			auto ev = qmp->waitEvent("MIGRATION", std::chrono::milliseconds(50));
			if (!ev.ok() && ev.error().code() != ETIMEDOUT)
				return ev.error().context("destination");
		}
		if (verify)
			return {}; // resumed after the comparison
		return qmp->cont().context("resume destination VM");
	};
	Leecher leecher(std::move(hooks), std::move(lo));
	FERRY_ASSIGN(LeecherReport rep, leecher.run());
	if (verify) {
		if (rep.verified.value_or(false))
			FERRY_TRY_CTX(qmp->cont(), "resume destination VM after verification");
		else
			FERRY_LOG(Error, "vm", "guest RAM differs from the source: destination left paused");
	}
	return rep;
}

} // namespace ferry
