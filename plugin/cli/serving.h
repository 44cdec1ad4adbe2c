// SPDX-License-Identifier: GPL-2.0-or-later
// The frame the commands that serve a Seeder (seed, migrate) share around what they serve: the
// set-up that must come first, and the announced serve with signals stopping the seeder.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "cli/interrupt.h"
#include "cli/options.h"

namespace ferry {

struct SeederSetup {
	Endpoint listen;
	SeederOptions options;
	std::unique_ptr<SeederInterrupts> interrupts;

	// In this order: --listen parsed, the seeder's options built, and SIGINT/SIGTERM taken over
	// (SeederInterrupts, before any thread exists).
	static Result<SeederSetup> start(const std::string &listen, const SeederArgs &args);

	// Serves with `run` (the seeder's serve() on `listener`). From here on SIGINT/SIGTERM stop
	// `seeder` (which resumes a suspended source before serve() returns) instead of the
	// process, and the first stdout line, "listening on ENDPOINT", tells scripts and
	// `ferry demo` where to connect.
	Status serve(Seeder &seeder, const Listener &listener, const std::function<Status()> &run);

	// Ends `cmd`: prints the summary line (the seeder's stats, `role`, its final state, then
	// what `describe` adds) and returns the exit code, 0, or 1 with `served`'s error reported.
	static int finish(const char *cmd, const Seeder &seeder, const Status &served, const char *role,
			  const std::function<void(JsonValue &summary)> &describe);
};

} // namespace ferry
