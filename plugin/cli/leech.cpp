// SPDX-License-Identifier: GPL-2.0-or-later
// `ferry leech`: the destination side of a region migration. Pulls the region into a memfd,
// finalizes when the policy says so, starts the demo destination application on it and
// serves its page faults (hybrid) or resumes it once everything is local (precopy).
#include <cstdio>
#include <optional>
#include <sys/mman.h>

#include "cli/commands.h"
#include "demo/demo_app.h"
#include "ferry/base/log.h"
#include "ferry/sys/mapping.h"

namespace ferry {

namespace {

struct LeechArgs {
	std::string connect;
	double readMbps = 200;
	LeecherArgs leecher;
};

// The destination region (a memfd the leecher writes and the application maps) and the
// application on it, started at finalize (hybrid) or at the end (precopy).
class Destination {
public:
	explicit Destination(DestAppOptions opts) : opts_(opts) {}

	LeecherHooks hooks()
	{
		LeecherHooks h;
		h.prepare = [this](uint64_t size, uint32_t) -> Result<uint8_t *> {
			size_ = size;
			FERRY_ASSIGN(memfd_, createMemfd("ferry-demo-destination", size));
			FERRY_ASSIGN(map_, Mapping::map(memfd_.get(), size, PROT_READ | PROT_WRITE, MAP_SHARED));
			return map_.data();
		};
		h.armFaults = [this]() -> Result<FaultTarget> {
			FERRY_TRY(startApp());
			FERRY_ASSIGN(Userfaultfd u, app_->takeUffd());
			return FaultTarget{std::move(u), app_->base()};
		};
		h.resume = [this]() -> Status {
			if (!app_)
				FERRY_TRY(startApp());
			return app_->run();
		};
		return h;
	}

	void quit()
	{
		if (!app_)
			return;
		if (auto pages = app_->quit(); pages.ok())
			FERRY_LOG(Info, "leech", "destination application read {} pages", *pages);
	}

private:
	Status startApp()
	{
		FERRY_ASSIGN(DestAppHandle h, DestAppHandle::spawn(memfd_.get(), size_, opts_));
		app_.emplace(std::move(h));
		return {};
	}

	DestAppOptions opts_;
	uint64_t size_ = 0;
	UniqueFd memfd_;
	Mapping map_;
	std::optional<DestAppHandle> app_;
};

int runLeech(const LeechArgs &a)
{
	auto lo = a.leecher.build(a.connect);
	if (!lo.ok())
		return reportError("leech", lo.error());
	DestAppOptions dao;
	dao.faults = lo->mode == MigrationMode::Hybrid;
	dao.readMBps = a.readMbps;
	Destination dest(dao);
	Leecher leecher(dest.hooks(), *lo);
	auto rep = leecher.run();
	if (!rep.ok())
		return reportError("leech", rep.error());
	dest.quit();
	return finishLeecher(*rep);
}

} // namespace

CommandRunner addLeechCommand(CLI::App &app)
{
	auto a = std::make_shared<LeechArgs>();
	auto *c = app.add_subcommand("leech", "Destination side: pull the region, finalize, serve faults, run the application");
	c->add_option("--connect", a->connect, "Seeder endpoint: tcp:HOST:PORT or unix:/path")->required()->check(endpointValidator());
	a->leecher.addTo(c, "Compare the region byte for byte with the suspended source at the end");
	c->add_option("--read-mbps", a->readMbps, "Destination application's random read rate after resume")->capture_default_str()->check(CLI::Range(0.0, 100000.0));
	return [a] { return runLeech(*a); };
}

} // namespace ferry
