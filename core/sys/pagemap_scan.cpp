// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/sys/pagemap_scan.h"

#include <fcntl.h>
#include <sys/mman.h>

#include <array>

#include "ferry/sys/kernel_compat.h"
#include "ferry/sys/mapping.h"

namespace ferry {

namespace {
// Regions per ioctl: the kernel stops the walk when the vector is full and reports where
// (walk_end); 512 regions keep the buffer at 12 KiB while large walks need few calls.
constexpr size_t kVecLen = 512;
} // namespace

Result<PagemapScanner> PagemapScanner::open(pid_t pid)
{
	std::string path = pid == 0 ? std::string("/proc/self/pagemap")
				    : fmt::format("/proc/{}/pagemap", pid);
	UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
	if (!fd)
		return Error::fromErrno(fmt::format("open {}", path));
	return PagemapScanner(std::move(fd), pid);
}

bool PagemapScanner::supported()
{
	static const bool ok = [] {
		auto scanner = open(0);
		if (!scanner.ok())
			return false;
		auto page = Mapping::anonymous(pageSize());
		if (!page.ok())
			return false;
		std::vector<PageRange> out;
		Query q;
		q.categoryAnyofMask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
		q.returnMask = PAGE_IS_PRESENT;
		return scanner->scan(reinterpret_cast<uintptr_t>(page->data()), page->size(), q, out)
			.ok();
	}();
	return ok;
}

Status PagemapScanner::scan(uintptr_t start, size_t len, const Query &query,
			    std::vector<PageRange> &out)
{
	std::array<page_region, kVecLen> vec;
	const uintptr_t end = start + len;
	uintptr_t cur = start;

	while (cur < end) {
		pm_scan_arg arg{};
		arg.size = sizeof(arg);
		arg.flags = query.flags;
		arg.start = cur;
		arg.end = end;
		arg.vec = reinterpret_cast<uintptr_t>(vec.data());
		arg.vec_len = vec.size();
		arg.category_inverted = query.categoryInverted;
		arg.category_mask = query.categoryMask;
		arg.category_anyof_mask = query.categoryAnyofMask;
		arg.return_mask = query.returnMask;

		long n = ::ioctl(fd_.get(), PAGEMAP_SCAN, &arg);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return Error::fromErrno(fmt::format("PAGEMAP_SCAN pid {} {:#x}-{:#x}", pid_,
							    cur, end));
		}
		for (long i = 0; i < n; i++) {
			const page_region &r = vec[i];
			// A region cut by a full vector continues in the next call: merge.
			if (!out.empty() && out.back().end == r.start &&
			    out.back().categories == r.categories)
				out.back().end = r.end;
			else
				out.push_back({ r.start, r.end, r.categories });
		}
		if (arg.walk_end <= cur)
			return Error::format(EIO, "PAGEMAP_SCAN pid {}: walk made no progress at {:#x}",
					     pid_, cur);
		cur = arg.walk_end;
	}
	return okStatus();
}

Status PagemapScanner::scanWritten(uintptr_t start, size_t len, bool clear,
				   std::vector<PageRange> &out)
{
	Query q;
	q.flags = PM_SCAN_CHECK_WPASYNC | (clear ? PM_SCAN_WP_MATCHING : 0);
	q.categoryMask = PAGE_IS_WRITTEN;
	q.returnMask = PAGE_IS_WRITTEN;
	return scan(start, len, q, out);
}

} // namespace ferry
