// SPDX-License-Identifier: GPL-2.0-or-later
// ferry: live migration of memory regions and QEMU VMs.
#include <csignal>

#include "cli/commands.h"
#include "cli/monitor.h"
#include "ferry/base/log.h"

int main(int argc, char **argv)
{
	std::signal(SIGPIPE, SIG_IGN); // a dead peer is an EPIPE error, never a signal
	CLI::App app{"ferry: live migration by pull pre-copy, exact dirty tracking and userfaultfd post-copy"};
	app.require_subcommand(1);
	std::string level = "info";
	app.add_option("--log-level", level, "debug, info, warn, error or off")->capture_default_str();

	// In the order of `ferry --help`.
	const auto commands = {ferry::addDemoCommand,	       ferry::addSeedCommand,	 ferry::addLeechCommand,
			       ferry::addLinkCommand,	       ferry::addMonitorCommand, ferry::addMigrateCommand,
			       ferry::addReceiveCommand,       ferry::addMakePkiCommand, ferry::addStatusCommand,
			       ferry::addPrepareDomainCommand, ferry::addDoctorCommand,	 ferry::addAbortCommand};
	std::vector<std::pair<CLI::App *, ferry::CommandRunner>> cmds;
	for (auto add : commands) {
		ferry::CommandRunner run = add(app);
		cmds.emplace_back(app.get_subcommands({}).back(), std::move(run));
	}
	ferry::CommandRunner destApp;
	ferry::CommandRunner sourceApp = ferry::addAppCommands(app, &destApp);
	cmds.emplace_back(app.get_subcommand("__app-source"), sourceApp);
	cmds.emplace_back(app.get_subcommand("__app-dest"), destApp);

	// CLI11 reads an unknown command as a stray argument ("A subcommand is required"): name it.
	for (int i = 1; i < argc; i++) {
		std::string_view arg = argv[i];
		if (arg == "--log-level") {
			i++;
			continue;
		}
		if (arg.empty() || arg[0] == '-')
			continue;
		bool known = false;
		for (const CLI::App *sub : app.get_subcommands({}))
			known |= sub->get_name() == arg;
		if (!known) {
			std::string names;
			for (const CLI::App *sub : app.get_subcommands({}))
				if (!sub->get_group().empty())
					names += (names.empty() ? "" : ", ") + sub->get_name();
			fmt::print(stderr, "ferry: unknown command '{}' (commands: {}; see ferry --help)\n", arg, names);
			return 2;
		}
		break;
	}
	CLI11_PARSE(app, argc, argv);
	ferry::LogLevel l;
	if (!ferry::parseLogLevel(level, &l)) {
		fmt::print(stderr, "ferry: unknown log level '{}'\n", level);
		return 2;
	}
	ferry::setLogLevel(l);
	for (auto &[sub, run] : cmds)
		if (sub->parsed())
			return run();
	return 2;
}
