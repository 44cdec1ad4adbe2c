// SPDX-License-Identifier: GPL-2.0-or-later
// Waiting on one fd: poll(2) with EINTR retried against the deadline the caller set, so that a
// signal neither ends the wait early nor extends it. Any thread may call it.
#pragma once

#include <poll.h>

#include "ferry/base/result.h"

namespace ferry {

// Waits until `fd` reports one of `events` (or POLLERR/POLLHUP/POLLNVAL, which poll always
// reports) or `timeoutMs` has passed (-1: no limit). Returns the revents, 0 on timeout; an
// Error ("poll") only when poll itself fails.
Result<short> pollOne(int fd, short events, int timeoutMs);

} // namespace ferry
