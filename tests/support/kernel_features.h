// SPDX-License-Identifier: GPL-2.0-or-later
// Test helpers: skip, with the reason, a test whose kernel feature is missing (never a silent
// pass). Macros because GTEST_SKIP() returns from the test body (or SetUp()) it stands in.
#pragma once

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "ferry/dirty/tracker.h"
#include "ferry/sys/pagemap_scan.h"
#include "ferry/sys/userfaultfd.h"

// Userfaultfd needs CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1 (or USER_MODE_ONLY):
// skip with the reason when it is refused or lacks `features`.
#define REQUIRE_UFFD(features)                                                                 \
	do {                                                                                   \
		auto probe_ = ::ferry::Userfaultfd::probeFeatures();                           \
		if (!probe_.ok())                                                              \
			GTEST_SKIP() << "userfaultfd unavailable: " << probe_.error().message(); \
		if ((*probe_ & (features)) != (features))                                       \
			GTEST_SKIP() << "kernel lacks userfaultfd features "                    \
				     << ::ferry::Userfaultfd::featureNames((features) & ~*probe_); \
	} while (0)

// The uffd write-protect tracker: PAGEMAP_SCAN and asynchronous write-protect.
#define REQUIRE_WP_ASYNC()                                                                     \
	do {                                                                                   \
		if (!::ferry::PagemapScanner::supported())                                     \
			GTEST_SKIP() << "PAGEMAP_SCAN not supported by this kernel";           \
		REQUIRE_UFFD(::ferry::kWpAsyncFeatures);                                       \
	} while (0)

// Root becoming `nobody` to see what an unprivileged QEMU would get: skip unless this host
// refuses full userfaultfds to unprivileged users (vm.unprivileged_userfaultfd=0 and
// /dev/userfaultfd not open to all), the case the test is about.
#define REQUIRE_USERFAULTFD_PRIVILEGED()                                                       \
	do {                                                                                   \
		if (::geteuid() != 0)                                                          \
			GTEST_SKIP() << "needs root to become another user";                   \
		FILE *f_ = std::fopen("/proc/sys/vm/unprivileged_userfaultfd", "r");          \
		int unprivileged_ = f_ ? std::fgetc(f_) - '0' : -1;                            \
		if (f_)                                                                        \
			std::fclose(f_);                                                       \
		struct stat dev_ {};                                                           \
		if (unprivileged_ != 0 || (::stat("/dev/userfaultfd", &dev_) == 0 && (dev_.st_mode & 0006))) \
			GTEST_SKIP() << "this host lets unprivileged users have userfaultfds "  \
				     << "(vm.unprivileged_userfaultfd=" << unprivileged_        \
				     << ", or /dev/userfaultfd open to all)";                   \
	} while (0)
