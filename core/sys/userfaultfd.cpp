// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/sys/userfaultfd.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ferry/sys/mapping.h"

namespace ferry {

namespace {

struct FeatureName {
	uint64_t bit;
	const char *name;
};

constexpr FeatureName kFeatureNames[] = {
	{ UFFD_FEATURE_PAGEFAULT_FLAG_WP, "PAGEFAULT_FLAG_WP" },
	{ UFFD_FEATURE_EVENT_FORK, "EVENT_FORK" },
	{ UFFD_FEATURE_EVENT_REMAP, "EVENT_REMAP" },
	{ UFFD_FEATURE_EVENT_REMOVE, "EVENT_REMOVE" },
	{ UFFD_FEATURE_MISSING_HUGETLBFS, "MISSING_HUGETLBFS" },
	{ UFFD_FEATURE_MISSING_SHMEM, "MISSING_SHMEM" },
	{ UFFD_FEATURE_EVENT_UNMAP, "EVENT_UNMAP" },
	{ UFFD_FEATURE_SIGBUS, "SIGBUS" },
	{ UFFD_FEATURE_THREAD_ID, "THREAD_ID" },
	{ UFFD_FEATURE_MINOR_HUGETLBFS, "MINOR_HUGETLBFS" },
	{ UFFD_FEATURE_MINOR_SHMEM, "MINOR_SHMEM" },
	{ UFFD_FEATURE_EXACT_ADDRESS, "EXACT_ADDRESS" },
	{ UFFD_FEATURE_WP_HUGETLBFS_SHMEM, "WP_HUGETLBFS_SHMEM" },
	{ UFFD_FEATURE_WP_UNPOPULATED, "WP_UNPOPULATED" },
	{ UFFD_FEATURE_POISON, "POISON" },
	{ UFFD_FEATURE_WP_ASYNC, "WP_ASYNC" },
	{ UFFD_FEATURE_MOVE, "MOVE" },
};

// userfaultfd(2) is refused to unprivileged callers when vm.unprivileged_userfaultfd=0;
// /dev/userfaultfd (6.1+) then serves the users given access to it, and UFFD_USER_MODE_ONLY
// is still allowed to anyone, for what only needs user-mode faults (UffdScope).
Result<UniqueFd> openUffd(UffdScope scope)
{
	constexpr int kFlags = O_CLOEXEC | O_NONBLOCK;
	int fd = static_cast<int>(::syscall(SYS_userfaultfd, kFlags));
	if (fd >= 0)
		return UniqueFd(fd);
	int err = errno;
	UniqueFd dev(::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC));
	if (dev) {
		fd = ::ioctl(dev.get(), USERFAULTFD_IOC_NEW, kFlags);
		if (fd >= 0)
			return UniqueFd(fd);
	}
	if (err != EPERM)
		return Error::fromErrno("userfaultfd", err);
	if (scope == UffdScope::UserModeOnlyAllowed) {
		fd = static_cast<int>(::syscall(SYS_userfaultfd, kFlags | UFFD_USER_MODE_ONLY));
		if (fd >= 0)
			return UniqueFd(fd);
		return Error::fromErrno("userfaultfd (UFFD_USER_MODE_ONLY)");
	}
	return Error::format(EPERM,
			     "userfaultfd: uid {} may not create one that also sees the kernel's accesses, which "
			     "post-copy needs (vm.unprivileged_userfaultfd is 0 and /dev/userfaultfd is not open to "
			     "it); fix one of: `chgrp kvm /dev/userfaultfd && chmod 0660 /dev/userfaultfd` with the "
			     "user in group kvm, `sysctl vm.unprivileged_userfaultfd=1`, or run it as root",
			     ::geteuid());
}

Status doApi(int fd, uint64_t features)
{
	uffdio_api api{};
	api.api = UFFD_API;
	api.features = features;
	if (::ioctl(fd, UFFDIO_API, &api) < 0) {
		int err = errno;
		if (err == EINVAL) {
			auto supported = Userfaultfd::probeFeatures();
			if (supported.ok() && (features & ~*supported))
				return Error::format(ENOTSUP,
						     "UFFDIO_API: kernel lacks userfaultfd features {}",
						     Userfaultfd::featureNames(features & ~*supported));
		}
		return Error::fromErrno("UFFDIO_API", err);
	}
	if ((api.features & features) != features)
		return Error::format(ENOTSUP, "UFFDIO_API: kernel lacks userfaultfd features {}",
				     Userfaultfd::featureNames(features & ~api.features));
	return okStatus();
}

// The errno of a resolving ioctl that made no progress, as CRIU's uffd_check_op_error sorts
// it: EAGAIN means the target's mm is changing (an event is pending), ESRCH/ENOSPC/ENOMEM that
// the process owning it is gone; anything else is an error, named by `what()`.
template <typename What>
Result<UffdOutcome> classifyResolveErrno(int err, What &&what)
{
	switch (err) {
	case EAGAIN:
		return UffdOutcome::Retry;
	case ESRCH:
	case ENOSPC:
	case ENOMEM:
		return UffdOutcome::Gone;
	default:
		return Error::fromErrno(what(), err);
	}
}

} // namespace

