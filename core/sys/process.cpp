// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/sys/process.h"

#include <signal.h>

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

Result<ChildProcess> spawn(const SpawnSpec &spec)
{
	// Everything the child needs is built before fork: after it, in the child process,
	// only async-signal-safe calls are allowed.
	std::vector<char *> argv;
	argv.push_back(const_cast<char *>(spec.exe.c_str()));
	for (auto &a : spec.args)
		argv.push_back(const_cast<char *>(a.c_str()));
	argv.push_back(nullptr);
	std::vector<std::string> envStrings;
	for (char **e = environ; *e; e++) {
		std::string_view kv(*e);
		bool overridden = false;
		for (const auto &[k, v] : spec.env)
			if (kv.size() > k.size() && kv.substr(0, k.size()) == k && kv[k.size()] == '=')
				overridden = true;
		if (!overridden)
			envStrings.emplace_back(kv);
	}
	for (const auto &[k, v] : spec.env)
		envStrings.push_back(k + "=" + v);
	std::vector<char *> envp;
	for (auto &s : envStrings)
		envp.push_back(s.data());
	envp.push_back(nullptr);

	pid_t parent = ::getpid();
	pid_t pid = ::fork();
	if (pid < 0)
		return Error::fromErrno("fork");
	if (pid == 0) {
		// Die with the parent; if it is already gone, do not start.
		::prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (::getppid() != parent)
			::_exit(127);
		// A command that takes SIGINT/SIGTERM through a signalfd blocks them; exec keeps
		// the mask, and the child must be stoppable by them.
		sigset_t none;
		sigemptyset(&none);
		::sigprocmask(SIG_SETMASK, &none, nullptr);
		if (spec.stdinFd >= 0)
			::dup2(spec.stdinFd, 0);
		if (spec.stdoutFd >= 0)
			::dup2(spec.stdoutFd, 1);
		if (spec.stderrFd >= 0)
			::dup2(spec.stderrFd, 2);
		if (spec.closeOtherFds) {
			::close_range(3, ~0u, 0);
		} else {
			for (int fd : spec.inherit) {
				int fl = ::fcntl(fd, F_GETFD);
				if (fl >= 0)
					::fcntl(fd, F_SETFD, fl & ~FD_CLOEXEC);
			}
		}
		if (spec.searchPath)
			::execvpe(argv[0], argv.data(), envp.data());
		else
			::execve(argv[0], argv.data(), envp.data());
		const char msg[] = "ferry: exec failed\n";
		(void)!::write(2, msg, sizeof(msg) - 1);
		::_exit(127);
	}
	return ChildProcess(pid);
}

Result<ChildProcess> spawnSelf(const std::vector<std::string> &args, const std::vector<int> &inherit,
			       int stdoutFd, const std::string &exe)
{
	SpawnSpec spec;
	spec.exe = exe;
	spec.args = args;
	spec.inherit = inherit;
	spec.stdoutFd = stdoutFd;
	return spawn(spec);
}

pid_t ChildProcess::release() { return std::exchange(pid_, -1); }

} // namespace ferry
