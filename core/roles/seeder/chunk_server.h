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

// The runs of whole chunks that lie in holes of `fd` (SEEK_DATA/SEEK_HOLE), at most maxRuns
// (the rest is pulled and sent as ChunkZero as usual). Empty when fd < 0 or the file system
// cannot say.
std::vector<ChunkRun> zeroChunkRuns(int fd, uint64_t size, uint32_t chunkSize, size_t maxRuns);

// "auto" compression of one connection: compress only while that moves the region faster,
// i.e. while the link, not the CPU, is the bottleneck, and only data that compresses. It
// measures three things: the connection's delivery rate in raw mode (a raw range's region
// bytes over the wall time from its request to the next request: with a window-limited pull
// the next request comes when the destination has room again, so that wait is the link's),
// the compressor's speed (input bytes per second of compressing), and the ratio it achieves
// (a trial chunk now and then while raw). Compressed, the pull can go no faster than the
// compressor, nor than the link divided by the ratio; it switches to compression when that
// beats the raw rate by a margin, and back when the data stops compressing or serving
// compressed ranges is clearly slower than the raw pull delivered (each such broken promise
// waits twice as long before compression is tried again).
//
// One raw range and one trial decide. A leecher that is told so (HelloReplyMsg::
// kFlagAdaptiveZstd) asks for a single range first and the rest of its window when that range
// has arrived: the first request after it then measures the link, and everything from the
// second range on can go compressed. Without that probe the whole first window goes out
// before any request can say how fast the link is (its bytes fill socket buffers and the
// link's queue at memory speed), and on a 1 Gbit/s link those raw bytes cost a tenth of a
// pull of text (docs/benchmarks.md 21).
class CompressionChoice {
public:
	// The next range's request arrived (before compressNext and trialNext are asked).
	void requestArrived(int64_t nowNs);
	// Whether the next range is compressed, and whether its first data chunk should be
	// compressed on trial (to measure; the range goes raw).
	bool compressNext() const { return compressing_; }
	bool trialNext();
	// A range was served (region bytes in data chunks, when its request arrived and when it
	// was sent).
	void rangeServed(bool compressed, uint64_t regionBytes, int64_t startNs, int64_t endNs);
	// A chunk was compressed: its size before and after (after = before when it did not
	// shrink enough to be sent compressed), and how long that took.
	void chunkCompressed(size_t before, size_t after, int64_t ns);

private:
	void decide();

	// A rate over recent samples, weighted by their time (a burst into an empty socket
	// buffer weighs as little as it lasted).
	struct Rate {
		double bytes = 0, ns = 0;
		void add(double b, double t) { bytes = 0.75 * bytes + b, ns = 0.75 * ns + t; }
		double rate() const { return ns > 0 ? bytes / ns : 0; }
	};
	bool compressing_ = false;
	Rate raw_;        // region bytes per ns, raw, request to next request
	Rate compressor_; // input bytes per ns of compressing
	Rate compressed_; // region bytes per ns of serving compressed ranges (since the switch)
	uint32_t compressedRanges_ = 0;
	// Ranges before compression may be tried again after a broken promise: 8 the first time
	// (doubling after each), enough raw ranges to measure the raw rate again in steady state;
	// the first raw ranges of a pull run ahead of the link, and a promise judged against them
	// may have been kept after all.
	uint32_t holdOff_ = 0, holdOffNext_ = 4;
	double ratio_ = 1;          // bytes after / before (EWMA of trial chunks and compressed ranges)
	double rangeBefore_ = 0, rangeAfter_ = 0; // the compressed range being served
	uint32_t rawRanges_ = 0, trials_ = 0, rangesSinceTrial_ = 0;
	// The last raw range with data, waiting for the next request to measure its delivery.
	uint64_t rawBytes_ = 0;
	int64_t rawStartNs_ = 0;
};

class ChunkServer {
public:
	// regionFd: see SeederOptions::regionFd (-1: none).
	ChunkServer(const uint8_t *data, uint64_t size, uint32_t chunkSize, bool zeroMarkers, int regionFd = -1)
		: data_(data), size_(size), chunkSize_(chunkSize), zeroMarkers_(zeroMarkers), regionFd_(regionFd) {}

	// The connection negotiated compression of its pulls (idempotent).
	void enableCompression(CompressionSpec spec);
	// compress: the pull (GetRange); false for a fault's chunk, which must not wait for zstd.
	Result<SeederStats> range(Connection &conn, uint64_t reqId, uint32_t first, uint32_t count, bool compress);
	Result<SeederStats> pages(Connection &conn, uint64_t reqId, uint32_t index, uint64_t mask);

private:
	const uint8_t *data_;
	uint64_t size_;
	uint32_t chunkSize_;
	bool zeroMarkers_;
	// Whether [off, off + len) lies in a hole of regionFd_ (then it is zero, unread). What the
	// last lookup found saves one per chunk: a hole [knownFrom_, dataStart_), then data up to
	// dataEnd_.
	bool inHole(uint64_t off, size_t len);
	int regionFd_;
	uint64_t knownFrom_ = 0, dataStart_ = 0, dataEnd_ = 0;
	std::optional<ChunkCompressor> compressor_;
	std::optional<CompressionChoice> choice_; // "auto": whether a range is compressed
	std::vector<uint8_t> arena_;    // compressed frames of the batch being built
	std::vector<uint8_t> snapshot_; // the chunk being compressed, copied out first
};

} // namespace ferry
