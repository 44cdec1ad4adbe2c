// SPDX-License-Identifier: GPL-2.0-or-later
// Internal: validation shared by the trackers.
#pragma once
#ifndef FERRY_CORE_INTERNAL
#error "an internal header of ferry-core: include the public ones (ferry/...) instead"
#endif

#include "ferry/dirty/tracker.h"

namespace ferry::dirty {

// Checks alignment and sizes; returns the number of chunks.
Result<uint32_t> checkRegion(const TrackedRegion &region);

} // namespace ferry::dirty
