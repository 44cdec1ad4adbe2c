// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/roles/leecher.h"

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <poll.h>
#include <sys/eventfd.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>

#include "ferry/base/log.h"
#include "ferry/roles/chunk_map.h"
#include "ferry/sys/fd.h"
#include "ferry/wire/compress.h"
#include "ferry/wire/connection.h"
#include "ferry/wire/protocol.h"
#include "roles/util.h"

namespace ferry {

const char *migrationModeName(MigrationMode m)
{
	return m == MigrationMode::Hybrid ? "hybrid" : "precopy";
}

bool parseMigrationMode(std::string_view s, MigrationMode *out)
{
	if (s == "hybrid")
		*out = MigrationMode::Hybrid;
	else if (s == "precopy")
		*out = MigrationMode::PreCopy;
	else
		return false;
	return true;
}

const char *leecherStateName(LeecherState s)
{
	switch (s) {
	case LeecherState::Connecting: return "connecting";
	case LeecherState::PreCopy: return "pre-copy";
	case LeecherState::Finalizing: return "finalizing";
	case LeecherState::PostCopy: return "post-copy";
	case LeecherState::Draining: return "draining";
	case LeecherState::Verifying: return "verifying";
	case LeecherState::Done: return "done";
	case LeecherState::Failed: return "failed";
	}
	return "?";
}

JsonValue LeecherReport::toJson() const
{
	JsonValue j = JsonValue::object();
	j.set("mode", migrationModeName(mode))
		.set("bytes_total", bytesTotal)
		.set("bytes_transferred", bytesTransferred)
		.set("precopy_ms", precopyMs)
		.set("downtime_ms", downtimeMs)
		.set("postcopy_ms", postcopyMs)
		.set("faults", faults)
		.set("local_faults", localFaults)
		.set("stale_chunks_at_finalize", staleChunksAtFinalize)
		.set("dirty_chunks_at_finalize", dirtyChunksAtFinalize)
		.set("rounds", uint64_t(rounds))
		.set("reconnects", reconnects)
		.set("first_pass_ms", firstPassMs)
		.set("finalize_reason", finalizeReason)
		.set("completed", completed)
		.set("verified", verified ? JsonValue::boolean(*verified) : JsonValue())
		.set("compressed_chunks", compressedChunks)
		.set("compressed_raw_bytes", compressedRawBytes)
		.set("in_flight_at_decision", inFlightChunksAtDecision)
		.set("in_flight_at_finalize", inFlightChunksAtFinalize)
		.set("drain_ms", drainMs);
	return j;
}

namespace {

constexpr uint32_t kMaxControlPayload = 64u << 20; // a dirty list of 16M chunks
constexpr int kMaxDrainMs = 1000; // longest wait for the requests in flight before Finalize

double msBetween(int64_t a, int64_t b) { return double(b - a) / 1e6; }

} // namespace

class Leecher::Impl {
public:
	Impl(LeecherHooks hooks, LeecherOptions opts) : hooks_(std::move(hooks)), opts_(std::move(opts)) {}
	~Impl() { shutdown(); }

	Result<LeecherReport> run();

private:
	struct Worker;

	Status transition(LeecherState to);
	Result<Connection> connectAndHello(const char *role, uint64_t *sessionOut, HelloReplyMsg *replyOut,
					   uint32_t features = 0);
	// One request/reply on the control connection; reconnects and retries (every control
	// request is idempotent on the seeder) until reconnectTimeout.
	Result<std::vector<uint8_t>> control(MsgType type, MsgType expect);
	void workerLoop(Worker *w);
	Status receiveLoop(Worker *w, Connection &conn);
	void senderLoop(Worker *w, Connection *conn, std::atomic<bool> *dead);
	void normalize(ChunkRequest &req) const;
	// compressible: ask for a whole chunk with GetRange (whose replies the seeder may
	// compress) rather than GetChunk (always raw: the fault path).
	Status sendRequest(Connection &conn, uint64_t id, const ChunkRequest &req, bool compressible);
	void onChunkLocal(uint32_t index);
	void requestNow(uint32_t index);
	Status startFaultService(FaultTarget target);
	void faultLoop();
	void premapLoop();
	Status resolveChunk(uint32_t index, std::span<const uintptr_t> waiters);
	Status finishFaultService();
	Result<uint64_t> verifyAgainstSource();
	uint64_t bytesReceived() const;
	uint64_t inFlightChunks();
	void emitProgress(double pullRate, double dirtyRate, const std::string &policyStatus);
	void shutdown();

	LeecherHooks hooks_;
	LeecherOptions opts_;

	std::atomic<LeecherState> state_{LeecherState::Connecting};
	uint64_t sessionId_ = 0;
	uint64_t size_ = 0;
	uint32_t chunkSize_ = 0;
	uint32_t chunkCount_ = 0;
	uint8_t *region_ = nullptr;
	std::unique_ptr<ChunkMap> map_;
	std::vector<uint8_t> absent_; // chunk never written locally (a zero chunk never stored)
	int64_t startNs_ = 0;

	std::optional<Connection> ctrl_;
	uint64_t nextCtrlId_ = 1;
	std::atomic<uint64_t> reconnects_{0};
	std::atomic<uint64_t> closedBytes_{0}; // bytes received on connections already closed
	std::atomic<uint64_t> compressedChunks_{0}, compressedRawBytes_{0};

	std::vector<std::unique_ptr<Worker>> workers_;
	std::atomic<bool> stopping_{false};
	std::mutex fatalLock_;
	std::optional<Error> fatal_;

