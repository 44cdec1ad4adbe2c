// SPDX-License-Identifier: GPL-2.0-or-later
// `ferry leech`: the destination side of a region migration. Pulls the region into a memfd,
// finalizes when the policy says so, starts the demo destination application on it and
// serves its page faults (hybrid) or resumes it once everything is local (precopy).
#include <cstdio>

#include "cli/commands.h"
#include "demo/demo_app.h"
#include "ferry/base/log.h"

namespace ferry {

namespace {

struct LeechArgs {
	std::string connect;
	double readMbps = 200;
	LeecherArgs leecher;
};

int runLeech(const LeechArgs &a)
{
	auto lo = a.leecher.build(a.connect);
	if (!lo.ok())
		return reportError("leech", lo.error());
	DestAppOptions dao;
	dao.faults = lo->mode == MigrationMode::Hybrid;
	dao.readMBps = a.readMbps;
	DemoDestination dest(dao);
	Leecher leecher(dest.hooks(), *lo);
	auto rep = leecher.run();
	if (!rep.ok())
		return reportError("leech", rep.error());
	if (dest.appStarted()) {
		if (auto pages = dest.quitApp(); pages.ok())
			FERRY_LOG(Info, "leech", "destination application read {} pages", *pages);
	}
	return finishLeecher(*rep);
}

} // namespace

CommandRunner addLeechCommand(CLI::App &app)
{
	auto options = [](CLI::App *c, LeechArgs &a) {
		c->add_option("--connect", a.connect, "Seeder endpoint: tcp:HOST:PORT or unix:/path")->required()->check(endpointValidator());
		a.leecher.addTo(c, "Compare the region byte for byte with the suspended source at the end");
		c->add_option("--read-mbps", a.readMbps, "Destination application's random read rate after resume")->capture_default_str()->check(CLI::Range(0.0, 100000.0));
	};
	return addCommand<LeechArgs>(app, "leech",
				     "Destination side: pull the region, finalize, serve faults, run the application",
				     runLeech, options);
}

} // namespace ferry
