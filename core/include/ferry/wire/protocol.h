// SPDX-License-Identifier: GPL-2.0-or-later
// ferry's wire protocol, version 1: frame header, message types and the typed payloads.
// docs/protocol.md is the normative description; this header is its C++ face.
//
// Everything here is pure (no I/O, no state) and therefore safe to call from any thread.
// Every decoder treats its input as hostile: lengths, counts and indices are checked against
// the bytes actually present and the limits below, and any violation is an Error (EPROTO,
// EMSGSIZE or EPROTONOSUPPORT) naming the problem. Nothing here asserts on peer input.
#pragma once

#include <cstddef>
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/base/result.h"

namespace ferry {

// "FRRY" when the four bytes are read in wire order ('F','R','R','Y').
inline constexpr uint32_t kFrameMagic = 0x59525246;
// The version this build speaks, and the oldest one it still accepts.
inline constexpr uint16_t kProtocolVersion = 1;
inline constexpr uint16_t kMinProtocolVersion = 1;
inline constexpr size_t kHeaderSize = 24;

// Limits. kMaxListPayload bounds DirtyList/Finalized (16M chunk indices); Hello's client name
// and Error's message have their own small bounds so a request never needs a big buffer.
inline constexpr size_t kMaxClientNameLen = 256;
inline constexpr size_t kMaxErrorMessageLen = 65535;
inline constexpr uint32_t kMaxListPayload = 64u << 20;
inline constexpr uint32_t kChunkFrameSlack = 64;
// Largest chunk a HelloReply may announce; keeps one Chunk frame under 4 GiB with room to spare.
inline constexpr uint32_t kMaxChunkSize = 1u << 30;

// The payload limit a receiver passes to decodeHeader(): max(chunkSize + 64, 64 MiB).
// chunkSize 0 (not known yet, i.e. before HelloReply) gives 64 MiB.
uint32_t maxPayloadFor(uint32_t chunkSize, uint32_t listLimit = kMaxListPayload);

enum class MsgType : uint16_t {
	Hello = 1,        // L->S
	HelloReply = 2,   // S->L
	TrackStart = 3,   // L->S, empty
	TrackStarted = 4, // S->L, empty
	GetChunk = 5,     // L->S
	Chunk = 6,        // S->L
	GetDirty = 7,     // L->S, empty
	DirtyList = 8,    // S->L
	Finalize = 9,     // L->S, empty
	Finalized = 10,   // S->L
	Done = 11,        // L->S, empty
	DoneAck = 12,     // S->L, empty
	Error = 13,       // either way; the sender closes afterwards
	Ping = 14,        // either way
	Pong = 15,        // echo of Ping
	// Added for the roles (same version 1; see docs/protocol.md):
	ChunkZero = 16,     // S->L, reply to GetChunk: { u32 chunkIndex }, the chunk is all zeros
	SwitchOver = 17,    // L->S, empty: the destination runs now; the source must never resume
	SwitchOverAck = 18, // S->L, empty
	GetPages = 19,      // L->S: { u32 chunkIndex, u64 pageMask } some pages of a chunk it holds
	Pages = 20,         // S->L: { u32 chunkIndex, u64 pageMask, the pages set in the mask, in order }
	GetRange = 21,      // L->S: { u32 firstChunk, u32 count }: one Chunk/ChunkZero reply per chunk, in order
	ChunkZstd = 22,     // S->L, may replace Chunk in a GetRange reply when negotiated: { u32 chunkIndex, zstd frame }

