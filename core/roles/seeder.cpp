// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/roles/seeder.h"

#include <poll.h>
#include <optional>
#include <random>
#include <sys/uio.h>
#include <system_error>
#include <thread>
#include <time.h>

#include "ferry/base/log.h"
#include "ferry/wire/protocol.h"
#include "roles/seeder/chunk_server.h"
#include "ferry/base/clock.h"

namespace ferry {

namespace {

constexpr int kPollSliceMs = 200;     // how often a blocked connection looks at its timers
constexpr int kAcceptPollMs = 100;    // how often serve() looks at the migration's state
constexpr int kRefuseSendTimeoutMs = 1000;
constexpr int64_t kPostCopyWarnIntervalNs = 10'000'000'000;
constexpr uint32_t kMaxRequestPayload = 64 * 1024;
constexpr size_t kMaxZeroRuns = 1u << 20; // 8 MiB of TrackStarted at most

bool isControlRequest(MsgType t)
{
	switch (t) {
	case MsgType::TrackStart:
	case MsgType::GetDirty:
	case MsgType::Finalize:
	case MsgType::SwitchOver:
	case MsgType::Done:
		return true;
	default:
		return false;
	}
}
// How long a fault channel spins for its next request while the source is suspended.
constexpr auto kFaultChannelSpin = std::chrono::microseconds(500);

int64_t toNs(std::chrono::milliseconds d) { return int64_t(d.count()) * 1000000; }

uint64_t newSessionId()
{
	std::random_device rd;
	return (uint64_t(rd()) << 32 | rd()) | 1; // never 0: 0 means "new session"
}

} // namespace

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
	  sessionId_(newSessionId()), pending_(chunkCount_, 0)
{
}

Seeder::~Seeder() = default;

// Legal moves of the source role; anything else is a bug or a confused peer.
bool Seeder::legalMove(SeederState from, SeederState to)
{
	switch (to) {
	case SeederState::Tracking: return from == SeederState::Serving;
	case SeederState::Suspended: return from == SeederState::Tracking;
	case SeederState::SwitchedOver: return from == SeederState::Suspended;
	case SeederState::Released: return from == SeederState::SwitchedOver;
	// From Tracking: the leecher vanished during pre-copy and tracking was abandoned; the
	// source never stopped, so it is "rolled back" as it stands.
	case SeederState::RolledBack: return from == SeederState::Suspended || from == SeederState::Tracking;
	case SeederState::Failed: return true;
	case SeederState::Serving: return false;
	}
	return false;
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

struct Seeder::ConnState {
	bool inSession = false; // said a Hello that admitHello() accepted
	ChunkServer chunks;
	bool faultChannel = false; // its Hello asked for kFeatureFaultChannel
	bool zeroRuns = false;     // its Hello asked for kFeatureZeroRuns
};

void Seeder::count(const SeederStats &sent)
{
	std::lock_guard g(lock_);
	stats_.chunksServed += sent.chunksServed;
	stats_.zeroChunksServed += sent.zeroChunksServed;
	stats_.pagesServed += sent.pagesServed;
	stats_.bytesSent += sent.bytesSent;
	stats_.compressedChunks += sent.compressedChunks;
	stats_.compressedRawBytes += sent.compressedRawBytes;
	stats_.compressedWireBytes += sent.compressedWireBytes;
}

// Called for every Hello, before anything else of the connection is served. The session id
// is the only credential for now; an authenticated transport adds its peer check here.
Status Seeder::admitHello(const Worker &w, ConnState &cs, const HelloMsg &hello)
{
	std::lock_guard g(lock_);
	if (cs.inSession)
		return {};
	if (hello.resumeSessionId == 0) {
		if (owned_) {
			// Before TrackStart nothing of a session is worth protecting: an owner that
			// left then is replaced, under a new id so its old id no longer gets in.
			if (state_.get() != SeederState::Serving || sessionConnections_ > 0)
				return Error::format(EBUSY, "this source is already being migrated by {} from {}",
						     ownerName_, ownerPeer_);
			FERRY_LOG(Info, opts_.name, "session of {} from {} abandoned before tracking; taken over by {} from {}",
				  ownerName_, ownerPeer_, hello.clientName, w.peer);
			sessionId_ = newSessionId();
		}
		owned_ = true;
		ownerName_ = hello.clientName;
		ownerPeer_ = w.peer;
		FERRY_LOG(Info, opts_.name, "session {:016x} opened by {} from {}", sessionId_.load(), hello.clientName,
			  w.peer);
	} else if (hello.resumeSessionId != sessionId_.load()) {
		return Error::format(ESTALE, "unknown session {:016x} (this seeder has restarted or serves another)",
				     hello.resumeSessionId);
	} else {
		// A resumed session: whatever dirty list may have been lost with the old
		// connection is owed again.
		for (size_t i = 0; i < lastSent_.chunks.size(); i++)
			pending_[lastSent_.chunks[i]] |= lastSent_.pageMasks[i];
		lastSent_ = {};
		FERRY_LOG(Debug, opts_.name, "session joined by {} from {}", hello.clientName, w.peer);
	}
	cs.inSession = true;
	sessionConnections_++;
	return {};
}

void Seeder::leaveSession(ConnState &cs)
{
	if (!cs.inSession)
		return;
	std::lock_guard g(lock_);
	cs.inSession = false;
	sessionConnections_--;
	sessionLastSeenNs_ = monotonicNs();
}

// The switch-over point (SwitchOver, or Finalize with kFlagSwitchOver): the application state
// is handed over and the source will not be resumed any more. Idempotent.
Status Seeder::switchOver()
{
	const SeederState st = state_.get();
	if (st == SeederState::SwitchedOver)
		return {};
	if (st != SeederState::Suspended)
		return Error::format(EPROTO, "switch-over in state {}", seederStateName(st));
	if (hooks_.switchOver)
		FERRY_TRY_CTX(hooks_.switchOver(), "switch-over hook");
	return transition(SeederState::SwitchedOver);
}

Status Seeder::handleFrame(Worker &w, ConnState &cs, const FrameHeader &h)
{
	Connection &conn = w.conn;
	if (h.type != MsgType::Hello && !cs.inSession)
		return Error::format(EACCES, "{} before Hello: a connection must join the session first",
				     msgTypeName(h.type));
	FERRY_ASSIGN(std::vector<uint8_t> payload, conn.recvPayload(h));
	std::span<const uint8_t> pl(payload);
	// Control requests one at a time, whatever connection they come on: a leecher that
	// reconnects repeats its request on a new connection, maybe while the first is still
	// being handled (two final scans at once would hand over half a dirty set).
	std::unique_lock<std::mutex> control;
	if (isControlRequest(h.type))
		control = std::unique_lock(controlLock_);
	SeederState st = state_.get();

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
		FERRY_TRY(admitHello(w, cs, hello));
		HelloReplyMsg reply{kProtocolVersion, sessionId_.load(), size_, opts_.chunkSize,
				    HelloReplyMsg::kFlagSwitchOverAtFinalize};
		if ((hello.features & HelloMsg::kFeatureZstd) && opts_.compression.enabled()) {
			cs.chunks.enableCompression(opts_.compression);
			reply.flags |= HelloReplyMsg::kFlagZstd;
			if (opts_.compression.adaptive)
				reply.flags |= HelloReplyMsg::kFlagAdaptiveZstd;
		}
		cs.faultChannel = (hello.features & HelloMsg::kFeatureFaultChannel) != 0;
		cs.zeroRuns = (hello.features & HelloMsg::kFeatureZeroRuns) != 0;
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
		// Scanned after tracking started (a repeat scans again): a write to a chunk
		// reported zero here is tracked like any other.
		if (!cs.zeroRuns)
			return conn.send(MsgType::TrackStarted, h.requestId, {});
		return conn.send(MsgType::TrackStarted, h.requestId,
				 encode(TrackStartedMsg{zeroChunkRuns(opts_.regionFd, size_, opts_.chunkSize, kMaxZeroRuns)}));
	case MsgType::GetChunk: {
		if (st == SeederState::Serving)
			return Error(EPROTO, "GetChunk before TrackStart: data could go stale unnoticed");
		FERRY_ASSIGN(GetChunkMsg m, decodeGetChunk(pl, chunkCount_));
		FERRY_ASSIGN(SeederStats sent, cs.chunks.range(conn, h.requestId, m.chunkIndex, 1, false));
		count(sent);
		return {};
	}
	case MsgType::GetRange: {
		if (st == SeederState::Serving)
			return Error(EPROTO, "GetRange before TrackStart");
		FERRY_ASSIGN(GetRangeMsg m, decodeGetRange(pl, chunkCount_));
		FERRY_ASSIGN(SeederStats sent, cs.chunks.range(conn, h.requestId, m.firstChunk, m.count, true));
		count(sent);
		return {};
	}
	case MsgType::GetPages: {
		if (st == SeederState::Serving)
			return Error(EPROTO, "GetPages before TrackStart");
		FERRY_ASSIGN(GetPagesMsg m, decodeGetPages(pl, ChunkGeometry{size_, opts_.chunkSize}));
		FERRY_ASSIGN(SeederStats sent, cs.chunks.pages(conn, h.requestId, m.chunkIndex, m.pageMask));
		count(sent);
		return {};
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
		FERRY_ASSIGN(FinalizeMsg m, decodeFinalize(pl));
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
		// One round trip instead of two: the application state leaves now, concurrently
		// with the reply, and the source is committed to the destination from here on.
		if (m.flags & FinalizeMsg::kFlagSwitchOver)
			FERRY_TRY(switchOver());
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
		FERRY_TRY(switchOver());
		return conn.send(MsgType::SwitchOverAck, h.requestId, {});
	case MsgType::Done:
		if (st != SeederState::SwitchedOver && st != SeederState::Released)
			return Error::format(EPROTO, "Done in state {}", seederStateName(st));
		if (st != SeederState::Released) {
			FERRY_TRY(transition(SeederState::Released));
			if (hooks_.release)
				hooks_.release();
		}
		{
			Status sent = conn.send(MsgType::DoneAck, h.requestId, {});
			doneAcked_ = true; // serve() may now close everything, this connection too
			return sent;
		}
	case MsgType::Ping:
		return conn.send(MsgType::Pong, h.requestId, pl);
	case MsgType::Error:
		return peerError(pl);
	default:
		return Error::format(EPROTO, "unexpected message {} from leecher", msgTypeName(h.type));
	}
}

// Serves one connection until it ends. Two clocks run on it: a frame (or the Hello, counted
// from the connect) must arrive whole within frameTimeout of its first byte, and a
// connection with no frame for idleTimeout is closed. Payload reads and sends are bounded by
// the socket timeout (frameTimeout) instead.
Status Seeder::handleConnection(Worker &w)
{
	Connection &conn = w.conn;
	const int64_t frameNs = toNs(opts_.frameTimeout), idleNs = toNs(opts_.idleTimeout);
	ConnState cs{false, ChunkServer(data_, size_, opts_.chunkSize, opts_.sendZeroChunksAsMarkers, opts_.regionFd)};
	Status result = conn.setIoTimeout(int(opts_.frameTimeout.count()));
	if (result.ok() && opts_.tls) {
		// Before anything of the region is said: a peer without valid credentials learns
		// nothing but the handshake failure.
		result = conn.startTls(*opts_.tls, int(opts_.frameTimeout.count()));
		if (result.ok())
			FERRY_LOG(Debug, opts_.name, "[peer {}] authenticated as {}", w.peer, conn.peerIdentity());
	}
	int64_t lastFrameNs = monotonicNs();
	uint64_t rxAtLastFrame = conn.bytesReceived();
	int64_t frameStartNs = 0; // first sign of the next frame's bytes, 0: none yet
	uint64_t requestId = 0;   // of the frame being handled, for the Error frame
	while (result.ok()) {
		if (stop_) {
			result = Error(ECANCELED, "stopped");
			break;
		}
		// A fault channel's next request is due within microseconds while the source is
		// suspended (its vCPUs idle, a destination vCPU waiting): spin for it then.
		const SeederState now = state_.get();
		conn.setBusyPoll(cs.faultChannel && (now == SeederState::Suspended || now == SeederState::SwitchedOver)
					 ? kFaultChannelSpin
					 : std::chrono::microseconds(0));
		auto h = conn.recvHeader(kMaxRequestPayload, kPollSliceMs);
		if (!h.ok()) {
			if (h.error().code() != ETIMEDOUT) {
				result = h.error();
				break;
			}
			// A header left part-read stays buffered: any new byte means a frame began.
			int64_t now = monotonicNs();
			if (frameStartNs == 0 && conn.bytesReceived() != rxAtLastFrame)
				frameStartNs = now;
			if (!cs.inSession && now - lastFrameNs > frameNs)
				result = Error::format(ETIMEDOUT, "no Hello within {} ms", opts_.frameTimeout.count());
			else if (frameStartNs != 0 && now - frameStartNs > frameNs)
				result = Error::format(ETIMEDOUT, "frame stalled for {} ms", opts_.frameTimeout.count());
			else if (now - lastFrameNs > idleNs)
				result = Error::format(ETIMEDOUT, "idle for {} ms", opts_.idleTimeout.count());
			if (!result.ok())
				break;
			continue;
		}
		requestId = h->requestId;
		result = handleFrame(w, cs, *h);
		lastFrameNs = monotonicNs();
		rxAtLastFrame = conn.bytesReceived();
		frameStartNs = 0;
	}
	leaveSession(cs);
	// Tell the peer why before closing; it may already be gone.
	if (result.error().code() != ECONNRESET && result.error().code() != EPIPE)
		(void)conn.sendError(requestId, result.error());
	return result;
}

void Seeder::startWorker(Connection conn)
{
	auto peer = peerAddress(conn);
	PeerAddress addr = peer.ok() ? *peer : PeerAddress{"unknown", 0};
	auto refuse = [&](const Error &e) {
		FERRY_LOG_RATELIMITED(Warn, opts_.name, "refused connection from {}: {}", addr.str(), e.message());
		// A fresh socket's buffer takes a small frame at once; the timeout is a safeguard.
		(void)conn.setIoTimeout(kRefuseSendTimeoutMs);
		(void)conn.sendError(0, e);
		conn.shutdown();
	};
	reapWorkers();
	int fromPeer = 0;
	for (const Worker &w : workers_)
		fromPeer += w.host == addr.host;
	if (workers_.size() >= size_t(opts_.maxConnections))
		return refuse(Error::format(EMFILE, "too many connections ({} at once)", opts_.maxConnections));
	if (fromPeer >= opts_.maxConnectionsPerPeer)
		return refuse(Error::format(EBUSY, "too many connections from {} ({} at once)", addr.host,
					    opts_.maxConnectionsPerPeer));
	Worker &w = workers_.emplace_back();
	w.conn = std::move(conn);
	w.peer = addr.str();
	w.host = addr.host;
	try {
		w.thread = std::thread([this, &w] {
			Status s = handleConnection(w);
			// A leecher closing its connection is routine (end of a verify pass, a
			// reconnect); anything else is worth a warning, rate-limited: peers trigger it.
			if (!s.ok() && state_.get() != SeederState::Released) {
				if (s.error().code() == ECONNRESET || s.error().code() == EPIPE ||
				    s.error().code() == ECANCELED)
					FERRY_LOG(Debug, opts_.name, "connection from {} ended: {}", w.peer,
						  s.error().message());
				else
					FERRY_LOG_RATELIMITED(Warn, opts_.name, "connection from {} ended: {}", w.peer,
							      s.error().message());
			}
			std::lock_guard g(workersLock_);
			w.finished = true;
			workerFinished_.notify_all();
		});
	} catch (const std::system_error &e) {
		// Out of threads (or memory for one): this connection is refused, the rest goes on.
		conn = std::move(w.conn);
		workers_.pop_back();
		refuse(Error::format(EAGAIN, "cannot start a thread: {}", e.what()));
	}
}

void Seeder::reapWorkers()
{
	for (auto it = workers_.begin(); it != workers_.end();) {
		bool finished;
		{
			std::lock_guard g(workersLock_);
			finished = it->finished;
		}
		if (!finished) {
			++it;
			continue;
		}
		it->thread.join(); // it has set `finished` and touches nothing of ours any more
		it = workers_.erase(it);
	}
}

// Looks after the session's leecher while it has no connection: before the switch-over the
// source can go on alone, after it the source holds the only copy of what was not pulled.
Status Seeder::watchSession()
{
	int connections;
	int64_t lastSeen;
	bool owned;
	{
		std::lock_guard g(lock_);
		connections = sessionConnections_;
		lastSeen = sessionLastSeenNs_;
		owned = owned_;
	}
	const int64_t now = monotonicNs();
	if (!owned || connections > 0) {
		preCopyGoneWarned_ = false;
		postCopyWarnAtNs_ = 0;
		return {};
	}
	const int64_t gone = now - lastSeen;
	switch (state_.get()) {
	case SeederState::Tracking:
		if (gone > toNs(opts_.reconnectTimeout)) {
			leecherGone_ = true;
			return Error::format(ETIMEDOUT, "leecher gone during pre-copy; source untouched (no connection for {} ms)",
					     opts_.reconnectTimeout.count());
		}
		if (!preCopyGoneWarned_ && gone > toNs(opts_.reconnectTimeout) / 3) {
			preCopyGoneWarned_ = true;
			FERRY_LOG(Warn, opts_.name, "leecher {} from {} has had no connection for {} ms during pre-copy; giving up after {} ms",
				  ownerName_, ownerPeer_, gone / 1000000, opts_.reconnectTimeout.count());
		}
		return {};
	case SeederState::Suspended:
		if (gone <= toNs(opts_.rollbackTimeout))
			return {};
		// The destination never confirmed the switch-over: the source is the only copy
		// that ran, so it carries on.
		if (hooks_.resume)
			FERRY_TRY_CTX(hooks_.resume(), "rollback: resume the source");
		(void)transition(SeederState::RolledBack);
		return Error(ECONNABORTED, "destination lost before switch-over; source resumed untouched");
	case SeederState::SwitchedOver:
		if (gone < kPostCopyWarnIntervalNs || now < postCopyWarnAtNs_)
			return {};
		postCopyWarnAtNs_ = now + kPostCopyWarnIntervalNs;
		FERRY_LOG(Warn, opts_.name,
			  "destination gone during post-copy; keeping the paused source ({} bytes of region) for a new leecher with session {:016x}",
			  size_, sessionId_.load());
		return {};
	case SeederState::Serving:
	case SeederState::Released:
	case SeederState::RolledBack:
	case SeederState::Failed:
		return {};
	}
	return {};
}

Status Seeder::serve(Listener &listener)
{
	{
		std::lock_guard g(lock_);
		sessionLastSeenNs_ = monotonicNs();
	}
	Status result;
	for (;;) {
		reapWorkers();
		SeederState st = state_.get();
		// The migration's end ends serve(), whatever other sockets are still open.
		if ((st == SeederState::Released && doneAcked_) || st == SeederState::RolledBack)
			break;
		if (stop_) {
			result = Error(ECANCELED, "stopped");
			break;
		}
		result = watchSession();
		if (!result.ok())
			break;
		auto conn = listener.accept(kAcceptPollMs);
		if (!conn.ok()) {
			if (conn.error().code() == ETIMEDOUT || conn.error().code() == EAGAIN)
				continue;
			result = conn.error().context("accept");
			break;
		}
		startWorker(std::move(conn).value());
	}
	stop_ = true;
	for (Worker &w : workers_)
		w.conn.shutdown(); // wakes a receiver blocked in the socket
	for (Worker &w : workers_)
		w.thread.join();
	workers_.clear();
	if (leecherGone_) {
		// Nothing else uses the tracker now: dropping it ends the write protection, and
		// the application never stopped.
		tracker_.reset();
		(void)transition(SeederState::RolledBack);
	}
	if (state_.get() == SeederState::Suspended) {
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
