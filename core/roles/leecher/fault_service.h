// SPDX-License-Identifier: GPL-2.0-or-later
// The leecher's post-copy fault service (internal). After the switch-over the application
// runs on a region it mapped itself, guarded by a userfaultfd (MISSING|MINOR) it handed over:
// a page of a chunk that is not yet Local faults, and the fault thread requests that chunk at
// once. With a fault channel (a connection of its own, opened before the switch-over), the
// fault thread sends the request and reads the reply itself, busy-polling the userfaultfd and
// the channel for a moment after each event, so a fault costs one round trip and no thread
// hand-off; without one (or once it broke), the request goes through `request` (the puller).
// A chunk that arrives on a data connection is installed by onChunkLocal. A premap thread,
// started once the application runs, installs the chunks that were already Local at the
// switch-over, in large batches, while post-copy lasts; finish() stops it and unregisters,
// after which the kernel maps the rest.
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
#include "ferry/sys/mapping.h"
#include "roles/leecher/local_region.h"
#include "roles/leecher/replies.h"

namespace ferry {

class FaultService {
public:
	FaultService(LocalRegion &region, ChunkMap &map, FailureLatch &failure, std::string name,
		     std::function<void(uint32_t)> request);
	~FaultService(); // stop()
	FaultService(const FaultService &) = delete;
	FaultService &operator=(const FaultService &) = delete;

	// channel: a connection of the session opened with HelloMsg::kFeatureFaultChannel, or none.
	Status start(FaultTarget target, std::optional<Connection> channel = std::nullopt);
	// Starts the premap thread (after start(), once the application runs). Mapping a GiB
	// takes it ~0.37 s of a core: started with the service, it ran through the downtime,
	// beside the application's own loading (a VM's device state) and, under libvirt, the
	// switch-over's steps, on the same cores (docs/benchmarks.md section 20).
	void startPremap();
	void onChunkLocal(uint32_t index);
	// Every chunk is Local: installs what is still unmapped, stops the threads and unregisters
	// the region (the application then never faults to us again).
	Status finish();
	// Stops the threads without finishing (a failed migration). Idempotent.
	void stop();

	uint64_t faults() const { return faults_.load(); }
	uint64_t localFaults() const { return localFaults_.load(); }
	uint64_t channelChunks() const { return channelChunks_.load(); }

private:
	void faultLoop();
	// How long the fault thread may sleep before it spins for the next reply due on the
	// channel: -1 none due (sleep until an event), 0 spin now.
	int64_t sleepBeforeNextReplyNs(int64_t now) const;
	// Reads the pending fault events and asks for what they wait on; returns whether there
	// were any.
	bool serveFaults(std::vector<uffd_msg> &msgs);
	void requestFault(uint32_t index); // the fault thread
	// One reply on the fault channel: into the region, then into the application.
	Status receiveOnChannel();
	// The channel failed: what it owed goes back to the map (first in line), and faults take
	// the puller's path from now on. A seeder speaking nonsense fails the migration.
	void dropChannel(const Error &e);
	void premapLoop();
	// Installs chunk `index` in the application and wakes the faulting addresses.
	Status resolveChunk(uint32_t index, std::span<const uintptr_t> waiters);
	// Places a chunk read into stage_ (faultLock_ held): see receiveOnChannel.
	Status placeStaged(uint32_t index, std::span<const uintptr_t> waiters);
	std::vector<uintptr_t> takeWaiters(uint32_t index); // faultLock_ held

	LocalRegion &region_;
	ChunkMap &map_;
	FailureLatch &failure_;
	const std::string name_;
	const std::function<void(uint32_t)> request_;

	// Field order is teardown order: the threads (stopped in stop()) before the uffd closes.
	std::optional<Userfaultfd> uffd_;
	uintptr_t appBase_ = 0;
	// Set (release) once start() has set uffd_ and appBase_: the puller may land a chunk
	// and call onChunkLocal() before that, which must then leave the chunk to the premap.
	std::atomic<bool> started_{false};
	UniqueFd stopFd_;
	std::mutex faultLock_; // orders fault registration against chunk completion
	std::unordered_map<uint32_t, std::vector<uintptr_t>> waiters_;
	// The fault channel and what it owes (the fault thread only).
	std::optional<Connection> channel_;
	std::optional<ChunkReplyReader> channelReplies_;
	struct PendingFault {
		ChunkRequest req;
		int64_t sentNs = 0;
	};
	std::unordered_map<uint64_t, PendingFault> channelPending_;
	// How long the channel's replies take (moving average; 0: none yet), so the fault thread
	// can sleep through most of a long round trip and spin for its end.
	int64_t replyNs_ = 0;
	Mapping stage_; // one chunk, page-aligned (UFFDIO_COPY's source)
	uint64_t nextChannelId_ = 1;
	std::atomic<uint64_t> faults_{0}, localFaults_{0}, channelChunks_{0};
	std::atomic<bool> stopping_{false};
	std::thread faultThread_;
	std::thread premapThread_;
};

} // namespace ferry
