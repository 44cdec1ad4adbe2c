// SPDX-License-Identifier: GPL-2.0-or-later
// SIGINT and SIGTERM for a long-running command, through a signalfd: no handler, no flag to
// poll. start() blocks both signals in the calling thread (call it before starting threads,
// which inherit the mask) and runs `onInterrupt` on a thread that sleeps in poll() on the
// signalfd until a signal arrives or the watcher is destroyed.
#pragma once

#include <atomic>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>

#include "ferry/base/result.h"
#include "ferry/sys/fd.h"

namespace ferry {

class InterruptWatcher {
public:
	static Result<std::unique_ptr<InterruptWatcher>> start(std::function<void(int signo)> onInterrupt);
	~InterruptWatcher(); // stops and joins the watching thread
	InterruptWatcher(const InterruptWatcher &) = delete;
	InterruptWatcher &operator=(const InterruptWatcher &) = delete;

	// Blocks the caller until SIGINT/SIGTERM arrives (for commands with nothing else to do).
	// Returns the signal number.
	static Result<int> waitForSignal();

private:
	struct State;
	explicit InterruptWatcher(std::unique_ptr<State> s);
	std::unique_ptr<State> s_;
};

class Seeder;

// SIGINT/SIGTERM for a command that serves a Seeder (seed, migrate). Start it first, before
// any thread exists. Until serving() names the seeder nothing is suspended or tracked and the
// process exits at once (128 + signal); after, the seeder is stopped, and it resumes a
// suspended source before serve() returns.
class SeederInterrupts {
public:
	static Result<std::unique_ptr<SeederInterrupts>> start();
	void serving(Seeder *seeder) { target_ = seeder; }
	void done() { watcher_.reset(); }

private:
	std::atomic<Seeder *> target_{nullptr};
	std::unique_ptr<InterruptWatcher> watcher_;
};

// Signals as events for a command's own loop: the constructor blocks `signals` in the calling
// thread (before it starts threads) and opens a signalfd for them.
class SignalWaiter {
public:
	static Result<SignalWaiter> create(std::initializer_list<int> signals);
	// The next signal, or nullopt when timeoutMs (-1: forever) passes first.
	Result<std::optional<int>> wait(int timeoutMs);

private:
	UniqueFd fd_;
};

} // namespace ferry
