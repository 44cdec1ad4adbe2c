// SPDX-License-Identifier: GPL-2.0-or-later
// Exact dirty tracking: userfaultfd async write-protect keeps one "written" bit per page in
// the page tables of the tracked process (cleared uffd-wp bit), PAGEMAP_SCAN reads and
// re-arms them in one walk. No fault ever reaches user space and the writer never blocks.
#include "ferry/dirty/tracker.h"

#include <algorithm>

#include "ferry/sys/kernel_compat.h"
#include "ferry/sys/mapping.h"
#include "ferry/sys/pagemap_scan.h"

#include "dirty/region_check.h"

namespace ferry {

namespace {

Status outcomeStatus(UffdOutcome outcome, std::string_view what)
{
	switch (outcome) {
	case UffdOutcome::Done:
	case UffdOutcome::Exists:
		return okStatus();
	case UffdOutcome::Retry:
		return Error::format(EAGAIN, "{}: address space of the target is changing", what);
	case UffdOutcome::Gone:
		return Error::format(ESRCH, "{}: target process exited", what);
	}
	return Error(EINVAL, "bad outcome");
}

class UffdWpTracker final : public DirtyTracker {
public:
	UffdWpTracker(const TrackedRegion &region, uint32_t chunks, Userfaultfd uffd,
		      PagemapScanner scanner)
		: region_(region), chunks_(chunks), scanner_(std::move(scanner)),
		  uffd_(std::move(uffd))
	{
		chunkShift_ = static_cast<unsigned>(__builtin_ctzll(region.chunkSize));
	}

	Status start() override
	{
		FERRY_TRY_CTX(ensureRegistered(), "uffd-wp tracker pid {}", region_.pid);
		// UFFDIO_WRITEPROTECT rather than a WP_MATCHING scan: it also puts PTE markers
		// on never-populated pages, so that faulting them in by a read keeps them
		// protected and only a write marks them.
		FERRY_ASSIGN(UffdOutcome o, uffd_.writeProtect(base(), region_.len, true));
		FERRY_TRY_CTX(outcomeStatus(o, "write-protect"), "uffd-wp tracker pid {}",
			      region_.pid);
		pending_.clear();
		std::fill(masks_.begin(), masks_.end(), 0);
		touched_.clear();
		return okStatus();
	}

	Status collect(std::vector<uint32_t> &dirtyChunks) override
	{
		ranges_.clear();
		Status s = scanner_.scanWritten(region_.addr, region_.len, true, ranges_);
		// Pages reported before a failure are already re-armed: keep them for the next
		// collect() instead of losing them.
		for (const PageRange &r : ranges_) {
			uint32_t first = static_cast<uint32_t>((r.start - region_.addr) >> chunkShift_);
			uint32_t last = static_cast<uint32_t>((r.end - 1 - region_.addr) >> chunkShift_);
			for (uint32_t c = first; c <= last; c++) {
				if (!pending_.empty() && pending_.back() == c)
					continue;
				if (!pending_.empty() && pending_.back() > c)
					needSort_ = true;
				pending_.push_back(c);
			}
		}
		if (!s.ok())
			return s.error().context(fmt::format("uffd-wp tracker pid {}: collect",
							     region_.pid));
		if (needSort_) {
			// Only after a failed collect: merge of two sorted runs.
			std::sort(pending_.begin(), pending_.end());
			pending_.erase(std::unique(pending_.begin(), pending_.end()), pending_.end());
			needSort_ = false;
		}
		dirtyChunks.swap(pending_);
		pending_.clear();
		return okStatus();
	}

	Status collectPages(std::vector<uint32_t> &dirtyChunks, std::vector<uint64_t> &pageMasks) override
	{
		const size_t page = 4096;
		if (region_.chunkSize / page > 64)
			return DirtyTracker::collectPages(dirtyChunks, pageMasks);
		if (masks_.empty())
			masks_.assign(chunks_, 0);
		ranges_.clear();
		Status s = scanner_.scanWritten(region_.addr, region_.len, true, ranges_);
		// As in collect(): what a failed scan already re-armed is kept for the next call.
		for (const PageRange &r : ranges_) {
			for (uintptr_t p = r.start; p < r.end; p += page) {
				uintptr_t off = p - region_.addr;
				uint32_t c = static_cast<uint32_t>(off >> chunkShift_);
				if (!masks_[c])
					touched_.push_back(c);
				masks_[c] |= uint64_t(1) << ((off & (region_.chunkSize - 1)) / page);
			}
		}
		if (!s.ok())
			return s.error().context(fmt::format("uffd-wp tracker pid {}: collect", region_.pid));
		std::sort(touched_.begin(), touched_.end());
		dirtyChunks.assign(touched_.begin(), touched_.end());
		pageMasks.clear();
		pageMasks.reserve(touched_.size());
		for (uint32_t c : touched_) {
			pageMasks.push_back(masks_[c]);
			masks_[c] = 0;
		}
		touched_.clear();
		return okStatus();
	}

