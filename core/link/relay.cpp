// SPDX-License-Identifier: GPL-2.0-or-later
#include "link/relay.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <cstring>

#include "ferry/base/clock.h"
#include "ferry/base/log.h"

namespace ferry::link {

void resetAndClose(UniqueFd &fd)
{
	if (!fd)
		return;
	linger l{1, 0};
	::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	fd.reset();
}

Status setNonBlocking(int fd)
{
	int flags = ::fcntl(fd, F_GETFL);
	if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return Error::fromErrno("fcntl O_NONBLOCK");
	return {};
}

void Relay::run()
{
	// splice() into a socket whose peer is gone raises SIGPIPE (it has no MSG_NOSIGNAL).
	// Blocked in this thread only, the signal stays pending here and dies with the thread;
	// the error itself still comes back as EPIPE.
	sigset_t pipeSet;
	sigemptyset(&pipeSet);
	sigaddset(&pipeSet, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipeSet, nullptr);
	// A delayed segment leaves when its time comes: the default timer slack (50 µs) would
	// let ppoll's timeout fire up to that much later, on every emulated one-way delay.
	(void)::prctl(PR_SET_TIMERSLACK, 1UL);

	bool abort = false;
	Status init = up.attach(client.get(), server.get());
	if (init.ok())
		init = down.attach(server.get(), client.get());
	if (!init.ok()) {
		FERRY_LOG(Warn, "link", "relay setup: {}", init.error().message());
		abort = true;
	}
	while (!abort) {
		if (cutRequested.load()) {
			abort = true;
			break;
		}
		int64_t now = monotonicNs();
		Status st = up.pump(now);
		if (st.ok())
			st = down.pump(now);
		if (!st.ok()) {
			// A reset or error on one side becomes a reset on the other, as end to end.
			FERRY_LOG(Debug, "link", "relay reset: {}", st.error().message());
			abort = true;
			break;
		}
		if (up.done() && down.done())
			break;

		now = monotonicNs();
		// Only fds with interest are polled (fd -1 is ignored), so a hung-up socket we are
		// not reading cannot make ppoll return immediately over and over.
		short cev = short((up.canRead(now) ? POLLIN : 0) | (down.wantsPollOut() ? POLLOUT : 0));
		short sev = short((down.canRead(now) ? POLLIN : 0) | (up.wantsPollOut() ? POLLOUT : 0));
		pollfd fds[3] = {{cev ? client.get() : -1, cev, 0},
				 {sev ? server.get() : -1, sev, 0},
				 {wake.get(), POLLIN, 0}};
		int64_t wakeAt = std::min(up.nextWake(now), down.nextWake(now));
		timespec ts;
		timespec *tsp = nullptr;
		if (wakeAt != INT64_MAX) {
			int64_t d = std::max<int64_t>(0, wakeAt - now);
			ts = timespecOfNs(d);
			tsp = &ts;
		}
		if (::ppoll(fds, 3, tsp, nullptr) < 0 && errno != EINTR) {
			FERRY_LOG(Warn, "link", "ppoll: {}", std::strerror(errno));
			abort = true;
			break;
		}
		if (fds[0].revents & (POLLOUT | POLLERR | POLLHUP))
			down.pollOutReady();
		if (fds[1].revents & (POLLOUT | POLLERR | POLLHUP))
			up.pollOutReady();
	}
	if (abort) {
		resetAndClose(client);
		resetAndClose(server);
	} else {
		client.reset();
		server.reset();
	}
	finished.store(true);
}

void Relay::cut()
{
	cutRequested.store(true);
	uint64_t one = 1;
	// The eventfd counter cannot overflow from a handful of writes; EAGAIN is harmless.
	(void)!::write(wake.get(), &one, sizeof(one));
}

} // namespace ferry::link
