// SPDX-License-Identifier: GPL-2.0-or-later
// `ferry demo`: a whole region migration on one host. Runs `ferry seed` and `ferry leech` as
// child processes (through the link emulator when --rtt-ms/--mbit is given) and prints the
// leecher's JSON report, `"verified":true` when the destination matches the source byte for
// byte.
#include <cstdio>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <thread>
#include <unistd.h>

#include <filesystem>
#include <optional>

#include "cli/commands.h"
#include "ferry/base/log.h"
#include "ferry/link/link_emulator.h"
#include "ferry/sys/process.h"
#include "ferry/wire/tls.h"

namespace ferry {

namespace {

struct DemoArgs {
	double rttMs = 0;
	double mbit = 0;
	std::string tracker = "uffd";
	double readMbps = 200;
	bool noVerify = false;
	bool tls = false;
	SourceAppArgs app;
	SeederArgs seeder;
	LeecherArgs leecher;
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

// A child `ferry` command whose stdout comes back through a pipe.
struct Child {
	ChildProcess process;
	UniqueFd out;
};

Result<Child> startChild(std::vector<std::string> args)
{
	int p[2];
	if (::pipe2(p, O_CLOEXEC) < 0)
		return Error::fromErrno("pipe");
	UniqueFd rd(p[0]), wr(p[1]);
	FERRY_ASSIGN(ChildProcess c, spawnSelf(args, {}, wr.get()));
	return Child{std::move(c), std::move(rd)};
}

std::string readAll(int fd)
{
	std::string s;
	char buf[4096];
	ssize_t n;
	while ((n = ::read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
		if (n > 0)
			s.append(buf, size_t(n));
	return s;
}

// A directory of throwaway certificates (a CA, a server and a client) for `--tls`, removed
// when the demo ends.
class ThrowawayPki {
public:
	static Result<ThrowawayPki> create()
	{
		char dir[] = "/tmp/ferry-demo-pki.XXXXXX";
		if (!::mkdtemp(dir))
			return Error::fromErrno("mkdtemp");
		ThrowawayPki p;
		p.dir_ = dir;
		FERRY_TRY_CTX(writeThrowawayPki(p.dir_), "throwaway PKI in {}", p.dir_);
		return p;
	}
	ThrowawayPki() = default;
	ThrowawayPki(ThrowawayPki &&o) noexcept : dir_(std::exchange(o.dir_, {})) {}
	~ThrowawayPki()
	{
		if (!dir_.empty())
			std::filesystem::remove_all(dir_);
	}
	const std::string &dir() const { return dir_; }

private:
	std::string dir_;
};

int runDemo(DemoArgs a)
{
	std::optional<ThrowawayPki> pki;
	if (a.tls) {
		auto p = ThrowawayPki::create();
		if (!p.ok())
			return reportError("demo", p.error());
		pki.emplace(std::move(p).value());
		a.seeder.tls.spec = a.leecher.tls.spec = "x509:" + pki->dir();
	} else {
		a.seeder.tls.spec = a.leecher.tls.spec = "insecure";
	}
	std::string level = logLevel() == LogLevel::Debug ? "debug" : logLevel() == LogLevel::Info ? "info" : "warn";
	a.seeder.reconnectTimeoutS = a.leecher.reconnectTimeoutS; // one window for both sides
	std::vector<std::string> seedArgs = {"--log-level", level, "seed", "--listen", "tcp:127.0.0.1:0", "--tracker", a.tracker};
	for (auto &v : {a.app.toArgs(), a.seeder.toArgs()})
		seedArgs.insert(seedArgs.end(), v.begin(), v.end());
	auto seeder = startChild(seedArgs);
	if (!seeder.ok())
		return reportError("demo", seeder.error().context("start seeder"));
	auto where = readListenLine(seeder->out.get(), 30000);
	if (!where.ok())
		return reportError("demo", where.error());
	// The seeder's later stdout (its JSON summary) goes to the debug log.
	std::thread drain([fd = seeder->out.get()] { FERRY_LOG(Debug, "demo", "seeder: {}", readAll(fd)); });
	// Whatever happens to the leecher, the seeder is told to finish (SIGTERM: it rolls its
	// source back if the migration did not complete), so the drain thread always ends.
	auto finishSeeder = [&]() -> Result<int> {
		auto rc = seeder->process.waitFor(30000);
		if (!rc.ok()) {
			seeder->process.kill(SIGTERM);
			rc = seeder->process.waitFor(10000);
		}
		if (!rc.ok())
			seeder->process.kill(SIGKILL);
		drain.join();
		return rc;
	};

	std::string target = *where;
	std::unique_ptr<LinkEmulator> link;
	if (a.rttMs > 0 || a.mbit > 0) {
		auto up = parseEndpoint(*where);
		auto l = up.ok() ? LinkEmulator::start(Endpoint::tcp("127.0.0.1", 0), *up,
						       LinkParams::symmetric(std::chrono::microseconds(int64_t(a.rttMs * 1000)), a.mbit))
				 : Result<std::unique_ptr<LinkEmulator>>(up.error());
		if (!l.ok()) {
			seeder->process.kill(SIGTERM);
			(void)finishSeeder();
			return reportError("demo", l.error().context("link emulator"));
		}
		link = std::move(l).value();
		target = link->endpoint().str();
		FERRY_LOG(Info, "demo", "link emulator {} -> {}: rtt {} ms, {} Mbit/s", target, *where, a.rttMs, a.mbit);
	}

	LeecherArgs la = a.leecher;
	la.verify = !a.noVerify;
	la.compress = a.seeder.compress; // one --compress for both sides
	std::vector<std::string> leechArgs = {"--log-level", level, "leech", "--connect", target, "--read-mbps",
					      fmt::format("{}", a.readMbps)};
	for (auto &v : la.toArgs())
		leechArgs.push_back(v);
	auto leecher = startChild(leechArgs);
	if (!leecher.ok()) {
		seeder->process.kill(SIGTERM);
		(void)finishSeeder();
		return reportError("demo", leecher.error().context("start leecher"));
	}
	// The leecher's stdout is its JSON summary; it is printed last, after the seeder is done.
	std::string summary = readAll(leecher->out.get());
	auto lrc = leecher->process.wait();
	if (!lrc.ok() || *lrc != 0)
		seeder->process.kill(SIGTERM);
	auto src = finishSeeder();
	if (!lrc.ok() || *lrc != 0)
		return reportError("demo", Error::format(EIO, "leecher failed (exit {})", lrc.ok() ? *lrc : -1));
	if (!src.ok() || *src != 0)
		return reportError("demo", Error::format(EIO, "seeder failed (exit {})", src.ok() ? *src : -1));
	fmt::print("{}", summary);
	std::fflush(stdout);
	return 0;
}

} // namespace

CommandRunner addDemoCommand(CLI::App &app)
{
	auto options = [](CLI::App *c, DemoArgs &a) {
		c->add_option("--rtt-ms", a.rttMs, "Emulated round-trip time (link emulator)")->capture_default_str()->check(CLI::Range(0.0, 60000.0));
		c->add_option("--mbit", a.mbit, "Emulated bandwidth cap, Mbit/s (0 = none)")->capture_default_str()->check(CLI::Range(0.0, 1000000.0));
		c->add_option("--tracker", a.tracker, "uffd or xxh3")->capture_default_str()->check(CLI::IsMember({"uffd", "xxh3"}));
		c->add_option("--read-mbps", a.readMbps, "Destination application's read rate after resume")->capture_default_str()->check(CLI::Range(0.0, 100000.0));
		a.app.addTo(c);
		a.seeder.addTo(c, false);
		a.leecher.addTo(c, nullptr, false); // the demo always verifies, unless --no-verify
		c->add_flag("--tls", a.tls, "Mutual TLS 1.3 between seeder and leecher, with a throwaway CA and certificates "
					     "made for this run (without it the demo's loopback link is plaintext)");
		c->add_flag("--no-verify", a.noVerify, "Skip the byte-for-byte check");
	};
	return addCommand<DemoArgs>(app, "demo", "Migrate a live region between two local processes and verify it",
				    runDemo, options);
}

} // namespace ferry
