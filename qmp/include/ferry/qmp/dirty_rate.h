// SPDX-License-Identifier: GPL-2.0-or-later
// QemuDirtyRateSampler: the dirty-rate series of an unmodified QEMU, through QMP
// calc-dirty-rate / query-dirty-rate (QEMU >= 5.2; schema as in QEMU 7.2's QMP reference).
//
// Contract relied on (QEMU 7.2, migration/dirtyrate.c):
// - calc-dirty-rate {calc-time: 1..60 s, sample-pages: 128..16384 per GiB (page-sampling
//   only), mode} returns at once and starts a detached measurement thread; QEMU refuses it
//   with "the dirty rate is already being measured." while one runs. Only one measurement
//   exists per QEMU, shared by every QMP client.
// - query-dirty-rate returns {status: unstarted|measuring|measured, start-time, calc-time,
//   sample-pages, mode, dirty-rate (only once measured), vcpu-dirty-rate (dirty-ring)}.
//   dirty-rate is an integer in units of 2^20 bytes per second (QEMU says "MB/s", computes
//   with >> 20); it stays -1 when page sampling found no RAM block to sample.
// - calc-time and start-time are whole seconds (start-time is QEMU_CLOCK_REALTIME / 1000, not
//   wall-clock time).
// - page-sampling (default) hashes sample-pages random pages per GiB of guest RAM before and
//   after calc-time and scales the changed fraction to the RAM size: an estimate, counting
//   distinct pages whose *content* changed. dirty-bitmap counts the pages of the migration
//   dirty bitmap and dirty-ring sums KVM's per-vCPU dirty rings: both exact, both KVM-only.
//   Under TCG, QEMU 7.2 dereferences a NULL kvm_state when asked for either and the whole
//   VM dies with SIGSEGV (seen here: exit 139 for both modes) -- so the sampler asks
//   query-kvm first and never sends those modes to a QEMU without KVM enabled.
//
// Threading: borrows a QmpClient, used by one thread at a time like the client itself.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ferry/base/result.h"
#include "ferry/base/json.h"
#include "ferry/qmp/qmp_client.h"

namespace ferry {

enum class DirtyRateMode { PageSampling, DirtyBitmap, DirtyRing };

// QMP spelling: "page-sampling", "dirty-bitmap", "dirty-ring".
std::string_view dirtyRateModeName(DirtyRateMode mode);
// EINVAL for anything else.
Result<DirtyRateMode> parseDirtyRateMode(std::string_view name);

// One query-dirty-rate reply, checked.
struct QemuDirtyRateInfo {
	std::string status;		     // "unstarted", "measuring" or "measured"
	int64_t startTime = 0;		     // seconds, QEMU's realtime clock
	int64_t calcTimeSec = 0;
	int64_t samplePages = 0;	     // per GiB; 0 outside page-sampling
	DirtyRateMode mode = DirtyRateMode::PageSampling;
	std::optional<int64_t> dirtyRateMBps; // present once measured (may be -1, see above)

	bool measured() const { return status == "measured"; }
	// Checks types and ranges of the fields above; EBADMSG naming the field otherwise.
	static Result<QemuDirtyRateInfo> fromJson(const JsonValue &reply);
};

struct QemuDirtyRateSample {
	int64_t startTime = 0;	     // QEMU's start-time, seconds
	int64_t calcTimeSec = 0;     // QEMU's calc-time (the window it measured), seconds
	int64_t dirtyRateMBps = 0;   // QEMU's dirty-rate, 2^20 bytes/s, >= 0
	DirtyRateMode mode = DirtyRateMode::PageSampling;
	int64_t samplePages = 0;     // per GiB (page-sampling), else 0
	// CLOCK_MONOTONIC around the measurement on our side: when calc-dirty-rate was sent and
	// when the measured reply was read (the window QEMU measured lies inside).
	int64_t monotonicStartNs = 0;
	int64_t monotonicEndNs = 0;

	double dirtyBytesPerSec() const { return double(dirtyRateMBps) * double(1 << 20); }
};

struct QemuDirtyRateOptions {
	static constexpr int64_t kMinCalcTimeSec = 1;
	static constexpr int64_t kMaxCalcTimeSec = 60;
	static constexpr int64_t kMinSamplePages = 128;
	static constexpr int64_t kMaxSamplePages = 16384;

	int64_t calcTimeSec = 1;
	DirtyRateMode mode = DirtyRateMode::PageSampling;
	std::optional<int64_t> samplePagesPerGiB; // page-sampling only; QEMU's default is 512
	// Spacing of query-dirty-rate once calc-time has passed.
	std::chrono::milliseconds pollInterval{50};
	// How long past calc-time QEMU may take to publish the result before ETIMEDOUT.
	std::chrono::milliseconds slack{5000};
	// Bound on each QMP command.
	std::chrono::milliseconds commandTimeout{5000};
	// Optional: a file descriptor whose readability cancels a wait (ECANCELED), e.g. the
	// monitor's signalfd. -1 = none. Not owned.
	int cancelFd = -1;
};

class QemuDirtyRateSampler {
public:
	// Validates the options (EINVAL) and, for dirty-bitmap/dirty-ring, that the QEMU runs with
	// KVM enabled (query-kvm; ENOTSUP otherwise, see the header comment). The client must
	// outlive the sampler.
	static Result<QemuDirtyRateSampler> create(QmpClient &qmp, QemuDirtyRateOptions options);

	// One measurement: start() then wait().
	Result<QemuDirtyRateSample> sample();

	// Sends calc-dirty-rate. EBUSY if a measurement (ours or another client's) is running,
	// ENOTSUP if QEMU refuses the mode or lacks the command, EINVAL for arguments QEMU
	// rejects as out of range; other QMP errors stay EREMOTEIO.
	Status start();
	// Waits for the measurement start() began: sleeps until calc-time has passed, then polls
	// query-dirty-rate every pollInterval until "measured" or calc-time + slack (ETIMEDOUT).
	// EBADMSG for a malformed reply; EBUSY if the result is not the measurement we asked for
	// (another client restarted it with another mode or calc-time); ENODATA when QEMU
	// measured but found no RAM to sample (dirty-rate -1).
	Result<QemuDirtyRateSample> wait();

	// query-dirty-rate, checked.
	Result<QemuDirtyRateInfo> query();

	const QemuDirtyRateOptions &options() const { return options_; }

private:
	QemuDirtyRateSampler(QmpClient &qmp, QemuDirtyRateOptions options) : qmp_(&qmp), options_(options) {}

	// Sleeps until the CLOCK_MONOTONIC deadline; ECANCELED if cancelFd becomes readable.
	Status sleepUntil(int64_t deadlineNs) const;

	QmpClient *qmp_;
	QemuDirtyRateOptions options_;
	int64_t startedNs_ = 0; // 0: no measurement started
};

} // namespace ferry
