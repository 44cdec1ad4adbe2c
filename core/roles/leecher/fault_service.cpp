// SPDX-License-Identifier: GPL-2.0-or-later
#include "roles/leecher/fault_service.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "ferry/base/log.h"

namespace ferry {

namespace {

constexpr size_t kPage = 4096;

Error applicationGone() { return Error(ESRCH, "application exited"); }

} // namespace

FaultService::FaultService(LocalRegion &region, ChunkMap &map, FailureLatch &failure, std::string name,
			   std::function<void(uint32_t)> request)
	: region_(region), map_(map), failure_(failure), name_(std::move(name)), request_(std::move(request))
{
}

FaultService::~FaultService() { stop(); }

Status FaultService::start(FaultTarget target)
{
	uffd_.emplace(std::move(target.uffd));
	appBase_ = target.base;
	stopFd_.reset(::eventfd(0, EFD_CLOEXEC));
	if (!stopFd_)
		return Error::fromErrno("eventfd");
	faultThread_ = std::thread([this] { faultLoop(); });
	premapThread_ = std::thread([this] { premapLoop(); });
	return {};
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
	std::lock_guard g(faultLock_);
	std::vector<uintptr_t> waiters = takeWaiters(index);
	// Install the whole chunk now, so the application never faults on it again.
	Status st = resolveChunk(index, waiters);
	if (!st.ok())
		FERRY_LOG_RATELIMITED(Warn, name_, "[chunk {}] map into application: {}", index, st.error().message());
}

void FaultService::faultLoop()
{
	std::vector<uffd_msg> msgs;
	pollfd fds[2] = {{uffd_->fd(), POLLIN, 0}, {stopFd_.get(), POLLIN, 0}};
	for (;;) {
		int n = ::poll(fds, 2, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			failure_.fail(Error::fromErrno("fault service: poll"));
			return;
		}
		if (fds[1].revents & POLLIN)
			return;
		auto r = uffd_->readEvents(msgs);
		if (!r.ok()) {
			failure_.fail(r.error().context("fault service"));
			map_.close();
			return;
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
		// Outside faultLock_: a send may block until the receiver (which takes faultLock_
		// when a chunk lands) has drained the socket.
		for (uint32_t index : toRequest)
			request_(index);
	}
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
	if (premapThread_.joinable())
		premapThread_.join();
	// Every chunk is local: install any page still unmapped, then stop guarding the region.
	// Unregistering wakes anything still waiting, which then faults normally.
	for (auto [a, b] : map_.localRuns(0, region_.chunkCount))
		for (uint32_t i = a; i < b; i++) {
			std::lock_guard g(faultLock_);
			std::vector<uintptr_t> w = takeWaiters(i);
			if (!region_.absent[i] || !w.empty())
				FERRY_TRY_CTX(resolveChunk(i, w), "map chunk {}", i);
		}
	stop();
	FERRY_TRY_CTX(uffd_->unregisterRange(reinterpret_cast<void *>(appBase_), region_.size),
		      "unregister the application's region");
	return {};
}

} // namespace ferry
