// SPDX-License-Identifier: GPL-2.0-or-later
#include "roles/leecher/puller.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <unordered_map>

#include "ferry/base/clock.h"
#include "ferry/base/log.h"
#include "roles/leecher/replies.h"

namespace ferry {

namespace {

constexpr auto kReconnectBackoff = std::chrono::milliseconds(100);
// Window units per chunk (a zero chunk is charged 1, a data chunk kUnits).
constexpr uint32_t kUnits = 8;

} // namespace

struct Puller::Worker {
	unsigned id;
	std::thread thread;
	std::mutex lock;
	std::condition_variable cv;
	struct Pending {
		ChunkRequest req;
		uint32_t received = 0; // replies so far (a range gets one per chunk, in order)
		uint32_t units = kUnits; // charged per chunk
	};
	std::unordered_map<uint64_t, Pending> pending; // requestId -> what was asked
	uint32_t inflightChunks = 0;                   // chunks asked for, not yet received
	// The window in units of 1/kUnits chunk: a chunk asked for is charged what recent replies
	// suggest it will weigh (zero chunks cost a frame header, not a chunk), at least one unit,
	// so a mostly-zero region (an idle guest) is not paced at `depth` chunks per round trip.
	uint32_t inflightUnits = 0;
	uint32_t unitsPerChunk = kUnits;               // from denseShare, at the last request
	double denseShare = 1;                         // replies that carried data (moving average)
	uint64_t nextId = 1;
	std::atomic<uint64_t> liveBytes{0};            // bytes received on the current connection
	Connection *current = nullptr;                 // guarded by lock
	int borrowers = 0;                             // threads sending on *current outside lock
	bool dead = false;                             // current connection is going away
	std::atomic<bool> zstd{false};                 // current connection may send ChunkZstd
	// The seeder decides compression by measuring the link: one request in flight until
	// its range has arrived, then the whole window (HelloReplyMsg::kFlagAdaptiveZstd).
	bool probing = false;
	ChunkReplyReader replies;                      // receiver thread only

