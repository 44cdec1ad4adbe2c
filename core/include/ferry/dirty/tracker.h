// SPDX-License-Identifier: GPL-2.0-or-later
// Dirty tracking of a memory region cut into chunks (chunkSize: power of two, >= page size).
//
// Contract: after start(), every chunk with a byte written after start() (or after the
// previous collect()) appears in the next collect(). The uffd tracker is exact: it reports
// precisely the chunks written (even with an unchanged value), never a chunk only read; the
// hash tracker reports precisely the chunks whose content changed.
//
// Granularity caveat (uffd): the kernel keeps the written bit per page-table entry, so a
// region backed by transparent huge pages is reported per 2 MiB huge page. Guest RAM on
// memfd (shmem_enabled=never here) and anonymous memory with MADV_NOHUGEPAGE are per 4 KiB.
//
// A tracker is used by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <sys/types.h>
#include <vector>

#include "ferry/base/result.h"
#include "ferry/sys/userfaultfd.h"

namespace ferry {

class DirtyTracker {
public:
	virtual ~DirtyTracker() = default;
	// Arms tracking: clears all dirty state; the next collect() reports writes from now on.
	virtual Status start() = 0;
	// Replaces the contents of `dirtyChunks` with the sorted, unique indices of the chunks
	// written since start() or the previous collect(), and clears that state. A failed
	// collect() drops nothing: what it had already cleared is reported by the next one.
	virtual Status collect(std::vector<uint32_t> &dirtyChunks) = 0;
	// Like collect(), and also which pages (4 KiB, bit i = page i of the chunk) of each chunk
	// were written; pageMasks is parallel to dirtyChunks. Chunks of more than 64 pages, and
	// trackers without page resolution, report ~0 (the whole chunk). Use one of collect()
	// and collectPages() per tracker, not both.
	virtual Status collectPages(std::vector<uint32_t> &dirtyChunks, std::vector<uint64_t> &pageMasks)
	{
		FERRY_TRY(collect(dirtyChunks));
		pageMasks.assign(dirtyChunks.size(), ~uint64_t(0));
		return {};
	}
	virtual const char *name() const = 0; // "uffd-wp", "xxh3"
	virtual uint64_t chunkCount() const = 0;
};

// pid 0 = this process. addr and len must be page-aligned; len a multiple of chunkSize is
// not required (the last chunk may be short).
struct TrackedRegion {
	pid_t pid;
	uintptr_t addr;
	size_t len;
	size_t chunkSize;
};

// Exact tracker: userfaultfd async write-protect + PAGEMAP_SCAN on /proc/<pid>/pagemap.
// `uffd` was created inside the process `region.pid` (for pid 0: in this process; the tracker
// creates one itself if given an invalid Userfaultfd). If the range is not yet registered for
// async WP, the tracker registers it (possible for any pid: the uffd acts on its creator's
// mm), which requires `uffd` to have WP_ASYNC (+ WP_UNPOPULATED for anonymous memory, +
// WP_HUGETLBFS_SHMEM for shmem); createWpAsyncUffd() gives all of them.
// The tracker owns the uffd: closing it (destroying the tracker) ends the write protection.
Result<std::unique_ptr<DirtyTracker>> makeUffdWpTracker(const TrackedRegion &region,
							Userfaultfd uffd);

// Generic tracker: XXH3-64 hash of each chunk, compared between passes. The region is read
// directly for pid 0, with process_vm_readv for another pid. Costs one full read per pass,
// and populates never-touched pages of the region.
Result<std::unique_ptr<DirtyTracker>> makeHashTracker(const TrackedRegion &region);

// The features createWpAsyncUffd() asks for.
constexpr uint64_t kWpAsyncFeatures = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED |
				      UFFD_FEATURE_WP_HUGETLBFS_SHMEM;

// Creates a uffd in *this* process for WP-async tracking of [addr, addr+len), registers it
// write-protect and write-protects the range (never-populated pages included), ready to
// hand to a tracker in another process (over SCM_RIGHTS; adopt it with needApi = false and
// kWpAsyncFeatures).
Result<Userfaultfd> createWpAsyncUffd(void *addr, size_t len);

} // namespace ferry
