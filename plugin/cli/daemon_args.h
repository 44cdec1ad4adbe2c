// SPDX-License-Identifier: GPL-2.0-or-later
// The options of the commands that talk to this host's ferryd (status, abort): which ferryd,
// found through its configuration or named by its control socket.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "daemon/config.h"
#include "daemon/control.h"

namespace ferry {

struct DaemonArgs {
	std::string config{daemon::kDefaultConfigPath};
	std::string socket; // overrides the one the configuration implies

	void addTo(CLI::App *c)
	{
		c->add_option("--config", config, "ferryd's configuration (for its socket directory)")->capture_default_str();
		c->add_option("--socket", socket, "ferryd's control socket (default: SOCKET_DIR/ferryd.sock)");
	}
	Result<JsonValue> ask(const JsonValue &request) const
	{
		return daemon::askDaemon(daemon::controlSocketFor(config, socket), request);
	}
};

} // namespace ferry
