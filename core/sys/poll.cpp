// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/sys/poll.h"

#include <algorithm>
#include <climits>

#include "ferry/base/clock.h"

namespace ferry {

Result<short> pollOne(int fd, short events, int timeoutMs)
{
	const int64_t deadlineNs = timeoutMs < 0 ? -1 : monotonicNs() + int64_t(timeoutMs) * 1000000;
	for (;;) {
		pollfd p{fd, events, 0};
		int r = ::poll(&p, 1, timeoutMs);
		if (r >= 0)
			return short(r == 0 ? 0 : p.revents);
		if (errno != EINTR)
			return Error::fromErrno("poll");
		if (deadlineNs >= 0) {
			// Rounded up: waking a fraction of a millisecond early would only poll again.
			int64_t leftMs = (deadlineNs - monotonicNs() + 999999) / 1000000;
			timeoutMs = int(std::clamp<int64_t>(leftMs, 0, INT_MAX));
		}
	}
}

} // namespace ferry