const char *toString(UffdOutcome outcome)
{
	switch (outcome) {
	case UffdOutcome::Done:
		return "done";
	case UffdOutcome::Exists:
		return "exists";
	case UffdOutcome::Retry:
		return "retry";
	case UffdOutcome::Gone:
		return "gone";
	}
	return "?";
}

std::string Userfaultfd::featureNames(uint64_t features)
{
	std::string s;
	for (const auto &f : kFeatureNames) {
		if (!(features & f.bit))
			continue;
		if (!s.empty())
			s += '|';
		s += f.name;
		features &= ~f.bit;
	}
	if (features) {
		if (!s.empty())
			s += '|';
		s += fmt::format("{:#x}", features);
	}
	return s.empty() ? "none" : s;
}

Result<uint64_t> Userfaultfd::probeFeatures()
{
	FERRY_ASSIGN(UniqueFd fd, openUffd(UffdScope::UserModeOnlyAllowed));
	// With features = 0 the kernel answers with everything it supports.
	uffdio_api api{};
	api.api = UFFD_API;
	if (::ioctl(fd.get(), UFFDIO_API, &api) < 0)
		return Error::fromErrno("UFFDIO_API probe");
	return static_cast<uint64_t>(api.features);
}

Result<Userfaultfd> Userfaultfd::create(uint64_t features, UffdScope scope)
{
	FERRY_ASSIGN(UniqueFd fd, openUffd(scope));
	FERRY_TRY(doApi(fd.get(), features));
	return Userfaultfd(std::move(fd), features);
}

Result<Userfaultfd> Userfaultfd::adopt(UniqueFd fd, uint64_t features, bool needApi)
{
	if (!fd)
		return Error(EBADF, "adopt userfaultfd: invalid fd");
	if (needApi)
		FERRY_TRY(doApi(fd.get(), features));
	return Userfaultfd(std::move(fd), features);
}

Status Userfaultfd::registerRange(void *addr, size_t len, uint32_t modes)
{
	uffdio_register reg{};
	reg.range.start = reinterpret_cast<uintptr_t>(addr);
	reg.range.len = len;
	reg.mode = modes;
	if (::ioctl(fd_.get(), UFFDIO_REGISTER, &reg) < 0)
		return Error::fromErrno(fmt::format("UFFDIO_REGISTER {} +{:#x} modes {:#x}", addr,
						    len, modes));
	lastRangeIoctls_ = reg.ioctls;
	return okStatus();
}

Status Userfaultfd::unregisterRange(void *addr, size_t len)
{
	uffdio_range range{ reinterpret_cast<uintptr_t>(addr), len };
	if (::ioctl(fd_.get(), UFFDIO_UNREGISTER, &range) < 0)
		return Error::fromErrno(fmt::format("UFFDIO_UNREGISTER {} +{:#x}", addr, len));
	return okStatus();
}

