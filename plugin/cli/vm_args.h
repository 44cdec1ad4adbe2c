// SPDX-License-Identifier: GPL-2.0-or-later
// The options of the commands that drive one prepared QEMU (migrate on the source host, receive
// on the destination host): its QMP and agent sockets and how its RAM mapping is found.
#pragma once

#include <string>
#include <string_view>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "vm/vm_migration.h"

namespace ferry {

struct VmArgs {
	std::string qmp, agent, ramMatch = "memory-backend-memfd";

	// side names the QEMU in the help texts ("Source", "Destination").
	void addTo(CLI::App *c, std::string_view side)
	{
		c->add_option("--qmp", qmp, fmt::format("{} QEMU's QMP socket", side))->required();
		c->add_option("--agent", agent, fmt::format("{} QEMU's agent socket (FERRY_AGENT_SOCKET)", side))
			->required();
		c->add_option("--ram-match", ramMatch, "Substring of guest RAM's mapping path")->capture_default_str();
	}
	VmHandle handle(QmpClient &client) const { return {&client, agent, ramMatch}; }
};

} // namespace ferry