	const char *name() const override { return "uffd-wp"; }
	uint64_t chunkCount() const override { return chunks_; }

private:
	void *base() const { return reinterpret_cast<void *>(region_.addr); }

	// Registers the range for async WP unless every page already has it (e.g. the agent
	// side did it with createWpAsyncUffd()). Registering an already registered range would
	// replace its modes, so it is only done when needed.
	Status ensureRegistered()
	{
		PagemapScanner::Query notAllowed;
		notAllowed.categoryInverted = PAGE_IS_WPALLOWED;
		notAllowed.categoryMask = PAGE_IS_WPALLOWED;
		notAllowed.returnMask = PAGE_IS_WPALLOWED;
		std::vector<PageRange> missing;
		FERRY_TRY_CTX(scanner_.scan(region_.addr, region_.len, notAllowed, missing),
			      "check async WP");
		if (missing.empty())
			return okStatus();
		if ((uffd_.features() & UFFD_FEATURE_WP_ASYNC) == 0)
			return Error::format(ENOTSUP, "userfaultfd without WP_ASYNC (features {})",
					     Userfaultfd::featureNames(uffd_.features()));
		FERRY_TRY(uffd_.registerRange(base(), region_.len,
					      static_cast<uint32_t>(UffdMode::WriteProtect)));
		missing.clear();
		FERRY_TRY_CTX(scanner_.scan(region_.addr, region_.len, notAllowed, missing),
			      "check async WP");
		if (!missing.empty())
			// The kernel grants PAGE_IS_WPALLOWED to anonymous memory only with
			// WP_UNPOPULATED (PTE markers), to shmem with WP_HUGETLBFS_SHMEM.
			return Error::format(ENOTSUP,
					     "{:#x}-{:#x} not async-WP after register (features {})",
					     missing.front().start, missing.front().end,
					     Userfaultfd::featureNames(uffd_.features()));
		return okStatus();
	}

	TrackedRegion region_;
	uint32_t chunks_;
	unsigned chunkShift_;
	PagemapScanner scanner_;
	Userfaultfd uffd_;
	std::vector<PageRange> ranges_;
	std::vector<uint32_t> pending_;
	bool needSort_ = false;
	std::vector<uint64_t> masks_;   // collectPages(): written pages per chunk, not yet reported
	std::vector<uint32_t> touched_; // chunks with a non-zero mask
};

} // namespace

Result<Userfaultfd> createWpAsyncUffd(void *addr, size_t len)
{
	FERRY_ASSIGN(Userfaultfd uffd, Userfaultfd::create(kWpAsyncFeatures, UffdScope::UserModeOnlyAllowed));
	FERRY_TRY(uffd.registerRange(addr, len, static_cast<uint32_t>(UffdMode::WriteProtect)));
	FERRY_ASSIGN(UffdOutcome o, uffd.writeProtect(addr, len, true));
	FERRY_TRY(outcomeStatus(o, "write-protect"));
	return uffd;
}

Result<std::unique_ptr<DirtyTracker>> makeUffdWpTracker(const TrackedRegion &region,
							Userfaultfd uffd)
{
	FERRY_ASSIGN(uint32_t chunks, dirty::checkRegion(region));
	if (!PagemapScanner::supported())
		return Error(ENOTSUP, "uffd-wp tracker: PAGEMAP_SCAN not supported by this kernel");
	if (!uffd.valid()) {
		if (region.pid != 0)
			return Error(EINVAL, "uffd-wp tracker: another process's region needs a "
					     "userfaultfd created inside it");
		auto created = createWpAsyncUffd(reinterpret_cast<void *>(region.addr), region.len);
		if (!created.ok())
			return created.error().context("uffd-wp tracker");
		uffd = std::move(created).value();
	}
	FERRY_ASSIGN(PagemapScanner scanner, PagemapScanner::open(region.pid));
	return std::unique_ptr<DirtyTracker>(
		new UffdWpTracker(region, chunks, std::move(uffd), std::move(scanner)));
}

} // namespace ferry
