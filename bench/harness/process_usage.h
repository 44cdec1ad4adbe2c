// SPDX-License-Identifier: GPL-2.0-or-later
// What this benchmark process itself spends during a migration: CPU time per group of threads
// and resident memory beyond the guests' RAM. ferry's roles run inside `ferry-bench` (the
// seeder on a thread of its own, the leecher on the calling thread), beside the harness and the
// link emulators, so their cost is told apart by thread name: a thread created by another
// inherits its name (Linux copies `comm` on clone), so naming the thread that starts a role, for
// as long as it starts or runs it, names every thread the role creates (ScopedThreadName).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "ferry/base/json.h"

namespace ferry {

// Names the calling thread (at most 15 characters, the kernel's limit) until destroyed, then
// restores the previous name. Threads created meanwhile by this thread keep the name.
class ScopedThreadName {
public:
	explicit ScopedThreadName(const char *name);
	~ScopedThreadName();
	ScopedThreadName(const ScopedThreadName &) = delete;
	ScopedThreadName &operator=(const ScopedThreadName &) = delete;

private:
	char previous_[16] = {};
};

struct ProcessUsage {
	double periodMs = 0;
	uint64_t samples = 0;
	// CPU seconds by thread name, summed over every thread that ran in the window (a thread's
	// time between two samples goes to the name it had at the second). From
	// /proc/self/task/TID/schedstat (run time in ns); a thread that exits loses what it ran
	// after its last sample, which cpuUnattributedS collects.
	std::map<std::string, double> cpuByThreadS;
	double cpuTotalS = 0;        // getrusage(RUSAGE_SELF) user + system over the window
	double cpuUnattributedS = 0; // cpuTotalS minus the sum of cpuByThreadS
	// /proc/self/status, kiB: before the window, and the peak among the samples. RssAnon is
	// the process's private memory; guest RAM that ferry maps (shared memfd) is RssShmem, and
	// the page tables of those mappings are VmPTE (kernel memory, not in RSS).
	uint64_t rssAnonBeforeKib = 0, rssAnonPeakKib = 0;
	uint64_t rssShmemBeforeKib = 0, rssShmemPeakKib = 0;
	uint64_t vmPteBeforeKib = 0, vmPtePeakKib = 0;

	JsonValue toJson() const;
};

// Samples this process every `period` on a thread of its own ("bench-sampler") from start to
// stop(). Used from one thread.
class ProcessUsageSampler {
public:
	explicit ProcessUsageSampler(std::chrono::milliseconds period = std::chrono::milliseconds(10));
	~ProcessUsageSampler(); // stops the sampler
	ProcessUsageSampler(const ProcessUsageSampler &) = delete;
	ProcessUsageSampler &operator=(const ProcessUsageSampler &) = delete;

	// Takes a last sample and returns the window's figures.
	ProcessUsage stop();

private:
	void sample();
	void loop();

	struct ThreadSeen {
		uint64_t runNs = 0;
	};

	std::chrono::milliseconds period_;
	double cpuStartS_ = 0;
	ProcessUsage usage_;
	std::map<int, ThreadSeen> threads_; // by TID
	std::mutex mutex_;
	std::condition_variable wake_;
	bool stopping_ = false;
	std::thread thread_; // last: started once the rest is set up
};

} // namespace ferry