Result<UffdOutcome> Userfaultfd::fill(Fill kind, void *dst, const void *src, size_t len,
				      bool dontWake)
{
	static constexpr const char *kNames[] = { "UFFDIO_COPY", "UFFDIO_ZEROPAGE",
						  "UFFDIO_CONTINUE" };
	const uintptr_t begin = reinterpret_cast<uintptr_t>(dst);
	const uintptr_t end = begin + len;
	uintptr_t cur = begin;
	bool existed = false;

	while (cur < end) {
		int r;
		int64_t progress; // bytes done, or -errno (the kernel writes it back)
		// ZEROPAGE and CONTINUE take the same argument shape: a range and a mode in, the
		// progress out in a field of its own.
		auto onRange = [&](auto arg, unsigned long request, uint64_t dontWakeMode, auto progressField) {
			arg.range = { cur, end - cur };
			arg.mode = dontWake ? dontWakeMode : 0;
			r = ::ioctl(fd_.get(), request, &arg);
			progress = arg.*progressField;
		};
		switch (kind) {
		case Fill::Copy: {
			uffdio_copy c{};
			c.dst = cur;
			c.src = reinterpret_cast<uintptr_t>(src) + (cur - begin);
			c.len = end - cur;
			c.mode = dontWake ? UFFDIO_COPY_MODE_DONTWAKE : 0;
			r = ::ioctl(fd_.get(), UFFDIO_COPY, &c);
			progress = c.copy;
			break;
		}
		case Fill::Zero:
			onRange(uffdio_zeropage{}, UFFDIO_ZEROPAGE, UFFDIO_ZEROPAGE_MODE_DONTWAKE,
				&uffdio_zeropage::zeropage);
			break;
		case Fill::Continue:
		default:
			onRange(uffdio_continue{}, UFFDIO_CONTINUE, UFFDIO_CONTINUE_MODE_DONTWAKE,
				&uffdio_continue::mapped);
			break;
		}
		if (r == 0)
			return existed ? UffdOutcome::Exists : UffdOutcome::Done;
		const int err = errno;
		// A partial fill returns EAGAIN with the bytes done: the kernel stopped at a page
		// it could not fill; go on from there to learn why.
		if (progress > 0) {
			cur += static_cast<uint64_t>(progress);
			continue;
		}
		if (err == EEXIST) {
			// Already mapped (by an earlier fill, or for shmem by another mapping of
			// the same file): leave it and fill the rest.
			existed = true;
			cur += pageSize();
			continue;
		}
		return classifyResolveErrno(err, [&] {
			return fmt::format("{} {:#x} +{:#x}", kNames[int(kind)], cur, end - cur);
		});
	}
	return existed ? UffdOutcome::Exists : UffdOutcome::Done;
}

Result<UffdOutcome> Userfaultfd::copy(void *dst, const void *src, size_t len, bool dontWake)
{
	return fill(Fill::Copy, dst, src, len, dontWake);
}

Result<UffdOutcome> Userfaultfd::zeroPage(void *dst, size_t len, bool dontWake)
{
	return fill(Fill::Zero, dst, nullptr, len, dontWake);
}

Result<UffdOutcome> Userfaultfd::continueRange(void *dst, size_t len, bool dontWake)
{
	return fill(Fill::Continue, dst, nullptr, len, dontWake);
}

Result<UffdOutcome> Userfaultfd::writeProtect(void *addr, size_t len, bool protect, bool dontWake)
{
	uffdio_writeprotect wp{};
	wp.range = { reinterpret_cast<uintptr_t>(addr), len };
	wp.mode = (protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0) |
		  (dontWake ? UFFDIO_WRITEPROTECT_MODE_DONTWAKE : 0);
	if (::ioctl(fd_.get(), UFFDIO_WRITEPROTECT, &wp) == 0)
		return UffdOutcome::Done;
	return classifyResolveErrno(errno, [&] {
		return fmt::format("UFFDIO_WRITEPROTECT {} +{:#x} {}", addr, len,
				   protect ? "on" : "off");
	});
}

Status Userfaultfd::wake(void *addr, size_t len)
{
	uffdio_range range{ reinterpret_cast<uintptr_t>(addr), len };
	if (::ioctl(fd_.get(), UFFDIO_WAKE, &range) < 0)
		return Error::fromErrno(fmt::format("UFFDIO_WAKE {} +{:#x}", addr, len));
	return okStatus();
}

Result<size_t> Userfaultfd::readEvents(std::vector<uffd_msg> &out, size_t max)
{
	out.clear();
	if (max == 0)
		return size_t{ 0 };
	out.resize(max);
	// An adopted fd may lack O_NONBLOCK (its creator chose): check readiness first, which
	// is enough with the single-reader contract. A read returns as many whole messages as
	// are pending and fit.
	pollfd pfd{ fd_.get(), POLLIN, 0 };
	int ready;
	do {
		ready = ::poll(&pfd, 1, 0);
	} while (ready < 0 && errno == EINTR);
	if (ready < 0)
		return Error::fromErrno("poll userfaultfd");
	if (ready == 0 || !(pfd.revents & POLLIN)) {
		out.clear();
		return size_t{ 0 };
	}
	ssize_t n;
	do {
		n = ::read(fd_.get(), out.data(), max * sizeof(uffd_msg));
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		out.clear();
		if (errno == EAGAIN)
			return size_t{ 0 };
		return Error::fromErrno("read userfaultfd");
	}
	out.resize(static_cast<size_t>(n) / sizeof(uffd_msg));
	return out.size();
}

} // namespace ferry
