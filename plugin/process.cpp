// SPDX-License-Identifier: GPL-2.0-or-later
#include "process.h"

#include <csignal>
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace ferry {

ChildProcess &ChildProcess::operator=(ChildProcess &&o) noexcept
{
	if (this != &o) {
		this->~ChildProcess();
		pid_ = std::exchange(o.pid_, -1);
	}
	return *this;
}

ChildProcess::~ChildProcess()
{
	if (pid_ > 0) {
		::kill(pid_, SIGKILL);
		int st;
		while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
		}
		pid_ = -1;
	}
}

void ChildProcess::kill(int sig)
{
	if (pid_ > 0)
		::kill(pid_, sig);
}

static int decodeStatus(int st)
{
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return -1;
}

Result<int> ChildProcess::wait()
{
	if (pid_ <= 0)
		return Error(ECHILD, "no child");
	int st;
	while (::waitpid(pid_, &st, 0) < 0) {
		if (errno != EINTR)
			return Error::fromErrno("waitpid");
	}
	pid_ = -1;
	return decodeStatus(st);
}

Result<int> ChildProcess::waitFor(int timeoutMs)
{
	if (pid_ <= 0)
		return Error(ECHILD, "no child");
	// A pidfd becomes readable when the process exits: no polling loop.
	UniqueFd pfd(static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0)));
	if (!pfd)
		return Error::fromErrno("pidfd_open");
	pollfd p{pfd.get(), POLLIN, 0};
	int n;
	while ((n = ::poll(&p, 1, timeoutMs)) < 0 && errno == EINTR) {
	}
	if (n == 0)
		return Error(ETIMEDOUT, "child still running");
	return wait();
}

Result<ChildProcess> spawnSelf(const std::vector<std::string> &args, const std::vector<int> &inherit,
			       int stdoutFd, const std::string &exe)
{
	std::vector<char *> argv;
	argv.push_back(const_cast<char *>(exe.c_str()));
	for (auto &a : args)
		argv.push_back(const_cast<char *>(a.c_str()));
	argv.push_back(nullptr);
	pid_t parent = ::getpid();
	pid_t pid = ::fork();
	if (pid < 0)
		return Error::fromErrno("fork");
	if (pid == 0) {
		// Only async-signal-safe calls from here to exec.
		::prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (::getppid() != parent)
			::_exit(127);
		for (int fd : inherit) {
			int fl = ::fcntl(fd, F_GETFD);
			if (fl >= 0)
				::fcntl(fd, F_SETFD, fl & ~FD_CLOEXEC);
		}
		if (stdoutFd >= 0)
			::dup2(stdoutFd, 1);
		::execv(exe.c_str(), argv.data());
		::_exit(127);
	}
	return ChildProcess(pid);
}

} // namespace ferry
