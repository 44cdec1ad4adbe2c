// SPDX-License-Identifier: GPL-2.0-or-later
// Internal to plugin/libvirt: the process-wide libvirt set-up every entry point runs first.
#pragma once

#include "ferry/base/result.h"

namespace ferry::virt {

// virInitialize() and a no-op error handler (libvirt would print every error on stderr;
// ferry hands them to the caller as values instead). Runs once; later calls return the
// first result.
Status initLibvirt();

} // namespace ferry::virt
