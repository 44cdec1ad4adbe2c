// SPDX-License-Identifier: GPL-2.0-or-later
// `ferry link`: the link emulator on the command line (delay and a bandwidth cap on a TCP
// relay; no netem needed).
#include <cstdio>

#include "cli/commands.h"
#include "cli/interrupt.h"
#include "ferry/base/clock.h"
#include "ferry/link/link_emulator.h"

#include <signal.h>

namespace ferry {

namespace {

struct LinkArgs {
	std::string listen, connect;
	double rttMs = 0, mbit = 0;
	double cutAfterS = 0, blockAfterS = 0;
};

int runLink(const LinkArgs &a)
{
	// Before the relay's threads start: they inherit the blocked mask.
	auto signals = SignalWaiter::create({SIGINT, SIGTERM, SIGUSR1, SIGUSR2});
	if (!signals.ok())
		return reportError("link", signals.error());
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
	// Failures on demand, for trying what ferry does about them (docs/failures.md): SIGUSR1
	// resets every relayed connection (a brief cut), SIGUSR2 toggles refusing new ones (with
	// a cut: the link is down); --cut-after-s / --block-after-s schedule the same.
	LinkEmulator *lk = link->get();
	const int64_t start = monotonicNs();
	auto due = [&](double s) { return s > 0 ? start + int64_t(s * 1e9) : INT64_MAX; };
	int64_t cutAt = due(a.cutAfterS), blockAt = due(a.blockAfterS);
	bool blocked = false;
	for (;;) {
		const int64_t next = std::min(cutAt, blockAt);
		const int timeoutMs = next == INT64_MAX ? -1 : int(std::max<int64_t>(0, (next - monotonicNs()) / 1000000));
		auto sig = signals->wait(timeoutMs);
		if (!sig.ok())
			return reportError("link", sig.error());
		const int64_t now = monotonicNs();
		if ((*sig && **sig == SIGUSR1) || now >= cutAt) {
			lk->cutAll();
			cutAt = INT64_MAX;
			fmt::print("cut every connection\n");
		}
		if ((*sig && **sig == SIGUSR2) || now >= blockAt) {
			blocked = *sig && **sig == SIGUSR2 ? !blocked : true;
			lk->setBlocked(blocked);
			if (blocked)
				lk->cutAll();
			blockAt = INT64_MAX;
			fmt::print("{}\n", blocked ? "link down: connections cut and refused" : "link up");
		}
		std::fflush(stdout);
		if (*sig && (**sig == SIGINT || **sig == SIGTERM))
			return 0;
	}
}

} // namespace

CommandRunner addLinkCommand(CLI::App &app)
{
	auto options = [](CLI::App *c, LinkArgs &a) {
		c->add_option("--listen", a.listen, "tcp:HOST:PORT to accept on")->required()->check(endpointValidator());
		c->add_option("--connect", a.connect, "upstream endpoint")->required()->check(endpointValidator());
		c->add_option("--rtt-ms", a.rttMs, "Round-trip time to add")->capture_default_str()->check(CLI::Range(0.0, 60000.0));
		c->add_option("--mbit", a.mbit, "Bandwidth cap per direction, Mbit/s (0 = none)")->capture_default_str()->check(CLI::Range(0.0, 1000000.0));
		c->add_option("--cut-after-s", a.cutAfterS, "Reset every relayed connection this long after start (also: SIGUSR1, any time)")->check(CLI::Range(0.0, 86400.0));
		c->add_option("--block-after-s", a.blockAfterS, "Take the link down this long after start: cut, and refuse new connections (also: SIGUSR2 toggles)")->check(CLI::Range(0.0, 86400.0));
	};
	return addCommand<LinkArgs>(app, "link",
				    "Relay TCP connections adding delay and a bandwidth cap (no netem needed)", runLink,
				    options);
}

} // namespace ferry
