// SPDX-License-Identifier: GPL-2.0-or-later
// One progress line on stderr at most every 500 ms (and on every state change), for the
// leecher-side commands (leech, receive).
#pragma once

#include <cstdio>

#include <fmt/format.h>

#include "ferry/roles/leecher.h"

namespace ferry {

class ProgressPrinter {
public:
	ProgressPrinter() = default;
	void operator()(const LeecherProgress &p) const
	{
		int64_t nowMs = int64_t(p.elapsedSec * 1000);
		if (nowMs - lastMs_ < 500 && p.state == last_)
			return;
		lastMs_ = nowMs;
		last_ = p.state;
		double pct = p.chunksTotal ? 100.0 * double(p.chunksLocal) / double(p.chunksTotal) : 0;
		fmt::print(stderr,
			   "ferry: {:>6.1f}s {:<10} {:5.1f}% local  stale {:>6}  missing {:>6}  {:>8.1f} MiB in  "
			   "pull {:>7.1f} MB/s  dirty {:>6.1f} MB/s  faults {:>5}  {}\n",
			   p.elapsedSec, leecherStateName(p.state), pct, p.chunksStale, p.chunksMissing,
			   double(p.bytesTransferred) / (1 << 20), p.pullBytesPerSec / 1e6,
			   p.dirtyBytesPerSec / 1e6, p.faults, p.policyStatus);
	}

private:
	mutable int64_t lastMs_ = -1000;
	mutable LeecherState last_ = LeecherState::Connecting;
};

} // namespace ferry
