// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/wire/protocol.h"
#include "wire/little_endian.h"
#include "wire/payload_layout.h"
#include "ferry/wire/daemon_protocol.h"

#include <algorithm>
#include <limits>

namespace ferry {

namespace {

// Payload size bounds per type, enforced on the header before any payload byte is read.
struct LengthRule {
	uint32_t min;
	uint32_t max; // UINT32_MAX: bounded only by the receiver's maxPayload
};

constexpr uint32_t kUnbounded = std::numeric_limits<uint32_t>::max();
constexpr uint32_t kHelloFixed = 4 + 4 + 8 + 2;
constexpr uint32_t kHelloReplySize = 4 + 8 + 8 + 4 + 4;
constexpr uint32_t kErrorFixed = 4 + 2;

LengthRule lengthRule(MsgType t)
{
	switch (t) {
	case MsgType::Hello:
		return {kHelloFixed, kHelloFixed + uint32_t(kMaxClientNameLen) + 4};
	case MsgType::HelloReply:
		return {kHelloReplySize, kHelloReplySize};
	case MsgType::TrackStart:
	case MsgType::GetDirty:
	case MsgType::Done:
	case MsgType::DoneAck:
	case MsgType::SwitchOver:
	case MsgType::SwitchOverAck:
		return {0, 0};
	case MsgType::Finalize:
		return {0, 4};
	case MsgType::GetChunk:
	case MsgType::ChunkZero:
		return {4, 4};
	case MsgType::GetPages:
		return {12, 12};
	case MsgType::GetRange:
		return {8, 8};
	case MsgType::Pages:
		return {12 + kWirePageSize, kUnbounded};
	case MsgType::Chunk:
	case MsgType::ChunkZstd:
		// Index plus at least one byte: chunks are never empty.
		return {uint32_t(kChunkPrefixSize) + 1, kUnbounded};
	case MsgType::DirtyList:
		return {4, kUnbounded};
	case MsgType::TrackStarted:
		return {0, kUnbounded};
	case MsgType::Finalized:
		return {8 + 4, kUnbounded};
	case MsgType::Error:
		return {kErrorFixed, kErrorFixed + uint32_t(kMaxErrorMessageLen)};
	case MsgType::Ping:
	case MsgType::Pong:
		return {8, 8};
	case MsgType::PeerHello:
		return {4 + 4 + 2, 4 + 4 + 2 + uint32_t(kMaxDaemonNameLen)};
	case MsgType::PeerHelloReply:
		return {4 + 2, 4 + 2 + uint32_t(kMaxDaemonNameLen)};
	case MsgType::RelayOpen:
	case MsgType::FerryOffer:
	case MsgType::FerryDecline:
		return {2 + 2, 2 + uint32_t(kMaxDomainNameLen) + 2 + uint32_t(kMaxDomainUuidLen)};
	case MsgType::RelayReady:
	case MsgType::RelayEnd:
		return {0, 0};
	case MsgType::RelayData:
		return {1, kMaxRelayData};
	case MsgType::FerryAccept:
		return {2, 2};
	}
	return {0, 0};
}

ferry::Error protoError(std::string msg) { return ferry::Error(EPROTO, std::move(msg)); }

// Shared by DirtyList and Finalized: u32 count, then count entries { u32 index, u64 pageMask }
// with strictly increasing indices and non-zero masks.
Status readIndexList(PayloadReader &r, uint32_t chunkCount, std::vector<uint32_t> &out,
		     std::vector<uint64_t> &masks)
{
	FERRY_ASSIGN(uint32_t count, r.u32());
	uint64_t need = uint64_t(count) * 12;
	if (need != r.remaining())
		return protoError(fmt::format("count {} needs {} bytes of entries, payload has {}",
					      count, need, r.remaining()));
	out.clear();
	masks.clear();
	out.reserve(count);
	masks.reserve(count);
	for (uint32_t i = 0; i < count; i++) {
		FERRY_ASSIGN(uint32_t idx, r.u32());
		FERRY_ASSIGN(uint64_t mask, r.u64());
		if (mask == 0)
			return protoError(fmt::format("chunk {} at position {} has an empty page mask", idx, i));
		masks.push_back(mask);
		if (idx >= chunkCount)
			return protoError(fmt::format("chunk index {} at position {} is out of range "
						      "(chunk count {})",
						      idx, i, chunkCount));
		if (!out.empty() && idx <= out.back())
			return protoError(fmt::format("chunk indices not strictly increasing at "
						      "position {} ({} after {})",
						      i, idx, out.back()));
		out.push_back(idx);
	}
	return {};
}

void writeIndexList(PayloadWriter &w, const std::vector<uint32_t> &chunks, const std::vector<uint64_t> &masks)
{
	w.u32(uint32_t(chunks.size()));
	for (size_t i = 0; i < chunks.size(); i++) {
		w.u32(chunks[i]);
		w.u64(i < masks.size() ? masks[i] : kAllPages);
	}
}

// The chunk index that starts every chunk-carrying payload, checked against the region; a
// truncated prefix is reported under `what`.
Result<uint32_t> readChunkIndex(const FrameHeader &h, std::span<const uint8_t> prefix, const ChunkGeometry &g,
				const char *what)
{
	PayloadReader r(prefix);
	auto index = r.u32();
	if (!index.ok())
		return index.error().context(what);
	if (*index >= g.chunkCount())
		return protoError(fmt::format("{}: chunk index {} out of range (chunk count {})", msgTypeName(h.type),
					      *index, g.chunkCount()));
	return index;
}

} // namespace

uint32_t maxPayloadFor(uint32_t chunkSize, uint32_t listLimit)
{
	uint64_t chunkFrame = uint64_t(chunkSize) + kChunkFrameSlack;
	return uint32_t(std::min<uint64_t>(std::max<uint64_t>(chunkFrame, listLimit), kUnbounded));
}

const char *msgTypeName(MsgType type)
{
	switch (type) {
	case MsgType::Hello: return "Hello";
	case MsgType::HelloReply: return "HelloReply";
	case MsgType::TrackStart: return "TrackStart";
	case MsgType::TrackStarted: return "TrackStarted";
	case MsgType::GetChunk: return "GetChunk";
	case MsgType::Chunk: return "Chunk";
	case MsgType::GetDirty: return "GetDirty";
	case MsgType::DirtyList: return "DirtyList";
	case MsgType::Finalize: return "Finalize";
	case MsgType::Finalized: return "Finalized";
	case MsgType::Done: return "Done";
	case MsgType::DoneAck: return "DoneAck";
	case MsgType::Error: return "Error";
	case MsgType::Ping: return "Ping";
	case MsgType::Pong: return "Pong";
	case MsgType::ChunkZero: return "ChunkZero";
	case MsgType::SwitchOver: return "SwitchOver";
	case MsgType::SwitchOverAck: return "SwitchOverAck";
	case MsgType::GetPages: return "GetPages";
	case MsgType::Pages: return "Pages";
	case MsgType::GetRange: return "GetRange";
	case MsgType::ChunkZstd: return "ChunkZstd";
	case MsgType::PeerHello: return "PeerHello";
	case MsgType::PeerHelloReply: return "PeerHelloReply";
	case MsgType::RelayOpen: return "RelayOpen";
	case MsgType::RelayReady: return "RelayReady";
	case MsgType::RelayData: return "RelayData";
	case MsgType::RelayEnd: return "RelayEnd";
	case MsgType::FerryOffer: return "FerryOffer";
	case MsgType::FerryAccept: return "FerryAccept";
	case MsgType::FerryDecline: return "FerryDecline";
	}
	return "unknown";
}

bool isKnownMsgType(uint16_t type)
{
	return (type >= uint16_t(MsgType::Hello) && type <= uint16_t(MsgType::ChunkZstd)) ||
	       (type >= uint16_t(MsgType::PeerHello) && type <= uint16_t(MsgType::FerryDecline));
}

void encodeHeader(const FrameHeader &h, uint8_t out[kHeaderSize])
{
	store32(out + 0, h.magic);
	store16(out + 4, h.version);
	store16(out + 6, uint16_t(h.type));
	store64(out + 8, h.requestId);
	store32(out + 16, h.payloadLen);
	store32(out + 20, h.reserved);
}

Result<FrameHeader> decodeHeader(std::span<const uint8_t> in, uint32_t maxPayload)
{
	if (in.size() < kHeaderSize)
		return protoError(fmt::format("frame header truncated: {} of {} bytes", in.size(),
					      kHeaderSize));
	const uint8_t *p = in.data();
	FrameHeader h;
	h.magic = load32(p);
	h.version = load16(p + 4);
	uint16_t type = load16(p + 6);
	h.requestId = load64(p + 8);
	h.payloadLen = load32(p + 16);
	h.reserved = load32(p + 20);

	if (h.magic != kFrameMagic)
		return protoError(fmt::format("bad frame magic {:#010x} (expected {:#010x} \"FRRY\")",
					      h.magic, kFrameMagic));
	if (h.version < kMinProtocolVersion || h.version > kProtocolVersion)
		return ferry::Error::format(EPROTONOSUPPORT,
					    "unsupported protocol version {}; this side speaks {}..{}",
					    h.version, kMinProtocolVersion, kProtocolVersion);
	if (!isKnownMsgType(type))
		return protoError(fmt::format("unknown message type {}", type));
	h.type = MsgType(type);
	if (h.reserved != 0)
		return protoError(fmt::format("reserved header field is {:#x} in {} frame (must be 0)",
					      h.reserved, msgTypeName(h.type)));

	LengthRule rule = lengthRule(h.type);
	if (h.payloadLen < rule.min || h.payloadLen > rule.max) {
		if (rule.min == rule.max)
			return protoError(fmt::format("{} payload is {} bytes; the type requires exactly {}",
						      msgTypeName(h.type), h.payloadLen, rule.min));
		if (h.payloadLen < rule.min)
			return protoError(fmt::format("{} payload is {} bytes; the type requires at least {}",
						      msgTypeName(h.type), h.payloadLen, rule.min));
		return protoError(fmt::format("{} payload is {} bytes; the type allows at most {}",
					      msgTypeName(h.type), h.payloadLen, rule.max));
	}
	if (h.payloadLen > maxPayload)
		return ferry::Error::format(EMSGSIZE, "{} payload of {} bytes exceeds the limit of {}",
					    msgTypeName(h.type), h.payloadLen, maxPayload);
	return h;
}

// --- Typed payloads -------------------------------------------------------------------------
// Fixed layouts (payload_layout.h) first, each beside its decoder's own checks; then the
// index lists, whose decoders need the chunk count while reading.

template <>
struct Layout<HelloMsg> {
	static constexpr auto fields =
		std::tuple{Field{&HelloMsg::minVersion}, Field{&HelloMsg::maxVersion}, Field{&HelloMsg::resumeSessionId},
			   Field{&HelloMsg::clientName, kMaxClientNameLen, FieldRule::CutToMax},
			   Field{&HelloMsg::features, 0, FieldRule::OptionalTail}};
};

std::vector<uint8_t> encode(const HelloMsg &m) { return encodeLayout(m); }

Result<HelloMsg> decodeHello(std::span<const uint8_t> in)
{
	return decodeLayout<HelloMsg>(in, "Hello", [](const HelloMsg &m) -> Status {
		if (m.minVersion == 0 || m.minVersion > m.maxVersion)
			return protoError(fmt::format("bad version range {}..{}", m.minVersion, m.maxVersion));
		return {};
	});
}

template <>
struct Layout<HelloReplyMsg> {
	static constexpr auto fields =
		std::tuple{Field{&HelloReplyMsg::version}, Field{&HelloReplyMsg::sessionId},
			   Field{&HelloReplyMsg::regionSize}, Field{&HelloReplyMsg::chunkSize}, Field{&HelloReplyMsg::flags}};
};

std::vector<uint8_t> encode(const HelloReplyMsg &m) { return encodeLayout(m); }

Result<HelloReplyMsg> decodeHelloReply(std::span<const uint8_t> in)
{
	return decodeLayout<HelloReplyMsg>(in, "HelloReply", [](const HelloReplyMsg &m) -> Status {
		if (m.version == 0)
			return protoError("version 0");
		if (m.chunkSize == 0 || m.chunkSize > kMaxChunkSize)
			return protoError(fmt::format("chunk size {} outside 1..{}", m.chunkSize, kMaxChunkSize));
		uint64_t chunks = m.regionSize / m.chunkSize + (m.regionSize % m.chunkSize != 0);
		if (chunks > kUnbounded)
			return protoError(fmt::format("region of {} bytes has {} chunks of {} (more than 2^32-1)",
						      m.regionSize, chunks, m.chunkSize));
		return {};
	});
}

template <>
struct Layout<GetChunkMsg> {
	static constexpr auto fields = std::tuple{Field{&GetChunkMsg::chunkIndex}};
};

std::vector<uint8_t> encode(const GetChunkMsg &m) { return encodeLayout(m); }

Result<GetChunkMsg> decodeGetChunk(std::span<const uint8_t> in, uint32_t chunkCount)
{
	return decodeLayout<GetChunkMsg>(in, "GetChunk", [&](const GetChunkMsg &m) -> Status {
		if (m.chunkIndex >= chunkCount)
			return protoError(fmt::format("chunk index {} out of range (chunk count {})", m.chunkIndex,
						      chunkCount));
		return {};
	});
}

template <>
struct Layout<GetRangeMsg> {
	static constexpr auto fields = std::tuple{Field{&GetRangeMsg::firstChunk}, Field{&GetRangeMsg::count}};
};

std::vector<uint8_t> encode(const GetRangeMsg &m) { return encodeLayout(m); }

Result<GetRangeMsg> decodeGetRange(std::span<const uint8_t> in, uint32_t chunkCount)
{
	return decodeLayout<GetRangeMsg>(in, "GetRange", [&](const GetRangeMsg &m) -> Status {
		if (m.count == 0 || m.count > kMaxRangeChunks)
			return protoError(fmt::format("count {} outside 1..{}", m.count, kMaxRangeChunks));
		if (uint64_t(m.firstChunk) + m.count > chunkCount)
			return protoError(fmt::format("chunks {}..{} beyond the chunk count {}", m.firstChunk,
						      uint64_t(m.firstChunk) + m.count - 1, chunkCount));
		return {};
	});
}

template <>
struct Layout<GetPagesMsg> {
	static constexpr auto fields = std::tuple{Field{&GetPagesMsg::chunkIndex}, Field{&GetPagesMsg::pageMask}};
};

std::vector<uint8_t> encode(const GetPagesMsg &m) { return encodeLayout(m); }

Result<GetPagesMsg> decodeGetPages(std::span<const uint8_t> in, const ChunkGeometry &g)
{
	return decodeLayout<GetPagesMsg>(in, "GetPages", [&](const GetPagesMsg &m) -> Status {
		FERRY_TRY(pagesInMask(g, m.chunkIndex, m.pageMask));
		return {};
	});
}

template <>
struct Layout<FinalizeMsg> {
	static constexpr auto fields = std::tuple{Field{&FinalizeMsg::flags, 0, FieldRule::OptionalTail}};
};

std::vector<uint8_t> encode(const FinalizeMsg &m) { return encodeLayout(m); }

Result<FinalizeMsg> decodeFinalize(std::span<const uint8_t> in) { return decodeLayout<FinalizeMsg>(in, "Finalize", noCheck); }

template <>
struct Layout<ErrorMsg> {
	static constexpr auto fields =
		std::tuple{Field{&ErrorMsg::errnoValue}, Field{&ErrorMsg::message, kMaxErrorMessageLen, FieldRule::CutToMax}};
};

std::vector<uint8_t> encode(const ErrorMsg &m) { return encodeLayout(m); }
Result<ErrorMsg> decodeError(std::span<const uint8_t> in) { return decodeLayout<ErrorMsg>(in, "Error", noCheck); }

// Ping and Pong share this payload.
template <>
struct Layout<PingMsg> {
	static constexpr auto fields = std::tuple{Field{&PingMsg::sendTimeNs}};
};

std::vector<uint8_t> encode(const PingMsg &m) { return encodeLayout(m); }
Result<PingMsg> decodePing(std::span<const uint8_t> in) { return decodeLayout<PingMsg>(in, "Ping", noCheck); }

std::vector<uint8_t> encode(const DirtyListMsg &m)
{
	std::vector<uint8_t> out;
	out.reserve(4 + 12 * m.chunks.size());
	PayloadWriter w(out);
	writeIndexList(w, m.chunks, m.pageMasks);
	return out;
}

Result<DirtyListMsg> decodeDirtyList(std::span<const uint8_t> in, uint32_t chunkCount)
{
	auto read = [&](PayloadReader &r, DirtyListMsg &m) {
		return readIndexList(r, chunkCount, m.chunks, m.pageMasks);
	};
	return decodePayload<DirtyListMsg>(in, "DirtyList", read, noCheck);
}

std::vector<uint8_t> encode(const TrackStartedMsg &m)
{
	std::vector<uint8_t> out;
	if (m.zeroRuns.empty())
		return out; // as a seeder without a region file always answered
	out.reserve(4 + 8 * m.zeroRuns.size());
	PayloadWriter w(out);
	w.u32(uint32_t(m.zeroRuns.size()));
	for (const ChunkRun &r : m.zeroRuns) {
		w.u32(r.first);
		w.u32(r.count);
	}
	return out;
}

Result<TrackStartedMsg> decodeTrackStarted(std::span<const uint8_t> in, uint32_t chunkCount)
{
	if (in.empty())
		return TrackStartedMsg{};
	auto read = [&](PayloadReader &r, TrackStartedMsg &m) -> Status {
		FERRY_ASSIGN(uint32_t count, r.u32());
		if (count == 0 || uint64_t(count) * 8 != r.remaining())
			return protoError(fmt::format("count {} needs {} bytes of runs, payload has {}", count,
						      uint64_t(count) * 8, r.remaining()));
		m.zeroRuns.reserve(count);
		uint64_t end = 0; // of the previous run
		for (uint32_t i = 0; i < count; i++) {
			ChunkRun run;
			FERRY_ASSIGN(run.first, r.u32());
			FERRY_ASSIGN(run.count, r.u32());
			if (run.count == 0 || uint64_t(run.first) + run.count > chunkCount)
				return protoError(fmt::format("run {} ({}+{}) outside 1..{} chunks", i, run.first,
							      run.count, chunkCount));
			if (i > 0 && run.first <= end)
				return protoError(fmt::format("run {} starts at chunk {}, not after the previous run's end {}",
							      i, run.first, end));
			end = uint64_t(run.first) + run.count;
			m.zeroRuns.push_back(run);
		}
		return {};
	};
	return decodePayload<TrackStartedMsg>(in, "TrackStarted", read, noCheck);
}

std::vector<uint8_t> encode(const FinalizedMsg &m)
{
	std::vector<uint8_t> out;
	out.reserve(12 + 12 * m.chunks.size());
	PayloadWriter w(out);
	w.u64(m.suspendedAtUnixNs);
	writeIndexList(w, m.chunks, m.pageMasks);
	return out;
}

Result<FinalizedMsg> decodeFinalized(std::span<const uint8_t> in, uint32_t chunkCount)
{
	auto read = [&](PayloadReader &r, FinalizedMsg &m) -> Status {
		FERRY_ASSIGN(m.suspendedAtUnixNs, r.u64());
		return readIndexList(r, chunkCount, m.chunks, m.pageMasks);
	};
	return decodePayload<FinalizedMsg>(in, "Finalized", read, noCheck);
}

Result<uint32_t> decodeChunkPrefix(const FrameHeader &h, std::span<const uint8_t> prefix,
				   const ChunkGeometry &g)
{
	if (h.type != MsgType::Chunk && h.type != MsgType::ChunkZero)
		return protoError(fmt::format("expected a Chunk frame, got {}", msgTypeName(h.type)));
	FERRY_ASSIGN(uint32_t index, readChunkIndex(h, prefix, g, "Chunk"));
	if (h.type == MsgType::ChunkZero)
		return index; // decodeHeader already checked the exact length
	uint64_t expect = kChunkPrefixSize + uint64_t(g.chunkLength(index));
	if (h.payloadLen != expect)
		return protoError(fmt::format("Chunk {}: payload is {} bytes, expected {} (index + {} "
					      "bytes of data)",
					      index, h.payloadLen, expect, g.chunkLength(index)));
	return index;
}

Result<uint32_t> decodeChunkZstdPrefix(const FrameHeader &h, std::span<const uint8_t> prefix,
				       const ChunkGeometry &g)
{
	if (h.type != MsgType::ChunkZstd)
		return protoError(fmt::format("expected a ChunkZstd frame, got {}", msgTypeName(h.type)));
	FERRY_ASSIGN(uint32_t index, readChunkIndex(h, prefix, g, "ChunkZstd"));
	uint64_t raw = kChunkPrefixSize + uint64_t(g.chunkLength(index));
	if (h.payloadLen <= kChunkPrefixSize || h.payloadLen >= raw)
		return protoError(fmt::format("ChunkZstd {}: payload is {} bytes; a compressed chunk of {} "
					      "bytes takes 5..{}",
					      index, h.payloadLen, g.chunkLength(index), raw - 1));
	return index;
}

Result<uint32_t> negotiateVersion(const HelloMsg &hello)
{
	uint32_t lo = std::max<uint32_t>(hello.minVersion, kMinProtocolVersion);
	uint32_t hi = std::min<uint32_t>(hello.maxVersion, kProtocolVersion);
	if (lo > hi || hello.minVersion > hello.maxVersion)
		return ferry::Error::format(EPROTONOSUPPORT,
					    "unsupported protocol version range {}..{}; this side "
					    "speaks {}..{}",
					    hello.minVersion, hello.maxVersion, kMinProtocolVersion,
					    kProtocolVersion);
	return hi;
}

Result<uint32_t> decodeWholeChunkPrefix(const FrameHeader &h, std::span<const uint8_t> prefix,
					const ChunkGeometry &g)
{
	if (h.type == MsgType::ChunkZstd)
		return decodeChunkZstdPrefix(h, prefix, g);
	return decodeChunkPrefix(h, prefix, g);
}

ChunkFramePrefix encodeChunkFramePrefix(MsgType type, uint64_t requestId, uint32_t index, uint32_t bodyLen)
{
	ChunkFramePrefix p;
	FrameHeader h;
	h.type = type;
	h.requestId = requestId;
	h.payloadLen = uint32_t(kChunkPrefixSize) + bodyLen;
	encodeHeader(h, p.bytes);
	store32(p.bytes + kHeaderSize, index);
	return p;
}

std::array<uint8_t, kPagesPrefixSize> encodePagesPrefix(const GetPagesMsg &m)
{
	std::array<uint8_t, kPagesPrefixSize> p;
	store32(p.data(), m.chunkIndex);
	store64(p.data() + 4, m.pageMask);
	return p;
}

ferry::Error peerError(std::span<const uint8_t> errorPayload)
{
	auto m = decodeError(errorPayload);
	if (!m.ok())
		return ferry::Error(EPROTO, "peer sent a malformed Error frame");
	return peerError(*m);
}

ferry::Error peerError(const ErrorMsg &m)
{
	// The message is peer-controlled: keep it printable so it cannot mangle our logs.
	std::string msg = m.message;
	for (char &c : msg) {
		auto u = static_cast<unsigned char>(c);
		if (u < 0x20 || u == 0x7f)
			c = '?';
	}
	int code = (m.errnoValue > 0 && m.errnoValue < 4096) ? m.errnoValue : EPROTO;
	return ferry::Error(code, fmt::format("peer error: {}", msg));
}

Result<uint32_t> pagesInMask(const ChunkGeometry &g, uint32_t index, uint64_t mask)
{
	if (index >= g.chunkCount())
		return protoError(fmt::format("chunk index {} out of range (chunk count {})", index, g.chunkCount()));
	if (mask == 0)
		return protoError(fmt::format("chunk {}: empty page mask", index));
	uint32_t pages = (g.chunkLength(index) + kWirePageSize - 1) / kWirePageSize;
	if (pages > 64 || g.chunkLength(index) % kWirePageSize != 0)
		return protoError(fmt::format("chunk {} cannot be addressed by pages ({} bytes)", index,
					      g.chunkLength(index)));
	if (pages < 64 && (mask >> pages) != 0)
		return protoError(fmt::format("chunk {}: page mask {:#x} names pages beyond its {}", index, mask, pages));
	return uint32_t(__builtin_popcountll(mask));
}

Result<GetPagesMsg> decodePagesPrefix(const FrameHeader &h, std::span<const uint8_t> prefix,
				      const ChunkGeometry &g)
{
	auto body = [&]() -> Result<GetPagesMsg> {
		if (h.type != MsgType::Pages)
			return protoError(fmt::format("expected Pages, got {}", msgTypeName(h.type)));
		FERRY_ASSIGN(GetPagesMsg m, decodeGetPages(prefix, g));
		FERRY_ASSIGN(uint32_t pages, pagesInMask(g, m.chunkIndex, m.pageMask));
		if (uint64_t(h.payloadLen) != kPagesPrefixSize + uint64_t(pages) * kWirePageSize)
			return protoError(fmt::format("chunk {}: {} bytes for {} pages", m.chunkIndex,
						      h.payloadLen - kPagesPrefixSize, pages));
		return m;
	};
	return body().context("Pages");
}

} // namespace ferry
