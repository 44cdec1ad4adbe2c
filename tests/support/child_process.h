// SPDX-License-Identifier: GPL-2.0-or-later
// Test helper: fork a child that talks to the parent over a socketpair, with timeouts
// everywhere so that a broken kernel feature fails the test instead of hanging it.
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>

#include "ferry/base/result.h"
#include "ferry/sys/fd.h"
#include "ferry/sys/poll.h"

namespace ferry::test {

struct Child {
	pid_t pid = -1;
	UniqueFd sock;  // parent's end
	UniqueFd pidfd; // readable when the child exits
};

// Forks; the child runs body(its socket end) and _exits with the return value. A watchdog
// (alarm) kills a child stuck longer than watchdogSeconds.
inline Result<Child> forkChild(const std::function<int(int sock)> &body, unsigned watchdogSeconds = 30)
{
	int sv[2];
	if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return Error::fromErrno("socketpair");
	pid_t pid = ::fork();
	if (pid < 0)
		return Error::fromErrno("fork");
	if (pid == 0) {
		::close(sv[0]);
		::alarm(watchdogSeconds);
		::_exit(body(sv[1]));
	}
	::close(sv[1]);
	Child c;
	c.pid = pid;
	c.sock = UniqueFd(sv[0]);
	c.pidfd = UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
	if (!c.pidfd)
		return Error::fromErrno("pidfd_open");
	return c;
}

// Waits for the child's exit; returns its exit code (128+signal if killed). Kills it on
// timeout.
inline Result<int> waitChild(Child &c, int timeoutMs = 20000)
{
	pollfd p{ c.pidfd.get(), POLLIN, 0 };
	int r = ::poll(&p, 1, timeoutMs);
	if (r <= 0) {
		::kill(c.pid, SIGKILL);
		::waitpid(c.pid, nullptr, 0);
		return Error(ETIMEDOUT, "child did not exit in time");
	}
	int status = 0;
	if (::waitpid(c.pid, &status, 0) < 0)
		return Error::fromErrno("waitpid");
	c.pid = -1;
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

inline Status sendAll(int fd, const void *data, size_t len)
{
	const auto *p = static_cast<const uint8_t *>(data);
	while (len > 0) {
		ssize_t n = ::send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return Error::fromErrno("send");
		}
		p += n;
		len -= static_cast<size_t>(n);
	}
	return okStatus();
}

inline Status recvAll(int fd, void *data, size_t len, int timeoutMs = 20000)
{
	auto *p = static_cast<uint8_t *>(data);
	while (len > 0) {
		FERRY_ASSIGN(short ready, pollOne(fd, POLLIN, timeoutMs));
		if (ready == 0)
			return Error(ETIMEDOUT, "recv timed out");
		ssize_t n = ::recv(fd, p, len, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return Error::fromErrno("recv");
		}
		if (n == 0)
			return Error(ECONNRESET, "peer closed");
		p += n;
		len -= static_cast<size_t>(n);
	}
	return okStatus();
}

template<typename T>
Status sendValue(int fd, const T &v)
{
	return sendAll(fd, &v, sizeof(v));
}

template<typename T>
Result<T> recvValue(int fd, int timeoutMs = 20000)
{
	T v{};
	FERRY_TRY(recvAll(fd, &v, sizeof(v), timeoutMs));
	return v;
}

} // namespace ferry::test
