// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/base/clock.h"
#include "ferry/qmp/dirty_rate.h"

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <utility>
#include <poll.h>

namespace ferry {

namespace {

int64_t toNs(std::chrono::milliseconds ms)
{
	return int64_t(ms.count()) * 1'000'000;
}

bool contains(const std::string &s, std::string_view part)
{
	return s.find(part) != std::string::npos;
}

// QmpClient reports every QMP error reply as EREMOTEIO "cmd: Class: desc". The few refusals
// a caller can act on get their own errno; QEMU 7.2's wording is matched (the message is kept
// whole, so an unmatched wording still reads correctly, only with EREMOTEIO).
Error classifyCalcError(const Error &e)
{
	if (e.code() != EREMOTEIO)
		return e;
	const std::string &m = e.message();
	if (contains(m, "CommandNotFound"))
		return Error(ENOTSUP, m + " (calc-dirty-rate needs QEMU 5.2 or later)");
	if (contains(m, "already being measured"))
		return Error(EBUSY, m);
	if (contains(m, "is not enabled") || contains(m, "does not accept value"))
		return Error(ENOTSUP, m);
	if (contains(m, "out of range") || contains(m, "used only in"))
		return Error(EINVAL, m);
	return e;
}

// QEMU's name of each mode (calc-dirty-rate's argument, query-dirty-rate's reply): the one
// list both directions read, so a mode added here is printed and parsed alike.
constexpr std::pair<DirtyRateMode, std::string_view> kModeNames[] = {
	{DirtyRateMode::PageSampling, "page-sampling"},
	{DirtyRateMode::DirtyBitmap, "dirty-bitmap"},
	{DirtyRateMode::DirtyRing, "dirty-ring"},
};

} // namespace

std::string_view dirtyRateModeName(DirtyRateMode mode)
{
	for (const auto &[m, name] : kModeNames)
		if (m == mode)
			return name;
	return "?";
}

Result<DirtyRateMode> parseDirtyRateMode(std::string_view name)
{
	for (const auto &[m, n] : kModeNames)
		if (n == name)
			return m;
	return Error::format(EINVAL, "unknown dirty-rate mode '{}' (page-sampling, dirty-bitmap or dirty-ring)",
			     name.substr(0, 64));
}

Result<QemuDirtyRateInfo> QemuDirtyRateInfo::fromJson(const JsonValue &reply)
{
	if (!reply.isObject())
		return Error(EBADMSG, "query-dirty-rate: reply is not an object");
	QemuDirtyRateInfo info;
	auto field = [](const Error &e, std::string_view name) {
		return Error::format(EBADMSG, "query-dirty-rate: field {}: {}", name, e.message());
	};

	auto status = reply.getString("status");
	if (!status.ok())
		return field(status.error(), "status");
	info.status = status.value();
	if (info.status != "unstarted" && info.status != "measuring" && info.status != "measured")
		return Error::format(EBADMSG, "query-dirty-rate: unknown status '{}'", info.status.substr(0, 64));

	// Members that QEMU 7.2 always sends.
	struct IntField {
		const char *name;
		int64_t *dst;
	};
	for (IntField f : {IntField{"start-time", &info.startTime}, IntField{"calc-time", &info.calcTimeSec},
			   IntField{"sample-pages", &info.samplePages}}) {
		auto v = reply.getInt(f.name);
		if (!v.ok())
			return field(v.error(), f.name);
		if (v.value() < 0)
			return Error::format(EBADMSG, "query-dirty-rate: negative {} {}", f.name, v.value());
		*f.dst = v.value();
	}

	auto mode = reply.getString("mode");
	if (!mode.ok())
		return field(mode.error(), "mode");
	auto parsed = parseDirtyRateMode(mode.value());
	if (!parsed.ok())
		return Error(EBADMSG, "query-dirty-rate: " + parsed.error().message());
	info.mode = parsed.value();

	if (reply.has("dirty-rate")) {
		auto rate = reply.getInt("dirty-rate");
		if (!rate.ok())
			return field(rate.error(), "dirty-rate");
		if (rate.value() < -1)
			return Error::format(EBADMSG, "query-dirty-rate: dirty-rate {} out of range", rate.value());
		info.dirtyRateMBps = rate.value();
	}
	if (info.measured() && !info.dirtyRateMBps)
		return Error(EBADMSG, "query-dirty-rate: status measured without dirty-rate");
	return info;
}

Result<QemuDirtyRateSampler> QemuDirtyRateSampler::create(QmpClient &qmp, QemuDirtyRateOptions options)
{
	using O = QemuDirtyRateOptions;
	if (options.calcTimeSec < O::kMinCalcTimeSec || options.calcTimeSec > O::kMaxCalcTimeSec)
		return Error::format(EINVAL, "calc-time {} s out of range [{}, {}] (QEMU measures whole seconds)",
				     options.calcTimeSec, O::kMinCalcTimeSec, O::kMaxCalcTimeSec);
	if (options.samplePagesPerGiB) {
		if (options.mode != DirtyRateMode::PageSampling)
			return Error::format(EINVAL, "sample-pages applies to page-sampling only, not {}",
					     dirtyRateModeName(options.mode));
		int64_t p = *options.samplePagesPerGiB;
		if (p < O::kMinSamplePages || p > O::kMaxSamplePages)
			return Error::format(EINVAL, "sample-pages {} out of range [{}, {}]", p, O::kMinSamplePages,
					     O::kMaxSamplePages);
	}
	if (options.pollInterval.count() <= 0 || options.slack.count() < 0 || options.commandTimeout.count() <= 0)
		return Error(EINVAL, "poll interval and command timeout must be positive, slack non-negative");

	if (options.mode != DirtyRateMode::PageSampling) {
		// QEMU 7.2 calls kvm_dirty_ring_enabled() for these modes, which reads kvm_state
		// unchecked: NULL under TCG, and QEMU segfaults (the guest dies with it). Never send.
		FERRY_ASSIGN(JsonValue kvm, qmp.execute("query-kvm", nullptr, options.commandTimeout));
		auto enabled = kvm.getBool("enabled");
		if (!enabled.ok())
			return Error(EBADMSG, "query-kvm: field enabled: " + enabled.error().message());
		if (!enabled.value())
			return Error::format(ENOTSUP,
					     "dirty-rate mode {} needs KVM and this QEMU runs without it (TCG); "
					     "QEMU 7.2 crashes when asked, so it was not sent -- use page-sampling",
					     dirtyRateModeName(options.mode));
	}
	return QemuDirtyRateSampler(qmp, options);
}

Result<QemuDirtyRateInfo> QemuDirtyRateSampler::query()
{
	FERRY_ASSIGN(JsonValue reply, qmp_->execute("query-dirty-rate", nullptr, options_.commandTimeout));
	return QemuDirtyRateInfo::fromJson(reply);
}

Status QemuDirtyRateSampler::start()
{
	// QEMU only refuses a new measurement once the running one's thread reached "measuring";
	// a calc-dirty-rate sent just after another is accepted and both threads then race on
	// the one shared result ("change dirtyrate state failed."). Asking first narrows that to
	// another client starting in the same instant.
	FERRY_ASSIGN(QemuDirtyRateInfo before, query());
	if (before.status == "measuring")
		return Error::format(EBUSY, "a dirty-rate measurement is already running ({} s, {}, started by "
					    "another client or an interrupted run); QEMU runs one at a time, retry "
					    "once it ended",
				     before.calcTimeSec, dirtyRateModeName(before.mode));

	JsonValue args = JsonValue::object();
	args.set("calc-time", options_.calcTimeSec);
	if (options_.samplePagesPerGiB)
		args.set("sample-pages", *options_.samplePagesPerGiB);
	// Always named, so that QEMU's default never decides what was measured.
	args.set("mode", dirtyRateModeName(options_.mode));
	startedNs_ = 0;
	int64_t sentNs = monotonicNs();
	auto r = qmp_->execute("calc-dirty-rate", &args, options_.commandTimeout);
	if (!r.ok())
		return classifyCalcError(r.error());
	startedNs_ = sentNs;
	return {};
}

Status QemuDirtyRateSampler::sleepUntil(int64_t deadlineNs) const
{
	for (;;) {
		int64_t left = deadlineNs - monotonicNs();
		if (left <= 0)
			return {};
		timespec ts = timespecOfNs(left);
		pollfd p{options_.cancelFd, POLLIN, 0};
		// A negative fd is ignored by ppoll, which then is a plain bounded sleep.
		int n = ::ppoll(&p, 1, &ts, nullptr);
		if (n > 0)
			return Error(ECANCELED, "dirty-rate wait cancelled");
		if (n < 0 && errno != EINTR)
			return Error::fromErrno("ppoll");
	}
}

Result<QemuDirtyRateSample> QemuDirtyRateSampler::wait()
{
	if (startedNs_ == 0)
		return Error(EINVAL, "dirty-rate wait without a started measurement");
	const int64_t started = startedNs_;
	startedNs_ = 0;
	// QEMU's thread sleeps calc-time from its own start, which follows our send: asking
	// before then only costs round trips.
	int64_t firstPoll = started + options_.calcTimeSec * kNsPerSec;
	int64_t deadline = firstPoll + toNs(options_.slack);
	FERRY_TRY(sleepUntil(firstPoll));
	std::string lastStatus;
	for (;;) {
		FERRY_ASSIGN(QemuDirtyRateInfo info, query());
		int64_t now = monotonicNs();
		lastStatus = info.status;
		if (info.measured()) {
			// One measurement slot per QEMU: a result that is not what we asked for means
			// another client replaced ours.
			if (info.mode != options_.mode || info.calcTimeSec < options_.calcTimeSec)
				return Error::format(EBUSY,
						     "dirty-rate result is not ours (mode {}, calc-time {} s; asked for "
						     "{}, {} s): another client started a measurement",
						     dirtyRateModeName(info.mode), info.calcTimeSec,
						     dirtyRateModeName(options_.mode), options_.calcTimeSec);
			if (*info.dirtyRateMBps < 0)
				return Error(ENODATA, "QEMU measured no dirty rate (page sampling found no RAM block "
						      "large enough to sample)");
			QemuDirtyRateSample s;
			s.startTime = info.startTime;
			s.calcTimeSec = info.calcTimeSec;
			s.dirtyRateMBps = *info.dirtyRateMBps;
			s.mode = info.mode;
			s.samplePages = info.mode == DirtyRateMode::PageSampling ? info.samplePages : 0;
			s.monotonicStartNs = started;
			s.monotonicEndNs = now;
			return s;
		}
		if (now >= deadline)
			break;
		FERRY_TRY(sleepUntil(std::min(now + toNs(options_.pollInterval), deadline)));
	}
	return Error::format(ETIMEDOUT, "dirty-rate measurement of {} s not finished after {} ms more (status {})",
			     options_.calcTimeSec, options_.slack.count(), lastStatus);
}

Result<QemuDirtyRateSample> QemuDirtyRateSampler::sample()
{
	FERRY_TRY(start());
	return wait();
}

} // namespace ferry
