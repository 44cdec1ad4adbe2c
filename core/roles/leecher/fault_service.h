// SPDX-License-Identifier: GPL-2.0-or-later
// The leecher's post-copy fault service (internal). After the switch-over the application
// runs on a region it mapped itself, guarded by a userfaultfd (MISSING|MINOR) it handed over:
// a page of a chunk that is not yet Local faults, and the fault thread requests that chunk at
// once (through `request`, the puller's fault path); when the chunk arrives, onChunkLocal
// installs all of it (UFFDIO_CONTINUE) and wakes the waiters. A premap thread installs the
// chunks that were already Local at the switch-over, in large batches.
//
// Threads: start()/finish()/stop() from run()'s thread; onChunkLocal() from the puller's
// receivers. A fault-thread error is latched in the FailureLatch (the migration fails).
#pragma once
#ifndef FERRY_CORE_INTERNAL
#error "an internal header of ferry-core: include the public ones (ferry/...) instead"
#endif

#include <atomic>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "ferry/roles/chunk_map.h"
#include "ferry/roles/leecher.h"
#include "ferry/sys/fd.h"
#include "roles/leecher/local_region.h"

namespace ferry {

class FaultService {
public:
	FaultService(LocalRegion &region, ChunkMap &map, FailureLatch &failure, std::string name,
		     std::function<void(uint32_t)> request);
	~FaultService(); // stop()
	FaultService(const FaultService &) = delete;
	FaultService &operator=(const FaultService &) = delete;

	Status start(FaultTarget target);
	void onChunkLocal(uint32_t index);
	// Every chunk is Local: installs what is still unmapped, stops the threads and unregisters
	// the region (the application then never faults to us again).
	Status finish();
	// Stops the threads without finishing (a failed migration). Idempotent.
	void stop();

	uint64_t faults() const { return faults_.load(); }
	uint64_t localFaults() const { return localFaults_.load(); }

private:
	void faultLoop();
	void premapLoop();
	// Installs chunk `index` in the application and wakes the faulting addresses.
	Status resolveChunk(uint32_t index, std::span<const uintptr_t> waiters);
	std::vector<uintptr_t> takeWaiters(uint32_t index); // faultLock_ held

	LocalRegion &region_;
	ChunkMap &map_;
	FailureLatch &failure_;
	const std::string name_;
	const std::function<void(uint32_t)> request_;

	// Field order is teardown order: the threads (stopped in stop()) before the uffd closes.
	std::optional<Userfaultfd> uffd_;
	uintptr_t appBase_ = 0;
	UniqueFd stopFd_;
	std::mutex faultLock_; // orders fault registration against chunk completion
	std::unordered_map<uint32_t, std::vector<uintptr_t>> waiters_;
	std::atomic<uint64_t> faults_{0}, localFaults_{0};
	std::atomic<bool> stopping_{false};
	std::thread faultThread_;
	std::thread premapThread_;
};

} // namespace ferry
