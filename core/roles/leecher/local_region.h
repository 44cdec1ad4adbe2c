// SPDX-License-Identifier: GPL-2.0-or-later
// What the leecher's owners share (internal): the destination region and the first failure
// of any of its threads.
#pragma once
#ifndef FERRY_CORE_INTERNAL
#error "an internal header of ferry-core: include the public ones (ferry/...) instead"
#endif

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <optional>
#include <vector>

#include "ferry/base/result.h"
#include "ferry/wire/protocol.h"

namespace ferry {

// The leecher's writable mapping of the destination memory, laid out in chunks. Set up once
// (after the Hello) and read by every thread after that; `absent` is written by a chunk's
// receiver only while no other thread may look at that chunk.
struct LocalRegion {
	uint8_t *base = nullptr;
	int fd = -1; // the file behind `base`, if any (DestinationRegion)
	uint64_t size = 0;
	uint32_t chunkSize = 0;
	uint32_t chunkCount = 0;
	std::vector<uint8_t> absent; // 1: chunk never written locally (a zero chunk never stored)

	ChunkGeometry geometry() const { return {size, chunkSize}; }
	uint64_t offset(uint32_t index) const { return uint64_t(index) * chunkSize; }
	size_t length(uint32_t index) const { return size_t(std::min<uint64_t>(chunkSize, size - offset(index))); }
	uint8_t *chunk(uint32_t index) const { return base + offset(index); }
	// Whether a chunk's bytes should go in through the file (it was never stored: fresh pages).
	bool landsThroughFile(uint32_t index) const { return fd >= 0 && absent[index]; }
};

// The first error of any of the leecher's threads (a data connection that gave up, a fault
// service that broke). The thread that hit it records it here and stops; run() reports it.
class FailureLatch {
public:
	// Keeps the first error; returns whether this one was the first.
	bool fail(Error e)
	{
		std::lock_guard g(lock_);
		if (error_)
			return false;
		error_ = std::move(e);
		return true;
	}
	std::optional<Error> get() const
	{
		std::lock_guard g(lock_);
		return error_;
	}

private:
	mutable std::mutex lock_;
	std::optional<Error> error_;
};

} // namespace ferry
