// SPDX-License-Identifier: GPL-2.0-or-later
// The `ferry` CLI's subcommands, one file each. Each registers its options on the CLI11 app
// and returns the function that runs it (the process exit code).
#pragma once

#include "cli/options.h"

namespace ferry {

CommandRunner addDemoCommand(CLI::App &app);     // demo.cpp
CommandRunner addSeedCommand(CLI::App &app);     // seed.cpp
CommandRunner addLeechCommand(CLI::App &app);    // leech.cpp
CommandRunner addLinkCommand(CLI::App &app);     // link.cpp
CommandRunner addMonitorCommand(CLI::App &app);  // monitor.cpp
CommandRunner addMigrateCommand(CLI::App &app);  // migrate.cpp
CommandRunner addReceiveCommand(CLI::App &app);  // receive.cpp
CommandRunner addMakePkiCommand(CLI::App &app);  // make_pki.cpp
CommandRunner addStatusCommand(CLI::App &app);   // status.cpp
CommandRunner addPrepareDomainCommand(CLI::App &app); // prepare_domain.cpp
CommandRunner addDoctorCommand(CLI::App &app);   // doctor.cpp
CommandRunner addAbortCommand(CLI::App &app);    // abort.cpp
// The demo's internal source and destination applications (app.cpp); hidden from --help.
CommandRunner addAppCommands(CLI::App &app, CommandRunner *dest);

} // namespace ferry