	// ferryd <-> ferryd (the daemons' peer link, docs/protocol.md "Daemon link"); the
	// connecting daemon is C, the accepting one A. Payloads: ferry/wire/daemon_protocol.h.
	PeerHello = 32,      // C->A: who is calling, which versions it speaks
	PeerHelloReply = 33, // A->C: the accepting daemon's name and the chosen version
	RelayOpen = 34,      // C->A: carry a migration stream to the named domain's socket on A
	RelayReady = 35,     // A->C, empty: connected; RelayData may flow both ways
	RelayData = 36,      // either way: the next bytes of the stream (1..kMaxRelayData)
	RelayEnd = 37,       // either way, empty: the sender's direction of the stream ended
	FerryOffer = 38,     // C->A: an incoming migration of this domain waits here, prepared for ferry
	FerryAccept = 39,    // A->C: the domain runs here; its RAM is served on this port
	FerryDecline = 40,   // C->A: an incoming migration of this prepared domain waits here, but
			     // not in ferry mode: open its gate, the stream passes as in stream
			     // mode; A answers RelayReady (the gate is open) or Error
};

// "GetChunk", ...; "unknown" for values outside the enum.
const char *msgTypeName(MsgType type);
bool isKnownMsgType(uint16_t type);

struct FrameHeader {
	uint32_t magic = kFrameMagic;
	uint16_t version = kProtocolVersion;
	MsgType type = MsgType::Ping;
	uint64_t requestId = 0;
	uint32_t payloadLen = 0;
	uint32_t reserved = 0;
};

void encodeHeader(const FrameHeader &h, uint8_t out[kHeaderSize]);

// Validates, in this order: size of `in` (>= kHeaderSize), magic, version
// (EPROTONOSUPPORT, message "unsupported protocol version N; this side speaks 1..1"),
// type, reserved == 0, payloadLen against the type's own bounds (exact for fixed-size
// messages, a minimum for variable ones) and against maxPayload (EMSGSIZE).
Result<FrameHeader> decodeHeader(std::span<const uint8_t> in, uint32_t maxPayload);

// Bounds-checked little-endian reader over one payload. Every getter fails with EPROTO
// ("truncated: need 4 bytes at offset 6, have 2") instead of reading past the end.
class PayloadReader {
public:
	explicit PayloadReader(std::span<const uint8_t> in) : in_(in) {}

	Result<uint16_t> u16();
	Result<uint32_t> u32();
	Result<uint64_t> u64();
	Result<int32_t> i32();
	// u16 length + bytes; a length above maxLen is an error (checked before reading).
	Result<std::string> string(size_t maxLen);
	Result<std::span<const uint8_t>> bytes(size_t n);

	size_t offset() const { return pos_; }
	size_t remaining() const { return in_.size() - pos_; }
	// Error if any byte is left unread ("3 trailing bytes").
	Status expectEnd() const;

private:
	Result<std::span<const uint8_t>> take(size_t n);

	std::span<const uint8_t> in_;
	size_t pos_ = 0;
};

// Little-endian writer appending to a vector it borrows.
class PayloadWriter {
public:
	explicit PayloadWriter(std::vector<uint8_t> &out) : out_(out) {}

	void u16(uint16_t v);
	void u32(uint32_t v);
	void u64(uint64_t v);
	void i32(int32_t v);
	// u16 length + bytes; strings longer than 65535 bytes are truncated (callers bound
	// their strings well below that; truncation beats sending a frame the peer rejects).
	void string(std::string_view s);
	void bytes(std::span<const uint8_t> b);

private:
	std::vector<uint8_t> &out_;
};

// How a region is cut into chunks; both sides derive it from HelloReply.
struct ChunkGeometry {
	uint64_t regionSize = 0;
	uint32_t chunkSize = 0;

	uint32_t chunkCount() const;
	uint64_t chunkOffset(uint32_t index) const { return uint64_t(index) * chunkSize; }
	// chunkSize, or less for the last chunk. index must be < chunkCount().
	uint32_t chunkLength(uint32_t index) const;
};

// --- Typed payloads -------------------------------------------------------------------------
// encode() returns the payload only (no header). Decoders check the exact length, so
// "payload longer than its type requires" is an error too.

struct HelloMsg {
	// What this connection's receiver can take beyond the base protocol. An optional trailing
	// u32 on the wire: a Hello without it has features 0, and encode() omits it when 0.
	static constexpr uint32_t kFeatureZstd = 1u << 0; // ChunkZstd replies to GetRange
	// A post-copy fault channel: its requests are few, small and latency-bound, so the seeder
	// busy-polls it while the source is suspended (its CPUs are idle then).
	static constexpr uint32_t kFeatureFaultChannel = 1u << 1;
	// This (control) connection takes a TrackStarted that lists zero runs.
	static constexpr uint32_t kFeatureZeroRuns = 1u << 2;

	uint32_t minVersion = kMinProtocolVersion;
	uint32_t maxVersion = kProtocolVersion;
	uint64_t resumeSessionId = 0; // 0: new session
	std::string clientName;       // <= kMaxClientNameLen bytes
	uint32_t features = 0;        // unknown bits are ignored by seeders
};

struct HelloReplyMsg {
	static constexpr uint32_t kFlagTracking = 1u << 0;
	static constexpr uint32_t kFlagFinalized = 1u << 1;
	// This connection's GetRange replies may carry ChunkZstd frames (the Hello asked for
	// kFeatureZstd and the seeder compresses).
	static constexpr uint32_t kFlagZstd = 1u << 2;
	// The seeder takes FinalizeMsg::kFlagSwitchOver (a one-round-trip handover).
	static constexpr uint32_t kFlagSwitchOverAtFinalize = 1u << 3;
	// With kFlagZstd: whether to compress is decided per range by measuring the link
	// ("auto"), so the leecher should ask for one range first and the rest of its window
	// once that has arrived (the seeder learns the link's rate from the second request).
	static constexpr uint32_t kFlagAdaptiveZstd = 1u << 4;

