// SPDX-License-Identifier: GPL-2.0-or-later
// One framed protocol connection over a stream socket (TCP or UNIX), plaintext or TLS.
#pragma once

#include <sys/uio.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "ferry/base/result.h"
#include "ferry/sys/fd.h"
#include "ferry/wire/protocol.h"

namespace ferry {

class TlsCredentials;

// Move-only; owns the socket.
//
// Thread-safety: any number of threads may send at once (sends are serialized by an internal
// mutex and each frame is written whole, so frames never interleave); one thread at a time may
// receive. Sending and receiving run concurrently (full duplex). shutdown(), fd() and the
// byte counters may be called from any thread. Moving or destroying the connection must not
// race with any other call.
//
// Errors: a peer that closed cleanly between frames gives ECONNRESET "peer closed the
// connection"; one that closed inside a frame gives ECONNRESET "peer closed mid-frame";
// sends to a dead peer give EPIPE or ECONNRESET (MSG_NOSIGNAL: never SIGPIPE); timeouts give
// ETIMEDOUT. After recvHeader() rejects a malformed header it has sent the peer an Error frame
// (requestId 0, best effort) and shut the socket down: the connection is unusable.
//
// After startTls() every byte goes through the TLS session with the same contract: full
// duplex, shutdown() wakes both sides, timeouts as above, and a peer that closes between
// frames reads as "peer closed the connection" whether or not it sent close_notify (the
// protocol's own Done/DoneAck marks a complete migration; a truncated frame is still an
// error). A failed send or a failed TLS record leaves the connection unusable.
class Connection {
public:
	Connection();
	// Takes a connected stream socket. It must be in blocking mode.
	explicit Connection(UniqueFd fd);
	Connection(Connection &&) noexcept;
	Connection &operator=(Connection &&) noexcept;
	Connection(const Connection &) = delete;
	Connection &operator=(const Connection &) = delete;
	~Connection();

	bool valid() const;

	// Runs the TLS handshake as creds.role() on the connected socket, within timeoutMs (< 0:
	// no limit; ETIMEDOUT), then routes every send and receive through the session. Call it
	// right after connecting or accepting, before anything is sent or received and while no
	// other thread uses the connection. Insecure credentials leave the connection plaintext
	// and return success. Errors: EACCES when a side refused the other's certificate or key
	// (the message says which and why), EPROTO when the peer does not speak TLS (e.g. a
	// plaintext ferry), ETIMEDOUT, ECONNRESET; the socket is then shut down.
	//
	// In TLS 1.3 the client finishes its handshake before the server has checked the client's
	// certificate: a client the server refuses learns it from its first receive (EACCES,
	// "the peer refused ...").
	Status startTls(const TlsCredentials &creds, int timeoutMs);
	bool encrypted() const;
	// Who the peer proved to be, for log lines: "x509 CN=...,O=..." (its certificate's DN) or
	// "psk IDENTITY"; "" on a plaintext connection. Fixed once startTls() returned.
	std::string peerIdentity() const;

	Status send(MsgType type, uint64_t requestId, std::span<const uint8_t> payload);
	// Header plus several payload parts in one frame (sendmsg with an iovec list): chunk bytes
	// go from the caller's memory to the socket without an intermediate copy.
	Status sendParts(MsgType type, uint64_t requestId, std::span<const iovec> parts);
	// Chunk frame: the 4-byte index prefix, then `data` straight from the caller's memory.
	Status sendChunk(uint64_t requestId, uint32_t chunkIndex, std::span<const uint8_t> data);
	// Several frames the caller encoded (headers included) in one gathered write: many
	// small replies cost one syscall. The iovecs may be modified.
	Status sendFrames(std::span<iovec> frames);
	// Error frame carrying e.code() and e.message() (truncated to kMaxErrorMessageLen).
	Status sendError(uint64_t requestId, const ferry::Error &e);

	// Reads and validates one header (decodeHeader with maxPayload). timeoutMs < 0 waits
	// forever; otherwise the whole header must arrive within it (ETIMEDOUT).
	Result<FrameHeader> recvHeader(uint32_t maxPayload, int timeoutMs = -1);
	// Reads exactly len payload bytes into dst. Blocks (see setIoTimeout).
	Status recvExact(void *dst, size_t len);
	Result<std::vector<uint8_t>> recvPayload(const FrameHeader &h);
	// For a Chunk frame: reads and checks the index prefix (decodeChunkPrefix); the caller then
	// reads g.chunkLength(index) bytes with recvExact() into the chunk's final place.
	Result<uint32_t> recvChunkPrefix(const FrameHeader &h, const ChunkGeometry &g);
	// Reads and drops len bytes (e.g. a payload the caller does not want).
	Status discard(size_t len);

	// Applies a timeout to every blocking send and recvExact (SO_SNDTIMEO/SO_RCVTIMEO);
	// expiry is ETIMEDOUT. 0 disables. Lets a caller notice a peer that vanished without FIN.
	Status setIoTimeout(int timeoutMs);

	// Busy-polling: every receive that would block first spins (non-blocking readiness checks,
	// yielding the CPU to any runnable thread between them) for up to `window`, then blocks as
	// usual. On a machine where waking a blocked thread costs tens of microseconds this takes
	// the wake-up out of a request/reply round trip; it costs a CPU while it spins, so turn it
	// on only where a reply or request is due soon (0, the default, turns it off).
	void setBusyPoll(std::chrono::microseconds window);
	// Whether a receive would find data without blocking: read-ahead, a decrypted TLS record,
	// or bytes (or EOF) on the socket.
	Result<bool> readable();

	// shutdown(SHUT_RDWR): wakes a receiver (and a blocked sender) in another thread; both
	// then fail. The fd stays open until destruction, so this never races with their syscalls.
	void shutdown();
	int fd() const;
	// Gives up ownership of the socket (e.g. to relay it or hand it to another process).
	// Bytes already read ahead are lost, so only call this before receiving anything. A TLS
	// session cannot leave with the socket: after startTls() this returns an invalid fd.
	UniqueFd releaseFd();

	// Include headers; updated atomically as bytes move. Over TLS these count the framed
	// (plaintext) bytes, so both ends agree; the handshake and record overhead are not counted.
	uint64_t bytesSent() const;
	uint64_t bytesReceived() const;

private:
	struct State;
	std::unique_ptr<State> s_;
};

// A whole frame in memory, for the common small messages.
struct Frame {
	FrameHeader header;
	std::vector<uint8_t> payload;
};

// recvHeader + recvPayload.
Result<Frame> recvFrame(Connection &c, uint32_t maxPayload, int timeoutMs = -1);

} // namespace ferry