	// Post-copy fault service. Field order: threads are joined before the uffd closes.
	std::optional<Userfaultfd> uffd_;
	uintptr_t appBase_ = 0;
	std::atomic<bool> postcopy_{false};
	UniqueFd stopFd_;
	std::mutex faultLock_; // orders fault registration against chunk completion
	std::unordered_map<uint32_t, std::vector<uintptr_t>> waiters_;
	std::atomic<uint64_t> faults_{0}, localFaults_{0};
	std::thread faultThread_;
	std::thread premapThread_;
	size_t nextFaultWorker_ = 0; // fault thread only
};

struct Leecher::Impl::Worker {
	unsigned id;
	std::thread thread;
	std::mutex lock;
	std::condition_variable cv;
	struct Pending {
		ChunkRequest req;
		uint32_t received = 0; // replies so far (a range gets one per chunk, in order)
	};
	std::unordered_map<uint64_t, Pending> pending; // requestId -> what was asked
	uint32_t inflightChunks = 0;                   // chunks asked for, not yet received
	uint64_t nextId = 1;
	std::atomic<uint64_t> liveBytes{0};               // bytes received on the current connection
	Connection *current = nullptr;                    // guarded by lock
	int borrowers = 0;                                // threads sending on *current outside lock
	bool dead = false;                                // current connection is going away
	std::atomic<bool> zstd{false};                    // current connection may send ChunkZstd
	ChunkDecompressor decompressor;                   // receiver thread only
	std::vector<uint8_t> zbuf;                        // receiver thread only: one compressed frame
};

Status Leecher::Impl::transition(LeecherState to)
{
	LeecherState from = state_.load();
	bool legal = false;
	switch (to) {
	case LeecherState::PreCopy: legal = from == LeecherState::Connecting; break;
	case LeecherState::Finalizing: legal = from == LeecherState::PreCopy; break;
	case LeecherState::PostCopy:
	case LeecherState::Draining: legal = from == LeecherState::Finalizing; break;
	case LeecherState::Verifying:
		legal = from == LeecherState::PostCopy || from == LeecherState::Draining;
		break;
	case LeecherState::Done:
		legal = from == LeecherState::Verifying || from == LeecherState::PostCopy ||
			from == LeecherState::Draining;
		break;
	case LeecherState::Failed: legal = true; break;
	case LeecherState::Connecting: legal = false; break;
	}
	if (!legal)
		return Error::format(EPROTO, "illegal transition {} -> {}", leecherStateName(from),
				     leecherStateName(to));
	state_ = to;
	FERRY_LOG(Info, opts_.name, "state {} -> {}", leecherStateName(from), leecherStateName(to));
	return {};
}

Result<Connection> Leecher::Impl::connectAndHello(const char *role, uint64_t *sessionOut,
						  HelloReplyMsg *replyOut, uint32_t features)
{
	FERRY_ASSIGN(Connection conn, connectTo(opts_.seeder, 5000));
	HelloMsg hello{kProtocolVersion, kProtocolVersion, sessionId_,
		       fmt::format("{}/{}", opts_.name, role), features};
	FERRY_TRY(conn.send(MsgType::Hello, 0, encode(hello)));
	FERRY_ASSIGN(FrameHeader h, conn.recvHeader(64 * 1024, 10000));
	FERRY_ASSIGN(std::vector<uint8_t> payload, conn.recvPayload(h));
	if (h.type == MsgType::Error) {
		auto e = decodeError(payload);
		return Error(e.ok() ? e->errnoValue : EPROTO,
			     fmt::format("seeder refused: {}", e.ok() ? e->message : "malformed error"));
	}
	if (h.type != MsgType::HelloReply)
		return Error::format(EPROTO, "expected HelloReply, got {}", msgTypeName(h.type));
	FERRY_ASSIGN(HelloReplyMsg reply, decodeHelloReply(payload));
	if (sessionId_ != 0 && reply.sessionId != sessionId_)
		return Error(ESTALE, "seeder restarted (different session): progress cannot be resumed");
	if (sessionId_ != 0 && (reply.regionSize != size_ || reply.chunkSize != chunkSize_))
		return Error(ESTALE, "seeder region changed during the session");
	if (sessionOut)
		*sessionOut = reply.sessionId;
	if (replyOut)
		*replyOut = reply;
	return conn;
}

Result<std::vector<uint8_t>> Leecher::Impl::control(MsgType type, MsgType expect)
{
	int64_t deadline = monotonicNs() + int64_t(opts_.reconnectTimeout.count()) * 1000000;
	Error last;
	for (;;) {
		if (!ctrl_) {
			auto c = connectAndHello("control", nullptr, nullptr);
			if (!c.ok()) {
				if (c.error().code() == ESTALE || c.error().code() == EPROTONOSUPPORT)
					return c.error();
				last = c.error();
			} else {
				ctrl_.emplace(std::move(c).value());
				reconnects_++;
			}
		}
		if (ctrl_) {
			uint64_t id = nextCtrlId_++;
			auto attempt = [&]() -> Result<std::vector<uint8_t>> {
				FERRY_TRY(ctrl_->send(type, id, {}));
				for (;;) {
					FERRY_ASSIGN(FrameHeader h, ctrl_->recvHeader(kMaxControlPayload, 30000));
					FERRY_ASSIGN(std::vector<uint8_t> payload, ctrl_->recvPayload(h));
					if (h.type == MsgType::Error) {
						auto e = decodeError(payload);
						return Error(EPROTO, fmt::format("seeder: {}",
										 e.ok() ? e->message : "malformed error"));
					}
					if (h.requestId != id)
						continue; // a late reply to a request from before a reconnect
					if (h.type != expect)
						return Error::format(EPROTO, "expected {}, got {}",
								     msgTypeName(expect), msgTypeName(h.type));
					return payload;
				}
			};
			auto r = attempt();
			if (r.ok())
				return r;
			if (r.error().code() == EPROTO)
				return r.error().context(msgTypeName(type));
			last = r.error();
			closedBytes_ += ctrl_->bytesReceived();
			ctrl_.reset();
		}
		if (stopping_ || monotonicNs() > deadline)
			return last.context(fmt::format("{} (gave up reconnecting)", msgTypeName(type)));
		std::this_thread::sleep_for(std::chrono::milliseconds(100)); // reconnect back-off
	}
}

uint64_t Leecher::Impl::inFlightChunks()
{
	uint64_t n = 0;
	for (auto &w : workers_) {
		std::lock_guard g(w->lock);
		n += w->inflightChunks;
	}
	return n;
}

uint64_t Leecher::Impl::bytesReceived() const
{
	uint64_t b = closedBytes_.load();
	if (ctrl_)
		b += ctrl_->bytesReceived();
	for (auto &w : workers_)
		b += w->liveBytes.load();
	return b;
}

void Leecher::Impl::senderLoop(Worker *w, Connection *conn, std::atomic<bool> *dead)
{
	for (;;) {
		{
			std::unique_lock g(w->lock);
			w->cv.wait(g, [&] { return *dead || stopping_ || w->inflightChunks < opts_.depth; });
			if (*dead || stopping_)
				return;
		}
		std::optional<ChunkRequest> req = map_->next(true, dead);
		if (!req)
			return; // map closed
		normalize(*req);
		uint64_t id;
		{
			std::lock_guard g(w->lock);
			if (*dead) {
				for (uint32_t k = 0; k < req->count; k++)
					map_->requestFailed(req->index + k);
				return;
			}
			id = w->nextId++;
			w->pending[id] = {*req, 0};
			w->inflightChunks += req->count;
		}
		if (!sendRequest(*conn, id, *req, w->zstd).ok()) {
			// The receiver sees the broken connection too and fails every pending request.
			conn->shutdown();
			return;
		}
	}
}

// Asks for only the written pages when some (not all) pages of a locally whole chunk are
// stale and the chunk can be addressed by pages; otherwise for the whole chunk (mask 0).
void Leecher::Impl::normalize(ChunkRequest &req) const
{
	if (!req.pageMask)
		return;
	const ChunkGeometry geo{size_, chunkSize_};
	auto pages = pagesInMask(geo, req.index, req.pageMask);
	uint32_t all = (geo.chunkLength(req.index) + kWirePageSize - 1) / kWirePageSize;
	if (!pages.ok() || *pages >= all)
		req.pageMask = 0;
}

Status Leecher::Impl::sendRequest(Connection &conn, uint64_t id, const ChunkRequest &req, bool compressible)
{
	if (req.count > 1 || (compressible && !req.pageMask))
		return conn.send(MsgType::GetRange, id, encode(GetRangeMsg{req.index, req.count}));
	if (req.pageMask)
		return conn.send(MsgType::GetPages, id, encode(GetPagesMsg{req.index, req.pageMask}));
	uint8_t payload[4];
	putLe32(payload, req.index);
	return conn.send(MsgType::GetChunk, id, payload);
}

Status Leecher::Impl::receiveLoop(Worker *w, Connection &conn)
{
	const uint32_t maxPayload = chunkSize_ + 64;
	for (;;) {
		FERRY_ASSIGN(FrameHeader h, conn.recvHeader(maxPayload, -1));
		w->liveBytes = conn.bytesReceived();
		if (h.type == MsgType::Error) {
			FERRY_ASSIGN(std::vector<uint8_t> p, conn.recvPayload(h));
			auto e = decodeError(p);
			return Error(EPROTO, fmt::format("seeder: {}", e.ok() ? e->message : "malformed error"));
		}
		if (h.type != MsgType::Chunk && h.type != MsgType::ChunkZero && h.type != MsgType::Pages &&
		    h.type != MsgType::ChunkZstd)
			return Error::format(EPROTO, "unexpected {} on a data connection", msgTypeName(h.type));
		if (h.type == MsgType::ChunkZstd && !w->zstd)
			return Error(EPROTO, "ChunkZstd on a connection that did not negotiate compression");
		ChunkRequest asked;
		uint32_t expectIndex;
		{
			std::lock_guard g(w->lock);
			auto it = w->pending.find(h.requestId);
			if (it == w->pending.end())
				return Error::format(EPROTO, "reply to unknown request {}", h.requestId);
			asked = it->second.req;
			expectIndex = asked.index + it->second.received;
		}
		const ChunkGeometry geo{size_, chunkSize_};
		uint32_t index;
		bool whole = true;
		if (h.type == MsgType::Pages) {
			uint8_t prefix[kPagesPrefixSize];
			FERRY_TRY(conn.recvExact(prefix, sizeof prefix));
			FERRY_ASSIGN(GetPagesMsg m, decodePagesPrefix(h, prefix, geo));
			if (m.chunkIndex != asked.index || m.pageMask != asked.pageMask)
				return Error::format(EPROTO, "request {} asked chunk {} pages {:#x}, reply carries chunk {} pages {:#x}",
						     h.requestId, asked.index, asked.pageMask, m.chunkIndex, m.pageMask);
			index = m.chunkIndex;
			uint8_t *chunk = region_ + uint64_t(index) * chunkSize_;
			// Same guarantee as for whole chunks: these pages are not mapped in the
			// application until the chunk is local again.
			for (unsigned p = 0; p < 64;) {
				if (!(m.pageMask >> p & 1)) {
					p++;
					continue;
				}
				unsigned q = p;
				while (q < 64 && (m.pageMask >> q & 1))
					q++;
				FERRY_TRY_CTX(conn.recvExact(chunk + size_t(p) * kWirePageSize, size_t(q - p) * kWirePageSize),
					      "chunk {} pages", index);
				p = q;
			}
			whole = false;
		} else {
			if (h.payloadLen < 4)
				return Error::format(EPROTO, "{} payload of {} bytes", msgTypeName(h.type), h.payloadLen);
			uint8_t ib[4];
			FERRY_TRY(conn.recvExact(ib, 4));
			index = getLe32(ib);
			if (index != expectIndex || asked.pageMask != 0)
				return Error::format(EPROTO, "request {} expects chunk {}, reply carries whole chunk {}",
						     h.requestId, expectIndex, index);
			uint64_t off = uint64_t(index) * chunkSize_;
			size_t len = std::min<uint64_t>(chunkSize_, size_ - off);
			if (h.type == MsgType::Chunk) {
				if (h.payloadLen != 4 + len)
					return Error::format(EPROTO, "chunk {}: {} data bytes, expected {}", index,
							     h.payloadLen - 4, len);
				// The application cannot see these pages while we write: before switch-over
				// it is not running; after it, the pages of a non-local chunk are not mapped
				// in its address space (minor-fault guard) until onChunkLocal installs them.
				absent_[index] = 0;
				FERRY_TRY_CTX(conn.recvExact(region_ + off, len), "chunk {}", index);
			} else if (h.type == MsgType::ChunkZstd) {
				FERRY_TRY(decodeChunkZstdPrefix(h, ib, geo));
				w->zbuf.resize(h.payloadLen - kChunkPrefixSize);
				FERRY_TRY_CTX(conn.recvExact(w->zbuf.data(), w->zbuf.size()), "chunk {}", index);
				// Same guarantee as for a raw chunk: the application cannot see these pages.
				absent_[index] = 0;
				FERRY_TRY_CTX(w->decompressor.decompress(w->zbuf, {region_ + off, len}), "chunk {}", index);
				compressedChunks_++;
				compressedRawBytes_ += len;
			} else {
				if (h.payloadLen != 4)
					return Error::format(EPROTO, "ChunkZero payload of {} bytes", h.payloadLen);
				if (!absent_[index])
					std::memset(region_ + off, 0, len);
			}
		}
		{
			std::lock_guard g(w->lock);
			auto it = w->pending.find(h.requestId);
			w->inflightChunks--;
			if (++it->second.received == it->second.req.count)
				w->pending.erase(it);
		}
		w->cv.notify_one();
		w->liveBytes = conn.bytesReceived();
		if (map_->completed(index, whole) && postcopy_)
			onChunkLocal(index);
	}
}

void Leecher::Impl::workerLoop(Worker *w)
{
	int64_t lostSince = 0;
	bool first = true;
	while (!stopping_) {
		HelloReplyMsg reply;
		auto c = connectAndHello("data", nullptr, &reply,
					 opts_.compression ? HelloMsg::kFeatureZstd : 0);
		if (!c.ok()) {
			if (c.error().code() == ESTALE || c.error().code() == EPROTONOSUPPORT) {
				std::lock_guard g(fatalLock_);
				fatal_ = c.error();
				map_->close();
				return;
			}
			if (!lostSince)
				lostSince = monotonicNs();
			if (monotonicNs() - lostSince > int64_t(opts_.reconnectTimeout.count()) * 1000000) {
				std::lock_guard g(fatalLock_);
				fatal_ = c.error().context(fmt::format("data connection {} (gave up reconnecting)", w->id));
				map_->close();
				return;
			}
			std::this_thread::sleep_for(std::chrono::milliseconds(100)); // back-off
			continue;
		}
		if (!first)
			reconnects_++;
		first = false;
		lostSince = 0;
		Connection conn = std::move(c).value();
		{
			std::lock_guard g(w->lock);
			w->current = &conn;
			w->dead = false;
			w->zstd = (reply.flags & HelloReplyMsg::kFlagZstd) != 0;
		}
		// shutdown() may have looked for w->current while this connection was being set
		// up; it set stopping_ first, so seeing it here means nobody will wake the receiver.
		if (stopping_)
			conn.shutdown();
		std::atomic<bool> dead{false};
		std::thread sender([&] { senderLoop(w, &conn, &dead); });
		Status st = receiveLoop(w, conn);
		conn.shutdown();
		{
			std::unique_lock g(w->lock);
			dead = true;
			w->dead = true;
			// A fault thread may be sending on this connection right now.
			w->cv.wait(g, [&] { return w->borrowers == 0; });
			w->current = nullptr;
			for (auto &[id, p] : w->pending)
				for (uint32_t k = p.received; k < p.req.count; k++)
					map_->requestFailed(p.req.index + k);
			w->pending.clear();
			w->inflightChunks = 0;
		}
		w->cv.notify_all();
		map_->wakeAll(); // a sender blocked in next() sees `dead`
		sender.join();
		closedBytes_ += conn.bytesReceived();
		w->liveBytes = 0;
		if (stopping_)
			return;
		FERRY_LOG(Warn, opts_.name, "data connection {} lost: {}; reconnecting", w->id,
			  st.error().message());
		if (st.error().code() == EPROTO) {
			// A peer speaking nonsense is not a network hiccup.
			std::lock_guard g(fatalLock_);
			fatal_ = st.error().context(fmt::format("data connection {}", w->id));
			map_->close();
			return;
		}
	}
}

// --- post-copy fault service -------------------------------------------------------------

Status Leecher::Impl::resolveChunk(uint32_t index, std::span<const uintptr_t> waiters)
{
	const size_t page = 4096;
	uint64_t off = uint64_t(index) * chunkSize_;
	size_t len = std::min<uint64_t>(chunkSize_, size_ - off);
	void *dst = reinterpret_cast<void *>(appBase_ + off);
	if (absent_[index]) {
		// A zero chunk never stored here: the pages are not in the page cache, so the
		// fault is a MISSING one; give the waiting pages fresh zero pages.
		for (uintptr_t a : waiters) {
			FERRY_ASSIGN(UffdOutcome o, uffd_->zeroPage(reinterpret_cast<void *>(a), page));
			if (o == UffdOutcome::Exists)
				FERRY_TRY(uffd_->wake(reinterpret_cast<void *>(a), page));
			else if (o == UffdOutcome::Gone)
				return Error(ESRCH, "application exited");
		}
		return {};
	}
	FERRY_ASSIGN(UffdOutcome o, uffd_->continueRange(dst, len));
	if (o == UffdOutcome::Exists) {
		// Some pages were installed already (a fault raced us): go page by page.
		for (size_t p = 0; p < len; p += page) {
			FERRY_ASSIGN(UffdOutcome po, uffd_->continueRange(static_cast<uint8_t *>(dst) + p, page));
			if (po == UffdOutcome::Gone)
				return Error(ESRCH, "application exited");
		}
		for (uintptr_t a : waiters)
			(void)uffd_->wake(reinterpret_cast<void *>(a), page);
	} else if (o == UffdOutcome::Gone) {
		return Error(ESRCH, "application exited");
	}
	return {};
}

// Sends a request for a faulted chunk from the fault thread itself: one thread hop less on
// the path that a stalled vCPU waits on. Falls back to the queue when no connection is up.
void Leecher::Impl::requestNow(uint32_t index)
{
	std::optional<ChunkRequest> req = map_->claim(index);
	if (!req)
		return; // already in flight (or local): the fault waits for it
	for (size_t k = 0; k < workers_.size(); k++) {
		Worker *w = workers_[(nextFaultWorker_++) % workers_.size()].get();
		Connection *conn;
		uint64_t id;
		{
			std::lock_guard g(w->lock);
			if (!w->current || w->dead)
				continue;
			conn = w->current;
			id = w->nextId++;
			w->borrowers++;
		}
		// Decide GetPages vs GetChunk before the request is visible to the receiver.
		ChunkRequest sent = *req;
		normalize(sent);
		{
			std::lock_guard g(w->lock);
			w->pending[id] = {sent, 0};
			w->inflightChunks += sent.count;
		}
		Status st = sendRequest(*conn, id, sent, false); // a vCPU waits: no compressor on the way
		{
			std::lock_guard g(w->lock);
			w->borrowers--;
		}
		w->cv.notify_all();
		if (!st.ok())
			conn->shutdown(); // the worker fails the pending request and reconnects
		return;
	}
	map_->requestFailed(index); // queued first; a sender takes it once connected
}

void Leecher::Impl::onChunkLocal(uint32_t index)
{
	std::vector<uintptr_t> waiters;
	std::lock_guard g(faultLock_);
	if (auto it = waiters_.find(index); it != waiters_.end()) {
		waiters = std::move(it->second);
		waiters_.erase(it);
	}
	// Install the whole chunk now, so the application never faults on it again.
	Status st = resolveChunk(index, waiters);
	if (!st.ok())
		FERRY_LOG_RATELIMITED(Warn, opts_.name, "chunk {}: map into application: {}", index,
				      st.error().message());
}

void Leecher::Impl::faultLoop()
{
	std::vector<uffd_msg> msgs;
	pollfd fds[2] = {{uffd_->fd(), POLLIN, 0}, {stopFd_.get(), POLLIN, 0}};
	for (;;) {
		int n = ::poll(fds, 2, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || (fds[1].revents & POLLIN))
			return;
		auto r = uffd_->readEvents(msgs);
		if (!r.ok()) {
			FERRY_LOG(Error, opts_.name, "fault service: {}", r.error().message());
			return;
		}
		std::vector<uint32_t> toRequest;
		for (const uffd_msg &m : msgs) {
			if (m.event != UFFD_EVENT_PAGEFAULT)
				continue;
			uintptr_t addr = m.arg.pagefault.address & ~uintptr_t(4095);
			if (addr < appBase_ || addr >= appBase_ + size_) {
				FERRY_LOG_RATELIMITED(Warn, opts_.name, "fault outside the region at {:#x}", addr);
				continue;
			}
			uint32_t index = static_cast<uint32_t>((addr - appBase_) / chunkSize_);
			std::lock_guard g(faultLock_);
			ChunkState s = map_->state(index);
			if (s == ChunkState::Local) {
				localFaults_++;
				uintptr_t w[1] = {addr};
				Status st = resolveChunk(index, w);
				if (!st.ok())
					FERRY_LOG_RATELIMITED(Warn, opts_.name, "chunk {}: {}", index, st.error().message());
			} else {
				faults_++;
				FERRY_LOG_RATELIMITED(Debug, opts_.name, "fault on chunk {} ({})", index,
						      s == ChunkState::Stale ? "stale" : "not yet pulled");
				waiters_[index].push_back(addr);
				if (s != ChunkState::InFlight)
					toRequest.push_back(index);
			}
		}
		// Outside faultLock_: a send may block until the receiver (which takes faultLock_
		// when a chunk lands) has drained the socket.
		for (uint32_t index : toRequest)
			requestNow(index);
	}
}

// Maps every chunk that was already local at switch-over into the application, in large
// batches, so that it does not take a (cheap but not free) fault on each first touch.
void Leecher::Impl::premapLoop()
{
	const uint32_t batch = std::max<uint32_t>(1, (2u << 20) / chunkSize_);
	for (uint32_t from = 0; from < chunkCount_ && !stopping_; from += batch) {
		for (auto [a, b] : map_->localRuns(from, std::min(chunkCount_, from + batch))) {
			std::lock_guard g(faultLock_);
			for (uint32_t i = a; i < b;) {
				if (absent_[i]) {
					i++;
					continue;
				}
				uint32_t j = i;
				while (j < b && !absent_[j])
					j++;
				uint64_t off = uint64_t(i) * chunkSize_;
				uint64_t end = std::min<uint64_t>(uint64_t(j) * chunkSize_, size_);
				auto o = uffd_->continueRange(reinterpret_cast<void *>(appBase_ + off), end - off);
				if (o.ok() && *o == UffdOutcome::Exists) {
					for (uint32_t k = i; k < j; k++)
						(void)resolveChunk(k, {});
				} else if (!o.ok() || *o == UffdOutcome::Gone) {
					return;
				}
				i = j;
			}
		}
	}
}

Status Leecher::Impl::startFaultService(FaultTarget target)
{
	uffd_.emplace(std::move(target.uffd));
	appBase_ = target.base;
	stopFd_.reset(::eventfd(0, EFD_CLOEXEC));
	if (!stopFd_)
		return Error::fromErrno("eventfd");
	postcopy_ = true;
	faultThread_ = std::thread([this] { faultLoop(); });
	premapThread_ = std::thread([this] { premapLoop(); });
	return {};
}

Status Leecher::Impl::finishFaultService()
{
	if (premapThread_.joinable())
		premapThread_.join();
	// Every chunk is local: install any page still unmapped, then stop guarding the region.
	// Unregistering wakes anything still waiting, which then faults normally.
	for (auto [a, b] : map_->localRuns(0, chunkCount_))
		for (uint32_t i = a; i < b; i++) {
			std::lock_guard g(faultLock_);
			auto it = waiters_.find(i);
			std::vector<uintptr_t> w;
			if (it != waiters_.end()) {
				w = std::move(it->second);
				waiters_.erase(it);
			}
			if (!absent_[i] || !w.empty())
				FERRY_TRY_CTX(resolveChunk(i, w), "map chunk {}", i);
		}
	uint64_t v = 1;
	(void)!::write(stopFd_.get(), &v, sizeof(v));
	if (faultThread_.joinable())
		faultThread_.join();
	postcopy_ = false;
	FERRY_TRY_CTX(uffd_->unregisterRange(reinterpret_cast<void *>(appBase_), size_),
		      "unregister the application's region");
	return {};
}

// Pulls every chunk again from the suspended source and compares it byte for byte with the
// local copy. Uses its own connection with a window of requests in flight.
Result<uint64_t> Leecher::Impl::verifyAgainstSource()
{
	FERRY_ASSIGN(Connection conn, connectAndHello("verify", nullptr, nullptr));
	std::vector<uint8_t> buf(chunkSize_);
	uint64_t mismatched = 0;
	const uint32_t window = 32;
	uint32_t sent = 0, received = 0;
	while (received < chunkCount_) {
		while (sent < chunkCount_ && sent - received < window) {
			uint8_t p[4];
			putLe32(p, sent);
			FERRY_TRY(conn.send(MsgType::GetChunk, uint64_t(sent) + 1, p));
			sent++;
		}
		FERRY_ASSIGN(FrameHeader h, conn.recvHeader(chunkSize_ + 64, 30000));
		if (h.requestId != uint64_t(received) + 1 || h.payloadLen < 4)
			return Error::format(EPROTO, "verify: unexpected reply {} (request {})",
					     msgTypeName(h.type), h.requestId);
		uint8_t ib[4];
		FERRY_TRY(conn.recvExact(ib, 4));
		uint32_t index = getLe32(ib);
		uint64_t off = uint64_t(index) * chunkSize_;
		size_t len = std::min<uint64_t>(chunkSize_, size_ - off);
		if (index != received)
			return Error::format(EPROTO, "verify: chunk {} instead of {}", index, received);
		bool same;
		if (h.type == MsgType::ChunkZero) {
			same = isZero(region_ + off, len);
		} else if (h.type == MsgType::Chunk && h.payloadLen == 4 + len) {
			FERRY_TRY(conn.recvExact(buf.data(), len));
			same = std::memcmp(buf.data(), region_ + off, len) == 0;
		} else {
			return Error::format(EPROTO, "verify: bad reply {} for chunk {}", msgTypeName(h.type), index);
		}
		if (!same) {
			if (mismatched < 10)
				FERRY_LOG(Error, opts_.name, "verify: chunk {} differs from the source", index);
			mismatched++;
		}
		received++;
	}
	return mismatched;
}

void Leecher::Impl::emitProgress(double pullRate, double dirtyRate, const std::string &policyStatus)
{
	if (!opts_.onProgress)
		return;
	ChunkCounts c = map_->counts();
	LeecherProgress p{state_.load(), msBetween(startNs_, monotonicNs()) / 1000, chunkCount_, c.local,
			  c.stale, c.missing + c.inFlight, bytesReceived(), pullRate, dirtyRate,
			  faults_.load(), policyStatus};
	opts_.onProgress(p);
}

void Leecher::Impl::shutdown()
{
	stopping_ = true;
	if (map_)
		map_->close();
	for (auto &w : workers_) {
		{
			std::lock_guard g(w->lock);
			if (w->current)
				w->current->shutdown(); // unblocks its receiver
		}
		w->cv.notify_all();
	}
	if (stopFd_) {
		uint64_t v = 1;
		(void)!::write(stopFd_.get(), &v, sizeof(v));
	}
	if (premapThread_.joinable())
		premapThread_.join();
	if (faultThread_.joinable())
		faultThread_.join();
	for (auto &w : workers_)
		if (w->thread.joinable())
			w->thread.join();
	workers_.clear();
}

Result<LeecherReport> Leecher::Impl::run()
{
	LeecherReport rep;
	rep.mode = opts_.mode;
	startNs_ = monotonicNs();

	PolicyOptions policyOpts = opts_.policy;
	policyOpts.postCopyFollows = opts_.mode == MigrationMode::Hybrid;
	FERRY_ASSIGN(auto policy, makeFinalizePolicy(opts_.finalizePolicy, policyOpts));

	// Session set-up: learn the region, then ask the seeder to start tracking.
	HelloReplyMsg hello;
	{
		FERRY_ASSIGN(Connection c, connectAndHello("control", &sessionId_, &hello));
		ctrl_.emplace(std::move(c));
	}
	if (hello.chunkSize == 0 || hello.chunkSize % 4096 || hello.regionSize == 0 ||
	    (hello.regionSize + hello.chunkSize - 1) / hello.chunkSize > UINT32_MAX)
		return Error::format(EPROTO, "seeder offers an unusable region ({} bytes, chunk {})",
				     hello.regionSize, hello.chunkSize);
	if (hello.flags & HelloReplyMsg::kFlagFinalized)
		return Error(EALREADY, "seeder was already finalized by another leecher");
	size_ = hello.regionSize;
	chunkSize_ = hello.chunkSize;
	chunkCount_ = static_cast<uint32_t>((size_ + chunkSize_ - 1) / chunkSize_);
	rep.bytesTotal = size_;
	FERRY_ASSIGN(region_, hooks_.prepare(size_, chunkSize_));
	map_ = std::make_unique<ChunkMap>(chunkCount_);
	absent_.assign(chunkCount_, 1);
	FERRY_TRY_CTX(control(MsgType::TrackStart, MsgType::TrackStarted), "start tracking");
	FERRY_TRY(transition(LeecherState::PreCopy));
	FERRY_LOG(Info, opts_.name, "pulling {} MiB in {} chunks of {} KiB over {} connection(s), {} in flight each",
		  size_ >> 20, chunkCount_, chunkSize_ >> 10, opts_.connections, opts_.depth);

	for (unsigned i = 0; i < std::max(1u, opts_.connections); i++) {
		auto w = std::make_unique<Worker>();
		w->id = i;
		workers_.push_back(std::move(w));
	}
	if (opts_.postcopyOnly)
		map_->setOrder(ChunkMap::Order::UrgentOnly);
	else if (policy->holdAtStart())
		map_->setPaused(true); // the policy wants to start pulling in a quiet phase
	// The first pass asks for runs of never-pulled chunks (~1 MiB a request): a request per
	// 16 KiB chunk would make a mostly-zero region cost a round of syscalls per chunk.
	map_->setMaxRun(std::min<uint32_t>({kMaxRangeChunks, opts_.depth, std::max<uint32_t>(1, (1u << 20) / chunkSize_)}));
	const int64_t pullStartNs = monotonicNs();
	for (auto &w : workers_)
		w->thread = std::thread([this, p = w.get()] { workerLoop(p); });

	auto fatal = [&]() -> std::optional<Error> {
		std::lock_guard g(fatalLock_);
		return fatal_;
	};

	// Pre-copy: sample the dirty rate and let the policy choose the moment to finalize.
	uint64_t lastBytes = 0;
	int64_t lastNs = monotonicNs();
	bool firstPassDone = false;
	while (!opts_.postcopyOnly) {
		// The sampling period; cut short when the first pass completes, so that a policy
		// waiting for it decides at once instead of letting stale chunks be re-pulled.
		if (firstPassDone)
			std::this_thread::sleep_for(opts_.sampleInterval);
		else
			map_->waitFirstPass(opts_.sampleInterval);
		if (auto f = fatal())
			return f->context("pre-copy");
		FERRY_ASSIGN(std::vector<uint8_t> payload, control(MsgType::GetDirty, MsgType::DirtyList));
		FERRY_ASSIGN(DirtyListMsg dirty, decodeDirtyList(payload, chunkCount_));
		int64_t now = monotonicNs();
		map_->setClock(msBetween(startNs_, now) / 1000); // stamps what markDirty names
		map_->markDirty(dirty.chunks, dirty.pageMasks);
		double dt = std::max(1e-3, msBetween(lastNs, now) / 1000);
		uint64_t bytes = bytesReceived();
		double pullRate = double(bytes - lastBytes) / dt;
		lastBytes = bytes;
		lastNs = now;
		ChunkCounts c = map_->counts();
		if (!firstPassDone && map_->firstPassDone()) { // stale chunks may remain
			firstPassDone = true;
			rep.firstPassMs = msBetween(pullStartNs, monotonicNs());
		}
		RoundStats rs{msBetween(startNs_, now) / 1000, dirty.chunks.size(),
			      uint64_t(dirty.chunks.size()) * chunkSize_, c.total() - c.local,
			      (c.total() - c.local) * uint64_t(chunkSize_), pullRate, firstPassDone,
			      map_->coldPendingCount() * chunkSize_, ++rep.rounds,
			      inFlightChunks() * chunkSize_};
		Decision d = policy->onSample(rs);
		const bool hold = d.holdPull && !d.finalize;
		if (hold)
			map_->setHotHold(d.holdHotSec, true);
		else
			map_->setHotHold(d.finalize ? 0 : d.hotLastSec, false);
		map_->setPaused(hold && d.holdHotSec <= 0);
		emitProgress(pullRate, double(rs.dirtyBytes) / dt, policy->status());
		if (d.finalize) {
			rep.finalizeReason = d.reason;
			break;
		}
	}
	if (opts_.postcopyOnly)
		rep.finalizeReason = "post-copy only";

	// Quiesce the pull before Finalize: the Finalized reply (and, in hybrid mode, the device
	// state after it) shares the link with the chunks in flight, so with a full pipeline
	// (depth x chunk per connection: 8 MiB is 0.3 s at 200 Mbit/s) it would wait behind them
	// while the source is already suspended. Letting them arrive first costs that time
	// while the source still runs. Bounded: a stuck connection must not stall the finalize.
	map_->setPaused(true);
	const int64_t drainStartNs = monotonicNs();
	rep.inFlightChunksAtDecision = inFlightChunks();

	// Hybrid: the application is started (not yet running) with its region guarded before
	// finalize, so that the downtime does not include starting it.
	std::optional<FaultTarget> target;
	if (opts_.mode == MigrationMode::Hybrid) {
		FERRY_ASSIGN(FaultTarget t, hooks_.armFaults().context("arm fault handling"));
		target.emplace(std::move(t));
	}

	while (inFlightChunks() > 0 && monotonicNs() - drainStartNs < int64_t(kMaxDrainMs) * 1000000 && !fatal())
		std::this_thread::sleep_for(std::chrono::microseconds(500)); // replies arrive on the workers
	rep.drainMs = msBetween(drainStartNs, monotonicNs());
	rep.inFlightChunksAtFinalize = inFlightChunks();

	// Finalize: the seeder suspends the source and returns the final dirty set.
	FERRY_TRY(transition(LeecherState::Finalizing));
	int64_t finalizeNs = monotonicNs();
	rep.precopyMs = msBetween(startNs_, finalizeNs);
	FERRY_ASSIGN(std::vector<uint8_t> fin, control(MsgType::Finalize, MsgType::Finalized));
	FERRY_ASSIGN(FinalizedMsg finalized, decodeFinalized(fin, chunkCount_));
	map_->setOrder(opts_.backgroundPull || opts_.mode == MigrationMode::PreCopy
			       ? ChunkMap::Order::StaleFirst
			       : ChunkMap::Order::UrgentOnly);
	map_->markDirty(finalized.chunks, finalized.pageMasks);
	map_->setPaused(false);
	ChunkCounts atFinalize = map_->counts();
	rep.dirtyChunksAtFinalize = finalized.chunks.size();
	rep.staleChunksAtFinalize = atFinalize.total() - atFinalize.local;
	FERRY_LOG(Info, opts_.name, "finalized ({}): {} dirty, {} chunks not local", rep.finalizeReason,
		  finalized.chunks.size(), rep.staleChunksAtFinalize);

	if (opts_.mode == MigrationMode::Hybrid) {
		// Only now, with the final stale set applied, may local chunks be mapped into the
		// application: a chunk mapped earlier could have been dirtied since.
		FERRY_TRY(startFaultService(std::move(*target)));
		FERRY_TRY(transition(LeecherState::PostCopy));
	} else {
		FERRY_TRY(transition(LeecherState::Draining));
		while (!map_->waitAllLocal(opts_.sampleInterval)) {
			if (auto f = fatal())
				return f->context("draining stale chunks");
			emitProgress(0, 0, "draining");
		}
	}
	// The switch-over point: once the seeder has acknowledged it, the source will not be
	// resumed any more; before it, a lost destination makes the seeder roll back.
	FERRY_TRY_CTX(control(MsgType::SwitchOver, MsgType::SwitchOverAck), "switch over");
	FERRY_TRY(hooks_.resume().context("resume the application"));
	int64_t resumedNs = monotonicNs();
	int64_t resumedRt = realtimeNs();
	rep.downtimeMs = finalized.suspendedAtUnixNs
				 ? double(resumedRt - int64_t(finalized.suspendedAtUnixNs)) / 1e6
				 : msBetween(finalizeNs, resumedNs);

	// Post-copy (hybrid): faults first, then stale chunks, then the rest.
	while (!map_->waitAllLocal(opts_.sampleInterval)) {
		if (auto f = fatal())
			return f->context("post-copy");
		emitProgress(0, 0, "post-copy");
	}
	if (opts_.mode == MigrationMode::Hybrid) {
		FERRY_TRY(finishFaultService());
		rep.postcopyMs = msBetween(resumedNs, monotonicNs());
	}
	rep.faults = faults_;
	rep.localFaults = localFaults_;
	rep.bytesTransferred = bytesReceived();
	rep.compressedChunks = compressedChunks_.load();
	rep.compressedRawBytes = compressedRawBytes_.load();
	rep.completed = true;

	if (opts_.verify) {
		FERRY_TRY(transition(LeecherState::Verifying));
		FERRY_ASSIGN(uint64_t bad, verifyAgainstSource().context("verify"));
		rep.verified = bad == 0;
		rep.verifyMismatchedChunks = bad;
	}
	FERRY_TRY(transition(LeecherState::Done));
	FERRY_TRY_CTX(control(MsgType::Done, MsgType::DoneAck), "release the source");
	rep.reconnects = reconnects_;
	emitProgress(0, 0, "done");
	shutdown();
	ctrl_.reset(); // the seeder finishes once every connection of ours is closed
	return rep;
}

Leecher::Leecher(LeecherHooks hooks, LeecherOptions opts)
	: impl_(std::make_unique<Impl>(std::move(hooks), std::move(opts)))
{
}

Leecher::~Leecher() = default;

Result<LeecherReport> Leecher::run() { return impl_->run(); }

} // namespace ferry
