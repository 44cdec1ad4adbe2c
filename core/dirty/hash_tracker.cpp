// SPDX-License-Identifier: GPL-2.0-or-later
// Generic dirty tracking by content: XXH3-64 of every chunk, compared with the previous pass.
// Works on any readable memory without kernel support, at the price of reading it all.
#include "ferry/dirty/tracker.h"

#include <sys/uio.h>

#include <algorithm>

#include <xxhash.h>

#include "dirty/region_check.h"

namespace ferry {

namespace {

// Bytes read per process_vm_readv: large enough to amortise the syscall, small enough to
// stay in L2/L3 while hashing.
constexpr size_t kBatchBytes = 1 << 20;

class HashTracker final : public DirtyTracker {
public:
	HashTracker(const TrackedRegion &region, uint32_t chunks)
		: region_(region), hashes_(chunks, 0)
	{
		if (region_.pid != 0)
			buffer_.resize(std::max(kBatchBytes, region_.chunkSize));
	}

	Status start() override
	{
		FERRY_TRY_CTX(pass(nullptr), "xxh3 tracker pid {}: start", region_.pid);
		return okStatus();
	}

	Status collect(std::vector<uint32_t> &dirtyChunks) override
	{
		// On failure the hashes of the chunks not yet read keep their old value, so their
		// changes show up in the next collect(); chunks found changed before the failure
		// are kept in pending_.
		Status s = pass(&pending_);
		if (!s.ok())
			return s.error().context(fmt::format("xxh3 tracker pid {}: collect",
							     region_.pid));
		std::sort(pending_.begin(), pending_.end());
		pending_.erase(std::unique(pending_.begin(), pending_.end()), pending_.end());
		dirtyChunks.swap(pending_);
		pending_.clear();
		return okStatus();
	}

	const char *name() const override { return "xxh3"; }
	uint64_t chunkCount() const override { return hashes_.size(); }

private:
	// Hashes every chunk; with `changed`, appends those whose hash differs.
	Status pass(std::vector<uint32_t> *changed)
	{
		const size_t chunk = region_.chunkSize;
		const size_t batch = region_.pid == 0 ? region_.len : buffer_.size() / chunk * chunk;
		for (size_t off = 0; off < region_.len; off += batch) {
			const size_t n = std::min(batch, region_.len - off);
			const uint8_t *data;
			if (region_.pid == 0) {
				data = reinterpret_cast<const uint8_t *>(region_.addr) + off;
			} else {
				FERRY_TRY(readRemote(off, n));
				data = buffer_.data();
			}
			for (size_t c = 0; c < n; c += chunk) {
				const uint32_t index = static_cast<uint32_t>((off + c) / chunk);
				const uint64_t h = XXH3_64bits(data + c, std::min(chunk, n - c));
				if (changed && h != hashes_[index])
					changed->push_back(index);
				hashes_[index] = h;
			}
		}
		return okStatus();
	}

	Status readRemote(size_t off, size_t n)
	{
		size_t done = 0;
		while (done < n) {
			iovec local{ buffer_.data() + done, n - done };
			iovec remote{ reinterpret_cast<void *>(region_.addr + off + done), n - done };
			ssize_t r = ::process_vm_readv(region_.pid, &local, 1, &remote, 1, 0);
			if (r < 0) {
				if (errno == EINTR)
					continue;
				return Error::fromErrno(fmt::format("process_vm_readv {:#x} +{:#x}",
								    region_.addr + off + done,
								    n - done));
			}
			if (r == 0)
				return Error::format(EFAULT, "process_vm_readv {:#x}: unmapped",
						     region_.addr + off + done);
			done += static_cast<size_t>(r);
		}
		return okStatus();
	}

	TrackedRegion region_;
	std::vector<uint64_t> hashes_;
	std::vector<uint8_t> buffer_;
	std::vector<uint32_t> pending_;
};

} // namespace

Result<std::unique_ptr<DirtyTracker>> makeHashTracker(const TrackedRegion &region)
{
	FERRY_ASSIGN(uint32_t chunks, dirty::checkRegion(region));
	return std::unique_ptr<DirtyTracker>(new HashTracker(region, chunks));
}

} // namespace ferry