	uint32_t version = kProtocolVersion;
	uint64_t sessionId = 0;
	uint64_t regionSize = 0;
	uint32_t chunkSize = 0;
	uint32_t flags = 0; // unknown bits are ignored by receivers

	ChunkGeometry geometry() const { return {regionSize, chunkSize}; }
};

struct GetChunkMsg {
	uint32_t chunkIndex = 0;
};

// Dirty lists carry, per chunk, which of its pages (kWirePageSize each, bit i = page i) were
// written, so that a destination holding an older copy can fetch only those (GetPages). A
// chunk of more than 64 pages, or a tracker without page resolution, reports kAllPages.
inline constexpr uint32_t kWirePageSize = 4096;
inline constexpr uint64_t kAllPages = ~uint64_t(0);

struct DirtyListMsg {
	std::vector<uint32_t> chunks;    // strictly increasing
	std::vector<uint64_t> pageMasks; // parallel to chunks, non-zero; empty on encode = kAllPages
};

// TrackStarted's payload (empty = no runs; never sent to a connection whose Hello did not ask
// for kFeatureZeroRuns): runs of whole chunks that were holes of
// the seeder's region file once tracking had started, so zero. The leecher takes them as
// pulled (its fresh memory is zero too); a write after the scan is tracked like any other.
struct ChunkRun {
	uint32_t first = 0;
	uint32_t count = 0;
	bool operator==(const ChunkRun &) const = default;
};
struct TrackStartedMsg {
	std::vector<ChunkRun> zeroRuns; // increasing, disjoint, non-adjacent, count >= 1
};

// Finalize's payload: an optional u32 of flags (an empty payload is flags 0).
struct FinalizeMsg {
	// Switch over in the same step: the seeder suspends the source, hands over its
	// application state (the switch-over hook) and commits, all before its Finalized reply;
	// the destination then resumes without a SwitchOver round trip. Hybrid mode only: from
	// the suspend on, the source is no longer resumed when the destination is lost.
	static constexpr uint32_t kFlagSwitchOver = 1u << 0;

