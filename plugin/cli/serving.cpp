// SPDX-License-Identifier: GPL-2.0-or-later
#include "cli/serving.h"

#include <cstdio>

#include <fmt/format.h>

namespace ferry {

Result<SeederSetup> SeederSetup::start(const std::string &listen, const SeederArgs &args)
{
	SeederSetup s;
	FERRY_ASSIGN(s.listen, parseEndpoint(listen).context("--listen"));
	FERRY_ASSIGN(s.options, args.build());
	FERRY_ASSIGN(s.interrupts, SeederInterrupts::start());
	return s;
}

Status SeederSetup::serve(Seeder &seeder, const Listener &listener, const std::function<Status()> &run)
{
	interrupts->serving(&seeder);
	fmt::print("listening on {}\n", listener.boundEndpoint().str());
	std::fflush(stdout);
	Status st = run();
	interrupts->done();
	return st;
}

int SeederSetup::finish(const char *cmd, const Seeder &seeder, const Status &served, const char *role,
			const std::function<void(JsonValue &summary)> &describe)
{
	JsonValue summary = seeder.stats().toJson();
	summary.set("role", role).set("state", seederStateName(seeder.state()));
	describe(summary);
	printSummary(summary);
	if (!served.ok())
		return reportError(cmd, served.error());
	return 0;
}

} // namespace ferry
