// SPDX-License-Identifier: GPL-2.0-or-later
// `ferry migrate` (source host): serve a running QEMU's RAM to `ferry receive`, stop it at
// finalize and send device state at the switch-over. The QEMU must be prepared for ferry
// (shared memfd RAM, agent shim preloaded; see docs/vm-migration.md).
#include <atomic>
#include <cstdio>
#include <cstdlib>

#include "cli/commands.h"
#include "cli/vm_args.h"
#include "cli/serving.h"

namespace ferry {

namespace {

// Guests write 4 KiB pages at random: small chunks re-send less.
SeederArgs smallChunks()
{
	SeederArgs a;
	a.chunkKib = 16;
	return a;
}

struct MigrateArgs {
	VmArgs vm;
	std::string listen = "tcp:0.0.0.0:7070", deviceUri;
	bool keepSource = false;
	SeederArgs seeder = smallChunks();
};

int runMigrate(const MigrateArgs &a)
{
	auto setup = SeederSetup::start(a.listen, a.seeder);
	if (!setup.ok())
		return reportError("migrate", setup.error());
	auto qmp = QmpClient::connect(a.vm.qmp, std::chrono::seconds(10));
	if (!qmp.ok())
		return reportError("migrate", qmp.error().context("source QMP"));
	pid_t pid;
	{
		auto agent = AgentClient::connect(a.vm.agent, std::chrono::seconds(10));
		if (!agent.ok())
			return reportError("migrate", agent.error().context("source agent"));
		auto p = agent->ping();
		if (!p.ok())
			return reportError("migrate", p.error().context("source agent"));
		pid = *p;
	}
	auto seeder = VmSeeder::create(a.vm.handle(*qmp), pid, a.deviceUri, setup->options, !a.keepSource);
	if (!seeder.ok())
		return reportError("migrate", seeder.error());
	auto listener = Listener::listen(setup->listen);
	if (!listener.ok())
		return reportError("migrate", listener.error().context("listen"));
	Status st = setup->serve((*seeder)->seeder(), *listener, [&] { return (*seeder)->serve(*listener); });
	return SeederSetup::finish("migrate", (*seeder)->seeder(), st, "source",
				   [&](JsonValue &s) { s.set("ram_bytes", (*seeder)->ramSize()); });
}

} // namespace

CommandRunner addMigrateCommand(CLI::App &app)
{
	auto options = [](CLI::App *c, MigrateArgs &a) {
		a.vm.addTo(c, "Source");
		c->add_option("--listen", a.listen, "Where `ferry receive` connects")->capture_default_str()->check(endpointValidator());
		c->add_option("--device-uri", a.deviceUri, "Destination QEMU's incoming URI for device state (e.g. tcp:dest:4444)")->required();
		c->add_flag("--keep-source", a.keepSource, "Leave the source QEMU paused at the end instead of quitting it");
		a.seeder.addTo(c);
	};
	return addCommand<MigrateArgs>(
		app, "migrate",
		"Source host: serve a running QEMU's RAM to `ferry receive`, stop it at finalize, "
		"send device state at the switch-over",
		runMigrate, options);
}

} // namespace ferry
