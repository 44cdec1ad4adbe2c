// SPDX-License-Identifier: GPL-2.0-or-later
// ConsoleWatcher tails a guest's serial console log (a file QEMU appends to) and recognizes the
// guest workload's lines (docs/vm-images.md):
//   FERRY-HB <seq> <uptime_ms> mode=<m> written_mb=<n> errors=<n>   heartbeat, >= 10 Hz
//   FERRY-READY mode=... wss=... rate=...                            working set ready
//   FERRY-VERIFY-ERROR page=<n> ...                                   verify mismatch
// and "Kernel panic" as an error line. Waiting uses inotify (IN_MODIFY) + poll with a timeout,
// never sleeps. Memory stays bounded: only the last kMaxKeptLines lines are kept, error lines
// up to kMaxErrorLines. One thread at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/base/result.h"
#include "ferry/sys/fd.h"

namespace ferry {

struct Heartbeat {
	uint64_t seq = 0;
	uint64_t uptimeMs = 0;
	int64_t errors = -1;       // the guest's verify error count, -1 if not printed
	int64_t monotonicNs = 0;   // CLOCK_MONOTONIC when the watcher read the line
};

// Parses a heartbeat line (the marker may be preceded by other console output on the line).
std::optional<Heartbeat> parseHeartbeat(std::string_view line);

class ConsoleWatcher {
public:
	static constexpr size_t kMaxKeptLines = 4096;
	static constexpr size_t kMaxErrorLines = 256;
	static constexpr size_t kMaxLineBytes = 64 * 1024;

	struct Line {
		uint64_t index; // 0-based line number in the log
		std::string text; // without the line terminator ("\r\n" or "\n")
	};

	ConsoleWatcher(ConsoleWatcher &&) noexcept = default;
	ConsoleWatcher &operator=(ConsoleWatcher &&) noexcept = default;

	// The file must exist (the launcher creates it before QEMU starts).
	static Result<ConsoleWatcher> open(const std::string &path);

	// Reads everything appended since the last call, without blocking.
	Status poll();
	// Waits for a line containing `marker` with index >= fromIndex (default: any line seen so
	// far that is still kept, or a new one). ETIMEDOUT with the last console line on timeout.
	Result<Line> waitForLine(std::string_view marker, std::chrono::milliseconds timeout,
				 uint64_t fromIndex = 0);
	// Returns the latest heartbeat as soon as its seq >= minSeq (immediately if it already
	// is; pass lastHeartbeat()->seq + 1 to wait for a new one). ETIMEDOUT on timeout.
	Result<Heartbeat> waitHeartbeat(std::chrono::milliseconds timeout, uint64_t minSeq = 0);

	std::optional<Heartbeat> lastHeartbeat() const { return lastHeartbeat_; }
	std::optional<Heartbeat> firstHeartbeat() const { return firstHeartbeat_; }
	uint64_t heartbeatCount() const { return heartbeatCount_; }
	uint64_t lineCount() const { return nextIndex_; }
	// FERRY-VERIFY-ERROR and kernel panic lines seen so far (bounded).
	const std::vector<std::string> &errorLines() const { return errorLines_; }
	uint64_t errorLineCount() const { return errorLineCount_; }
	std::string lastLines(size_t n) const;
	const std::string &path() const { return path_; }

private:
	using Clock = std::chrono::steady_clock;

	ConsoleWatcher() = default;
	Status waitReadable(Clock::time_point deadline); // inotify or deadline
	void addLine(std::string line);

	std::string path_;
	// The inotify watch is established before the first read, so no append can be missed
	// between reading to EOF and waiting.
	UniqueFd inotify_;
	UniqueFd file_;
	std::string partial_;
	std::deque<Line> lines_;
	uint64_t nextIndex_ = 0;
	std::optional<Heartbeat> firstHeartbeat_;
	std::optional<Heartbeat> lastHeartbeat_;
	uint64_t heartbeatCount_ = 0;
	std::vector<std::string> errorLines_;
	uint64_t errorLineCount_ = 0;
};

} // namespace ferry
