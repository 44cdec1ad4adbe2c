// SPDX-License-Identifier: GPL-2.0-or-later
// `ferry seed`: the source side of a region migration. Runs the demo source application,
// tracks its writes and serves its region to one leecher.
#include <atomic>
#include <cstdio>
#include <cstdlib>

#include "cli/commands.h"
#include "cli/serving.h"
#include "demo/demo_app.h"
#include "ferry/dirty/tracker.h"

namespace ferry {

namespace {

struct SeedArgs {
	std::string listen = "tcp:0.0.0.0:7070";
	std::string tracker = "uffd";
	SourceAppArgs app;
	SeederArgs seeder;
};

Result<std::unique_ptr<DirtyTracker>> makeTracker(const std::string &kind, SourceAppHandle &src, size_t chunkSize)
{
	TrackedRegion region{src.pid(), src.base(), src.size(), chunkSize};
	if (kind == "uffd") {
		FERRY_ASSIGN(Userfaultfd uffd, src.takeUffd());
		return makeUffdWpTracker(region, std::move(uffd));
	}
	if (kind == "xxh3")
		return makeHashTracker(region);
	return Error::format(EINVAL, "unknown tracker '{}'", kind);
}

int runSeed(const SeedArgs &a)
{
	auto setup = SeederSetup::start(a.listen, a.seeder);
	if (!setup.ok())
		return reportError("seed", setup.error());
	auto src = SourceAppHandle::spawn(a.app.build());
	if (!src.ok())
		return reportError("seed", src.error().context("start source application"));
	auto tracker = makeTracker(a.tracker, *src, setup->options.chunkSize);
	if (!tracker.ok())
		return reportError("seed", tracker.error().context(fmt::format("tracker {}", a.tracker)));
	auto listener = Listener::listen(setup->listen);
	if (!listener.ok())
		return reportError("seed", listener.error().context("listen"));
	SourceAppHandle *s = &src.value();
	SeederHooks hooks{[s] { return s->suspend(); }, [s] { return s->resume(); }, [s] { s->quit(); }, {}};
	SeederOptions so = setup->options;
	so.regionFd = s->memfd();
	Seeder seeder(s->mapping().data(), s->size(), std::move(tracker).value(), hooks, so);
	// A signal from here on stops the seeder (exit 1, "stopped"), never the process outright.
	Status st = setup->serve(seeder, *listener, [&] { return seeder.serve(*listener); });
	return SeederSetup::finish("seed", seeder, st, "seeder", [&](JsonValue &s) { s.set("tracker", a.tracker); });
}

} // namespace

CommandRunner addSeedCommand(CLI::App &app)
{
	auto a = std::make_shared<SeedArgs>();
	auto *c = app.add_subcommand("seed", "Source side: run the demo application and serve its memory to a leecher");
	c->add_option("--listen", a->listen, "tcp:HOST:PORT or unix:/path")->capture_default_str()->check(endpointValidator());
	c->add_option("--tracker", a->tracker, "uffd (exact: uffd-wp + PAGEMAP_SCAN) or xxh3 (hashing)")->capture_default_str()->check(CLI::IsMember({"uffd", "xxh3"}));
	a->app.addTo(c);
	a->seeder.addTo(c);
	return [a] { return runSeed(*a); };
}

} // namespace ferry
