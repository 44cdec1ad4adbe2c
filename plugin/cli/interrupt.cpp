// SPDX-License-Identifier: GPL-2.0-or-later
#include "cli/interrupt.h"

#include <cstdlib>

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <thread>
#include <unistd.h>

#include "ferry/roles/seeder.h"

namespace ferry {

namespace {

Result<UniqueFd> blockAndOpenSignalfd(std::initializer_list<int> signals = {SIGINT, SIGTERM})
{
	sigset_t set;
	sigemptyset(&set);
	for (int s : signals)
		sigaddset(&set, s);
	// Blocked signals stay pending until the signalfd reads them; threads started later
	// inherit the mask, so no thread runs a handler.
	if (int e = ::pthread_sigmask(SIG_BLOCK, &set, nullptr))
		return Error::fromErrno("pthread_sigmask", e);
	UniqueFd fd(::signalfd(-1, &set, SFD_CLOEXEC));
	if (!fd)
		return Error::fromErrno("signalfd");
	return fd;
}

} // namespace

struct InterruptWatcher::State {
	UniqueFd sigFd, stopFd;
	std::thread thread; // last: joined before the fds close
};

InterruptWatcher::InterruptWatcher(std::unique_ptr<State> s) : s_(std::move(s)) {}

Result<std::unique_ptr<InterruptWatcher>> InterruptWatcher::start(std::function<void(int)> onInterrupt)
{
	auto s = std::make_unique<State>();
	FERRY_ASSIGN(s->sigFd, blockAndOpenSignalfd());
	s->stopFd.reset(::eventfd(0, EFD_CLOEXEC));
	if (!s->stopFd)
		return Error::fromErrno("eventfd");
	s->thread = std::thread([sig = s->sigFd.get(), stop = s->stopFd.get(), cb = std::move(onInterrupt)] {
		pollfd p[2] = {{sig, POLLIN, 0}, {stop, POLLIN, 0}};
		for (;;) {
			if (::poll(p, 2, -1) < 0)
				continue; // EINTR only: nothing is handled by signal handlers here
			if (p[1].revents)
				return;
			signalfd_siginfo si;
			if (::read(sig, &si, sizeof si) == ssize_t(sizeof si))
				cb(int(si.ssi_signo)); // every signal: a second Ctrl-C may mean "now"
		}
	});
	return std::unique_ptr<InterruptWatcher>(new InterruptWatcher(std::move(s)));
}

InterruptWatcher::~InterruptWatcher()
{
	uint64_t one = 1;
	(void)!::write(s_->stopFd.get(), &one, sizeof one);
	s_->thread.join();
}

Result<int> InterruptWatcher::waitForSignal()
{
	FERRY_ASSIGN(UniqueFd fd, blockAndOpenSignalfd());
	signalfd_siginfo si;
	for (;;) {
		ssize_t n = ::read(fd.get(), &si, sizeof si);
		if (n == ssize_t(sizeof si))
			return int(si.ssi_signo);
		if (n < 0 && errno != EINTR)
			return Error::fromErrno("read signalfd");
	}
}

Result<std::unique_ptr<SeederInterrupts>> SeederInterrupts::start()
{
	auto si = std::make_unique<SeederInterrupts>();
	FERRY_ASSIGN(si->watcher_, InterruptWatcher::start([t = &si->target_](int signo) {
		if (Seeder *s = t->load())
			s->stop();
		else
			std::_Exit(128 + signo);
	}));
	return si;
}

Result<SignalWaiter> SignalWaiter::create(std::initializer_list<int> signals)
{
	SignalWaiter w;
	FERRY_ASSIGN(w.fd_, blockAndOpenSignalfd(signals));
	return w;
}

Result<std::optional<int>> SignalWaiter::wait(int timeoutMs)
{
	pollfd p{fd_.get(), POLLIN, 0};
	int n = ::poll(&p, 1, timeoutMs);
	if (n < 0)
		return errno == EINTR ? Result<std::optional<int>>(std::optional<int>()) : Error::fromErrno("poll signalfd");
	if (n == 0)
		return std::optional<int>();
	signalfd_siginfo si;
	if (::read(fd_.get(), &si, sizeof si) != ssize_t(sizeof si))
		return Error::fromErrno("read signalfd");
	return std::optional<int>(int(si.ssi_signo));
}

} // namespace ferry
