// SPDX-License-Identifier: GPL-2.0-or-later
// read(2) with EINTR retried, for the loops that read a file or pipe to its end. Any thread
// may call it.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

#include "ferry/base/result.h"
#include "ferry/sys/fd.h"

namespace ferry {

// Reads up to buf.size() bytes: the count, 0 at end of file, or errno as an Error
// ("read <what>: ..."), EAGAIN included, for the caller of a non-blocking fd to classify.
Result<size_t> readSome(const UniqueFd &fd, std::span<char> buf, std::string_view what);

} // namespace ferry
