// SPDX-License-Identifier: GPL-2.0-or-later
// The one place for kernel uAPI newer than the build machine's headers (Debian 12 ships 6.1).
// Values are the kernel's ABI (include/uapi/linux/userfaultfd.h and fs.h, Linux 6.7+); each
// is guarded so newer headers win. Presence here says nothing about the running kernel:
// probe at run time (Userfaultfd::probeFeatures(), PagemapScanner::supported()).
#pragma once

#include <linux/fs.h>
#include <linux/types.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>

// --- userfaultfd features (UFFDIO_API.features) ---
#ifndef UFFD_FEATURE_MINOR_SHMEM
#define UFFD_FEATURE_MINOR_SHMEM (1 << 10)
#endif
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12)
#endif
// Anonymous memory: UFFDIO_WRITEPROTECT also installs PTE markers on never-populated pages,
// so a later fault on them is seen as a write to a protected page (shmem always does this).
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
// A write to a WP page is resolved by the kernel (no message): it drops the page's uffd-wp
// bit, which PAGEMAP_SCAN reports as PAGE_IS_WRITTEN.
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
#endif

// --- UFFDIO_CONTINUE (5.13) ---
#ifndef _UFFDIO_CONTINUE
#define _UFFDIO_CONTINUE (0x07)
#endif
#ifndef UFFDIO_REGISTER_MODE_MINOR
#define UFFDIO_REGISTER_MODE_MINOR ((__u64)1 << 2)
#endif
#ifndef UFFDIO_CONTINUE
struct uffdio_continue {
	struct uffdio_range range;
#define UFFDIO_CONTINUE_MODE_DONTWAKE ((__u64)1 << 0)
	__u64 mode;
	__s64 mapped;
};
#define UFFDIO_CONTINUE _IOWR(UFFDIO, _UFFDIO_CONTINUE, struct uffdio_continue)
#endif

// --- PAGEMAP_SCAN ioctl on /proc/<pid>/pagemap (6.7) ---
#ifndef PAGEMAP_SCAN

// Categories: filters in pm_scan_arg's masks and bits reported in page_region.categories.
#define PAGE_IS_WPALLOWED (1 << 0) // the VMA has uffd async WP (with PTE markers)
#define PAGE_IS_WRITTEN (1 << 1)   // written since last write-protected
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PAGE_IS_PFNZERO (1 << 5)
#define PAGE_IS_HUGE (1 << 6)
#define PAGE_IS_SOFT_DIRTY (1 << 7)

struct page_region {
	__u64 start;
	__u64 end; // exclusive
	__u64 categories;
};

// Write-protect the matched pages (atomically with reporting them).
#define PM_SCAN_WP_MATCHING (1 << 0)
// Fail with EPERM instead of walking a VMA without uffd async WP.
#define PM_SCAN_CHECK_WPASYNC (1 << 1)

struct pm_scan_arg {
	__u64 size; // sizeof(struct pm_scan_arg)
	__u64 flags;
	__u64 start;
	__u64 end;
	__u64 walk_end; // set by the kernel: where the walk stopped (== end when complete)
	__u64 vec;      // struct page_region *
	__u64 vec_len;
	__u64 max_pages;
	__u64 category_inverted;
	__u64 category_mask;
	__u64 category_anyof_mask;
	__u64 return_mask;
};

#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)

#endif // PAGEMAP_SCAN

#ifndef PAGE_IS_GUARD
#define PAGE_IS_GUARD (1 << 8)
#endif
