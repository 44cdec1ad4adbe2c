// SPDX-License-Identifier: GPL-2.0-or-later
// `ferry abort DOMAIN` (source host): ends a ferry-mode migration of DOMAIN before its
// switch-over. libvirt's migration fails and the guest keeps running here. Also the way out
// when `virsh migrate` of a prepared domain waits at ferryd's gate because the destination's
// ferryd never started the ferry migration (docs/libvirt.md).
#include "cli/commands.h"
#include "cli/daemon_args.h"

namespace ferry {

namespace {

struct AbortArgs {
	std::string domain;
	DaemonArgs daemon;
};

int runAbort(const AbortArgs &a)
{
	JsonValue request = JsonValue::object();
	request.set("cmd", "abort").set("domain", a.domain);
	auto reply = a.daemon.ask(request);
	if (!reply.ok())
		return reportError("abort", reply.error());
	auto stopped = reply->getBool("seeder_stopped");
	fmt::print("ferry abort: {}: {}; a libvirt migration waiting at its gate fails now\n", a.domain,
		   stopped.ok() && *stopped ? "its ferry migration stopped" : "no ferry migration was serving it");
	return 0;
}

} // namespace

CommandRunner addAbortCommand(CLI::App &app)
{
	auto options = [](CLI::App *c, AbortArgs &a) {
		c->add_option("domain", a.domain, "The domain")->required();
		a.daemon.addTo(c);
	};
	return addCommand<AbortArgs>(app, "abort",
				     "Source host: end a ferry-mode migration of DOMAIN before its switch-over "
				     "(libvirt's migration fails, the guest keeps running here)",
				     runAbort, options);
}

} // namespace ferry
