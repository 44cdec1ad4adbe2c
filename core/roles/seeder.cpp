// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/roles/seeder.h"

#include <poll.h>
#include <optional>
#include <random>
#include <sys/uio.h>
#include <thread>
#include <time.h>

#include "ferry/base/log.h"
#include "ferry/wire/protocol.h"
#include "base/bytes.h"
#include "ferry/base/clock.h"

namespace ferry {

const char *seederStateName(SeederState s)
{
	switch (s) {
	case SeederState::Serving: return "serving";
	case SeederState::Tracking: return "tracking";
	case SeederState::Suspended: return "suspended";
	case SeederState::SwitchedOver: return "switched-over";
	case SeederState::Released: return "released";
	case SeederState::RolledBack: return "rolled-back";
	case SeederState::Failed: return "failed";
	}
	return "?";
}

Seeder::Seeder(const uint8_t *data, uint64_t size, std::unique_ptr<DirtyTracker> tracker,
	       SeederHooks hooks, SeederOptions opts)
	: data_(data), size_(size),
	  chunkCount_(static_cast<uint32_t>((size + opts.chunkSize - 1) / opts.chunkSize)),
	  tracker_(std::move(tracker)), hooks_(std::move(hooks)), opts_(std::move(opts)),
	  pending_(chunkCount_, 0)
{
	std::random_device rd;
	sessionId_ = (uint64_t(rd()) << 32 | rd()) | 1; // never 0: 0 means "new session"
}

Seeder::~Seeder() = default;

// Legal moves of the source role; anything else is a bug or a confused peer.
Status Seeder::transition(SeederState to)
{
	SeederState from = state_.load();
	bool legal = false;
	switch (to) {
	case SeederState::Tracking: legal = from == SeederState::Serving; break;
	case SeederState::Suspended: legal = from == SeederState::Tracking; break;
	case SeederState::SwitchedOver: legal = from == SeederState::Suspended; break;
	case SeederState::Released:
		legal = from == SeederState::SwitchedOver;
		break;
	case SeederState::RolledBack: legal = from == SeederState::Suspended; break;
	case SeederState::Failed: legal = true; break;
	case SeederState::Serving: legal = false; break;
	}
	if (!legal)
		return Error::format(EPROTO, "illegal transition {} -> {}", seederStateName(from),
				     seederStateName(to));
	state_ = to;
	FERRY_LOG(Info, opts_.name, "state {} -> {}", seederStateName(from), seederStateName(to));
	return {};
}

JsonValue SeederStats::toJson() const
{
	JsonValue j = JsonValue::object();
	j.set("chunks_served", chunksServed)
		.set("zero_chunks_served", zeroChunksServed)
		.set("pages_served", pagesServed)
		.set("bytes_sent", bytesSent)
		.set("dirty_reports", dirtyReports)
		.set("dirty_chunks_reported", dirtyChunksReported)
		.set("final_dirty_chunks", finalDirtyChunks)
		.set("compressed_chunks", compressedChunks)
		.set("compressed_raw_bytes", compressedRawBytes)
		.set("compressed_wire_bytes", compressedWireBytes);
	return j;
}

SeederStats Seeder::stats() const
{
	std::lock_guard g(lock_);
	return stats_;
}

void Seeder::stop() { stop_ = true; }

// Collects the tracker's dirty pages into pending_ and hands the whole pending set out.
// The set handed out is remembered (lastSent_) until the next request: if the reply is lost
// with the connection, a resumed session gets it again (dirty state is never dropped).
Status Seeder::takeDirty(bool final, DirtyListMsg &out)
{
	std::vector<uint32_t> fresh;
	std::vector<uint64_t> masks;
	FERRY_TRY_CTX(tracker_->collectPages(fresh, masks), "collect dirty chunks");
	std::lock_guard g(lock_);
	for (size_t i = 0; i < fresh.size(); i++)
		if (fresh[i] < chunkCount_)
			pending_[fresh[i]] |= masks[i];
	out.chunks.clear();
	out.pageMasks.clear();
	for (uint32_t i = 0; i < chunkCount_; i++) {
		if (pending_[i]) {
			out.chunks.push_back(i);
			out.pageMasks.push_back(pending_[i]);
			pending_[i] = 0;
		}
	}
	lastSent_ = out;
	stats_.dirtyReports++;
	stats_.dirtyChunksReported += out.chunks.size();
	if (final)
		stats_.finalDirtyChunks = out.chunks.size();
	return {};
}

Status Seeder::serveChunk(Connection &conn, uint64_t reqId, uint32_t index)
{
	return serveRange(conn, nullptr, reqId, index, 1); // same frame, zero-marker included
}

struct Seeder::ConnState {
	std::optional<ChunkCompressor> compressor; // set when this connection negotiated zstd
	std::vector<uint8_t> arena;                 // compressed frames of the batch being built
	std::vector<uint8_t> snapshot;              // the chunk being compressed, copied out first
};

namespace {

// Compressed frames are gathered into one write per batch; a batch is flushed when its
// compressed bytes would outgrow this, so a 1024-chunk range never needs 64 MiB of buffer.
constexpr size_t kCompressBatchBytes = 4u << 20;

} // namespace

// A run of chunks in one gathered write: per chunk a Chunk, ChunkZstd or ChunkZero frame with
// the request's id, in order. One syscall for many small frames is what makes a mostly-zero
// region (a freshly booted guest) cheap to pull.
Status Seeder::serveRange(Connection &conn, ConnState *cs, uint64_t reqId, uint32_t first, uint32_t count)
{
	// Where a frame's body is: guest memory (raw chunk), the arena (compressed) or nowhere.
	struct Body {
		const uint8_t *raw = nullptr;
		size_t arenaOff = 0, len = 0;
	};
	ChunkCompressor *comp = cs && cs->compressor ? &*cs->compressor : nullptr;
	const size_t bound = comp ? ChunkCompressor::bound(opts_.chunkSize) : 0;
	if (comp && cs->arena.size() < kCompressBatchBytes + bound)
		cs->arena.resize(kCompressBatchBytes + bound);

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
				iov.push_back({cs->arena.data() + b.arenaOff, b.len});
		}
		batchStart = end;
		arenaUsed = 0;
		return iov.empty() ? Status() : conn.sendFrames(iov);
	};
	for (uint32_t k = 0; k < count; k++) {
		uint32_t index = first + k;
		uint64_t off = uint64_t(index) * opts_.chunkSize;
		size_t len = std::min<uint64_t>(opts_.chunkSize, size_ - off);
		const uint8_t *p = data_ + off;
		MsgType type;
		if (opts_.sendZeroChunksAsMarkers && isZero(p, len)) {
			type = MsgType::ChunkZero;
			add.zeroChunksServed++;
		} else {
			std::optional<size_t> z;
			if (comp) {
				if (arenaUsed + bound > cs->arena.size())
					FERRY_TRY(flush(k));
				// The application may be writing this chunk right now. zstd must see
				// one consistent input (its checksum covers what it read, and a match
				// finder reading changing bytes could emit a frame that decodes to
				// neither version): compress a copy. A torn copy is fine: the write
				// is in the dirty set and the chunk is fetched again.
				cs->snapshot.assign(p, p + len);
				z = comp->compress(cs->snapshot, {cs->arena.data() + arenaUsed, bound});
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
	std::lock_guard g(lock_);
	stats_.chunksServed += add.chunksServed;
	stats_.zeroChunksServed += add.zeroChunksServed;
	stats_.bytesSent += add.bytesSent;
	stats_.compressedChunks += add.compressedChunks;
	stats_.compressedRawBytes += add.compressedRawBytes;
	stats_.compressedWireBytes += add.compressedWireBytes;
	return {};
}

// Only the pages a destination asks for (it holds the rest of the chunk already): contiguous
// pages go out as one piece of the frame.
Status Seeder::servePages(Connection &conn, uint64_t reqId, uint32_t index, uint64_t mask)
{
	const uint8_t *chunk = data_ + uint64_t(index) * opts_.chunkSize;
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
	std::lock_guard g(lock_);
	stats_.pagesServed += bytes / kWirePageSize;
	stats_.bytesSent += bytes;
	return {};
}

Status Seeder::handleFrame(Connection &conn, ConnState &cs, const FrameHeader &h)
{
	FERRY_ASSIGN(std::vector<uint8_t> payload, conn.recvPayload(h));
	std::span<const uint8_t> pl(payload);
	SeederState st = state_.load();

	switch (h.type) {
	case MsgType::Hello: {
		FERRY_ASSIGN(HelloMsg hello, decodeHello(pl));
		if (hello.minVersion > kProtocolVersion || hello.maxVersion < kProtocolVersion) {
			auto msg = fmt::format("unsupported protocol version {}..{}; this side speaks {}..{}",
					       hello.minVersion, hello.maxVersion, kProtocolVersion,
					       kProtocolVersion);
			(void)conn.send(MsgType::Error, h.requestId, encode(ErrorMsg{EPROTONOSUPPORT, msg}));
			return Error(EPROTONOSUPPORT, msg);
		}
		if (hello.resumeSessionId == sessionId_) {
			// A resumed session: whatever dirty list may have been lost with the old
			// connection is owed again.
			std::lock_guard g(lock_);
			for (size_t i = 0; i < lastSent_.chunks.size(); i++)
				pending_[lastSent_.chunks[i]] |= lastSent_.pageMasks[i];
			lastSent_ = {};
			FERRY_LOG(Debug, opts_.name, "session joined by {}", hello.clientName);
		}
		HelloReplyMsg reply{kProtocolVersion, sessionId_, size_, opts_.chunkSize, 0};
		if ((hello.features & HelloMsg::kFeatureZstd) && opts_.compression.enabled()) {
			if (!cs.compressor)
				cs.compressor.emplace(opts_.compression.level);
			reply.flags |= HelloReplyMsg::kFlagZstd;
		}
		if (st != SeederState::Serving)
			reply.flags |= HelloReplyMsg::kFlagTracking;
		if (st == SeederState::Suspended || st == SeederState::SwitchedOver)
			reply.flags |= HelloReplyMsg::kFlagFinalized;
		return conn.send(MsgType::HelloReply, h.requestId, encode(reply));
	}
	case MsgType::TrackStart:
		if (st == SeederState::Serving) {
			FERRY_TRY_CTX(tracker_->start(), "start dirty tracking");
			FERRY_TRY(transition(SeederState::Tracking));
		}
		return conn.send(MsgType::TrackStarted, h.requestId, {});
	case MsgType::GetChunk: {
		if (st == SeederState::Serving)
			return Error(EPROTO, "GetChunk before TrackStart: data could go stale unnoticed");
		FERRY_ASSIGN(GetChunkMsg m, decodeGetChunk(pl, chunkCount_));
		return serveChunk(conn, h.requestId, m.chunkIndex);
	}
	case MsgType::GetRange: {
		if (st == SeederState::Serving)
			return Error(EPROTO, "GetRange before TrackStart");
		FERRY_ASSIGN(GetRangeMsg m, decodeGetRange(pl, chunkCount_));
		return serveRange(conn, &cs, h.requestId, m.firstChunk, m.count);
	}
	case MsgType::GetPages: {
		if (st == SeederState::Serving)
			return Error(EPROTO, "GetPages before TrackStart");
		FERRY_ASSIGN(GetPagesMsg m, decodeGetPages(pl, ChunkGeometry{size_, opts_.chunkSize}));
		return servePages(conn, h.requestId, m.chunkIndex, m.pageMask);
	}
	case MsgType::GetDirty: {
		if (st != SeederState::Tracking)
			return conn.send(MsgType::DirtyList, h.requestId, encode(DirtyListMsg{}));
		DirtyListMsg dirty;
		FERRY_TRY(takeDirty(false, dirty));
		return conn.send(MsgType::DirtyList, h.requestId, encode(dirty));
	}
	case MsgType::Finalize: {
		if (st == SeederState::Serving)
			return Error(EPROTO, "Finalize before TrackStart");
		if (st == SeederState::Tracking) {
			FERRY_TRY_CTX(hooks_.suspend ? hooks_.suspend() : Status(), "suspend the application");
			suspendedAtNs_ = realtimeNs();
			// The application is quiescent: this collect is the complete remainder.
			DirtyListMsg dirty;
			Status st2 = takeDirty(true, dirty);
			if (!st2.ok()) {
				// Cannot hand over a trustworthy dirty set: undo the suspend.
				if (hooks_.resume)
					(void)hooks_.resume();
				return st2.error().context("final dirty scan (source resumed)");
			}
			std::lock_guard g(lock_);
			final_ = std::move(dirty);
			FERRY_TRY(transition(SeederState::Suspended));
		}
		FinalizedMsg reply;
		{
			std::lock_guard g(lock_);
			reply.suspendedAtUnixNs = suspendedAtNs_;
			// Idempotent: a repeated Finalize (after a reconnect) gets the same list plus
			// anything owed from a lost DirtyList.
			std::vector<uint64_t> set(pending_);
			for (size_t i = 0; i < final_.chunks.size(); i++)
				set[final_.chunks[i]] |= final_.pageMasks[i];
			for (uint32_t i = 0; i < chunkCount_; i++) {
				if (set[i]) {
					reply.chunks.push_back(i);
					reply.pageMasks.push_back(set[i]);
					pending_[i] = 0;
				}
			}
			final_.chunks = reply.chunks;
			final_.pageMasks = reply.pageMasks;
		}
		return conn.send(MsgType::Finalized, h.requestId, encode(reply));
	}
	case MsgType::SwitchOver:
		if (st != SeederState::Suspended && st != SeederState::SwitchedOver)
			return Error::format(EPROTO, "SwitchOver in state {}", seederStateName(st));
		if (st == SeederState::Suspended) {
			if (hooks_.switchOver)
				FERRY_TRY_CTX(hooks_.switchOver(), "switch-over hook");
			FERRY_TRY(transition(SeederState::SwitchedOver));
		}
		return conn.send(MsgType::SwitchOverAck, h.requestId, {});
	case MsgType::Done:
		if (st != SeederState::SwitchedOver && st != SeederState::Released)
			return Error::format(EPROTO, "Done in state {}", seederStateName(st));
		if (st != SeederState::Released) {
			FERRY_TRY(transition(SeederState::Released));
			if (hooks_.release)
				hooks_.release();
		}
		return conn.send(MsgType::DoneAck, h.requestId, {});
	case MsgType::Ping:
		return conn.send(MsgType::Pong, h.requestId, pl);
	case MsgType::Error:
		return peerError(pl);
	default:
		return Error::format(EPROTO, "unexpected message {} from leecher", msgTypeName(h.type));
	}
}

Status Seeder::handleConnection(Connection conn)
{
	uint32_t maxPayload = 64 * 1024;
	ConnState cs;
	for (;;) {
		if (stop_)
			return Error(ECANCELED, "stopped");
		auto h = conn.recvHeader(maxPayload, 200);
		if (!h.ok()) {
			if (h.error().code() == ETIMEDOUT)
				continue;
			return h.error();
		}
		Status st = handleFrame(conn, cs, *h);
		if (!st.ok()) {
			// Tell the peer why before closing; it may already be gone.
			(void)conn.send(MsgType::Error, h->requestId,
					encode(ErrorMsg{st.error().code(), st.error().message()}));
			return st;
		}
	}
}

Status Seeder::serve(Listener &listener)
{
	std::vector<std::thread> threads;
	auto joinAll = [&] {
		for (auto &t : threads)
			t.join();
		threads.clear();
	};
	lastDisconnectNs_ = monotonicNs();
	Status result;
	for (;;) {
		SeederState st = state_.load();
		if (st == SeederState::Released && connections_ == 0)
			break;
		if (stop_) {
			result = Error(ECANCELED, "stopped");
			break;
		}
		if (st == SeederState::Suspended && connections_ == 0 &&
		    monotonicNs() - lastDisconnectNs_ > int64_t(opts_.rollbackTimeout.count()) * 1000000) {
			// The destination never confirmed the switch-over: the source is the only
			// copy that ran, so it carries on.
			if (hooks_.resume) {
				Status r = hooks_.resume();
				if (!r.ok()) {
					result = r.error().context("rollback: resume the source");
					break;
				}
			}
			(void)transition(SeederState::RolledBack);
			result = Error(ECONNABORTED,
				       "destination lost before switch-over; source resumed untouched");
			break;
		}
		auto conn = listener.accept(100);
		if (!conn.ok()) {
			if (conn.error().code() == ETIMEDOUT || conn.error().code() == EAGAIN)
				continue;
			result = conn.error().context("accept");
			break;
		}
		connections_++;
		threads.emplace_back([this, c = std::move(conn).value()]() mutable {
			Status s = handleConnection(std::move(c));
			// A leecher closing its connection is routine (end of a verify pass, a
			// reconnect); anything else is worth a warning.
			if (!s.ok() && state_.load() != SeederState::Released) {
				if (s.error().code() == ECONNRESET || s.error().code() == EPIPE)
					FERRY_LOG(Debug, opts_.name, "connection ended: {}", s.error().message());
				else
					FERRY_LOG(Warn, opts_.name, "connection ended: {}", s.error().message());
			}
			lastDisconnectNs_ = monotonicNs();
			connections_--;
		});
	}
	stop_ = true;
	joinAll();
	if (state_.load() == SeederState::Suspended) {
		// Stopped after finalize but before the switch-over: the source is the only copy
		// that ran, so it carries on.
		Status r = hooks_.resume ? hooks_.resume() : Status();
		(void)transition(SeederState::RolledBack);
		if (!r.ok())
			return r.error().context("rollback: resume the source");
		if (result.ok())
			result = Error(ECONNABORTED, "stopped before switch-over; source resumed untouched");
	}
	return result;
}

} // namespace ferry
