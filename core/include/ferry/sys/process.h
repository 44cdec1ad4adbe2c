// SPDX-License-Identifier: GPL-2.0-or-later
// Child processes: the demo applications and roles of `ferry demo`, QEMU in the harness.
#pragma once

#include <string>
#include <sys/types.h>
#include <utility>
#include <vector>

#include "ferry/base/result.h"
#include "ferry/sys/fd.h"

namespace ferry {

class ChildProcess {
public:
	ChildProcess() = default;
	explicit ChildProcess(pid_t pid) : pid_(pid) {}
	ChildProcess(ChildProcess &&o) noexcept : pid_(std::exchange(o.pid_, -1)) {}
	ChildProcess &operator=(ChildProcess &&o) noexcept;
	~ChildProcess(); // kills (SIGKILL) and reaps a child still running

	pid_t pid() const { return pid_; }
	bool running() const { return pid_ > 0; }
	// Waits for exit; returns the exit status (128+signal when killed).
	Result<int> wait();
	// Waits up to timeoutMs; ETIMEDOUT if it is still running.
	Result<int> waitFor(int timeoutMs);
	void kill(int sig);
	// Gives up ownership: the caller now reaps the child (e.g. through a pidfd).
	pid_t release();

private:
	pid_t pid_ = -1;
};

// What to run and how. The child gets SIGKILL if this process dies (PR_SET_PDEATHSIG), starts
// with no signal blocked, and keeps only the fds in `inherit` (at their numbers) beside
// 0-2 unless closeOtherFds closes everything above 2.
struct SpawnSpec {
	std::string exe;                                         // a path, or a name with searchPath
	std::vector<std::string> args;                           // argv[1...]
	std::vector<std::pair<std::string, std::string>> env;    // added to (or overriding) ours
	std::vector<int> inherit;
	int stdinFd = -1, stdoutFd = -1, stderrFd = -1;          // -1: keep ours
	bool closeOtherFds = false;
	bool searchPath = false;
};
Result<ChildProcess> spawn(const SpawnSpec &spec);

// Runs `exe` (by default this same executable, /proc/self/exe) with `args`. The fds in `inherit` keep their
// numbers in the child (they are made inheritable there only); stdout goes to `stdoutFd`
// when it is >= 0. The child gets SIGKILL if this process dies (PR_SET_PDEATHSIG).
Result<ChildProcess> spawnSelf(const std::vector<std::string> &args, const std::vector<int> &inherit,
			       int stdoutFd = -1, const std::string &exe = "/proc/self/exe");

} // namespace ferry
