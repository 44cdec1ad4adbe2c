// SPDX-License-Identifier: GPL-2.0-or-later
// `ferry seed`: the source side of a region migration. Runs the demo source application,
// tracks its writes and serves its region to one leecher; or, with --file, serves a file on
// disk through a shared mapping of it.
#include <fcntl.h>
#include <sys/stat.h>

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
	std::string tracker; // empty: uffd for the demo application, xxh3 for --file
	std::string file;
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

// A regular file mapped MAP_SHARED read-only: the region is the file's page cache, so writes
// to the file by any process (write(2) or a shared mapping) are what the seeder serves and
// what the tracker sees. userfaultfd write-protect does not cover regular files, so writes
// are found by hashing (xxh3). ferry has no application to suspend here: whoever writes the
// file must stop before the leecher finalizes, or the destination may miss the last writes.
struct FileSource {
	UniqueFd fd;
	Mapping map;
	uint64_t size = 0;

	static Result<FileSource> open(const std::string &path)
	{
		FileSource f;
		int raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
		if (raw < 0)
			return Error::fromErrno(fmt::format("open {}", path));
		f.fd = UniqueFd(raw);
		struct stat st;
		if (::fstat(raw, &st) < 0)
			return Error::fromErrno(fmt::format("stat {}", path));
		if (!S_ISREG(st.st_mode))
			return Error::format(EINVAL, "{} is not a regular file", path);
		if (st.st_size == 0)
			return Error::format(EINVAL, "{} is empty: there is nothing to serve", path);
		f.size = uint64_t(st.st_size);
		FERRY_ASSIGN(f.map, Mapping::map(raw, f.size, PROT_READ, MAP_SHARED));
		return f;
	}
};

int runSeedFile(const SeedArgs &a)
{
	if (!a.tracker.empty() && a.tracker != "xxh3")
		return reportError("seed", Error::format(EINVAL, "--tracker {} with --file: userfaultfd write-protect "
								  "does not cover regular files; use xxh3", a.tracker));
	auto setup = SeederSetup::start(a.listen, a.seeder);
	if (!setup.ok())
		return reportError("seed", setup.error());
	auto file = FileSource::open(a.file);
	if (!file.ok())
		return reportError("seed", file.error().context("--file"));
	// The tracker works in whole pages: it covers the file's last page up to its end, which the
	// mapping holds (zeros past the end of the file); chunks are whole pages, so it still
	// counts the seeder's chunks.
	const uint64_t page = pageSize();
	const uint64_t tracked = (file->size + page - 1) / page * page;
	TrackedRegion region{0, reinterpret_cast<uintptr_t>(file->map.data()), tracked, setup->options.chunkSize};
	auto tracker = makeHashTracker(region);
	if (!tracker.ok())
		return reportError("seed", tracker.error().context("tracker xxh3"));
	auto listener = Listener::listen(setup->listen);
	if (!listener.ok())
		return reportError("seed", listener.error().context("listen"));
	// Nothing to suspend or resume: the file stays as it is, and ferry never writes it.
	SeederHooks hooks{[] { return Status(); }, [] { return Status(); }, [] {}, {}};
	// The mapping starts at offset 0 of the file: the seeder finds a sparse file's holes with
	// SEEK_DATA and sends them as zero chunks without reading them.
	SeederOptions so = setup->options;
	so.regionFd = file->fd.get();
	Seeder seeder(file->map.data(), file->size, std::move(tracker).value(), hooks, so);
	Status st = setup->serve(seeder, *listener, [&] { return seeder.serve(*listener); });
	return SeederSetup::finish("seed", seeder, st, "seeder", [&](JsonValue &s) {
		s.set("tracker", "xxh3");
		s.set("file", a.file);
	});
}

int runSeed(const SeedArgs &a)
{
	if (!a.file.empty())
		return runSeedFile(a);
	auto setup = SeederSetup::start(a.listen, a.seeder);
	if (!setup.ok())
		return reportError("seed", setup.error());
	auto src = SourceAppHandle::spawn(a.app.build());
	if (!src.ok())
		return reportError("seed", src.error().context("start source application"));
	const std::string kind = a.tracker.empty() ? "uffd" : a.tracker;
	auto tracker = makeTracker(kind, *src, setup->options.chunkSize);
	if (!tracker.ok())
		return reportError("seed", tracker.error().context(fmt::format("tracker {}", kind)));
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
	return SeederSetup::finish("seed", seeder, st, "seeder", [&](JsonValue &s) { s.set("tracker", kind); });
}

} // namespace

CommandRunner addSeedCommand(CLI::App &app)
{
	auto a = std::make_shared<SeedArgs>();
	auto *c = app.add_subcommand("seed", "Source side: run the demo application and serve its memory to a leecher, "
					     "or serve a file (--file)");
	c->add_option("--listen", a->listen, "tcp:HOST:PORT or unix:/path")->capture_default_str()->check(endpointValidator());
	c->add_option("--tracker", a->tracker, "uffd (exact: uffd-wp + PAGEMAP_SCAN) or xxh3 (hashing); default uffd, "
					       "xxh3 with --file")->check(CLI::IsMember({"uffd", "xxh3"}));
	c->add_option("--file", a->file, "Serve this regular file (a shared read-only mapping of it) instead of the demo "
					 "application; its writers must stop before the leecher finalizes");
	a->app.addTo(c);
	a->seeder.addTo(c);
	return [a] { return runSeed(*a); };
}

} // namespace ferry
