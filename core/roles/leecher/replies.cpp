// SPDX-License-Identifier: GPL-2.0-or-later
#include "roles/leecher/replies.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <vector>

namespace ferry {

void narrowToPages(ChunkRequest &req, const LocalRegion &region)
{
	if (!req.pageMask)
		return;
	auto pages = pagesInMask(region.geometry(), req.index, req.pageMask);
	uint32_t all = uint32_t((region.length(req.index) + kWirePageSize - 1) / kWirePageSize);
	if (!pages.ok() || *pages >= all)
		req.pageMask = 0;
}

void emptyDestination(const LocalRegion &region)
{
	if (region.fd >= 0 &&
	    ::fallocate(region.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, off_t(region.size)) == 0)
		return;
	// Touching an absent page through the mapping would allocate it: clear only what is there.
	const size_t pages = (region.size + kWirePageSize - 1) / kWirePageSize;
	std::vector<unsigned char> resident(pages);
	const bool known = ::mincore(region.base, region.size, resident.data()) == 0;
	for (size_t p = 0; p < pages; p++)
		if (!known || (resident[p] & 1))
			std::memset(region.base + p * kWirePageSize, 0,
				    std::min<uint64_t>(kWirePageSize, region.size - p * kWirePageSize));
}

Status sendChunkRequest(Connection &conn, uint64_t id, const ChunkRequest &req, bool compressible)
{
	if (req.count > 1 || (compressible && !req.pageMask))
		return conn.send(MsgType::GetRange, id, encode(GetRangeMsg{req.index, req.count}));
	if (req.pageMask)
		return conn.send(MsgType::GetPages, id, encode(GetPagesMsg{req.index, req.pageMask}));
	return conn.send(MsgType::GetChunk, id, encode(GetChunkMsg{req.index}));
}

Status ChunkReplyReader::accept(Connection &conn, const FrameHeader &h, bool zstd)
{
	switch (h.type) {
	case MsgType::Chunk:
	case MsgType::ChunkZero:
	case MsgType::Pages:
		return {};
	case MsgType::ChunkZstd:
		if (!zstd)
			return Error(EPROTO, "ChunkZstd on a connection that did not negotiate compression");
		return {};
	case MsgType::Error: {
		FERRY_ASSIGN(std::vector<uint8_t> p, conn.recvPayload(h));
		return Error(EPROTO, peerError(p).message());
	}
	default:
		return Error::format(EPROTO, "unexpected {} on a data connection", msgTypeName(h.type));
	}
}

// The application cannot see the bytes while they are written: before the switch-over it is
// not running; after it, the pages of a chunk that is not Local are not mapped in its address
// space (the minor-fault guard) until the fault service installs them.
Result<LandedChunk> ChunkReplyReader::read(Connection &conn, const FrameHeader &h, const ChunkRequest &asked,
					   uint32_t expectIndex, uint8_t *stage)
{
	const ChunkGeometry geo = region_.geometry();
	LandedChunk landed;
	if (h.type == MsgType::Pages) {
		uint8_t prefix[kPagesPrefixSize];
		FERRY_TRY(conn.recvExact(prefix, sizeof prefix));
		FERRY_ASSIGN(GetPagesMsg m, decodePagesPrefix(h, prefix, geo));
		if (m.chunkIndex != asked.index || m.pageMask != asked.pageMask)
			return Error::format(EPROTO, "request {} asked chunk {} pages {:#x}, reply carries chunk {} pages {:#x}",
					     h.requestId, asked.index, asked.pageMask, m.chunkIndex, m.pageMask);
		landed.index = m.chunkIndex;
		landed.whole = false;
		uint8_t *chunk = region_.chunk(m.chunkIndex);
		for (unsigned p = 0; p < 64;) { // runs of pages, each read in one piece
			if (!(m.pageMask >> p & 1)) {
				p++;
				continue;
			}
			unsigned q = p;
			while (q < 64 && (m.pageMask >> q & 1))
				q++;
			FERRY_TRY_CTX(conn.recvExact(chunk + size_t(p) * kWirePageSize, size_t(q - p) * kWirePageSize),
				      "chunk {} pages", m.chunkIndex);
			p = q;
		}
		return landed;
	}
	uint8_t prefix[kChunkPrefixSize];
	FERRY_TRY(conn.recvExact(prefix, sizeof prefix));
	FERRY_ASSIGN(landed.index, decodeWholeChunkPrefix(h, prefix, geo));
	if (landed.index != expectIndex || asked.pageMask != 0)
		return Error::format(EPROTO, "request {} expects chunk {}, reply carries whole chunk {}", h.requestId,
				     expectIndex, landed.index);
	const uint32_t index = landed.index;
	const size_t len = region_.length(index);
	const bool toStage = stage && h.type != MsgType::ChunkZero;
	const bool toFile = !toStage && !fileRefused_ && h.type != MsgType::ChunkZero && region_.landsThroughFile(index);
	if (toFile)
		landing_.resize(region_.chunkSize);
	uint8_t *dst = toStage ? stage : toFile ? landing_.data() : region_.chunk(index);
	landed.staged = toStage;
	if (h.type == MsgType::ChunkZero) {
		if (!region_.absent[index])
			std::memset(dst, 0, len); // over bytes stored earlier (emptyDestination: none else)
		return landed;
	}
	if (!toStage)
		region_.absent[index] = 0; // from the first byte written, not the last
	if (h.type == MsgType::Chunk) {
		FERRY_TRY_CTX(conn.recvExact(dst, len), "chunk {}", index);
	} else {
		zbuf_.resize(h.payloadLen - kChunkPrefixSize);
		FERRY_TRY_CTX(conn.recvExact(zbuf_.data(), zbuf_.size()), "chunk {}", index);
		FERRY_TRY_CTX(decompressor_.decompress(zbuf_, {dst, len}), "chunk {}", index);
		landed.decompressedBytes = len;
	}
	if (toFile)
		FERRY_TRY(landThroughFile(index, len));
	return landed;
}

// pwrite() into a shared memory file fills a page the file lacks without clearing it first
// (the write covers it), and without the page fault per page that a store through the mapping
// takes: on this kind of machine, a fresh page's fault and clear cost about as much as the
// network copy of its bytes (docs/benchmarks.md 13.3).
Status ChunkReplyReader::landThroughFile(uint32_t index, size_t len)
{
	const uint8_t *p = landing_.data();
	off_t off = off_t(region_.offset(index));
	while (len > 0) {
		ssize_t n = ::pwrite(region_.fd, p, len, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EINVAL || errno == EOPNOTSUPP)) {
			// A file without a write path (hugetlbfs): what is left goes through the
			// mapping, and so does every later chunk of this reader.
			fileRefused_ = true;
			std::memcpy(region_.base + off, p, len);
			return {};
		}
		if (n <= 0)
			return Error::fromErrno(fmt::format("chunk {}: write into the destination's memory file", index),
						n < 0 ? errno : EIO);
		p += n;
		off += n;
		len -= size_t(n);
	}
	return {};
}

} // namespace ferry
