// SPDX-License-Identifier: GPL-2.0-or-later
// `ferry link`: the link emulator on the command line (delay and a bandwidth cap on a TCP
// relay; no netem needed).
#include <cstdio>

#include "cli/commands.h"
#include "cli/interrupt.h"
#include "ferry/link/link_emulator.h"

namespace ferry {

namespace {

struct LinkArgs {
	std::string listen, connect;
	double rttMs = 0, mbit = 0;
};

int runLink(const LinkArgs &a)
{
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
	auto sig = InterruptWatcher::waitForSignal();
	return sig.ok() ? 0 : reportError("link", sig.error());
}

} // namespace

CommandRunner addLinkCommand(CLI::App &app)
{
	auto a = std::make_shared<LinkArgs>();
	auto *c = app.add_subcommand("link", "Relay TCP connections adding delay and a bandwidth cap (no netem needed)");
	c->add_option("--listen", a->listen, "tcp:HOST:PORT to accept on")->required()->check(endpointValidator());
	c->add_option("--connect", a->connect, "upstream endpoint")->required()->check(endpointValidator());
	c->add_option("--rtt-ms", a->rttMs, "Round-trip time to add")->capture_default_str()->check(CLI::Range(0.0, 60000.0));
	c->add_option("--mbit", a->mbit, "Bandwidth cap per direction, Mbit/s (0 = none)")->capture_default_str()->check(CLI::Range(0.0, 1000000.0));
	return [a] { return runLink(*a); };
}

} // namespace ferry
