// SPDX-License-Identifier: GPL-2.0-or-later
// Raw bytes on a socket, for tests that play a peer by hand (a relay, a half-sent frame).
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <vector>

#include "ferry/wire/protocol.h"

namespace ferry::test {

// Blocking send of all n bytes; false on error or a closed peer.
inline bool sendAll(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
		if (w <= 0)
			return false;
		p += w;
		n -= size_t(w);
	}
	return true;
}

// An encoded frame header, with any version (for version-mismatch tests).
inline std::vector<uint8_t> headerBytes(MsgType type, uint32_t payloadLen, uint64_t requestId = 7,
					uint16_t version = kProtocolVersion)
{
	FrameHeader h;
	h.type = type;
	h.payloadLen = payloadLen;
	h.requestId = requestId;
	h.version = version;
	std::vector<uint8_t> out(kHeaderSize);
	encodeHeader(h, out.data());
	return out;
}

} // namespace ferry::test
