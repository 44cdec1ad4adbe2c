// SPDX-License-Identifier: GPL-2.0-or-later
#include "roles/leecher/verifier.h"

#include <cstring>
#include <vector>

#include "base/bytes.h"
#include "ferry/base/log.h"

namespace ferry {

namespace {

constexpr uint32_t kWindow = 32;          // requests in flight
constexpr int kReplyTimeoutMs = 30000;
constexpr uint64_t kMismatchesLogged = 10;

} // namespace

Result<uint64_t> verifyAgainstSource(Connection &conn, const LocalRegion &region, const std::string &name)
{
	const ChunkGeometry geo = region.geometry();
	std::vector<uint8_t> buf(region.chunkSize);
	uint64_t mismatched = 0;
	uint32_t sent = 0, received = 0;
	while (received < region.chunkCount) {
		while (sent < region.chunkCount && sent - received < kWindow) {
			FERRY_TRY(conn.send(MsgType::GetChunk, uint64_t(sent) + 1, encode(GetChunkMsg{sent})));
			sent++;
		}
		FERRY_ASSIGN(FrameHeader h, conn.recvHeader(region.chunkSize + 64, kReplyTimeoutMs));
		if (h.type == MsgType::Error) {
			FERRY_ASSIGN(std::vector<uint8_t> p, conn.recvPayload(h));
			return peerError(p);
		}
		if (h.requestId != uint64_t(received) + 1 || (h.type != MsgType::Chunk && h.type != MsgType::ChunkZero))
			return Error::format(EPROTO, "unexpected reply {} (request {})", msgTypeName(h.type), h.requestId);
		uint8_t prefix[kChunkPrefixSize];
		FERRY_TRY(conn.recvExact(prefix, sizeof prefix));
		FERRY_ASSIGN(uint32_t index, decodeChunkPrefix(h, prefix, geo));
		if (index != received)
			return Error::format(EPROTO, "chunk {} instead of {}", index, received);
		const uint8_t *local = region.chunk(index);
		const size_t len = region.length(index);
		bool same;
		if (h.type == MsgType::ChunkZero) {
			same = isZero(local, len);
		} else {
			FERRY_TRY(conn.recvExact(buf.data(), len));
			same = std::memcmp(buf.data(), local, len) == 0;
		}
		if (!same && mismatched++ < kMismatchesLogged)
			FERRY_LOG(Error, name, "[chunk {}] verify: differs from the source", index);
		received++;
	}
	return mismatched;
}

} // namespace ferry
