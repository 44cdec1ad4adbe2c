// SPDX-License-Identifier: GPL-2.0-or-later
// `ferry monitor`: the monitoring-mode sampler. Runs the demo source application, tracks its
// region with the exact tracker (uffd-wp async + PAGEMAP_SCAN) and, every sampling interval,
// prints the dirty rate and the workload-cycle analyser's verdict -- what a finalize policy
// would learn about a workload before any migration starts. With --qmp PATH it samples a
// running, unmodified QEMU instead (calc-dirty-rate through QMP, whole-second windows; see
// ferry/qmp/dirty_rate.h) and feeds that series to the same analyser.
#pragma once

#include "cli/commands.h"

namespace ferry {

CommandRunner addMonitorCommand(CLI::App &app);

} // namespace ferry
