// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/base/clock.h"
#include "ferry/base/log.h"

#include <cstdio>
#include <mutex>
#include <time.h>

namespace ferry {

namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::Info)};
std::mutex g_writeLock; // keeps lines from different threads whole

} // namespace

void setLogLevel(LogLevel level) { g_level = static_cast<int>(level); }
LogLevel logLevel() { return static_cast<LogLevel>(g_level.load()); }

bool parseLogLevel(std::string_view s, LogLevel *out)
{
	static constexpr std::pair<std::string_view, LogLevel> kNames[] = {
		{"debug", LogLevel::Debug}, {"info", LogLevel::Info}, {"warn", LogLevel::Warn},
		{"error", LogLevel::Error}, {"off", LogLevel::Off}};
	for (auto [name, level] : kNames) {
		if (s == name) {
			*out = level;
			return true;
		}
	}
	return false;
}

void logWrite(LogLevel level, std::string_view category, std::string_view message)
{
	static constexpr const char *kTags[] = {"D", "I", "W", "E", "-"};
	int64_t ms = monotonicNs() / 1000000;
	std::lock_guard lock(g_writeLock);
	fmt::print(stderr, "{}.{:03} {} [{}] {}\n", ms / 1000, ms % 1000,
		   kTags[static_cast<int>(level)], category, message);
}

bool RateLimit::allow(uint64_t *suppressed)
{
	int64_t now = monotonicNs();
	int64_t next = next_.load(std::memory_order_relaxed);
	if (now < next || !next_.compare_exchange_strong(next, now + intervalNs_)) {
		suppressed_.fetch_add(1, std::memory_order_relaxed);
		return false;
	}
	*suppressed = suppressed_.exchange(0);
	return true;
}

} // namespace ferry
