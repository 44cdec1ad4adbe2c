// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/sys/mapping.h"

#include <sys/mman.h>
#include <unistd.h>

#include <utility>

namespace ferry {

Mapping::Mapping(Mapping &&o) noexcept : data_(o.data_), size_(o.size_)
{
	o.data_ = nullptr;
	o.size_ = 0;
}

Mapping &Mapping::operator=(Mapping &&o) noexcept
{
	if (this != &o) {
		reset();
		data_ = std::exchange(o.data_, nullptr);
		size_ = std::exchange(o.size_, 0);
	}
	return *this;
}

Mapping::~Mapping()
{
	reset();
}

void Mapping::reset()
{
	if (data_)
		::munmap(data_, size_);
	data_ = nullptr;
	size_ = 0;
}

uint8_t *Mapping::release()
{
	size_ = 0;
	return std::exchange(data_, nullptr);
}

Result<Mapping> Mapping::anonymous(size_t len)
{
	return map(-1, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, 0);
}

Result<Mapping> Mapping::map(int fd, size_t len, int prot, int flags, off_t offset)
{
	if (len == 0)
		return Error(EINVAL, "mmap: zero length");
	void *p = ::mmap(nullptr, len, prot, flags, fd, offset);
	if (p == MAP_FAILED)
		return Error::fromErrno(fmt::format("mmap {} bytes of fd {}", len, fd));
	return Mapping(static_cast<uint8_t *>(p), len);
}

Result<UniqueFd> createMemfd(const char *name, size_t size)
{
	UniqueFd fd(::memfd_create(name, MFD_CLOEXEC));
	if (!fd)
		return Error::fromErrno(fmt::format("memfd_create {}", name));
	if (::ftruncate(fd.get(), static_cast<off_t>(size)) < 0)
		return Error::fromErrno(fmt::format("ftruncate memfd {} to {}", name, size));
	return fd;
}

Result<MemfdMapping> MemfdMapping::create(const char *name, size_t size)
{
	MemfdMapping m;
	FERRY_ASSIGN(m.fd, createMemfd(name, size));
	FERRY_ASSIGN(m.map, Mapping::map(m.fd.get(), size, PROT_READ | PROT_WRITE, MAP_SHARED));
	return m;
}

size_t pageSize()
{
	static const size_t size = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
	return size;
}

} // namespace ferry
