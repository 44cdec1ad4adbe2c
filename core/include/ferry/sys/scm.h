// SPDX-License-Identifier: GPL-2.0-or-later
// Passing file descriptors (SCM_RIGHTS) plus a small payload over a connected AF_UNIX socket.
// One sendFds() is one message: on a SOCK_STREAM socket the payload may be split or merged
// with neighbours only if the reader asks for less than was sent, so both sides must agree
// on the payload size (or use SOCK_SEQPACKET). The fds travel with the first byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "ferry/base/result.h"
#include "ferry/sys/fd.h"

namespace ferry {

// Sends `fds` (at most 253, the kernel's SCM_MAX_FD) with `payload` (at least one byte is
// sent even if empty: Linux drops ancillary data on zero-length stream messages).
Status sendFds(int sock, std::span<const int> fds, std::span<const uint8_t> payload);

// Receives one message: the fds (each one owned, O_CLOEXEC) and up to maxPayload bytes into
// *payload (may be null). More than maxFds fds, or a truncated payload, is an error (the
// excess fds are closed), as is an orderly shutdown by the peer (ECONNRESET).
Result<std::vector<UniqueFd>> recvFds(int sock, std::vector<uint8_t> *payload, size_t maxFds = 8,
				      size_t maxPayload = 4096);

} // namespace ferry
