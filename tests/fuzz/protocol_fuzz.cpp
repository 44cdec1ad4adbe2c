// SPDX-License-Identifier: GPL-2.0-or-later
// The wire protocol's decoders (core/wire/protocol.cpp) on what a peer can send: the input is
// a byte stream of frames, read the way a receiver reads a connection. Each header goes
// through decodeHeader, each payload through its type's decoder (and the prefix decoders for
// Chunk, ChunkZero, ChunkZstd and Pages). A HelloReply sets the geometry for the frames after
// it, as on a leecher; before one, a small default geometry with a partial last chunk applies.
//
// Invariants checked beyond "no crash": what a decoder accepts is within the bounds it
// documents, re-encodes to the same payload bytes (Hello: up to its optional zero features
// field) and decodes again to the same message; a rejected frame fails with EPROTO,
// EPROTONOSUPPORT or EMSGSIZE only.
#include <algorithm>
#include <vector>

#include "ferry/wire/compress.h"
#include "ferry/wire/daemon_protocol.h"
#include "ferry/wire/protocol.h"

#include "fuzz_check.h"

using namespace ferry;
using ferry::fuzz::sameBytes;

namespace {

// 65 chunks of 16 KiB (4 pages each), the last one 5000 bytes: shorter than a chunk and not
// addressable by pages.
constexpr ChunkGeometry kDefaultGeometry{64 * 16384 + 5000, 16384};
constexpr size_t kMaxFrames = 64;
// ChunkZstd frames are decompressed only for chunks up to this size (the harness allocates
// the chunk; a HelloReply may announce 1 GiB chunks).
constexpr uint32_t kMaxDecompressedChunk = 1u << 20;

bool isProtocolErrno(int e) { return e == EPROTO || e == EPROTONOSUPPORT || e == EMSGSIZE; }

void checkRejected(const Error &e) { FUZZ_CHECK(isProtocolErrno(e.code())); }

// Decoded lists: strictly increasing indices inside the region, one non-zero mask each.
void checkIndexList(const std::vector<uint32_t> &chunks, const std::vector<uint64_t> &masks,
		    uint32_t chunkCount)
{
	FUZZ_CHECK(chunks.size() == masks.size());
	for (size_t i = 0; i < chunks.size(); i++) {
		FUZZ_CHECK(chunks[i] < chunkCount);
		FUZZ_CHECK(masks[i] != 0);
		FUZZ_CHECK(i == 0 || chunks[i] > chunks[i - 1]);
	}
}

bool sameHello(const HelloMsg &a, const HelloMsg &b)
{
	return a.minVersion == b.minVersion && a.maxVersion == b.maxVersion &&
	       a.resumeSessionId == b.resumeSessionId && a.clientName == b.clientName &&
	       a.features == b.features;
}

void hello(std::span<const uint8_t> payload)
{
	auto m = decodeHello(payload);
	if (!m.ok())
		return checkRejected(m.error());
	FUZZ_CHECK(m->clientName.size() <= kMaxClientNameLen);
	FUZZ_CHECK(m->minVersion >= 1 && m->minVersion <= m->maxVersion);
	std::vector<uint8_t> again = encode(*m);
	// The one non-canonical form: a trailing features field of 0, which encode() omits.
	bool zeroFeatures = m->features == 0 && payload.size() == again.size() + 4;
	FUZZ_CHECK(zeroFeatures || sameBytes(again, payload));
	auto m2 = decodeHello(again);
	FUZZ_CHECK(m2.ok() && sameHello(*m, *m2));
	auto v = negotiateVersion(*m);
	if (v.ok())
		FUZZ_CHECK(*v >= kMinProtocolVersion && *v <= kProtocolVersion && *v >= m->minVersion &&
			   *v <= m->maxVersion);
	else
		FUZZ_CHECK(v.error().code() == EPROTONOSUPPORT);
}

void helloReply(std::span<const uint8_t> payload, ChunkGeometry &g)
{
	auto m = decodeHelloReply(payload);
	if (!m.ok())
		return checkRejected(m.error());
	FUZZ_CHECK(m->version != 0);
	FUZZ_CHECK(m->chunkSize >= 1 && m->chunkSize <= kMaxChunkSize);
	uint64_t chunks = m->regionSize / m->chunkSize + (m->regionSize % m->chunkSize != 0);
	FUZZ_CHECK(chunks <= UINT32_MAX && m->geometry().chunkCount() == chunks);
	FUZZ_CHECK(sameBytes(encode(*m), payload));
	g = m->geometry();
}

// A fixed-size request: `decode` rejects it with a protocol error, or accepts a message that
// `check` finds within its documented bounds and that re-encodes to the same bytes, which
// decode again to a message that encodes the same.
template<typename Decode, typename Check>
void fixedMessage(std::span<const uint8_t> payload, Decode decode, Check check)
{
	auto m = decode(payload);
	if (!m.ok())
		return checkRejected(m.error());
	check(*m);
	std::vector<uint8_t> again = encode(*m);
	FUZZ_CHECK(sameBytes(again, payload));
	auto m2 = decode(std::span<const uint8_t>(again));
	FUZZ_CHECK(m2.ok() && sameBytes(encode(*m2), again));
}

void getChunk(std::span<const uint8_t> payload, const ChunkGeometry &g)
{
	uint32_t count = g.chunkCount();
	fixedMessage(
		payload, [&](std::span<const uint8_t> p) { return decodeGetChunk(p, count); },
		[&](const GetChunkMsg &m) { FUZZ_CHECK(m.chunkIndex < count); });
}

void getRange(std::span<const uint8_t> payload, const ChunkGeometry &g)
{
	uint32_t count = g.chunkCount();
	fixedMessage(
		payload, [&](std::span<const uint8_t> p) { return decodeGetRange(p, count); },
		[&](const GetRangeMsg &m) {
			FUZZ_CHECK(m.count >= 1 && m.count <= kMaxRangeChunks);
			FUZZ_CHECK(uint64_t(m.firstChunk) + m.count <= count);
		});
}

void getPages(std::span<const uint8_t> payload, const ChunkGeometry &g)
{
	fixedMessage(
		payload, [&](std::span<const uint8_t> p) { return decodeGetPages(p, g); },
		[&](const GetPagesMsg &m) {
			auto pages = pagesInMask(g, m.chunkIndex, m.pageMask);
			FUZZ_CHECK(pages.ok() && *pages >= 1 && *pages <= 64);
			FUZZ_CHECK(uint64_t(*pages) * kWirePageSize <= g.chunkLength(m.chunkIndex));
		});
}

// DirtyList and Finalized (a timestamp, then the same list): the list is valid, re-encodes to
// the same bytes and decodes again to the same list; `sameRest` compares the rest.
template<typename Decode, typename SameRest>
void indexListMessage(std::span<const uint8_t> payload, uint32_t count, Decode decode, SameRest sameRest)
{
	auto m = decode(payload, count);
	if (!m.ok())
		return checkRejected(m.error());
	checkIndexList(m->chunks, m->pageMasks, count);
	std::vector<uint8_t> again = encode(*m);
	FUZZ_CHECK(sameBytes(again, payload));
	auto m2 = decode(again, count);
	FUZZ_CHECK(m2.ok() && sameRest(*m2, *m) && m2->chunks == m->chunks && m2->pageMasks == m->pageMasks);
}

void dirtyList(std::span<const uint8_t> payload, const ChunkGeometry &g)
{
	indexListMessage(payload, g.chunkCount(), decodeDirtyList,
			 [](const DirtyListMsg &, const DirtyListMsg &) { return true; });
}

void finalized(std::span<const uint8_t> payload, const ChunkGeometry &g)
{
	indexListMessage(payload, g.chunkCount(), decodeFinalized, [](const FinalizedMsg &a, const FinalizedMsg &b) {
		return a.suspendedAtUnixNs == b.suspendedAtUnixNs;
	});
}

void errorFrame(std::span<const uint8_t> payload)
{
	auto m = decodeError(payload);
	if (!m.ok())
		return checkRejected(m.error());
	FUZZ_CHECK(m->message.size() <= kMaxErrorMessageLen);
	std::vector<uint8_t> again = encode(*m);
	FUZZ_CHECK(sameBytes(again, payload));
	auto m2 = decodeError(again);
	FUZZ_CHECK(m2.ok() && m2->errnoValue == m->errnoValue && m2->message == m->message);
	// The peer's text reaches our logs: printable, and a plausible errno.
	Error e = peerError(*m);
	FUZZ_CHECK(e.code() > 0 && e.code() < 4096);
	for (char c : e.message())
		FUZZ_CHECK(static_cast<unsigned char>(c) >= 0x20 && c != 0x7f);
}

// TrackStarted: valid runs ascend within the region, and re-encode to the same bytes.
void trackStarted(std::span<const uint8_t> payload, const ChunkGeometry &g)
{
	auto m = decodeTrackStarted(payload, g.chunkCount());
	if (!m.ok())
		return checkRejected(m.error());
	uint64_t end = 0;
	for (const ChunkRun &r : m->zeroRuns) {
		FUZZ_CHECK(r.count >= 1 && uint64_t(r.first) + r.count <= g.chunkCount());
		FUZZ_CHECK(end == 0 || r.first > end);
		end = uint64_t(r.first) + r.count;
	}
	FUZZ_CHECK(sameBytes(encode(*m), payload));
}

// Finalize: an optional flags word; four zero bytes are its one non-canonical form (encode()
// omits a zero tail).
void finalize(std::span<const uint8_t> payload)
{
	auto m = decodeFinalize(payload);
	if (!m.ok())
		return checkRejected(m.error());
	std::vector<uint8_t> again = encode(*m);
	FUZZ_CHECK(sameBytes(again, payload) || (m->flags == 0 && payload.size() == 4));
	auto m2 = decodeFinalize(again);
	FUZZ_CHECK(m2.ok() && m2->flags == m->flags);
}

void ping(std::span<const uint8_t> payload)
{
	fixedMessage(
		payload, [](std::span<const uint8_t> p) { return decodePing(p); }, [](const PingMsg &) {});
}

// Chunk and ChunkZero: the prefix names a chunk whose bytes (if any) follow.
void chunk(const FrameHeader &h, std::span<const uint8_t> prefix, const ChunkGeometry &g)
{
	auto index = decodeChunkPrefix(h, prefix, g);
	if (!index.ok())
		return checkRejected(index.error());
	FUZZ_CHECK(*index < g.chunkCount());
	if (h.type == MsgType::Chunk)
		FUZZ_CHECK(h.payloadLen == kChunkPrefixSize + g.chunkLength(*index) &&
			   g.chunkLength(*index) > 0);
	else
		FUZZ_CHECK(h.payloadLen == kChunkPrefixSize);
}

void chunkZstd(const FrameHeader &h, std::span<const uint8_t> payload, bool complete,
	       const ChunkGeometry &g)
{
	auto index = decodeChunkZstdPrefix(h, payload.first(std::min(payload.size(), kChunkPrefixSize)), g);
	if (!index.ok())
		return checkRejected(index.error());
	uint32_t len = g.chunkLength(*index);
	FUZZ_CHECK(*index < g.chunkCount());
	FUZZ_CHECK(h.payloadLen > kChunkPrefixSize && h.payloadLen < kChunkPrefixSize + uint64_t(len));
	if (!complete || len > kMaxDecompressedChunk)
		return;
	// As a leecher does: straight into the chunk's place, which must be filled exactly.
	static ChunkDecompressor decompressor;
	std::vector<uint8_t> dst(len);
	auto st = decompressor.decompress(payload.subspan(kChunkPrefixSize), dst);
	if (!st.ok())
		FUZZ_CHECK(st.error().code() == EPROTO);
}

// The daemon link's messages: whatever decodes re-encodes to the same bytes, and every name
// that reaches a path is a safe path component.
template <typename Msg>
void daemonMessage(std::span<const uint8_t> payload, Result<Msg> (*decode)(std::span<const uint8_t>))
{
	auto m = decode(payload);
	if (!m.ok())
		return checkRejected(m.error());
	FUZZ_CHECK(sameBytes(encode(*m), payload));
	if constexpr (requires { m->domain; })
		FUZZ_CHECK(checkPathName("domain", m->domain, kMaxDomainNameLen).ok());
	else
		FUZZ_CHECK(checkPathName("daemon", m->name, kMaxDaemonNameLen).ok());
}

void pages(const FrameHeader &h, std::span<const uint8_t> prefix, const ChunkGeometry &g)
{
	auto m = decodePagesPrefix(h, prefix, g);
	if (!m.ok())
		return checkRejected(m.error());
	auto n = pagesInMask(g, m->chunkIndex, m->pageMask);
	FUZZ_CHECK(n.ok() && h.payloadLen == kPagesPrefixSize + uint64_t(*n) * kWirePageSize);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	std::span<const uint8_t> in(data, size);
	ChunkGeometry g = kDefaultGeometry;
	for (size_t frames = 0; frames < kMaxFrames; frames++) {
		const uint32_t maxPayload = maxPayloadFor(g.chunkSize);
		auto h = decodeHeader(in, maxPayload);
		if (!h.ok()) {
			checkRejected(h.error());
			break;
		}
		uint8_t again[kHeaderSize];
		encodeHeader(*h, again);
		FUZZ_CHECK(sameBytes(again, in.first(kHeaderSize)));
		FUZZ_CHECK(h->payloadLen <= maxPayload && h->reserved == 0 &&
			   isKnownMsgType(uint16_t(h->type)));
		in = in.subspan(kHeaderSize);
		// A stream that ends inside a payload: a receiver has read the prefix of a chunk
		// frame by then (and decoded it), but never a whole message.
		const bool complete = in.size() >= h->payloadLen;
		std::span<const uint8_t> payload = in.first(std::min<size_t>(in.size(), h->payloadLen));
		in = in.subspan(payload.size());

		switch (h->type) {
		case MsgType::Chunk:
		case MsgType::ChunkZero:
			if (payload.size() >= kChunkPrefixSize)
				chunk(*h, payload.first(kChunkPrefixSize), g);
			continue;
		case MsgType::ChunkZstd:
			if (payload.size() >= kChunkPrefixSize)
				chunkZstd(*h, payload, complete, g);
			continue;
		case MsgType::Pages:
			if (payload.size() >= kPagesPrefixSize)
				pages(*h, payload.first(kPagesPrefixSize), g);
			continue;
		default:
			break;
		}
		if (!complete)
			break;
		switch (h->type) {
		case MsgType::Hello: hello(payload); break;
		case MsgType::HelloReply: helloReply(payload, g); break;
		case MsgType::GetChunk: getChunk(payload, g); break;
		case MsgType::GetRange: getRange(payload, g); break;
		case MsgType::GetPages: getPages(payload, g); break;
		case MsgType::DirtyList: dirtyList(payload, g); break;
		case MsgType::Finalize: finalize(payload); break;
		case MsgType::TrackStarted: trackStarted(payload, g); break;
		case MsgType::Finalized: finalized(payload, g); break;
		case MsgType::Error: errorFrame(payload); break;
		case MsgType::Ping:
		case MsgType::Pong: ping(payload); break;
		case MsgType::TrackStart:
		case MsgType::GetDirty:
		case MsgType::Done:
		case MsgType::DoneAck:
		case MsgType::SwitchOver:
		case MsgType::SwitchOverAck:
		case MsgType::RelayReady:
		case MsgType::RelayEnd:
			FUZZ_CHECK(payload.empty());
			break;
		case MsgType::PeerHello: daemonMessage(payload, decodePeerHello); break;
		case MsgType::PeerHelloReply: daemonMessage(payload, decodePeerHelloReply); break;
		case MsgType::RelayOpen:
		case MsgType::FerryOffer:
		case MsgType::FerryDecline: daemonMessage(payload, decodeRelayOpen); break;
		case MsgType::FerryAccept: {
			auto m = decodeFerryAccept(payload);
			if (!m.ok())
				checkRejected(m.error());
			else
				FUZZ_CHECK(m->port != 0 && sameBytes(encode(*m), payload));
			break;
		}
		case MsgType::RelayData:
			FUZZ_CHECK(!payload.empty() && payload.size() <= kMaxRelayData);
			break;
		case MsgType::Chunk:
		case MsgType::ChunkZero:
		case MsgType::ChunkZstd:
		case MsgType::Pages:
			break;
		}
	}
	return 0;
}