	uint32_t flags = 0;
};

struct FinalizedMsg {
	uint64_t suspendedAtUnixNs = 0;
	std::vector<uint32_t> chunks;    // strictly increasing
	std::vector<uint64_t> pageMasks; // as in DirtyListMsg
};

// At most this many chunks per GetRange: bounds what one request makes the seeder send.
inline constexpr uint32_t kMaxRangeChunks = 1024;

struct GetRangeMsg {
	uint32_t firstChunk = 0;
	uint32_t count = 0;
};

struct GetPagesMsg {
	uint32_t chunkIndex = 0;
	uint64_t pageMask = 0;
};

// The pages of chunk `index` a mask names: bits beyond the chunk's last page are invalid.
// Returns the number of pages, or an error for a zero or out-of-chunk mask.
Result<uint32_t> pagesInMask(const ChunkGeometry &g, uint32_t index, uint64_t mask);

struct ErrorMsg {
	int32_t errnoValue = 0;
	std::string message; // <= kMaxErrorMessageLen bytes
};

// Ping and Pong share this payload; Pong echoes the Ping's value.
struct PingMsg {
	uint64_t sendTimeNs = 0;
};

std::vector<uint8_t> encode(const HelloMsg &m);
std::vector<uint8_t> encode(const HelloReplyMsg &m);
std::vector<uint8_t> encode(const GetChunkMsg &m);
std::vector<uint8_t> encode(const DirtyListMsg &m);
std::vector<uint8_t> encode(const TrackStartedMsg &m);
std::vector<uint8_t> encode(const FinalizeMsg &m);
std::vector<uint8_t> encode(const FinalizedMsg &m);
std::vector<uint8_t> encode(const ErrorMsg &m);
std::vector<uint8_t> encode(const PingMsg &m);
std::vector<uint8_t> encode(const GetPagesMsg &m);
std::vector<uint8_t> encode(const GetRangeMsg &m);
// Checks 1 <= count <= kMaxRangeChunks and first + count <= chunkCount.
Result<GetRangeMsg> decodeGetRange(std::span<const uint8_t> in, uint32_t chunkCount);

Result<HelloMsg> decodeHello(std::span<const uint8_t> in);
// Also checks chunkSize in 1..kMaxChunkSize and that the chunk count fits in 32 bits.
Result<HelloReplyMsg> decodeHelloReply(std::span<const uint8_t> in);
// chunkCount bounds the index (indices >= chunkCount are an error).
Result<GetChunkMsg> decodeGetChunk(std::span<const uint8_t> in, uint32_t chunkCount);
Result<DirtyListMsg> decodeDirtyList(std::span<const uint8_t> in, uint32_t chunkCount);
// Checks that the runs lie within the region, ascend and neither overlap nor touch.
Result<TrackStartedMsg> decodeTrackStarted(std::span<const uint8_t> in, uint32_t chunkCount);
Result<FinalizeMsg> decodeFinalize(std::span<const uint8_t> in);
Result<FinalizedMsg> decodeFinalized(std::span<const uint8_t> in, uint32_t chunkCount);
Result<ErrorMsg> decodeError(std::span<const uint8_t> in);
Result<PingMsg> decodePing(std::span<const uint8_t> in);
Result<GetPagesMsg> decodeGetPages(std::span<const uint8_t> in, const ChunkGeometry &g);
// A Pages payload is { u32 chunkIndex, u64 pageMask, pages }: the 12-byte prefix is decoded
// separately so the pages can be received straight into place. Checks index, mask and
// h.payloadLen == 12 + pages * kWirePageSize.
inline constexpr size_t kPagesPrefixSize = 12;
Result<GetPagesMsg> decodePagesPrefix(const FrameHeader &h, std::span<const uint8_t> prefix,
				      const ChunkGeometry &g);

// A Chunk payload is { u32 chunkIndex, bytes }. The index prefix is decoded separately so
// the bytes can be received straight into the destination. Checks the index against
// g.chunkCount() and h.payloadLen == 4 + g.chunkLength(index). Also accepts ChunkZero
// (payloadLen == 4: no bytes follow).
inline constexpr size_t kChunkPrefixSize = 4;
Result<uint32_t> decodeChunkPrefix(const FrameHeader &h, std::span<const uint8_t> prefix,
				   const ChunkGeometry &g);
// A ChunkZstd payload is { u32 chunkIndex, zstd frame }. The frame decompresses to exactly
// g.chunkLength(index) bytes, and a sender only uses ChunkZstd when the frame is shorter
// than the chunk: checks the index and 4 < h.payloadLen < 4 + g.chunkLength(index).
Result<uint32_t> decodeChunkZstdPrefix(const FrameHeader &h, std::span<const uint8_t> prefix,
				       const ChunkGeometry &g);

// Any reply that carries a whole chunk (Chunk, ChunkZero, ChunkZstd): the index, with the
// checks of the decoder for its type.
Result<uint32_t> decodeWholeChunkPrefix(const FrameHeader &h, std::span<const uint8_t> prefix,
					const ChunkGeometry &g);

// The prefix of a chunk-carrying reply that is sent from the sender's own memory: the frame
// header and the chunk index, contiguous, so a batch of replies is one gathered write of
// {prefix, body} pairs. type is Chunk, ChunkZero (bodyLen 0) or ChunkZstd.
struct ChunkFramePrefix {
	uint8_t bytes[kHeaderSize + kChunkPrefixSize];
};
ChunkFramePrefix encodeChunkFramePrefix(MsgType type, uint64_t requestId, uint32_t index, uint32_t bodyLen);
// The 12-byte prefix of a Pages payload (chunk index and page mask); the pages follow.
std::array<uint8_t, kPagesPrefixSize> encodePagesPrefix(const GetPagesMsg &m);

// Version negotiation for the seeder: the highest version both sides speak, or
// EPROTONOSUPPORT with "unsupported protocol version range A..B; this side speaks 1..1".
Result<uint32_t> negotiateVersion(const HelloMsg &hello);

// Turns a received ErrorMsg into an Error for the caller ("peer error: <message>", errno kept
// when it is a plausible errno value, EPROTO otherwise).
ferry::Error peerError(const ErrorMsg &m);
// The same from an Error frame's payload; a malformed one is EPROTO "malformed Error frame".
ferry::Error peerError(std::span<const uint8_t> errorPayload);

} // namespace ferry
