// SPDX-License-Identifier: GPL-2.0-or-later
#include "roles/leecher/fault_service.h"

#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstring>

#include "ferry/base/clock.h"
#include "ferry/base/log.h"

namespace ferry {

namespace {

constexpr size_t kPage = 4096;
// How long the fault thread spins (yielding between looks) after its last event before it
// blocks: a vCPU's next fault, or the reply it waits for, usually comes sooner than a blocked
// thread wakes on this kind of machine.
constexpr int64_t kSpinNs = 200'000;
// A reply due after a long round trip (a WAN link) is waited for asleep until this long
// before it is due, then spun for: a sleeping thread takes tens of microseconds to wake here.
constexpr int64_t kWakeEarlyNs = 300'000;

Error applicationGone() { return Error(ESRCH, "application exited"); }

} // namespace

FaultService::FaultService(LocalRegion &region, ChunkMap &map, FailureLatch &failure, std::string name,
			   std::function<void(uint32_t)> request)
	: region_(region), map_(map), failure_(failure), name_(std::move(name)), request_(std::move(request))
{
}

FaultService::~FaultService() { stop(); }

Status FaultService::start(FaultTarget target, std::optional<Connection> channel)
{
	uffd_.emplace(std::move(target.uffd));
	if (channel) {
		channel_ = std::move(channel);
		channel_->setBusyPoll(std::chrono::microseconds(kSpinNs / 1000)); // the rest of a reply
		channelReplies_.emplace(region_);
		FERRY_ASSIGN(stage_, Mapping::anonymous(region_.chunkSize));
		std::memset(stage_.data(), 0, region_.chunkSize); // populated before the first fault
	}
	appBase_ = target.base;
	stopFd_.reset(::eventfd(0, EFD_CLOEXEC));
	if (!stopFd_)
		return Error::fromErrno("eventfd");
	started_.store(true, std::memory_order_release);
	faultThread_ = std::thread([this] {
		// Its sleeps before a reply is due end on time, not up to 50 µs late (the default slack).
		(void)::prctl(PR_SET_TIMERSLACK, 1UL);
		faultLoop();
	});
	return {};
}

void FaultService::startPremap()
{
	if (started_.load(std::memory_order_acquire) && !premapThread_.joinable() && !stopping_)
		premapThread_ = std::thread([this] { premapLoop(); });
}

void FaultService::stop()
{
	stopping_ = true;
	if (stopFd_) {
		uint64_t v = 1;
		(void)!::write(stopFd_.get(), &v, sizeof(v));
	}
	if (premapThread_.joinable())
		premapThread_.join();
	if (faultThread_.joinable())
		faultThread_.join();
	// A puller thread may be placing a chunk that just landed (onChunkLocal): let it finish
	// before the caller unregisters the region, and make every later one a no-op. Without
	// this, the last chunk of a post-copy could be placed after finish() unregistered it
	// (UFFDIO_CONTINUE failed with ENOENT: harmless, the page was in the file, but logged as
	// a failure; seen once in 12 VM migrations).
	std::lock_guard g(faultLock_);
}

std::vector<uintptr_t> FaultService::takeWaiters(uint32_t index)
{
	std::vector<uintptr_t> w;
	if (auto it = waiters_.find(index); it != waiters_.end()) {
		w = std::move(it->second);
		waiters_.erase(it);
	}
	return w;
}

Status FaultService::resolveChunk(uint32_t index, std::span<const uintptr_t> waiters)
{
	const size_t len = region_.length(index);
	void *dst = reinterpret_cast<void *>(appBase_ + region_.offset(index));
	if (region_.absent[index]) {
		// A zero chunk never stored here: the pages are not in the page cache, so the
		// fault is a MISSING one; give the waiting pages fresh zero pages.
		for (uintptr_t a : waiters) {
			FERRY_ASSIGN(UffdOutcome o, uffd_->zeroPage(reinterpret_cast<void *>(a), kPage));
			switch (o) {
			case UffdOutcome::Done: break;
			case UffdOutcome::Exists: // installed meanwhile: the waiter only needs waking
			case UffdOutcome::Retry:  // the range is changing: it faults again if needed
				FERRY_TRY(uffd_->wake(reinterpret_cast<void *>(a), kPage));
				break;
			case UffdOutcome::Gone: return applicationGone();
			}
		}
		return {};
	}
	FERRY_ASSIGN(UffdOutcome o, uffd_->continueRange(dst, len));
	switch (o) {
	case UffdOutcome::Done:
		return {};
	case UffdOutcome::Gone:
		return applicationGone();
	case UffdOutcome::Exists: // some pages were installed already (a fault raced us)
	case UffdOutcome::Retry:
		break;
	}
	// Go page by page.
	for (size_t p = 0; p < len; p += kPage) {
		FERRY_ASSIGN(UffdOutcome po, uffd_->continueRange(static_cast<uint8_t *>(dst) + p, kPage));
		if (po == UffdOutcome::Gone)
			return applicationGone();
	}
	for (uintptr_t a : waiters)
		(void)uffd_->wake(reinterpret_cast<void *>(a), kPage); // best effort: it may be awake
	return {};
}

void FaultService::onChunkLocal(uint32_t index)
{
	// Landed before start() finished (the puller's callback is installed first, so that no
	// chunk a fault waits for can land unnoticed): no fault can wait on it yet, and the
	// premap thread, which starts later, maps it with the other Local chunks. Before this
	// check such a chunk was mapped at the region's offset from address 0 (UFFDIO_CONTINUE
	// failed with ENOENT), or through a uffd_ not yet there.
	if (!started_.load(std::memory_order_acquire))
		return;
	std::lock_guard g(faultLock_);
	if (stopping_)
		return; // finished (stop): the region is, or is about to be, unregistered
	std::vector<uintptr_t> waiters = takeWaiters(index);
	// Install the whole chunk now, so the application never faults on it again.
	Status st = resolveChunk(index, waiters);
	if (!st.ok())
		FERRY_LOG_RATELIMITED(Warn, name_, "[chunk {}] map into application: {}", index, st.error().message());
}

void FaultService::faultLoop()
{
	std::vector<uffd_msg> msgs;
	int64_t lastEventNs = monotonicNs();
	for (;;) {
		if (stopping_)
			return;
		bool active = false;
		// Replies first: a vCPU waits on each.
		while (channel_) {
			auto ready = channel_->readable();
			if (ready.ok() && !*ready)
				break;
			Status st = ready.ok() ? receiveOnChannel() : Status(ready.error());
			if (!st.ok())
				dropChannel(st.error());
			active = true;
		}
		active |= serveFaults(msgs);
		if (failure_.get())
			return;
		const int64_t now = monotonicNs();
		if (active) {
			lastEventNs = now;
			continue;
		}
		int64_t sleepNs = channel_ && now - lastEventNs < kSpinNs ? 0 : sleepBeforeNextReplyNs(now);
		pollfd fds[3] = {{uffd_->fd(), POLLIN, 0}, {stopFd_.get(), POLLIN, 0}, {channel_ ? channel_->fd() : -1, POLLIN, 0}};
		const timespec ts = timespecOfNs(std::max<int64_t>(0, sleepNs));
		int n = ::ppoll(fds, 3, sleepNs < 0 ? nullptr : &ts, nullptr);
		if (n < 0 && errno != EINTR) {
			failure_.fail(Error::fromErrno("fault service: poll"));
			return;
		}
		if (fds[1].revents & POLLIN)
			return;
		if (n == 0 && sleepNs == 0)
			::sched_yield();
	}
}

int64_t FaultService::sleepBeforeNextReplyNs(int64_t now) const
{
	if (!channel_ || channelPending_.empty() || replyNs_ == 0)
		return -1;
	int64_t due = INT64_MAX;
	for (const auto &[id, p] : channelPending_)
		due = std::min(due, p.sentNs + replyNs_);
	// Overdue: spin, but not forever (a lost reply, a slower link): then sleep until an event.
	if (now >= due)
		return now - due < kSpinNs ? 0 : -1;
	return std::max<int64_t>(0, due - now - kWakeEarlyNs);
}

bool FaultService::serveFaults(std::vector<uffd_msg> &msgs)
{
	auto r = uffd_->readEvents(msgs);
	if (!r.ok()) {
		failure_.fail(r.error().context("fault service"));
		map_.close();
		return false;
	}
	std::vector<uint32_t> toRequest;
	for (const uffd_msg &m : msgs) {
		if (m.event != UFFD_EVENT_PAGEFAULT)
			continue;
		uintptr_t addr = m.arg.pagefault.address & ~uintptr_t(kPage - 1);
		if (addr < appBase_ || addr >= appBase_ + region_.size) {
			FERRY_LOG_RATELIMITED(Warn, name_, "fault outside the region at {:#x}", addr);
			continue;
		}
		uint32_t index = static_cast<uint32_t>((addr - appBase_) / region_.chunkSize);
		std::lock_guard g(faultLock_);
		ChunkState s = map_.state(index);
		if (s == ChunkState::Local) {
			localFaults_++;
			uintptr_t w[1] = {addr};
			Status st = resolveChunk(index, w);
			if (!st.ok())
				FERRY_LOG_RATELIMITED(Warn, name_, "[chunk {}] {}", index, st.error().message());
		} else {
			faults_++;
			FERRY_LOG_RATELIMITED(Debug, name_, "[chunk {}] fault ({})", index,
					      s == ChunkState::Stale ? "stale" : "not yet pulled");
			waiters_[index].push_back(addr);
			if (s != ChunkState::InFlight)
				toRequest.push_back(index);
		}
	}
	// Outside faultLock_: a send may block until the receiver (which takes faultLock_ when a
	// chunk lands) has drained the socket.
	for (uint32_t index : toRequest)
		requestFault(index);
	return !msgs.empty();
}

void FaultService::requestFault(uint32_t index)
{
	if (!channel_)
		return request_(index);
	std::optional<ChunkRequest> req = map_.claim(index);
	if (!req)
		return; // in flight on a data connection (or local meanwhile): it is installed on arrival
	narrowToPages(*req, region_);
	const uint64_t id = nextChannelId_++;
	channelPending_[id] = {*req, monotonicNs()};
	Status st = sendChunkRequest(*channel_, id, *req, false);
	if (!st.ok())
		dropChannel(st.error());
}

Status FaultService::receiveOnChannel()
{
	FERRY_ASSIGN(FrameHeader h, channel_->recvHeader(region_.chunkSize + 64));
	FERRY_TRY(channelReplies_->accept(*channel_, h, false));
	auto it = channelPending_.find(h.requestId);
	if (it == channelPending_.end())
		return Error::format(EPROTO, "reply to unknown request {}", h.requestId);
	// A chunk never stored here is read into a warm buffer and placed with UFFDIO_COPY, which
	// allocates its pages and fills them in one step. Read straight into the region, each
	// page would first fault, be allocated and be cleared: about half of a fault's service
	// time on this kind of machine (docs/benchmarks.md 13.3).
	const ChunkRequest asked = it->second.req;
	const int64_t tookNs = monotonicNs() - it->second.sentNs;
	replyNs_ = replyNs_ == 0 ? tookNs : (replyNs_ * 7 + tookNs) / 8;
	uint8_t *stage = region_.absent[asked.index] && !asked.pageMask ? stage_.data() : nullptr;
	FERRY_ASSIGN(LandedChunk landed, channelReplies_->read(*channel_, h, asked, asked.index, stage));
	channelPending_.erase(it);
	channelChunks_++;
	std::lock_guard g(faultLock_);
	if (!map_.completed(landed.index, landed.whole)) {
		// Written again at the source meanwhile: requested again. Kept, as any reply is.
		if (landed.staged) {
			std::memcpy(region_.chunk(landed.index), stage_.data(), region_.length(landed.index));
			region_.absent[landed.index] = 0;
		}
		return {};
	}
	std::vector<uintptr_t> waiters = takeWaiters(landed.index);
	Status st = landed.staged ? placeStaged(landed.index, waiters) : resolveChunk(landed.index, waiters);
	if (!st.ok() && st.error().code() == ESRCH)
		return st;
	if (!st.ok())
		FERRY_LOG_RATELIMITED(Warn, name_, "[chunk {}] map into application: {}", landed.index, st.error().message());
	return {};
}

// UFFDIO_COPY fills only pages missing from the file. A chunk ferry never stored has none
// there: the set-up emptied the destination (emptyDestination), and ferry writes this chunk
// only here.
Status FaultService::placeStaged(uint32_t index, std::span<const uintptr_t> waiters)
{
	const size_t len = region_.length(index);
	region_.absent[index] = 0;
	FERRY_ASSIGN(UffdOutcome o,
		     uffd_->copy(reinterpret_cast<void *>(appBase_ + region_.offset(index)), stage_.data(), len));
	switch (o) {
	case UffdOutcome::Done:
		return {}; // mapped, and its waiters woken
	case UffdOutcome::Gone:
		return applicationGone();
	case UffdOutcome::Exists:
		// A page appeared in the file since the set-up, not through ferry: it keeps what was
		// written there; the rest was placed.
		FERRY_LOG_RATELIMITED(Warn, name_, "[chunk {}] pages appeared in the region outside the migration",
				      index);
		return resolveChunk(index, waiters);
	case UffdOutcome::Retry:
		break; // nothing was placed
	}
	std::memcpy(region_.chunk(index), stage_.data(), len);
	return resolveChunk(index, waiters);
}

void FaultService::dropChannel(const Error &e)
{
	channel_.reset();
	if (e.code() == EPROTO || e.code() == ESRCH) {
		failure_.fail(e.context("fault channel"));
		map_.close();
		return;
	}
	FERRY_LOG(Warn, name_, "fault channel lost ({}); {} fault(s) go to the data connections", e.message(),
		  channelPending_.size());
	for (auto &[id, p] : channelPending_) {
		map_.requestFailed(p.req.index);
		request_(p.req.index);
	}
	channelPending_.clear();
}

// Maps every chunk that was already local at switch-over into the application, in large
// batches, so that it does not take a (cheap but not free) fault on each first touch.
void FaultService::premapLoop()
{
	const uint32_t count = region_.chunkCount;
	const uint32_t batch = std::max<uint32_t>(1, (2u << 20) / region_.chunkSize);
	for (uint32_t from = 0; from < count && !stopping_; from += batch) {
		for (auto [a, b] : map_.localRuns(from, std::min(count, from + batch))) {
			std::lock_guard g(faultLock_);
			for (uint32_t i = a; i < b;) {
				if (region_.absent[i]) {
					i++;
					continue;
				}
				uint32_t j = i;
				while (j < b && !region_.absent[j])
					j++;
				uint64_t off = region_.offset(i);
				uint64_t end = std::min<uint64_t>(region_.offset(j), region_.size);
				auto o = uffd_->continueRange(reinterpret_cast<void *>(appBase_ + off), end - off);
				if (!o.ok() || *o == UffdOutcome::Gone)
					return; // the fault thread or finish() reports it
				if (*o == UffdOutcome::Exists)
					for (uint32_t k = i; k < j; k++)
						(void)resolveChunk(k, {});
				i = j;
			}
		}
	}
}

Status FaultService::finish()
{
	// Every chunk is local: its bytes are in the file under the application's mapping (or a
	// hole, for a zero chunk). Once the region is unregistered, the kernel maps a page on its
	// first touch as for any shared file mapping, so the premap thread's remaining work is not
	// needed: it stops where it is (mapping a whole GiB takes it ~0.37 s of a core, in
	// ferryd's case right while libvirt resumes the guest). Unregistering wakes anything still
	// waiting, which then faults normally.
	stop();
	FERRY_TRY_CTX(uffd_->unregisterRange(reinterpret_cast<void *>(appBase_), region_.size),
		      "unregister the application's region");
	return {};
}

} // namespace ferry
