// SPDX-License-Identifier: GPL-2.0-or-later
// Chunk replies, read straight into the leecher's region (internal): the one reader of Chunk,
// ChunkZero, ChunkZstd and Pages frames, shared by the puller's data connections and the
// fault service's own channel. Each reply is checked against the request it answers.
//
// Threads: one reader per connection (it owns a decompressor and its buffer).
#pragma once
#ifndef FERRY_CORE_INTERNAL
#error "an internal header of ferry-core: include the public ones (ferry/...) instead"
#endif

#include <cstdint>
#include <vector>

#include "ferry/base/result.h"
#include "ferry/roles/chunk_map.h"
#include "ferry/wire/compress.h"
#include "ferry/wire/connection.h"
#include "roles/leecher/local_region.h"

namespace ferry {

// Empties the destination before the first chunk lands: whatever its file held (a QEMU that
// wrote its RAM at start-up) is replaced by the source's bytes anyway, and once it is gone a
// chunk marked absent has no page in the file: it reads zero, and its pages can be filled
// fresh (pwrite, UFFDIO_COPY). Holes punched in the file, or, where the file cannot punch,
// the pages that are there cleared.
void emptyDestination(const LocalRegion &region);

// Asks for only the written pages when some (not all) pages of a locally whole chunk are
// stale and the chunk can be addressed by pages; otherwise for the whole chunk (mask 0).
void narrowToPages(ChunkRequest &req, const LocalRegion &region);
// Sends `req` as request `id`: GetRange for a run (or when the reply may come compressed),
// GetPages for some pages, GetChunk otherwise (always raw: the fault path).
Status sendChunkRequest(Connection &conn, uint64_t id, const ChunkRequest &req, bool compressible);

// What one reply put in place.
struct LandedChunk {
	uint32_t index = 0;
	bool whole = true;              // the entire chunk was written (not only some pages)
	bool staged = false;            // its bytes are in the caller's staging buffer, not the region
	uint64_t decompressedBytes = 0; // > 0: it came as ChunkZstd
};

class ChunkReplyReader {
public:
	explicit ChunkReplyReader(LocalRegion &region) : region_(region) {}

	// Whether `h` may be a chunk reply at all on this connection (zstd: it negotiated
	// compression). A seeder's Error frame is read and returned as EPROTO with its message: a
	// seeder refusing a request is not a network hiccup.
	Status accept(Connection &conn, const FrameHeader &h, bool zstd);
	// Reads the reply's body into the region: `asked` is the request it answers and
	// `expectIndex` the chunk a whole-chunk reply must carry (a range is answered in order).
	// With `stage` (chunkSize bytes), a whole chunk's bytes go there instead and the region is
	// left as it was (LandedChunk::staged): the caller places them.
	Result<LandedChunk> read(Connection &conn, const FrameHeader &h, const ChunkRequest &asked, uint32_t expectIndex,
				 uint8_t *stage = nullptr);

private:
	// Writes a chunk's bytes, read into landing_, into the region's file.
	Status landThroughFile(uint32_t index, size_t len);

	LocalRegion &region_;
	ChunkDecompressor decompressor_;
	std::vector<uint8_t> zbuf_;    // one compressed frame
	std::vector<uint8_t> landing_; // one chunk on its way into the region's file
	bool fileRefused_ = false;     // the file takes no write() (hugetlbfs): the mapping only
};

} // namespace ferry
