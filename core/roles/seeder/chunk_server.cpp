// SPDX-License-Identifier: GPL-2.0-or-later
#include "roles/seeder/chunk_server.h"

#include <sys/uio.h>
#include <unistd.h>

#include "base/bytes.h"
#include "ferry/base/clock.h"
#include "ferry/base/log.h"

namespace ferry {

void ChunkServer::enableCompression(CompressionSpec spec)
{
	if (!compressor_)
		compressor_.emplace(spec.level);
	if (spec.adaptive && !choice_)
		choice_.emplace();
}

namespace {

constexpr double kSwitchMargin = 1.2; // compressed must promise this much more than raw
constexpr double kBrokenMargin = 1.5; // and is given up when it delivers this much less
constexpr double kUsefulRatio = 0.9;   // data that shrinks less than this is not worth it
constexpr uint32_t kTrialEvery = 4;    // ranges between trial compressions while raw
constexpr uint32_t kTrialEveryCpuBound = 32; // ... while the compressor alone is too slow to pay
constexpr uint32_t kJudgeAfterRanges = 3; // compressed ranges before their rate is trusted
constexpr int64_t kMaxWaitNs = 200'000'000;     // a wait longer than this (and 4x expected) is a pause
constexpr int64_t kMaxProbeNs = 10'000'000'000; // the first sample's limit


} // namespace

bool CompressionChoice::trialNext()
{
	if (compressing_)
		return false;
	// While the compressor alone is slower than the raw pull (by the switch margin), no ratio
	// can make compression pay: a trial then only checks now and then for a slower link or a
	// faster compressor. Each costs a chunk's compression, at a quarter of an uncapped raw
	// pull's speed: every 4 ranges, that was 6% of such a pull (docs/benchmarks.md 13.3).
	const bool cpuBound = compressor_.rate() * kSwitchMargin < raw_.rate();
	if (trials_ >= 2 && ++rangesSinceTrial_ < (cpuBound ? kTrialEveryCpuBound : kTrialEvery))
		return false;
	rangesSinceTrial_ = 0;
	return true;
}

void CompressionChoice::requestArrived(int64_t nowNs)
{
	// The previous range went raw: it was delivered by the time this request came (the
	// destination asks again when a range's worth of its window is free). A much longer wait
	// than the link needs (the destination paused its pull, or asked for its dirty set) says
	// nothing about the link; the first sample, the probe's, has nothing to compare with and
	// may take long on a slow link (1 MiB at 50 Mbit/s: 0.17 s). The first range of a
	// connection has no previous one: its own serving time is memory speed, never a sample.
	const double expectNs = raw_.rate() > 0 ? double(rawBytes_) / raw_.rate() : 0;
	const double maxWaitNs = rawRanges_ == 0 ? double(kMaxProbeNs) : std::max(double(kMaxWaitNs), 4 * expectNs);
	if (rawBytes_ > 0 && nowNs > rawStartNs_ && double(nowNs - rawStartNs_) < maxWaitNs) {
		raw_.add(double(rawBytes_), double(nowNs - rawStartNs_));
		rawRanges_++;
		if (holdOff_ > 0)
			holdOff_--;
	}
	rawBytes_ = 0;
	decide();
}

void CompressionChoice::rangeServed(bool compressed, uint64_t regionBytes, int64_t startNs, int64_t endNs)
{
	if (!compressed) {
		rawBytes_ = regionBytes; // measured when the next request arrives
		rawStartNs_ = startNs;
		return;
	}
	if (regionBytes == 0 || endNs <= startNs)
		return decide();
	// Serving time only: compressed, the pull can go no faster than this, whatever the link
	// does (and the wait before it belongs to the raw ranges still draining).
	compressed_.add(double(regionBytes), double(endNs - startNs));
	compressedRanges_++;
	// The ratio of a compressed range as one sample: guest memory mixes compressible and
	// incompressible chunks, and a few of the latter in a row must not switch off a
	// compression that pays over the range.
	if (rangeBefore_ > 0)
		ratio_ = 0.75 * ratio_ + 0.25 * rangeAfter_ / rangeBefore_;
	rangeBefore_ = rangeAfter_ = 0;
	if (holdOff_ > 0)
		holdOff_--;
	decide();
}

void CompressionChoice::chunkCompressed(size_t before, size_t after, int64_t ns)
{
	if (before == 0 || ns <= 0)
		return;
	compressor_.add(double(before), double(ns));
	if (compressing_) { // folded in per range (rangeServed)
		rangeBefore_ += double(before);
		rangeAfter_ += double(after);
		return;
	}
	ratio_ = trials_ == 0 ? double(after) / double(before) : 0.75 * ratio_ + 0.25 * double(after) / double(before);
	trials_++;
}

void CompressionChoice::decide()
{
	if (rawRanges_ < 1 || trials_ < 1)
		return; // not measured yet: raw
	const double rawRate = raw_.rate(), compressorRate = compressor_.rate();
	// What compression could deliver: no faster than the compressor, nor than the link
	// (here taken as the raw rate: the bottleneck when compression pays) over the ratio.
	const double promise = std::min(compressorRate, rawRate / std::max(ratio_, 0.01));
	if (!compressing_) {
		if (holdOff_ == 0 && ratio_ < kUsefulRatio && promise > kSwitchMargin * rawRate) {
			FERRY_LOG(Debug, "compress", "auto: on (raw {:.0f} MB/s, compressor {:.0f} MB/s, ratio {:.2f})",
				  rawRate * 1e3, compressorRate * 1e3, ratio_);
			compressing_ = true;
			compressed_ = {};
			compressedRanges_ = 0;
		}
		return;
	}
	// Compressing: the promise must hold where it is kept (the compressor may have been
	// measured alone, then share the CPU with the pull): when serving compressed ranges is
	// clearly slower than the raw pull delivered, raw again, and each broken promise waits
	// longer before the next try. "Clearly": the raw rate of the first ranges runs ahead of
	// the link (they fill emptied socket buffers and the link's queue), so a compressed pull
	// that beats the link can still look slower than it: judged by the raw rate alone, or with
	// the switch-on margin, such ranges were taken for broken promises and held compression
	// off half of a 1 Gbit/s pull of text (docs/benchmarks.md 13.3). Where compression really
	// loses (an uncapped link), it delivers a third or less of the raw rate.
	const bool broken = compressedRanges_ >= kJudgeAfterRanges && compressed_.rate() * kBrokenMargin < rawRate;
	if (ratio_ >= kUsefulRatio || broken) {
		FERRY_LOG(Debug, "compress", "auto: off after {} ranges (raw {:.0f} MB/s, compressed {:.0f} MB/s, compressor {:.0f} MB/s, ratio {:.2f})",
			  compressedRanges_, rawRate * 1e3, compressed_.rate() * 1e3, compressorRate * 1e3, ratio_);
		compressing_ = false;
		rangeBefore_ = rangeAfter_ = 0;
		if (broken) { // data that stops compressing is no broken promise: trials go on
			holdOffNext_ = std::min<uint32_t>(holdOffNext_ * 2, 1024);
			holdOff_ = holdOffNext_;
		}
	}
}

namespace {

// Compressed frames are gathered into one write per batch; a batch is flushed when its
// compressed bytes would outgrow this, so a 1024-chunk range never needs 64 MiB of buffer.
constexpr size_t kCompressBatchBytes = 1u << 20;

} // namespace

std::vector<ChunkRun> zeroChunkRuns(int fd, uint64_t size, uint32_t chunkSize, size_t maxRuns)
{
	std::vector<ChunkRun> runs;
	const uint64_t chunks = (size + chunkSize - 1) / chunkSize;
	for (uint64_t off = 0; fd >= 0 && off < size && runs.size() < maxRuns;) {
		off_t hole = ::lseek(fd, off_t(off), SEEK_HOLE);
		if (hole < 0)
			return {}; // cannot tell: every chunk is pulled
		off_t data = uint64_t(hole) >= size ? -1 : ::lseek(fd, hole, SEEK_DATA);
		if (data < 0 && uint64_t(hole) < size && errno != ENXIO)
			return {};
		const uint64_t holeEnd = data < 0 ? size : std::min<uint64_t>(uint64_t(data), size);
		// Whole chunks only; the region's last chunk may be short.
		const uint64_t first = (uint64_t(hole) + chunkSize - 1) / chunkSize;
		const uint64_t end = holeEnd == size ? chunks : holeEnd / chunkSize;
		if (uint64_t(hole) < size && first < end)
			runs.push_back({uint32_t(first), uint32_t(end - first)});
		if (data < 0)
			break;
		off = uint64_t(data);
		// Past this data extent: the next hole starts where SEEK_HOLE says.
	}
	return runs;
}

bool ChunkServer::inHole(uint64_t off, size_t len)
{
	if (regionFd_ < 0)
		return false;
	if (off < knownFrom_ || off >= dataEnd_) {
		knownFrom_ = off;
		off_t d = ::lseek(regionFd_, off_t(off), SEEK_DATA);
		if (d < 0 && errno == ENXIO) { // no data from here to the end
			dataStart_ = dataEnd_ = UINT64_MAX;
			return true;
		}
		off_t h = d < 0 ? -1 : ::lseek(regionFd_, d, SEEK_HOLE);
		if (d < 0 || h < 0) {
			regionFd_ = -1; // holes cannot be found in this file: read every chunk
			return false;
		}
		dataStart_ = uint64_t(d);
		dataEnd_ = uint64_t(h);
	}
	return off + len <= dataStart_;
}

// A run of chunks in one gathered write: per chunk a Chunk, ChunkZstd or ChunkZero frame with
// the request's id, in order. One syscall for many small frames is what makes a mostly-zero
// region (a freshly booted guest) cheap to pull.
Result<SeederStats> ChunkServer::range(Connection &conn, uint64_t reqId, uint32_t first, uint32_t count, bool compress)
{
	// Where a frame's body is: guest memory (raw chunk), the arena (compressed) or nowhere.
	struct Body {
		const uint8_t *raw = nullptr;
		size_t arenaOff = 0, len = 0;
	};
	const bool adaptive = compress && compressor_ && choice_;
	const int64_t startNs = adaptive ? monotonicNs() : 0;
	if (adaptive)
		choice_->requestArrived(startNs);
	const bool compressThis = compress && compressor_ && (!choice_ || choice_->compressNext());
	bool trial = adaptive && !compressThis && choice_->trialNext();
	ChunkCompressor *comp = compressThis || trial ? &*compressor_ : nullptr;
	const size_t bound = comp ? ChunkCompressor::bound(chunkSize_) : 0;
	if (comp && arena_.size() < kCompressBatchBytes + bound)
		arena_.resize(kCompressBatchBytes + bound);

	std::vector<ChunkFramePrefix> prefixes(count);
	std::vector<Body> bodies(count);
	std::vector<iovec> iov;
	iov.reserve(size_t(count) * 2);
	SeederStats add;
	size_t arenaUsed = 0;
	uint32_t batchStart = 0;
	auto flush = [&](uint32_t end) -> Status {
		iov.clear();
		for (uint32_t k = batchStart; k < end; k++) {
			iov.push_back({prefixes[k].bytes, sizeof prefixes[k].bytes});
			const Body &b = bodies[k];
			if (b.raw)
				iov.push_back({const_cast<uint8_t *>(b.raw), b.len});
			else if (b.len)
				iov.push_back({arena_.data() + b.arenaOff, b.len});
		}
		batchStart = end;
		arenaUsed = 0;
		return iov.empty() ? Status() : conn.sendFrames(iov);
	};
	for (uint32_t k = 0; k < count; k++) {
		uint32_t index = first + k;
		uint64_t off = uint64_t(index) * chunkSize_;
		size_t len = std::min<uint64_t>(chunkSize_, size_ - off);
		const uint8_t *p = data_ + off;
		MsgType type;
		if (zeroMarkers_ && (inHole(off, len) || isZero(p, len))) {
			type = MsgType::ChunkZero;
			add.zeroChunksServed++;
		} else {
			std::optional<size_t> z;
			if (comp) {
				if (arenaUsed + bound > arena_.size())
					FERRY_TRY(flush(k));
				// The application may be writing this chunk right now. zstd must see
				// one consistent input (its checksum covers what it read, and a match
				// finder reading changing bytes could emit a frame that decodes to
				// neither version): compress a copy. A torn copy is fine: the write
				// is in the dirty set and the chunk is fetched again.
				// The compressor's speed in CPU time: a trial is one chunk (tens of
				// microseconds), and one preemption on a busy host would make its wall
				// time say the compressor is ten times slower than it is. What the
				// compressed pull really delivers is checked in wall time (rangeServed).
				const int64_t t0 = adaptive ? threadCpuNs() : 0;
				snapshot_.assign(p, p + len);
				z = comp->compress(snapshot_, {arena_.data() + arenaUsed, bound});
				if (adaptive)
					choice_->chunkCompressed(len, z ? *z : len, threadCpuNs() - t0);
				if (trial) { // measured; this range still goes raw
					z.reset();
					trial = false;
					comp = nullptr;
				}
			}
			if (z) {
				type = MsgType::ChunkZstd;
				bodies[k] = {nullptr, arenaUsed, *z};
				arenaUsed += *z;
				add.compressedChunks++;
				add.compressedRawBytes += len;
				add.compressedWireBytes += *z;
			} else {
				type = MsgType::Chunk;
				bodies[k] = {p, 0, len};
			}
			add.chunksServed++;
			add.bytesSent += bodies[k].len;
		}
		prefixes[k] = encodeChunkFramePrefix(type, reqId, index, uint32_t(bodies[k].len));
	}
	FERRY_TRY(flush(count));
	if (adaptive) {
		uint64_t regionBytes = 0;
		for (uint32_t k = 0; k < count; k++)
			if (bodies[k].raw || bodies[k].len)
				regionBytes += std::min<uint64_t>(chunkSize_, size_ - uint64_t(first + k) * chunkSize_);
		choice_->rangeServed(compressThis, regionBytes, startNs, monotonicNs());
	}
	return add;
}

// Only the pages a destination asks for (it holds the rest of the chunk already): contiguous
// pages go out as one piece of the frame.
Result<SeederStats> ChunkServer::pages(Connection &conn, uint64_t reqId, uint32_t index, uint64_t mask)
{
	const uint8_t *chunk = data_ + uint64_t(index) * chunkSize_;
	auto prefix = encodePagesPrefix(GetPagesMsg{index, mask});
	std::vector<iovec> parts{{prefix.data(), prefix.size()}};
	uint64_t bytes = 0;
	for (unsigned p = 0; p < 64;) {
		if (!(mask >> p & 1)) {
			p++;
			continue;
		}
		unsigned q = p;
		while (q < 64 && (mask >> q & 1))
			q++;
		parts.push_back({const_cast<uint8_t *>(chunk + size_t(p) * kWirePageSize), size_t(q - p) * kWirePageSize});
		bytes += uint64_t(q - p) * kWirePageSize;
		p = q;
	}
	FERRY_TRY(conn.sendParts(MsgType::Pages, reqId, parts));
	SeederStats sent;
	sent.pagesServed = bytes / kWirePageSize;
	sent.bytesSent = bytes;
	return sent;
}

} // namespace ferry
