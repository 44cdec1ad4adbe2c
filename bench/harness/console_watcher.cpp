// SPDX-License-Identifier: GPL-2.0-or-later
#include "harness/console_watcher.h"
#include "ferry/base/clock.h"
#include "ferry/sys/read.h"


#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <time.h>

#include <charconv>

namespace ferry {

namespace {

bool parseU64(std::string_view &s, uint64_t *out)
{
	while (!s.empty() && s.front() == ' ')
		s.remove_prefix(1);
	auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
	if (ec != std::errc() || p == s.data())
		return false;
	s.remove_prefix(static_cast<size_t>(p - s.data()));
	return true;
}

bool isErrorLine(std::string_view line)
{
	return line.find("FERRY-VERIFY-ERROR") != std::string_view::npos ||
	       line.find("Kernel panic") != std::string_view::npos;
}

} // namespace

std::optional<Heartbeat> parseHeartbeat(std::string_view line)
{
	constexpr std::string_view kMarker = "FERRY-HB ";
	size_t pos = line.find(kMarker);
	if (pos == std::string_view::npos)
		return std::nullopt;
	std::string_view rest = line.substr(pos + kMarker.size());
	Heartbeat hb;
	if (!parseU64(rest, &hb.seq) || !parseU64(rest, &hb.uptimeMs))
		return std::nullopt;
	size_t e = rest.find(" errors=");
	if (e != std::string_view::npos) {
		std::string_view v = rest.substr(e + 8);
		uint64_t n;
		if (parseU64(v, &n))
			hb.errors = static_cast<int64_t>(n);
	}
	return hb;
}

Result<ConsoleWatcher> ConsoleWatcher::open(const std::string &path)
{
	ConsoleWatcher w;
	w.path_ = path;
	w.inotify_ = UniqueFd(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
	if (!w.inotify_)
		return Error::fromErrno("inotify_init1");
	if (::inotify_add_watch(w.inotify_.get(), path.c_str(), IN_MODIFY) < 0)
		return Error::fromErrno(fmt::format("inotify_add_watch {}", path));
	w.file_ = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
	if (!w.file_)
		return Error::fromErrno(fmt::format("open {}", path));
	FERRY_TRY(w.poll());
	return w;
}

void ConsoleWatcher::addLine(std::string line)
{
	while (!line.empty() && (line.back() == '\r' || line.back() == '\n'))
		line.pop_back();
	if (auto hb = parseHeartbeat(line)) {
		hb->monotonicNs = monotonicNs();
		lastHeartbeat_ = *hb;
		if (!firstHeartbeat_)
			firstHeartbeat_ = *hb;
		heartbeatCount_++;
	} else if (isErrorLine(line)) {
		errorLineCount_++;
		if (errorLines_.size() < kMaxErrorLines)
			errorLines_.push_back(line);
	}
	lines_.push_back({nextIndex_++, std::move(line)});
	if (lines_.size() > kMaxKeptLines)
		lines_.pop_front();
}

Status ConsoleWatcher::poll()
{
	char buf[65536];
	for (;;) {
		FERRY_ASSIGN(size_t n, readSome(file_, buf, path_));
		if (n == 0)
			return okStatus();
		std::string_view chunk(buf, n);
		while (!chunk.empty()) {
			size_t nl = chunk.find('\n');
			if (nl == std::string_view::npos) {
				partial_.append(chunk);
				// The guest controls the console: a line without end must not grow
				// without bound; cut it into kMaxLineBytes pieces.
				if (partial_.size() > kMaxLineBytes)
					addLine(std::exchange(partial_, {}));
				break;
			}
			partial_.append(chunk.substr(0, nl));
			addLine(std::exchange(partial_, {}));
			chunk.remove_prefix(nl + 1);
		}
	}
}

Status ConsoleWatcher::waitReadable(Clock::time_point deadline)
{
	auto left = deadline - Clock::now();
	int ms = left <= Clock::duration::zero()
			 ? 0
			 : static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
	pollfd pfd{inotify_.get(), POLLIN, 0};
	int n = ::poll(&pfd, 1, ms);
	if (n < 0 && errno != EINTR)
		return Error::fromErrno("poll inotify");
	if (n > 0) {
		// Drain the queued inotify events; we only need "something changed".
		alignas(inotify_event) char evbuf[4096];
		while (::read(inotify_.get(), evbuf, sizeof(evbuf)) > 0) {
		}
	}
	return okStatus();
}

Result<ConsoleWatcher::Line> ConsoleWatcher::waitForLine(std::string_view marker,
							  std::chrono::milliseconds timeout,
							  uint64_t fromIndex)
{
	const auto deadline = Clock::now() + timeout;
	uint64_t searched = fromIndex;
	for (;;) {
		FERRY_TRY(poll());
		for (const Line &l : lines_) {
			if (l.index < searched)
				continue;
			if (l.text.find(marker) != std::string::npos)
				return l;
		}
		searched = std::max(searched, nextIndex_);
		if (Clock::now() >= deadline)
			return Error::format(ETIMEDOUT, "console {}: no '{}' line within {} ms (last: '{}')",
					     path_, marker, timeout.count(), lastLines(1));
		FERRY_TRY(waitReadable(deadline));
	}
}

Result<Heartbeat> ConsoleWatcher::waitHeartbeat(std::chrono::milliseconds timeout, uint64_t minSeq)
{
	const auto deadline = Clock::now() + timeout;
	for (;;) {
		FERRY_TRY(poll());
		if (lastHeartbeat_ && lastHeartbeat_->seq >= minSeq)
			return *lastHeartbeat_;
		if (Clock::now() >= deadline)
			return Error::format(ETIMEDOUT,
					     "console {}: no heartbeat with seq >= {} within {} ms (last seq {}, last line '{}')",
					     path_, minSeq, timeout.count(),
					     lastHeartbeat_ ? static_cast<int64_t>(lastHeartbeat_->seq) : -1,
					     lastLines(1));
		FERRY_TRY(waitReadable(deadline));
	}
}

std::string ConsoleWatcher::lastLines(size_t n) const
{
	std::string out;
	size_t start = lines_.size() > n ? lines_.size() - n : 0;
	for (size_t i = start; i < lines_.size(); i++) {
		if (!out.empty())
			out += '\n';
		out += lines_[i].text;
	}
	return out;
}

} // namespace ferry
