// SPDX-License-Identifier: GPL-2.0-or-later
// Test helpers: the memory types the trackers and userfaultfd run over (anonymous, memfd),
// and the hand-off of a userfaultfd with the address of its range from a forked child to the
// parent, the way the agent hands a guest's uffd to ferry.
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "ferry/base/result.h"
#include "ferry/sys/fd.h"
#include "ferry/sys/mapping.h"
#include "ferry/sys/scm.h"
#include "ferry/sys/userfaultfd.h"

#include "support/child_process.h"

namespace ferry::test {

enum class Memory { Anonymous, Memfd };

// Anonymous memory gets MADV_NOHUGEPAGE: the kernel tracks a THP as one 2 MiB entry, which
// would (correctly) report the 511 neighbours of a written page too; the tests ask for 4 KiB
// exactness.
inline Result<Mapping> makeMemory(Memory kind, size_t len, const char *memfdName = "test-memory")
{
	if (kind == Memory::Anonymous) {
		FERRY_ASSIGN(Mapping m, Mapping::anonymous(len));
		::madvise(m.data(), len, MADV_NOHUGEPAGE);
		return m;
	}
	FERRY_ASSIGN(UniqueFd fd, createMemfd(memfdName, len));
	return Mapping::map(fd.get(), len, PROT_READ | PROT_WRITE, MAP_SHARED);
}

// Child side: one message carrying `fds` (the uffd first) and the start of the range.
inline Status sendFdsWithAddress(int sock, std::span<const int> fds, const void *start)
{
	const auto addr = reinterpret_cast<uintptr_t>(start);
	return sendFds(sock, fds, std::span(reinterpret_cast<const uint8_t *>(&addr), sizeof(addr)));
}

// Child side: a uffd and the start of the range it is for (registered or not).
inline Status sendUffd(int sock, const Userfaultfd &uffd, const void *start)
{
	const int fd = uffd.fd();
	return sendFdsWithAddress(sock, std::span(&fd, 1), start);
}

struct FdsWithAddress {
	std::vector<UniqueFd> fds;
	uintptr_t addr = 0; // in the sender's address space
};

// Parent side: exactly `count` fds and one address, or an error saying what was off.
inline Result<FdsWithAddress> recvFdsWithAddress(int sock, size_t count)
{
	std::vector<uint8_t> payload;
	FdsWithAddress got;
	FERRY_ASSIGN(got.fds, recvFds(sock, &payload, std::max<size_t>(count, 1), sizeof(uintptr_t)));
	if (got.fds.size() != count)
		return Error(EPROTO, fmt::format("expected {} fds, got {}", count, got.fds.size()));
	if (payload.size() != sizeof(uintptr_t))
		return Error(EPROTO, fmt::format("expected an address, got {} bytes", payload.size()));
	std::memcpy(&got.addr, payload.data(), sizeof(got.addr));
	return got;
}

// A fresh uffd with an anonymous area of `pages` pages registered for missing faults.
struct MissingArea {
	Userfaultfd uffd;
	Mapping area;
};

inline Result<MissingArea> registeredAnonymous(size_t pages)
{
	MissingArea m;
	FERRY_ASSIGN(m.uffd, Userfaultfd::create(0));
	FERRY_ASSIGN(m.area, Mapping::anonymous(pages * pageSize()));
	FERRY_TRY(m.uffd.registerRange(m.area.data(), m.area.size(),
				       static_cast<uint32_t>(UffdMode::Missing)));
	return m;
}

// Forks a child that registers `pages` anonymous pages for missing faults, hands the uffd and
// the area's start to the parent, then exits with then(its socket, the area).
inline Result<Child> forkChildHandingUffd(size_t pages,
					  const std::function<int(int sock, MissingArea &)> &then)
{
	return forkChild([&](int sock) -> int {
		auto registered = registeredAnonymous(pages);
		if (!registered.ok())
			return 10;
		if (!sendUffd(sock, registered->uffd, registered->area.data()).ok())
			return 12;
		return then(sock, *registered);
	});
}

// Forks a child that maps `pages` pages of `kind` and creates a uffd with `features`, hands
// the uffd and the mapping's start to the parent unregistered (registering is the parent's
// part), then exits with then(its socket, the mapping).
inline Result<Child> forkChildHandingUnregisteredUffd(Memory kind, size_t pages, uint64_t features,
						      const std::function<int(int sock, Mapping &)> &then)
{
	return forkChild([&](int sock) -> int {
		auto mem = makeMemory(kind, pages * pageSize());
		auto uffd = Userfaultfd::create(features);
		if (!mem.ok() || !uffd.ok())
			return 10;
		if (!sendUffd(sock, *uffd, mem->data()).ok())
			return 11;
		return then(sock, *mem);
	});
}

// Parent side of a hand-off whose first fd is a uffd (created with `features` in the child,
// UFFDIO_API done there); the other fds stay in `fds`.
struct ReceivedUffd {
	Userfaultfd uffd;
	uintptr_t addr = 0; // in the sender's address space
	std::vector<UniqueFd> fds;
};

inline Result<ReceivedUffd> recvUffd(int sock, uint64_t features, size_t fdCount = 1)
{
	FERRY_ASSIGN(FdsWithAddress got, recvFdsWithAddress(sock, fdCount));
	ReceivedUffd r;
	r.addr = got.addr;
	FERRY_ASSIGN(r.uffd, Userfaultfd::adopt(std::move(got.fds[0]), features, false));
	r.fds = std::move(got.fds);
	return r;
}

} // namespace ferry::test
