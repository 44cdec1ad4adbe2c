// SPDX-License-Identifier: GPL-2.0-or-later
// Move-only owner of a userfaultfd, with errno classified at the wrapper (CRIU's rule).
//
// Contract relied on: every userfaultfd ioctl acts on the mm of the process that *created*
// the fd (ctx->mm), whoever calls it and wherever the fd travelled (SCM_RIGHTS). Addresses
// passed to registerRange/copy/zeroPage/continueRange/writeProtect/wake are therefore
// addresses in the creator's address space; the *source* buffer of copy() is read from the
// calling process. All of this works from a process other than the creator (tested in
// tests/sys: Userfaultfd.*CrossProcess*), as long as the creator's mm is alive.
//
// Thread safety: the ioctls may be issued concurrently from several threads; readEvents()
// should be called by one thread at a time (each message is delivered once).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ferry/base/result.h"
#include "ferry/sys/fd.h"
#include "ferry/sys/kernel_compat.h"

namespace ferry {

// Register modes (UFFDIO_REGISTER_MODE_*), usable as bit flags.
enum class UffdMode : uint32_t { Missing = 1, WriteProtect = 2, Minor = 4 };

constexpr uint32_t operator|(UffdMode a, UffdMode b)
{
	return static_cast<uint32_t>(a) | static_cast<uint32_t>(b);
}
constexpr uint32_t operator|(uint32_t a, UffdMode b)
{
	return a | static_cast<uint32_t>(b);
}

// Outcome of a resolving ioctl, for callers to switch over:
//   Done    every page of the range was resolved by this call.
//   Exists  EEXIST: some pages were already mapped and were left as they are; every other
//           page of the range was resolved (the wrapper steps over existing pages).
//   Retry   EAGAIN with no progress: the target's mm is changing (fork/mremap/... event
//           pending). Read the pending events, then retry the same range; pages resolved
//           before the Retry then report Exists.
//   Gone    ESRCH/ENOSPC/ENOMEM: the process owning the mm exited or is exiting.
enum class UffdOutcome { Done, Exists, Retry, Gone };

const char *toString(UffdOutcome outcome);

// Which faults a userfaultfd must report. Post-copy (MISSING, MINOR) needs the kernel's own
// accesses too: a syscall such as read() landing in memory that is not there yet, or KVM
// touching guest RAM; a UFFD_USER_MODE_ONLY userfaultfd fails those with EFAULT instead
// (tests/sys: UserModeOnlyFailsAKernelAccessInsteadOfReportingIt), which would hand a
// guest I/O errors. Write-protect tracking with WP_ASYNC is resolved by the kernel and never
// reported, so a user-mode-only userfaultfd serves it as well.
enum class UffdScope { UserAndKernel, UserModeOnlyAllowed };

class Userfaultfd {
public:
	Userfaultfd() = default;
	Userfaultfd(Userfaultfd &&) noexcept = default;
	Userfaultfd &operator=(Userfaultfd &&) noexcept = default;
	Userfaultfd(const Userfaultfd &) = delete;
	Userfaultfd &operator=(const Userfaultfd &) = delete;

	// userfaultfd(O_CLOEXEC|O_NONBLOCK), falling back to /dev/userfaultfd when
	// vm.unprivileged_userfaultfd=0 refuses this user, then (if `scope` allows) to
	// UFFD_USER_MODE_ONLY; + UFFDIO_API with `features`. If the kernel lacks some, the error
	// (ENOTSUP) names them; if the user may not have a userfaultfd of that scope, the error
	// (EPERM) names the fixes.
	static Result<Userfaultfd> create(uint64_t features, UffdScope scope = UffdScope::UserAndKernel);
	// Wraps an fd created elsewhere (e.g. received over SCM_RIGHTS). UFFDIO_API may be done
	// only once per uffd: pass needApi=false when the creator already did it; `features`
	// then only records what the creator enabled.
	static Result<Userfaultfd> adopt(UniqueFd fd, uint64_t features, bool needApi);
	// The features this kernel supports (UFFDIO_API with 0 on a throwaway uffd).
	static Result<uint64_t> probeFeatures();
	// "WP_ASYNC|MINOR_SHMEM" for a feature mask.
	static std::string featureNames(uint64_t features);

	bool valid() const { return fd_.valid(); }
	int fd() const { return fd_.get(); }
	uint64_t features() const { return features_; }
	// UFFDIO_API's ioctls bitmask of the last registerRange() (which resolving ioctls the
	// range supports).
	uint64_t lastRangeIoctls() const { return lastRangeIoctls_; }

	// UFFDIO_REGISTER of [addr, addr+len) in the creator's mm, `modes` = UffdMode bits.
	// Registering an already registered range replaces its modes (it does not add to them).
	Status registerRange(void *addr, size_t len, uint32_t modes);
	Status registerRange(void *addr, size_t len, UffdMode mode)
	{
		return registerRange(addr, len, static_cast<uint32_t>(mode));
	}
	Status unregisterRange(void *addr, size_t len);

	// UFFDIO_COPY: fills the missing pages of [dst, dst+len) with bytes read from `src` in
	// the *calling* process, then wakes the faulting threads unless dontWake.
	Result<UffdOutcome> copy(void *dst, const void *src, size_t len, bool dontWake = false);
	// UFFDIO_ZEROPAGE: maps zero pages at the missing pages of [dst, dst+len).
	Result<UffdOutcome> zeroPage(void *dst, size_t len, bool dontWake = false);
	// UFFDIO_CONTINUE: maps the page-cache pages already present in the backing file
	// (minor-fault mode on shmem/hugetlbfs) at [dst, dst+len).
	Result<UffdOutcome> continueRange(void *dst, size_t len, bool dontWake = false);
	// UFFDIO_WRITEPROTECT: sets or clears write protection. With WP_ASYNC this "clears the
	// dirty state" of the range; on shmem (and anon with WP_UNPOPULATED) it also protects
	// never-populated pages through PTE markers.
	Result<UffdOutcome> writeProtect(void *addr, size_t len, bool protect, bool dontWake = false);
	Status wake(void *addr, size_t len);

	// Non-blocking read of pending messages into `out` (cleared first); returns the count,
	// 0 when none is pending. Wait for readiness with poll(fd(), POLLIN).
	Result<size_t> readEvents(std::vector<uffd_msg> &out, size_t max = 64);

private:
	Userfaultfd(UniqueFd fd, uint64_t features) : fd_(std::move(fd)), features_(features) {}
	enum class Fill { Copy, Zero, Continue };
	Result<UffdOutcome> fill(Fill kind, void *dst, const void *src, size_t len, bool dontWake);

	UniqueFd fd_;
	uint64_t features_ = 0;
	uint64_t lastRangeIoctls_ = 0;
};

} // namespace ferry
