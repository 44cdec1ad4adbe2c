// SPDX-License-Identifier: GPL-2.0-or-later
// The demo's source and destination applications as hidden subcommands of `ferry` itself
// (`__app-source`, `__app-dest`): SourceAppHandle/DestAppHandle start this same binary.
#include "cli/commands.h"
#include "demo/demo_app.h"

namespace ferry {

CommandRunner addAppCommands(CLI::App &app, CommandRunner *dest)
{
	auto src = std::make_shared<std::pair<int, SourceAppOptions>>();
	auto *s = app.add_subcommand("__app-source", "(internal) demo source application");
	s->group(""); // hidden from --help
	s->add_option("--ctrl-fd", src->first)->required();
	s->add_option("--size", src->second.size)->required();
	s->add_option("--write-mbps", src->second.writeMBps);
	s->add_option("--fill", src->second.fill);
	s->add_option_function<std::string>("--fill-kind", [o = &src->second](const std::string &k) { o->textFill = k == "text"; })
		->check(CLI::IsMember({"random", "text"}));
	s->add_option("--seed", src->second.seed);
	s->add_flag("--sequential", src->second.sequential);
	s->add_option("--period-s", src->second.periodSec);
	s->add_option("--duty", src->second.duty);
	s->add_option("--low-mbps", src->second.lowMBps);
	s->add_option("--phase", src->second.phase);

	struct DestArgs {
		int ctrlFd = -1;
		DestAppOptions opts;
		bool noFaults = false;
	};
	auto dst = std::make_shared<DestArgs>();
	auto *d = app.add_subcommand("__app-dest", "(internal) demo destination application");
	d->group("");
	d->add_option("--ctrl-fd", dst->ctrlFd)->required();
	d->add_option("--read-mbps", dst->opts.readMBps);
	d->add_option("--seed", dst->opts.seed);
	d->add_flag("--no-faults", dst->noFaults);
	*dest = [dst] {
		dst->opts.faults = !dst->noFaults;
		return runDestApp(dst->ctrlFd, dst->opts);
	};
	return [src] { return runSourceApp(src->first, src->second); };
}

} // namespace ferry
