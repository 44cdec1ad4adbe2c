// SPDX-License-Identifier: GPL-2.0-or-later
// The seeder's chunk server (internal): the replies of one connection, straight from the
// source region. A range goes out as one gathered write of Chunk, ChunkZstd or ChunkZero
// frames (compressed only when the connection negotiated zstd and asked by GetRange); a
// fault's chunk (GetChunk) always raw; page runs (GetPages) as one Pages frame. Each call
// returns what it sent, for the seeder's statistics.
//
// Threads: one per connection (its own buffers); the region is read concurrently with the
// application's writes, which the dirty tracker reports.
#pragma once
#ifndef FERRY_CORE_INTERNAL
#error "an internal header of ferry-core: include the public ones (ferry/...) instead"
#endif

#include <optional>
#include <vector>

#include "ferry/roles/seeder.h"
#include "ferry/wire/compress.h"
#include "ferry/wire/connection.h"

namespace ferry {

class ChunkServer {
public:
	ChunkServer(const uint8_t *data, uint64_t size, uint32_t chunkSize, bool zeroMarkers)
		: data_(data), size_(size), chunkSize_(chunkSize), zeroMarkers_(zeroMarkers) {}

	// The connection negotiated compression of its pulls (idempotent).
	void enableCompression(int level);
	// compress: the pull (GetRange); false for a fault's chunk, which must not wait for zstd.
	Result<SeederStats> range(Connection &conn, uint64_t reqId, uint32_t first, uint32_t count, bool compress);
	Result<SeederStats> pages(Connection &conn, uint64_t reqId, uint32_t index, uint64_t mask);

private:
	const uint8_t *data_;
	uint64_t size_;
	uint32_t chunkSize_;
	bool zeroMarkers_;
	std::optional<ChunkCompressor> compressor_;
	std::vector<uint8_t> arena_;    // compressed frames of the batch being built
	std::vector<uint8_t> snapshot_; // the chunk being compressed, copied out first
};

} // namespace ferry
