// SPDX-License-Identifier: GPL-2.0-or-later
#include "commands.h"

#include <atomic>
#include <csignal>
#include <cstdio>
#include <fcntl.h>
#include <memory>
#include <poll.h>
#include <sys/mman.h>
#include <string>
#include <thread>
#include <unistd.h>

#include "demo_app.h"
#include "progress.h"
#include "ferry/base/log.h"
#include "ferry/dirty/tracker.h"
#include "ferry/link/link_emulator.h"
#include "ferry/roles/leecher.h"
#include "ferry/roles/seeder.h"
#include "ferry/sys/mapping.h"
#include "ferry/wire/compress.h"
#include "process.h"

namespace ferry {

namespace {

int reportError(std::string_view cmd, const Error &e)
{
	fmt::print(stderr, "ferry {}: error: {}\n", cmd, e.message());
	return 1;
}

std::atomic<bool> g_interrupted{false};

void installInterruptHandler()
{
	struct sigaction sa {};
	sa.sa_handler = [](int) { g_interrupted = true; };
	sigaction(SIGINT, &sa, nullptr);
	sigaction(SIGTERM, &sa, nullptr);
}

// --- seed --------------------------------------------------------------------------------

struct SeedArgs {
	std::string listen = "tcp:0.0.0.0:7070";
	double sizeMib = 256;
	double writeMbps = 50;
	std::string pattern = "random";
	double fill = 1.0;
	std::string fillKind = "random";
	unsigned chunkKib = 64;
	std::string tracker = "uffd";
	double rollbackTimeoutS = 10;
	uint64_t seed = 1;
	double periodS = 0, duty = 0.5, lowMbps = 0, phase = 0;
	std::string compress = "zstd";
};

int runSeed(const SeedArgs &a)
{
	installInterruptHandler();
	auto ep = parseEndpoint(a.listen);
	if (!ep.ok())
		return reportError("seed", ep.error().context("--listen"));
	if (a.chunkKib < 4 || (a.chunkKib & (a.chunkKib - 1)))
		return reportError("seed", Error(EINVAL, "--chunk-kib must be a power of two >= 4"));
	SourceAppOptions app;
	app.size = (uint64_t(a.sizeMib * 1024 * 1024) + 4095) & ~uint64_t(4095);
	app.writeMBps = a.writeMbps;
	app.sequential = a.pattern == "seq";
	app.fill = a.fill;
	app.textFill = a.fillKind == "text";
	app.seed = a.seed;
	app.periodSec = a.periodS;
	app.duty = a.duty;
	app.lowMBps = a.lowMbps;
	app.phase = a.phase;
	auto src = SourceAppHandle::spawn(app);
	if (!src.ok())
		return reportError("seed", src.error().context("start source application"));
	TrackedRegion region{src->pid(), src->base(), src->size(), size_t(a.chunkKib) * 1024};
	Result<std::unique_ptr<DirtyTracker>> tracker = Error(EINVAL, "unknown tracker");
	if (a.tracker == "uffd") {
		auto uffd = src->takeUffd();
		if (!uffd.ok())
			return reportError("seed", uffd.error());
		tracker = makeUffdWpTracker(region, std::move(uffd).value());
	} else if (a.tracker == "xxh3") {
		tracker = makeHashTracker(region);
	}
	if (!tracker.ok())
		return reportError("seed", tracker.error().context(fmt::format("tracker {}", a.tracker)));
	auto listener = Listener::listen(*ep);
	if (!listener.ok())
		return reportError("seed", listener.error().context("listen"));
	// The first stdout line tells scripts (and `ferry demo`) where to connect.
	fmt::print("listening on {}\n", listener->boundEndpoint().str());
	std::fflush(stdout);

	SourceAppHandle *s = &src.value();
	SeederHooks hooks{[s] { return s->suspend(); }, [s] { return s->resume(); }, [s] { s->quit(); }, {}};
	SeederOptions so;
	so.chunkSize = a.chunkKib * 1024;
	so.rollbackTimeout = std::chrono::milliseconds(int64_t(a.rollbackTimeoutS * 1000));
	so.compression = parseCompressionSpec(a.compress).value(); // checked by the CLI
	Seeder seeder(s->mapping().data(), s->size(), std::move(tracker).value(), hooks, so);
	std::thread watchdog([&] {
		while (!g_interrupted && seeder.state() != SeederState::Released &&
		       seeder.state() != SeederState::RolledBack)
			std::this_thread::sleep_for(std::chrono::milliseconds(100)); // signal poll
		if (g_interrupted)
			seeder.stop();
	});
	Status st = seeder.serve(*listener);
	g_interrupted = true;
	watchdog.join();
	SeederStats stats = seeder.stats();
	fmt::print("{{\"role\":\"seeder\",\"state\":\"{}\",\"tracker\":\"{}\",\"chunks_served\":{},"
		   "\"zero_chunks_served\":{},\"bytes_sent\":{},\"dirty_reports\":{},"
		   "\"dirty_chunks_reported\":{},\"final_dirty_chunks\":{},\"compressed_chunks\":{},"
		   "\"compressed_raw_bytes\":{},\"compressed_wire_bytes\":{}}}\n",
		   seederStateName(seeder.state()), a.tracker, stats.chunksServed, stats.zeroChunksServed,
		   stats.bytesSent, stats.dirtyReports, stats.dirtyChunksReported, stats.finalDirtyChunks,
		   stats.compressedChunks, stats.compressedRawBytes, stats.compressedWireBytes);
	std::fflush(stdout);
	if (!st.ok())
		return reportError("seed", st.error());
	return 0;
}

// --- leech -------------------------------------------------------------------------------

struct LeechArgs {
	std::string connect;
	std::string mode = "hybrid";
	unsigned connections = 2;
	unsigned depth = 64;
	std::string finalize = "immediate";
	double deadlineS = 60;
	double sampleMs = 100;
	bool verify = false;
	double readMbps = 200;
	bool quiet = false;
	std::string compress = "zstd";
};


int runLeech(const LeechArgs &a)
{
	auto ep = parseEndpoint(a.connect);
	if (!ep.ok())
		return reportError("leech", ep.error().context("--connect"));
	LeecherOptions lo;
	lo.seeder = *ep;
	if (!parseMigrationMode(a.mode, &lo.mode))
		return reportError("leech", Error::format(EINVAL, "--mode must be hybrid or precopy, not '{}'", a.mode));
	lo.connections = a.connections;
	lo.depth = a.depth;
	lo.finalizePolicy = a.finalize;
	lo.policy.deadlineSec = a.deadlineS;
	lo.policy.sampleIntervalSec = a.sampleMs / 1000;
	lo.sampleInterval = std::chrono::milliseconds(int64_t(a.sampleMs));
	lo.verify = a.verify;
	lo.compression = parseCompressionSpec(a.compress).value().enabled(); // checked by the CLI
	auto printer = std::make_shared<ProgressPrinter>(a.quiet);
	lo.onProgress = [printer](const LeecherProgress &p) { (*printer)(p); };

	UniqueFd memfd;
	Mapping map;
	std::optional<DestAppHandle> app;
	DestAppOptions dao;
	dao.faults = lo.mode == MigrationMode::Hybrid;
	dao.readMBps = a.readMbps;
	uint64_t size = 0;

	LeecherHooks hooks;
	hooks.prepare = [&](uint64_t sz, uint32_t) -> Result<uint8_t *> {
		size = sz;
		FERRY_ASSIGN(memfd, createMemfd("ferry-demo-destination", sz));
		FERRY_ASSIGN(map, Mapping::map(memfd.get(), sz, PROT_READ | PROT_WRITE, MAP_SHARED));
		return map.data();
	};
	hooks.armFaults = [&]() -> Result<FaultTarget> {
		FERRY_ASSIGN(DestAppHandle h, DestAppHandle::spawn(memfd.get(), size, dao));
		app.emplace(std::move(h));
		FERRY_ASSIGN(Userfaultfd u, app->takeUffd());
		return FaultTarget{std::move(u), app->base()};
	};
	hooks.resume = [&]() -> Status {
		if (!app) {
			FERRY_ASSIGN(DestAppHandle h, DestAppHandle::spawn(memfd.get(), size, dao));
			app.emplace(std::move(h));
		}
		return app->run();
	};

	Leecher leecher(std::move(hooks), lo);
	auto rep = leecher.run();
	if (!rep.ok())
		return reportError("leech", rep.error());
	if (app) {
		auto pages = app->quit();
		if (pages.ok())
			FERRY_LOG(Info, "leech", "destination application read {} pages", *pages);
	}
	fmt::print("{}\n", rep->toJson());
	std::fflush(stdout);
	if (rep->verified.has_value() && !*rep->verified)
		return 3;
	return 0;
}

// --- link --------------------------------------------------------------------------------

struct LinkArgs {
	std::string listen, connect;
	double rttMs = 0, mbit = 0;
};

int runLink(const LinkArgs &a)
{
	installInterruptHandler();
	auto l = parseEndpoint(a.listen);
	auto c = parseEndpoint(a.connect);
	if (!l.ok())
		return reportError("link", l.error().context("--listen"));
	if (!c.ok())
		return reportError("link", c.error().context("--connect"));
	auto link = LinkEmulator::start(*l, *c,
					LinkParams::symmetric(std::chrono::microseconds(int64_t(a.rttMs * 1000)), a.mbit));
	if (!link.ok())
		return reportError("link", link.error());
	fmt::print("relaying {} -> {} (rtt {} ms, {} Mbit/s)\n", (*link)->endpoint().str(), a.connect,
		   a.rttMs, a.mbit > 0 ? fmt::format("{}", a.mbit) : std::string("unlimited"));
	std::fflush(stdout);
	while (!g_interrupted)
		pause();
	return 0;
}

// --- demo --------------------------------------------------------------------------------

struct DemoArgs {
	double sizeMib = 256;
	double writeMbps = 50;
	double rttMs = 0;
	double mbit = 0;
	std::string mode = "hybrid";
	std::string pattern = "random";
	std::string fillKind = "random";
	unsigned chunkKib = 64;
	unsigned connections = 2;
	unsigned depth = 64;
	std::string finalize = "immediate";
	std::string tracker = "uffd";
	double readMbps = 200;
	bool noVerify = false;
	bool quiet = false;
	double periodS = 0, duty = 0.5, lowMbps = 0, phase = 0, deadlineS = 60;
	uint64_t seed = 1;
	std::string compress = "zstd";
};

// Reads the seeder's first stdout line ("listening on ...") with a timeout.
Result<std::string> readListenLine(int fd, int timeoutMs)
{
	std::string line;
	char c;
	while (line.size() < 512) {
		pollfd p{fd, POLLIN, 0};
		int n = ::poll(&p, 1, timeoutMs);
		if (n == 0)
			return Error(ETIMEDOUT, "seeder did not start listening");
		if (n < 0 && errno != EINTR)
			return Error::fromErrno("poll");
		ssize_t r = ::read(fd, &c, 1);
		if (r <= 0)
			return Error(EPIPE, "seeder exited before listening");
		if (c == '\n')
			break;
		line += c;
	}
	const std::string prefix = "listening on ";
	if (line.rfind(prefix, 0) != 0)
		return Error::format(EPROTO, "unexpected seeder output '{}'", line);
	return line.substr(prefix.size());
}

int runDemo(const DemoArgs &a)
{
	std::string level = logLevel() == LogLevel::Debug ? "debug" : logLevel() == LogLevel::Info ? "info" : "warn";
	int pipefd[2];
	if (::pipe2(pipefd, O_CLOEXEC) < 0)
		return reportError("demo", Error::fromErrno("pipe"));
	UniqueFd rd(pipefd[0]), wr(pipefd[1]);
	auto seeder = spawnSelf({"--log-level", level, "seed", "--listen", "tcp:127.0.0.1:0", "--size-mib",
				 fmt::format("{}", a.sizeMib), "--write-mbps", fmt::format("{}", a.writeMbps),
				 "--pattern", a.pattern, "--chunk-kib", std::to_string(a.chunkKib),
				 "--tracker", a.tracker, "--period-s", fmt::format("{}", a.periodS), "--duty",
				 fmt::format("{}", a.duty), "--low-mbps", fmt::format("{}", a.lowMbps), "--phase", fmt::format("{}", a.phase), "--seed",
				 std::to_string(a.seed), "--compress", a.compress, "--fill-kind", a.fillKind},
				{}, wr.get());
	if (!seeder.ok())
		return reportError("demo", seeder.error().context("start seeder"));
	wr.reset();
	auto where = readListenLine(rd.get(), 30000);
	if (!where.ok())
		return reportError("demo", where.error());
	// Pass the seeder's later stdout (its JSON summary) through to stderr.
	std::thread drain([fd = rd.get()] {
		char buf[4096];
		ssize_t n;
		while ((n = ::read(fd, buf, sizeof buf)) > 0)
			FERRY_LOG(Debug, "demo", "seeder: {}", std::string_view(buf, size_t(n)));
	});

	std::string target = *where;
	std::unique_ptr<LinkEmulator> link;
	if (a.rttMs > 0 || a.mbit > 0) {
		auto up = parseEndpoint(*where);
		auto l = up.ok() ? LinkEmulator::start(Endpoint::tcp("127.0.0.1", 0), *up,
						       LinkParams::symmetric(std::chrono::microseconds(int64_t(a.rttMs * 1000)), a.mbit))
				 : Result<std::unique_ptr<LinkEmulator>>(up.error());
		if (!l.ok()) {
			drain.detach();
			return reportError("demo", l.error().context("link emulator"));
		}
		link = std::move(l).value();
		target = link->endpoint().str();
		FERRY_LOG(Info, "demo", "link emulator {} -> {}: rtt {} ms, {} Mbit/s", target, *where, a.rttMs, a.mbit);
	}

	std::vector<std::string> args = {"--log-level", level, "leech", "--connect", target, "--mode", a.mode,
					 "--connections", std::to_string(a.connections), "--depth",
					 std::to_string(a.depth), "--finalize", a.finalize, "--deadline-s",
					 fmt::format("{}", a.deadlineS), "--read-mbps",
					 fmt::format("{}", a.readMbps), "--compress", a.compress};
	if (!a.noVerify)
		args.push_back("--verify");
	if (a.quiet)
		args.push_back("--quiet");
	int lpipe[2];
	if (::pipe2(lpipe, O_CLOEXEC) < 0) {
		drain.detach();
		return reportError("demo", Error::fromErrno("pipe"));
	}
	UniqueFd lrd(lpipe[0]), lwr(lpipe[1]);
	auto leecher = spawnSelf(args, {}, lwr.get());
	if (!leecher.ok()) {
		drain.detach();
		return reportError("demo", leecher.error().context("start leecher"));
	}
	lwr.reset();
	// The leecher's stdout is its JSON summary; it is printed last, after the seeder is done.
	std::string summary;
	char buf[4096];
	ssize_t n;
	while ((n = ::read(lrd.get(), buf, sizeof buf)) > 0)
		summary.append(buf, size_t(n));
	auto lrc = leecher->wait();
	auto src = seeder->waitFor(30000);
	drain.join();
	if (!lrc.ok() || *lrc != 0)
		return reportError("demo", Error::format(EIO, "leecher failed (exit {})", lrc.ok() ? *lrc : -1));
	if (!src.ok() || *src != 0)
		return reportError("demo", Error::format(EIO, "seeder failed (exit {})", src.ok() ? *src : -1));
	fmt::print("{}", summary);
	std::fflush(stdout);
	return 0;
}

} // namespace

CLI::Validator compressionValidator()
{
	return CLI::Validator(
		[](std::string &v) -> std::string {
			auto r = parseCompressionSpec(v);
			return r.ok() ? std::string() : r.error().message();
		},
		"none|zstd|zstd:LEVEL");
}

CommandRunner addSeedCommand(CLI::App &app)
{
	auto a = std::make_shared<SeedArgs>();
	auto *c = app.add_subcommand("seed", "Source side: run the demo application and serve its memory to a leecher");
	c->add_option("--listen", a->listen, "tcp:HOST:PORT or unix:/path")->capture_default_str();
	c->add_option("--size-mib", a->sizeMib, "Region size")->capture_default_str()->check(CLI::PositiveNumber);
	c->add_option("--write-mbps", a->writeMbps, "Application write rate, MB/s of 4 KiB pages")->capture_default_str()->check(CLI::NonNegativeNumber);
	c->add_option("--pattern", a->pattern, "random or seq")->capture_default_str()->check(CLI::IsMember({"random", "seq"}));
	c->add_option("--fill", a->fill, "Fraction of the region holding data at start (rest zero)")->capture_default_str()->check(CLI::Range(0.0, 1.0));
	c->add_option("--fill-kind", a->fillKind, "That data: random (incompressible) or text (compresses like logs)")->capture_default_str()->check(CLI::IsMember({"random", "text"}));
	c->add_option("--chunk-kib", a->chunkKib, "Chunk size")->capture_default_str();
	c->add_option("--tracker", a->tracker, "uffd (exact: uffd-wp + PAGEMAP_SCAN) or xxh3 (hashing)")->capture_default_str()->check(CLI::IsMember({"uffd", "xxh3"}));
	c->add_option("--rollback-timeout-s", a->rollbackTimeoutS, "Resume the source if the destination vanishes after finalize but before switch-over")->capture_default_str();
	c->add_option("--seed", a->seed, "Random seed of the application")->capture_default_str();
	c->add_option("--period-s", a->periodS, "Cyclic writes: period in seconds (0 = constant rate)")->capture_default_str();
	c->add_option("--duty", a->duty, "Cyclic writes: fraction of the period at --write-mbps")->capture_default_str()->check(CLI::Range(0.0, 1.0));
	c->add_option("--low-mbps", a->lowMbps, "Cyclic writes: rate in the low phase")->capture_default_str();
	c->add_option("--phase", a->phase, "Cyclic writes: starting phase, 0..1")->capture_default_str()->check(CLI::Range(0.0, 1.0));
	c->add_option("--compress", a->compress, kCompressHelp)->capture_default_str()->check(compressionValidator());
	return [a] { return runSeed(*a); };
}

CommandRunner addLeechCommand(CLI::App &app)
{
	auto a = std::make_shared<LeechArgs>();
	auto *c = app.add_subcommand("leech", "Destination side: pull the region, finalize, serve faults, run the application");
	c->add_option("--connect", a->connect, "Seeder endpoint: tcp:HOST:PORT or unix:/path")->required();
	c->add_option("--mode", a->mode, "hybrid (post-copy faults) or precopy")->capture_default_str()->check(CLI::IsMember({"hybrid", "precopy"}));
	c->add_option("--connections", a->connections, "Data connections")->capture_default_str()->check(CLI::Range(1, 64));
	c->add_option("--depth", a->depth, "Chunks in flight per connection")->capture_default_str()->check(CLI::Range(1, 4096));
	c->add_option("--finalize", a->finalize, kFinalizeHelp)->capture_default_str();
	c->add_option("--deadline-s", a->deadlineS, "Finalize anyway after this long")->capture_default_str();
	c->add_option("--sample-ms", a->sampleMs, "Dirty-rate sampling interval")->capture_default_str()->check(CLI::Range(10.0, 1000.0));
	c->add_flag("--verify", a->verify, "Compare the region byte for byte with the suspended source at the end");
	c->add_option("--compress", a->compress, "Ask the seeder to compress the pre-copy pull: zstd (any level) or none")->capture_default_str()->check(compressionValidator());
	c->add_option("--read-mbps", a->readMbps, "Destination application's random read rate after resume")->capture_default_str();
	c->add_flag("--quiet", a->quiet, "No progress lines");
	return [a] { return runLeech(*a); };
}

CommandRunner addLinkCommand(CLI::App &app)
{
	auto a = std::make_shared<LinkArgs>();
	auto *c = app.add_subcommand("link", "Relay TCP connections adding delay and a bandwidth cap (no netem needed)");
	c->add_option("--listen", a->listen, "tcp:HOST:PORT to accept on")->required();
	c->add_option("--connect", a->connect, "upstream endpoint")->required();
	c->add_option("--rtt-ms", a->rttMs, "Round-trip time to add")->capture_default_str()->check(CLI::NonNegativeNumber);
	c->add_option("--mbit", a->mbit, "Bandwidth cap per direction, Mbit/s (0 = none)")->capture_default_str()->check(CLI::NonNegativeNumber);
	return [a] { return runLink(*a); };
}

CommandRunner addDemoCommand(CLI::App &app)
{
	auto a = std::make_shared<DemoArgs>();
	auto *c = app.add_subcommand("demo", "Migrate a live region between two local processes and verify it");
	c->add_option("--size-mib", a->sizeMib, "Region size")->capture_default_str()->check(CLI::PositiveNumber);
	c->add_option("--write-mbps", a->writeMbps, "Source application's write rate (random 4 KiB pages)")->capture_default_str();
	c->add_option("--rtt-ms", a->rttMs, "Emulated round-trip time (link emulator)")->capture_default_str();
	c->add_option("--mbit", a->mbit, "Emulated bandwidth cap, Mbit/s (0 = none)")->capture_default_str();
	c->add_option("--mode", a->mode, "hybrid or precopy")->capture_default_str()->check(CLI::IsMember({"hybrid", "precopy"}));
	c->add_option("--pattern", a->pattern, "random or seq")->capture_default_str()->check(CLI::IsMember({"random", "seq"}));
	c->add_option("--chunk-kib", a->chunkKib, "Chunk size")->capture_default_str();
	c->add_option("--connections", a->connections, "Data connections")->capture_default_str();
	c->add_option("--depth", a->depth, "Chunks in flight per connection")->capture_default_str();
	c->add_option("--finalize", a->finalize, kFinalizeHelp)->capture_default_str();
	c->add_option("--tracker", a->tracker, "uffd or xxh3")->capture_default_str();
	c->add_option("--read-mbps", a->readMbps, "Destination application's read rate after resume")->capture_default_str();
	c->add_option("--period-s", a->periodS, "Cyclic writes: period in seconds (0 = constant rate)")->capture_default_str();
	c->add_option("--duty", a->duty, "Cyclic writes: fraction of the period at --write-mbps")->capture_default_str();
	c->add_option("--low-mbps", a->lowMbps, "Cyclic writes: rate in the low phase")->capture_default_str();
	c->add_option("--phase", a->phase, "Cyclic writes: starting phase, 0..1")->capture_default_str();
	c->add_option("--deadline-s", a->deadlineS, "Finalize anyway after this long")->capture_default_str();
	c->add_option("--seed", a->seed, "Random seed of the source application")->capture_default_str();
	c->add_option("--compress", a->compress, kCompressHelp)->capture_default_str()->check(compressionValidator());
	c->add_option("--fill-kind", a->fillKind, "Source data: random (incompressible) or text (compresses like logs)")->capture_default_str()->check(CLI::IsMember({"random", "text"}));
	c->add_flag("--no-verify", a->noVerify, "Skip the byte-for-byte check");
	c->add_flag("--quiet", a->quiet, "No progress lines");
	return [a] { return runDemo(*a); };
}

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
