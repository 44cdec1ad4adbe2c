// SPDX-License-Identifier: GPL-2.0-or-later
#include "dirty/region_check.h"

#include <limits>

#include "ferry/sys/mapping.h"

namespace ferry {

namespace dirty {

Result<uint32_t> checkRegion(const TrackedRegion &r)
{
	const size_t page = pageSize();
	if (r.chunkSize < page || (r.chunkSize & (r.chunkSize - 1)))
		return Error::format(EINVAL, "chunk size {} is not a power of two >= page size {}",
				     r.chunkSize, page);
	if (r.addr % page || r.len == 0 || r.len % page)
		return Error::format(EINVAL, "region {:#x} +{:#x} is empty or not page-aligned",
				     r.addr, r.len);
	const uint64_t chunks = (r.len + r.chunkSize - 1) / r.chunkSize;
	if (chunks > std::numeric_limits<uint32_t>::max())
		return Error::format(EINVAL, "region of {} chunks exceeds 2^32", chunks);
	return static_cast<uint32_t>(chunks);
}

} // namespace dirty

} // namespace ferry
