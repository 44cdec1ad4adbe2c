// SPDX-License-Identifier: GPL-2.0-or-later
// Starting and owning QEMU processes for ferry's guests.
//
// A QemuProcess is the one owner of a QEMU child: its destructor SIGKILLs and reaps it, then
// removes the QMP socket and any /dev/shm RAM file it created. The child also gets
// PR_SET_PDEATHSIG(SIGKILL), so a crashed runner does not leave QEMUs behind — note the
// signal fires when the *thread* that launched it exits, so launch from a long-lived thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ferry/base/result.h"
#include "ferry/qmp/qmp_client.h"
#include "ferry/sys/fd.h"

namespace ferry {

// The guest built by vm-images/build-image: DIR/vmlinuz, DIR/initrd.img, DIR/append.txt.
struct GuestImage {
	std::string kernel;
	std::string initrd;
	std::string append; // base kernel command line (console=ttyS0 ...)

	static Result<GuestImage> fromDir(const std::string &dir);
	// From $FERRY_VM_IMAGE_DIR; ENOENT error if unset, or as fromDir() if incomplete.
	static Result<GuestImage> fromEnv();
};

enum class Accel { Tcg, Kvm };
enum class RamBackend {
	Private, // memory-backend-ram (anonymous, private to QEMU)
	Memfd,   // memory-backend-memfd,share=on
	ShmFile, // memory-backend-file,mem-path=/dev/shm/...,share=on
};

struct QemuConfig {
	std::string name = "vm";   // used in file names and logs
	std::string runDir;        // existing directory for the QMP socket and logs
	GuestImage image;
	std::string extraAppend;   // appended to image.append (ferry.mode=... etc.)
	uint64_t memMib = 256;
	int cpus = 1;
	RamBackend ram = RamBackend::Memfd;
	std::string shmPath;       // ShmFile: default /dev/shm/ferry-<name>-<pid>.ram
	Accel accel = Accel::Tcg;  // Kvm only when kvmUsable() says so
	// Appended to -accel tcg|kvm. TCG gets "thread=single" unless a thread= is given here:
	// with multi-threaded TCG (QEMU 7.2's default), stock migration lost guest writes on this
	// host (destination guest panicked or the verify workload saw stale pages in 9 of 9
	// pre-copy runs); with thread=single 0 of 4 and more.
	std::string accelProps;
	bool incomingDefer = false; // destination: -incoming defer
	std::vector<std::string> extraArgs;
	std::vector<std::pair<std::string, std::string>> env; // added to (or replacing in) our environment
	std::string qemuBinary = "qemu-system-x86_64";
};

class QemuProcess {
public:
	QemuProcess(QemuProcess &&o) noexcept;
	QemuProcess &operator=(QemuProcess &&o) noexcept;
	QemuProcess(const QemuProcess &) = delete;
	QemuProcess &operator=(const QemuProcess &) = delete;
	~QemuProcess();

	// Builds the command line for cfg (exposed for logging and tests).
	static Result<std::vector<std::string>> commandLine(const QemuConfig &cfg);
	// Starts QEMU for a guest. The console log exists (empty) when this returns.
	static Result<QemuProcess> launch(const QemuConfig &cfg);
	// Starts an arbitrary QEMU command line (argv[0] is looked up in PATH); stdout and stderr go
	// to stderrLogPath. qmpSocketPath/consoleLogPath are only recorded for the accessors.
	static Result<QemuProcess> spawn(std::string name, std::vector<std::string> argv,
					 std::vector<std::pair<std::string, std::string>> env,
					 std::string stderrLogPath, std::string qmpSocketPath = {},
					 std::string consoleLogPath = {});

	pid_t pid() const { return pid_; }
	int pidfd() const { return pidfd_.get(); } // readable once the process exited
	const std::string &name() const { return name_; }
	const std::string &qmpSocketPath() const { return qmpSocketPath_; }
	const std::string &consoleLogPath() const { return consoleLogPath_; }
	const std::string &stderrLogPath() const { return stderrLogPath_; }
	const std::string &shmPath() const { return shmPath_; }

	// Connects to the QMP socket; fails fast (with QEMU's stderr) if QEMU exits meanwhile.
	Result<QmpClient> connectQmp(std::chrono::milliseconds timeout = std::chrono::seconds(10));

	// True once the process has exited (reaps it; exitStatus() then holds the wait status).
	bool exited();
	std::optional<int> exitStatus() const { return exitStatus_; }
	// Waits for the process to exit; ETIMEDOUT if it does not. Returns the wait status.
	Result<int> waitExit(std::chrono::milliseconds timeout);
	// Sends a signal (via the pidfd, so never to a recycled pid).
	Status kill(int sig = 9);
	// "exited with status 1" / "killed by signal 9" / "running".
	std::string describeExit() const;
	// The last maxBytes of QEMU's stdout+stderr (for error messages).
	std::string stderrTail(size_t maxBytes = 2000) const;

private:
	QemuProcess() = default;
	void reset();

	std::string name_;
	pid_t pid_ = -1;
	UniqueFd pidfd_;
	std::optional<int> exitStatus_;
	std::string qmpSocketPath_;
	std::string consoleLogPath_;
	std::string stderrLogPath_;
	std::string shmPath_;
	bool ownsShm_ = false;
};

// Creates a fresh private directory for sockets and logs: $FERRY_RUN_DIR or /tmp,
// "<prefix>-XXXXXX". The caller removes it (removeRunDir) when done.
Result<std::string> makeRunDir(std::string_view prefix);
void removeRunDir(const std::string &dir);

// Whether Linux guests actually boot under KVM here: boots `image` with -accel kvm and waits
// up to `timeout` for a heartbeat. /dev/kvm exists on some hosts where guests hang, so its
// presence alone is not enough. The first result is cached for the process.
bool kvmUsable(const GuestImage &image, std::chrono::milliseconds timeout = std::chrono::seconds(20));

} // namespace ferry
