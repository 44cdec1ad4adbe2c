// SPDX-License-Identifier: GPL-2.0-or-later
// `ferry status [DOMAIN]`: what this host's ferryd is carrying, asked on its control socket.
#include "cli/commands.h"
#include "cli/daemon_args.h"

namespace ferry {

namespace {

struct StatusArgs {
	std::string domain;
	DaemonArgs daemon;
	bool json = false;
};

std::string text(const JsonValue &j, std::string_view key)
{
	auto v = j.getString(key);
	return v.ok() ? *v : "-";
}

double number(const JsonValue &j, std::string_view key)
{
	auto v = j.getDouble(key);
	return v.ok() ? *v : 0.0;
}

int runStatus(const StatusArgs &a)
{
	JsonValue request = JsonValue::object();
	request.set("cmd", "status");
	if (!a.domain.empty())
		request.set("domain", a.domain);
	auto reply = a.daemon.ask(request);
	if (!reply.ok())
		return reportError("status", reply.error());
	if (a.json) {
		fmt::print("{}\n", reply->toString());
		return 0;
	}
	fmt::print("ferryd '{}' on {} ({})\n", text(*reply, "name"), text(*reply, "listen"), text(*reply, "tls"));
	if (auto peers = reply->get("peers"); peers.ok()) {
		for (size_t i = 0; i < peers->size(); i++) {
			auto p = peers->at(i);
			fmt::print("  peer {} at {}\n", text(*p, "name"), text(*p, "address"));
		}
	}
	auto list = reply->get("migrations");
	if (!list.ok() || list->size() == 0) {
		fmt::print("no migrations{}\n", a.domain.empty() ? "" : " of " + a.domain);
		return 0;
	}
	fmt::print("{:<20} {:<9} {:<10} {:<7} {:<9} {:>9} {:>11} {:>11}\n", "DOMAIN", "DIRECTION", "PEER", "MODE",
		   "PHASE", "ELAPSED", "STREAM", "RATE");
	for (size_t i = 0; i < list->size(); i++) {
		auto m = list->at(i);
		fmt::print("{:<20} {:<9} {:<10} {:<7} {:<9} {:>8.1f}s {:>8.1f} MB {:>6.1f} MB/s\n", text(*m, "domain"),
			   text(*m, "direction"), text(*m, "peer"), text(*m, "mode"), text(*m, "phase"),
			   number(*m, "elapsed_s"), number(*m, "stream_bytes") / 1e6,
			   number(*m, "stream_mbytes_per_s"));
		if (m->has("error"))
			fmt::print("  error: {}\n", text(*m, "error"));
	}
	return 0;
}

} // namespace

CommandRunner addStatusCommand(CLI::App &app)
{
	auto options = [](CLI::App *c, StatusArgs &a) {
		c->add_option("domain", a.domain, "Only this domain's migrations");
		a.daemon.addTo(c);
		c->add_flag("--json", a.json, "Print ferryd's reply as JSON");
	};
	return addCommand<StatusArgs>(app, "status",
				      "What this host's ferryd is migrating (virsh migrate through ferry): "
				      "phase, bytes and rate per domain",
				      runStatus, options);
}

} // namespace ferry
