// SPDX-License-Identifier: GPL-2.0-or-later
// `ferry receive` (destination host): pull a running VM's RAM into a QEMU waiting with
// `-incoming defer -S`, then let QEMU load the device state `ferry migrate` sends.
#include <cstdio>

#include "cli/commands.h"
#include "vm/vm_migration.h"

namespace ferry {

namespace {

// A VM's RAM is pulled with 256 chunks in flight per connection (4 MiB of 16 KiB chunks).
LeecherArgs deeperPipeline()
{
	LeecherArgs a;
	a.depth = 256;
	return a;
}

struct ReceiveArgs {
	std::string qmp, agent, connect, incoming, ramMatch = "memory-backend-memfd";
	LeecherArgs leecher = deeperPipeline();
};

int runReceive(const ReceiveArgs &a)
{
	auto lo = a.leecher.build(a.connect);
	if (!lo.ok())
		return reportError("receive", lo.error());
	auto qmp = QmpClient::connect(a.qmp, std::chrono::seconds(10));
	if (!qmp.ok())
		return reportError("receive", qmp.error().context("destination QMP"));
	if (auto st = configureFerryCapabilities(*qmp); !st.ok())
		return reportError("receive", st.error().context("destination QMP"));
	if (auto st = qmp->migrateIncoming(a.incoming); !st.ok())
		return reportError("receive", st.error().context("migrate-incoming"));
	VmReceiveOptions ro;
	ro.verify = a.leecher.verify;
	ro.configure = false;
	auto rep = receiveVm({&*qmp, a.agent, a.ramMatch}, *lo, ro);
	if (!rep.ok())
		return reportError("receive", rep.error());
	return finishLeecher(*rep);
}

} // namespace

CommandRunner addReceiveCommand(CLI::App &app)
{
	auto a = std::make_shared<ReceiveArgs>();
	auto *c = app.add_subcommand("receive", "Destination host: pull a running VM's RAM into a waiting QEMU (-incoming defer -S)");
	c->add_option("--qmp", a->qmp, "Destination QEMU's QMP socket")->required();
	c->add_option("--agent", a->agent, "Destination QEMU's agent socket (FERRY_AGENT_SOCKET)")->required();
	c->add_option("--connect", a->connect, "`ferry migrate` endpoint")->required()->check(endpointValidator());
	c->add_option("--incoming", a->incoming, "URI the destination QEMU listens on for device state")->required();
	c->add_option("--ram-match", a->ramMatch, "Substring of guest RAM's mapping path")->capture_default_str();
	a->leecher.addTo(c, "Keep the guest paused until its RAM was compared byte for byte with the source");
	return [a] { return runReceive(*a); };
}

} // namespace ferry
