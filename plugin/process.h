// SPDX-License-Identifier: GPL-2.0-or-later
// Child processes of the ferry CLI (demo applications, seed/leech roles of `ferry demo`).
#pragma once

#include <string>
#include <sys/types.h>
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

private:
	pid_t pid_ = -1;
};

// Runs `exe` (by default this same executable, /proc/self/exe) with `args`. The fds in `inherit` keep their
// numbers in the child (they are made inheritable there only); stdout goes to `stdoutFd`
// when it is >= 0. The child gets SIGKILL if this process dies (PR_SET_PDEATHSIG).
Result<ChildProcess> spawnSelf(const std::vector<std::string> &args, const std::vector<int> &inherit,
			       int stdoutFd = -1, const std::string &exe = "/proc/self/exe");

} // namespace ferry
