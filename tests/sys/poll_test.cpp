// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/sys/poll.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "ferry/base/clock.h"
#include "ferry/sys/fd.h"

using namespace ferry;

TEST(PollOne, ReturnsZeroOnTimeoutAndTheEventsOnceReady)
{
	int fds[2];
	ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
	UniqueFd in(fds[0]), out(fds[1]);
	auto idle = pollOne(in.get(), POLLIN, 20);
	ASSERT_TRUE(idle.ok()) << idle.error().message();
	EXPECT_EQ(*idle, 0);
	ASSERT_EQ(::write(out.get(), "x", 1), 1);
	auto ready = pollOne(in.get(), POLLIN, 5000);
	ASSERT_TRUE(ready.ok()) << ready.error().message();
	EXPECT_TRUE(*ready & POLLIN);
}

// A signal handled without SA_RESTART interrupts poll with EINTR; the wait goes on until its
// deadline instead of ending early.
TEST(PollOne, ASignalDoesNotEndTheWaitEarly)
{
	struct sigaction sa = {}, old = {};
	sa.sa_handler = [](int) {};
	ASSERT_EQ(::sigaction(SIGALRM, &sa, &old), 0);
	itimerval once = {};
	once.it_value.tv_usec = 30000;
	ASSERT_EQ(::setitimer(ITIMER_REAL, &once, nullptr), 0);
	int fds[2];
	ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
	UniqueFd in(fds[0]), out(fds[1]);
	const int64_t t0 = monotonicNs();
	auto r = pollOne(in.get(), POLLIN, 150);
	const double ms = msBetween(t0, monotonicNs());
	::sigaction(SIGALRM, &old, nullptr);
	ASSERT_TRUE(r.ok()) << r.error().message();
	EXPECT_EQ(*r, 0);
	EXPECT_GE(ms, 149.0);
}
