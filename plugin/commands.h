// SPDX-License-Identifier: GPL-2.0-or-later
// The `ferry` CLI's subcommands. Each registers its options on the CLI11 app and returns
// the function that runs it (exit code).
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

namespace ferry {

using CommandRunner = std::function<int()>;

// --help text of every --finalize option (the policies are in core/cycles/policy.h).
inline constexpr const char *kFinalizeHelp =
	"Finalize policy: immediate | threshold | local-minimum | cycle, optionally with "
	"':key=value,...' (deadline, budget, chunks, rounds, max-rounds, patience, margin, "
	"warmup, interval; cycle: hold=off|hot|all, default hot: hold every chunk while the "
	"analyser warms up, then the recently written ones outside low windows)";

// --compress: what a seeder compresses its pre-copy pull with, and whether a leecher asks for
// it. Both sides must want it; the check rejects what parseCompressionSpec rejects.
inline constexpr const char *kCompressHelp =
	"Compression of the pre-copy pull: zstd (level 1), zstd:LEVEL (1..19) or none. Chunks that "
	"do not shrink by 1/32 go raw; fault replies are never compressed";
CLI::Validator compressionValidator();

CommandRunner addSeedCommand(CLI::App &app);
CommandRunner addLeechCommand(CLI::App &app);
CommandRunner addDemoCommand(CLI::App &app);
CommandRunner addLinkCommand(CLI::App &app);
CommandRunner addMigrateCommand(CLI::App &app);
CommandRunner addReceiveCommand(CLI::App &app);
CommandRunner addAppCommands(CLI::App &app, CommandRunner *dest);

} // namespace ferry
