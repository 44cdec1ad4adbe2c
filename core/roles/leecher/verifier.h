// SPDX-License-Identifier: GPL-2.0-or-later
// The leecher's verifier (internal): pulls every chunk again from the suspended source on a
// connection of its own, with a window of requests in flight, and compares it byte for byte
// with the local copy.
#pragma once
#ifndef FERRY_CORE_INTERNAL
#error "an internal header of ferry-core: include the public ones (ferry/...) instead"
#endif

#include <string>

#include "ferry/wire/connection.h"
#include "roles/leecher/local_region.h"

namespace ferry {

// Returns the number of chunks that differ (the first few are logged).
Result<uint64_t> verifyAgainstSource(Connection &conn, const LocalRegion &region, const std::string &name);

} // namespace ferry
