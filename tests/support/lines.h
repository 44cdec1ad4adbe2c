// SPDX-License-Identifier: GPL-2.0-or-later
// Test helper for peers that speak a line protocol (a QMP script, the agent's test host):
// bytes arrive in any pieces, lines are taken off the front once whole.
#pragma once

#include <optional>
#include <string>

namespace ferry::test {

// Cuts the first line off `buf` and returns it without its '\n', if a whole one has arrived.
inline std::optional<std::string> takeLine(std::string &buf)
{
	size_t nl = buf.find('\n');
	if (nl == std::string::npos)
		return std::nullopt;
	std::string line = buf.substr(0, nl);
	buf.erase(0, nl + 1);
	return line;
}

} // namespace ferry::test