	Worker(unsigned id, LocalRegion &region) : id(id), replies(region) {}
};

Puller::Puller(SeederSession &session, LocalRegion &region, ChunkMap &map, FailureLatch &failure,
	       const LeecherOptions &opts)
	: session_(session), region_(region), map_(map), failure_(failure), opts_(opts),
	  refill_(std::clamp(opts.depth / 4, 1u, 16u))
{
	for (unsigned i = 0; i < std::max(1u, opts_.connections); i++) {
		workers_.push_back(std::make_unique<Worker>(i, region_));
	}
}

Puller::~Puller() { stop(); }

void Puller::start()
{
	for (auto &w : workers_)
		w->thread = std::thread([this, p = w.get()] { workerLoop(p); });
}

void Puller::stop()
{
	stopping_ = true;
	map_.close();
	for (auto &w : workers_) {
		{
			std::lock_guard g(w->lock);
			if (w->current)
				w->current->shutdown(); // unblocks its receiver
		}
		w->cv.notify_all();
	}
	for (auto &w : workers_)
		if (w->thread.joinable())
			w->thread.join();
}

bool Puller::hasRoom(const Worker &w) const
{
	if (w.probing)
		return w.inflightUnits == 0;
	return w.inflightUnits + refill_ * kUnits <= opts_.depth * kUnits;
}

void Puller::setOnChunkLocal(std::function<void(uint32_t)> fn)
{
	onChunkLocal_ = std::move(fn);
	notifyLocal_.store(true, std::memory_order_release);
}

void Puller::giveUp(Error e)
{
	failure_.fail(std::move(e));
	map_.close();
	idleCv_.notify_all();
}

uint64_t Puller::inFlightChunks() const
{
	uint64_t n = 0;
	for (auto &w : workers_) {
		std::lock_guard g(w->lock);
		n += w->inflightChunks;
	}
	return n;
}

bool Puller::waitIdle(std::chrono::milliseconds max)
{
	std::unique_lock g(idleLock_);
	return idleCv_.wait_for(g, max, [&] { return inFlightChunks() == 0 || failure_.get(); }) &&
	       inFlightChunks() == 0;
}

uint64_t Puller::bytesReceived() const
{
	uint64_t b = closedBytes_.load();
	for (auto &w : workers_)
		b += w->liveBytes.load();
	return b;
}

void Puller::senderLoop(Worker *w, Connection *conn, std::atomic<bool> *dead)
{
	for (;;) {
		{
			std::unique_lock g(w->lock);
			w->cv.wait(g, [&] { return *dead || stopping_ || hasRoom(*w); });
			if (*dead || stopping_)
				return;
		}
		std::optional<ChunkRequest> req = map_.next(true, dead);
		if (!req)
			return; // map closed
		narrowToPages(*req, region_);
		uint64_t id;
		{
			std::lock_guard g(w->lock);
			if (*dead) {
				for (uint32_t k = 0; k < req->count; k++)
					map_.requestFailed(req->index + k);
				return;
			}
			id = w->nextId++;
			w->pending[id] = {*req, 0, w->unitsPerChunk};
			w->inflightChunks += req->count;
			w->inflightUnits += req->count * w->unitsPerChunk;
		}
		if (!sendChunkRequest(*conn, id, *req, w->zstd).ok()) {
			// The receiver sees the broken connection too and fails every pending request.
			conn->shutdown();
			return;
		}
	}
}

Status Puller::receiveLoop(Worker *w, Connection &conn)
{
	const uint32_t maxPayload = region_.chunkSize + 64;
	for (;;) {
		FERRY_ASSIGN(FrameHeader h, conn.recvHeader(maxPayload, -1));
		w->liveBytes = conn.bytesReceived();
		FERRY_TRY(receiveReply(w, conn, h));
		w->liveBytes = conn.bytesReceived();
	}
}

// One reply: checked against what its request asked, read straight into the region.
Status Puller::receiveReply(Worker *w, Connection &conn, const FrameHeader &h)
{
	FERRY_TRY(w->replies.accept(conn, h, w->zstd));
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
	FERRY_ASSIGN(LandedChunk landed, w->replies.read(conn, h, asked, expectIndex));
	if (landed.decompressedBytes) {
		compressedChunks_++;
		compressedRawBytes_ += landed.decompressedBytes;
	}
	bool room;
	{
		std::lock_guard g(w->lock);
		auto it = w->pending.find(h.requestId);
		w->inflightChunks--;
		w->inflightUnits -= it->second.units;
		w->denseShare = 0.95 * w->denseShare + (h.type == MsgType::ChunkZero ? 0 : 0.05);
		w->unitsPerChunk = std::clamp<uint32_t>(uint32_t(w->denseShare * kUnits + 0.5), 1, kUnits);
		if (++it->second.received == it->second.req.count) {
			w->pending.erase(it);
			w->probing = false;
		}
		room = hasRoom(*w);
	}
	if (room)
		w->cv.notify_one();
	if (map_.completed(landed.index, landed.whole) && notifyLocal_.load(std::memory_order_acquire))
		onChunkLocal_(landed.index);
	{
		std::lock_guard g(idleLock_); // pairs with waitIdle's predicate check
	}
	idleCv_.notify_all();
	return {};
}

void Puller::workerLoop(Worker *w)
{
	int64_t lostSince = 0;
	bool first = true;
	while (!stopping_) {
		HelloReplyMsg reply;
		auto c = session_.connect("data", opts_.compression ? HelloMsg::kFeatureZstd : 0, &reply);
		if (!c.ok()) {
			if (c.error().code() == ESTALE || c.error().code() == EPROTONOSUPPORT || c.error().code() == EACCES)
				return giveUp(c.error());
			if (!lostSince)
				lostSince = monotonicNs();
			if (monotonicNs() - lostSince > int64_t(opts_.reconnectTimeout.count()) * 1000000)
				return giveUp(c.error().context(fmt::format("data connection {} (gave up reconnecting)", w->id)));
			std::this_thread::sleep_for(kReconnectBackoff);
			continue;
		}
		if (!first)
			session_.countReconnect();
		first = false;
		lostSince = 0;
		Connection conn = std::move(c).value();
		{
			std::lock_guard g(w->lock);
			w->current = &conn;
			w->dead = false;
			w->zstd = (reply.flags & HelloReplyMsg::kFlagZstd) != 0;
			w->probing = w->zstd && (reply.flags & HelloReplyMsg::kFlagAdaptiveZstd);
		}
		// stop() may have looked for w->current while this connection was being set up; it
		// set stopping_ first, so seeing it here means nobody will wake the receiver.
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
					map_.requestFailed(p.req.index + k);
			w->pending.clear();
			w->inflightChunks = 0;
			w->inflightUnits = 0;
		}
		w->cv.notify_all();
		map_.wakeAll(); // a sender blocked in next() sees `dead`
		sender.join();
		closedBytes_ += conn.bytesReceived();
		w->liveBytes = 0;
		idleCv_.notify_all();
		if (stopping_)
			return;
		// Neither a peer speaking nonsense nor a destination out of memory is a network hiccup.
		const int code = st.error().code();
		if (code == EPROTO || code == ENOSPC || code == ENOMEM)
			return giveUp(st.error().context(fmt::format("data connection {}", w->id)));
		const ChunkCounts left = map_.counts();
		FERRY_LOG(Warn, opts_.name, "data connection {} lost: {}; {} of {} chunks not local yet; retrying for up to {} s",
			  w->id, st.error().message(), left.total() - left.local, left.total(),
			  std::chrono::duration<double>(opts_.reconnectTimeout).count());
	}
}

void Puller::requestNow(uint32_t index)
{
	std::optional<ChunkRequest> req = map_.claim(index);
	if (!req)
		return; // already in flight (or local): the fault waits for it
	for (size_t k = 0; k < workers_.size(); k++) {
		Worker *w = workers_[nextFaultWorker_++ % workers_.size()].get();
		Connection *conn;
		uint64_t id;
		// Decide GetPages vs GetChunk before the request is visible to the receiver.
		ChunkRequest sent = *req;
		narrowToPages(sent, region_);
		{
			std::lock_guard g(w->lock);
			if (!w->current || w->dead)
				continue;
			conn = w->current;
			id = w->nextId++;
			w->borrowers++;
			w->pending[id] = {sent, 0, kUnits};
			w->inflightChunks += sent.count;
			w->inflightUnits += sent.count * kUnits;
		}
		Status st = sendChunkRequest(*conn, id, sent, false); // a vCPU waits: no compressor on the way
		{
			std::lock_guard g(w->lock);
			w->borrowers--;
		}
		w->cv.notify_all();
		if (!st.ok())
			conn->shutdown(); // the worker fails the pending request and reconnects
		return;
	}
	map_.requestFailed(index); // queued first; a sender takes it once connected
}

} // namespace ferry
