// SPDX-License-Identifier: GPL-2.0-or-later
// One move-only owner per memory mapping, and memfd creation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <sys/mman.h> // PROT_*, MAP_* for Mapping::map()
#include <sys/types.h>

#include "ferry/base/result.h"
#include "ferry/sys/fd.h"

namespace ferry {

class Mapping {
public:
	Mapping() = default;
	Mapping(Mapping &&o) noexcept;
	Mapping &operator=(Mapping &&o) noexcept;
	Mapping(const Mapping &) = delete;
	Mapping &operator=(const Mapping &) = delete;
	~Mapping(); // munmap

	// Private anonymous read-write memory, not populated (pages appear on first touch).
	static Result<Mapping> anonymous(size_t len);
	// mmap(nullptr, len, prot, flags, fd, offset). The mapping keeps the file's pages alive;
	// `fd` may be closed afterwards.
	static Result<Mapping> map(int fd, size_t len, int prot, int flags, off_t offset = 0);

	uint8_t *data() const { return data_; }
	size_t size() const { return size_; }
	bool valid() const { return data_ != nullptr; }

	// Gives up ownership without unmapping (e.g. the range now belongs to someone else).
	uint8_t *release();

private:
	Mapping(uint8_t *data, size_t size) : data_(data), size_(size) {}
	void reset();

	uint8_t *data_ = nullptr;
	size_t size_ = 0;
};

// memfd_create(name, MFD_CLOEXEC) + ftruncate(size): shmem-backed memory that can be shared
// with another process by passing the fd (SCM_RIGHTS) and mapped MAP_SHARED.
Result<UniqueFd> createMemfd(const char *name, size_t size);

// A memfd of `size` bytes and our MAP_SHARED read-write mapping of it: memory that a second
// process maps too once it is sent the fd, as a destination application maps the region its
// leecher writes. The mapping keeps the pages alive on its own; the fd is kept for sending.
struct MemfdMapping {
	UniqueFd fd;
	Mapping map;

	static Result<MemfdMapping> create(const char *name, size_t size);
	uint8_t *data() const { return map.data(); }
};

// The base page size (sysconf, cached).
size_t pageSize();

} // namespace ferry
