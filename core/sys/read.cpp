// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/sys/read.h"

#include <cerrno>
#include <unistd.h>

#include <fmt/format.h>

namespace ferry {

Result<size_t> readSome(const UniqueFd &fd, std::span<char> buf, std::string_view what)
{
	for (;;) {
		ssize_t n = ::read(fd.get(), buf.data(), buf.size());
		if (n >= 0)
			return size_t(n);
		if (errno != EINTR)
			return Error::fromErrno(fmt::format("read {}", what));
	}
}

} // namespace ferry
