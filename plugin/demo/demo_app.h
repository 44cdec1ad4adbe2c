// SPDX-License-Identifier: GPL-2.0-or-later
// The demo applications: a source process that owns a memory region and keeps writing into
// it, and a destination process that takes the region over and reads it. They stand in for
// QEMU: the region is a shared memfd, and userfaultfds are created *inside* them (as ferry's
// agent shim does inside QEMU) and handed to ferry over a UNIX socket with SCM_RIGHTS.
//
// Control protocol on a SOCK_SEQPACKET socketpair (one message per packet):
//   source -> ferry: {memfd, uffd(wp-async)} + payload {u64 base, u64 size}, once
//   ferry -> source: 'S' suspend / 'R' resume / 'Q' quit;  source -> ferry: 'A' after each
//   ferry -> dest:   {memfd} + payload {u64 size}
//   dest -> ferry:   {uffd(missing|minor)} or {} + payload {u64 base}
//   ferry -> dest:   'G' run / 'Q' quit; dest -> ferry: payload {u64 pagesRead} on quit
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "ferry/base/result.h"
#include "ferry/roles/leecher.h"
#include "ferry/sys/fd.h"
#include "ferry/sys/mapping.h"
#include "ferry/sys/userfaultfd.h"
#include "ferry/sys/process.h"

namespace ferry {

struct SourceAppOptions {
	uint64_t size = 256ull << 20;
	double writeMBps = 50;       // random 4 KiB page writes per second, in MB/s
	bool sequential = false;
	double fill = 1.0;           // fraction of pages given content at start (the rest is zero)
	bool textFill = false;       // that content: random (incompressible) or text-like (compresses ~4x)
	// Cyclic writer (like a garbage-collected application): writeMBps for duty*period
	// seconds, then lowMBps for the rest of the period. periodSec 0 = constant rate.
	double periodSec = 0;
	double duty = 0.5;
	double lowMBps = 0;
	double phase = 0;            // where in the cycle the application starts, 0..1
	uint64_t seed = 1;
	std::string exe = "/proc/self/exe"; // the ferry binary that runs `__app-source`
};

struct DestAppOptions {
	bool faults = true;          // register a userfaultfd (hybrid mode)
	double readMBps = 200;       // random page reads after resume (0 = none)
	uint64_t seed = 2;
	std::string exe = "/proc/self/exe"; // the ferry binary that runs `__app-dest`
};

int runSourceApp(int ctrlFd, const SourceAppOptions &opts);
int runDestApp(int ctrlFd, const DestAppOptions &opts);

// ferry's side of a source application.
class SourceAppHandle {
public:
	static Result<SourceAppHandle> spawn(const SourceAppOptions &opts);
	Status suspend();
	Status resume();
	void quit();
	pid_t pid() const { return child_.pid(); }
	uintptr_t base() const { return base_; }
	uint64_t size() const { return size_; }
	// The region mapped read-only in this process, and the app's tracking uffd (taken once).
	const Mapping &mapping() const { return map_; }
	int memfd() const { return memfd_.get(); } // the region's file, for SeederOptions::regionFd
	Result<Userfaultfd> takeUffd();

private:
	Status command(char c);
	ChildProcess child_;
	UniqueFd ctrl_;
	UniqueFd memfd_;
	UniqueFd uffd_;
	Mapping map_;
	uintptr_t base_ = 0;
	uint64_t size_ = 0;
};

// ferry's side of a destination application.
class DestAppHandle {
public:
	// Spawns the app over `memfd` (size bytes); returns once it has mapped (not touched) the
	// region and, with faults, registered its userfaultfd.
	static Result<DestAppHandle> spawn(int memfd, uint64_t size, const DestAppOptions &opts);
	Result<Userfaultfd> takeUffd();
	uintptr_t base() const { return base_; }
	Status run();
	// Stops the app; returns the pages it read.
	Result<uint64_t> quit();

private:
	ChildProcess child_;
	UniqueFd ctrl_;
	UniqueFd uffd_;
	uintptr_t base_ = 0;
};

// The destination of a demo migration, as a leecher sees it: the region (a memfd the leecher
// writes and the application maps) and the destination application on it, started at
// finalize (hybrid: armFaults) or at the end (precopy: resume). hooks() captures this object,
// so it must outlive the Leecher that runs them.
class DemoDestination {
public:
	explicit DemoDestination(DestAppOptions opts) : opts_(std::move(opts)) {}
	DemoDestination(const DemoDestination &) = delete;
	DemoDestination &operator=(const DemoDestination &) = delete;

	LeecherHooks hooks();
	bool appStarted() const { return app_.has_value(); }
	// Stops the application (appStarted() only); returns the pages it read.
	Result<uint64_t> quitApp() { return app_->quit(); }

private:
	Status startApp();

	DestAppOptions opts_;
	uint64_t size_ = 0;
	MemfdMapping region_;
	std::optional<DestAppHandle> app_; // last: stopped before the region goes
};

} // namespace ferry
