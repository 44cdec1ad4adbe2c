// SPDX-License-Identifier: GPL-2.0-or-later
// `ferry receive` (destination host): pull a running VM's RAM into a QEMU waiting with
// `-incoming defer -S`, then let QEMU load the device state `ferry migrate` sends.
#include <cstdio>

#include "cli/commands.h"
#include "cli/vm_args.h"

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
	VmArgs vm;
	std::string connect, incoming;
	LeecherArgs leecher = deeperPipeline();
};

int runReceive(const ReceiveArgs &a)
{
	auto lo = a.leecher.build(a.connect);
	if (!lo.ok())
		return reportError("receive", lo.error());
	auto qmp = QmpClient::connect(a.vm.qmp, std::chrono::seconds(10));
	if (!qmp.ok())
		return reportError("receive", qmp.error().context("destination QMP"));
	if (auto st = configureFerryCapabilities(*qmp); !st.ok())
		return reportError("receive", st.error().context("destination QMP"));
	if (auto st = qmp->migrateIncoming(a.incoming); !st.ok())
		return reportError("receive", st.error().context("migrate-incoming"));
	VmReceiveOptions ro;
	ro.verify = a.leecher.verify;
	ro.configure = false;
	auto rep = receiveVm(a.vm.handle(*qmp), *lo, ro);
	if (!rep.ok())
		return reportError("receive", rep.error());
	return finishLeecher(*rep);
}

} // namespace

CommandRunner addReceiveCommand(CLI::App &app)
{
	auto options = [](CLI::App *c, ReceiveArgs &a) {
		a.vm.addTo(c, "Destination");
		c->add_option("--connect", a.connect, "`ferry migrate` endpoint")->required()->check(endpointValidator());
		c->add_option("--incoming", a.incoming, "URI the destination QEMU listens on for device state")->required();
		a.leecher.addTo(c, "Keep the guest paused until its RAM was compared byte for byte with the source");
	};
	return addCommand<ReceiveArgs>(
		app, "receive", "Destination host: pull a running VM's RAM into a waiting QEMU (-incoming defer -S)",
		runReceive, options);
}

} // namespace ferry
