// SPDX-License-Identifier: GPL-2.0-or-later
// PAGEMAP_SCAN (Linux 6.7) on /proc/<pid>/pagemap: reads, and atomically re-arms, the
// "written" state that userfaultfd async write-protection keeps in the page tables.
//
// Contract relied on: the pagemap file is bound to the target's mm when opened (opening
// another pid's needs PTRACE_MODE_READ; root or same uid without Yama restrictions), and the
// ioctl acts on that mm from any process. A page is PAGE_IS_WRITTEN when its uffd-wp bit is
// clear; with PM_SCAN_WP_MATCHING the kernel sets it again on exactly the pages it reports,
// under the page-table lock, so no write between report and re-arm is lost.
#pragma once

#include <cstddef>
#include <cstdint>
#include <sys/types.h>
#include <vector>

#include "ferry/base/result.h"
#include "ferry/sys/fd.h"

namespace ferry {

// [start, end) in the target's address space; categories are PAGE_IS_* bits.
struct PageRange {
	uintptr_t start;
	uintptr_t end;
	uint64_t categories;
};

class PagemapScanner {
public:
	PagemapScanner() = default;

	// Opens /proc/<pid>/pagemap (pid 0 = this process).
	static Result<PagemapScanner> open(pid_t pid);
	// Whether PAGEMAP_SCAN works on this kernel (probed once, cached).
	static bool supported();

	// Appends to `out` the ranges of pages written since the last clear in
	// [start, start+len) (page-aligned), merged when adjacent. With `clear`, write-protects
	// them again in the same walk (PM_SCAN_WP_MATCHING). Every VMA in the range must have
	// uffd async WP (PM_SCAN_CHECK_WPASYNC: EPERM otherwise, nothing is reported as
	// written that was not). Loops until the whole range is walked.
	Status scanWritten(uintptr_t start, size_t len, bool clear, std::vector<PageRange> &out);

	// The general form: one full walk of [start, start+len) with the given PM_SCAN_* flags
	// and category masks (see ioctl_pagemap_scan(2)); regions appended to `out`.
	struct Query {
		uint64_t flags = 0;
		uint64_t categoryInverted = 0;
		uint64_t categoryMask = 0;
		uint64_t categoryAnyofMask = 0;
		uint64_t returnMask = 0;
	};
	Status scan(uintptr_t start, size_t len, const Query &query, std::vector<PageRange> &out);

	pid_t pid() const { return pid_; }
	int fd() const { return fd_.get(); }

private:
	PagemapScanner(UniqueFd fd, pid_t pid) : fd_(std::move(fd)), pid_(pid) {}

	UniqueFd fd_;
	pid_t pid_ = 0;
};

} // namespace ferry
