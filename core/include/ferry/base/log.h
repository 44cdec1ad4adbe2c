// SPDX-License-Identifier: GPL-2.0-or-later
// Logging with a category and the object's identity: "[leecher demo chunk 812] ...".
// Thread-safe. Messages at or above the global level go to stderr.
// Anything a guest or peer can trigger repeatedly must use FERRY_LOG_RATELIMITED.
#pragma once

#include <atomic>
#include <chrono>
#include <string_view>

#include <fmt/format.h>

namespace ferry {

enum class LogLevel { Debug = 0, Info = 1, Warn = 2, Error = 3, Off = 4 };

void setLogLevel(LogLevel level);
LogLevel logLevel();
// Parses "debug", "info", "warn", "error", "off"; returns false on anything else.
bool parseLogLevel(std::string_view s, LogLevel *out);
void logWrite(LogLevel level, std::string_view category, std::string_view message);

// Allows at most one message per interval; counts what it suppressed.
class RateLimit {
public:
	explicit RateLimit(std::chrono::milliseconds interval = std::chrono::seconds(1))
		: intervalNs_(std::chrono::nanoseconds(interval).count()) {}
	// True if a message may be printed now; *suppressed gets the number skipped since.
	bool allow(uint64_t *suppressed);

private:
	int64_t intervalNs_;
	std::atomic<int64_t> next_{0};
	std::atomic<uint64_t> suppressed_{0};
};

} // namespace ferry

#define FERRY_LOG(level, category, ...)                                                   \
	do {                                                                              \
		if (static_cast<int>(::ferry::LogLevel::level) >=                        \
		    static_cast<int>(::ferry::logLevel()))                               \
			::ferry::logWrite(::ferry::LogLevel::level, category,            \
					  fmt::format(__VA_ARGS__));                     \
	} while (0)

#define FERRY_LOG_RATELIMITED(level, category, ...)                                       \
	do {                                                                              \
		static ::ferry::RateLimit ferry_rl_;                                      \
		uint64_t ferry_sup_ = 0;                                                  \
		if (ferry_rl_.allow(&ferry_sup_))                                         \
			FERRY_LOG(level, category, "{} ({} similar suppressed)",          \
				  fmt::format(__VA_ARGS__), ferry_sup_);                  \
	} while (0)
