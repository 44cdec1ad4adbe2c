// SPDX-License-Identifier: GPL-2.0-or-later
#include "cli/monitor.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <ctime>
#include <poll.h>
#include <sys/signalfd.h>
#include <vector>


#include "demo/demo_app.h"
#include "ferry/base/clock.h"
#include "ferry/base/json.h"
#include "ferry/base/log.h"
#include "ferry/cycles/analyser.h"
#include "ferry/dirty/tracker.h"
#include "ferry/qmp/dirty_rate.h"
#include "ferry/qmp/qmp_client.h"
#include "ferry/sys/fd.h"

namespace ferry {

namespace {

struct MonitorArgs {
	SourceAppArgs app;
	double intervalMs = 100;
	double durationS = 20;
	unsigned chunkKib = 64;
	bool json = false;
	// --qmp: a running QEMU instead of the demo application.
	std::string qmpPath;
	int64_t calcTimeS = 1;
	std::string mode = "page-sampling";
	int64_t samplePages = 0; // 0 = QEMU's default
};

// SIGINT/SIGTERM arrive on a signalfd, so the sampling wait is one ppoll() that ends at the
// next sample time or at the signal -- no flag polled by a handler. The signals are blocked
// only after the application was spawned: a child inherits the signal mask, and the
// application must stay killable.
class InterruptFd {
public:
	static Result<InterruptFd> create()
	{
		InterruptFd f;
		sigemptyset(&f.set_);
		sigaddset(&f.set_, SIGINT);
		sigaddset(&f.set_, SIGTERM);
		if (sigprocmask(SIG_BLOCK, &f.set_, &f.old_) < 0)
			return Error::fromErrno("sigprocmask");
		f.blocked_ = true;
		int fd = ::signalfd(-1, &f.set_, SFD_CLOEXEC | SFD_NONBLOCK);
		if (fd < 0)
			return Error::fromErrno("signalfd");
		f.fd_ = UniqueFd(fd);
		return f;
	}
	InterruptFd(InterruptFd &&o) noexcept
		: fd_(std::move(o.fd_)), set_(o.set_), old_(o.old_), blocked_(std::exchange(o.blocked_, false))
	{
	}
	InterruptFd &operator=(InterruptFd &&) = delete;
	~InterruptFd()
	{
		if (blocked_)
			sigprocmask(SIG_SETMASK, &old_, nullptr);
	}

	int fd() const { return fd_.get(); }

	// Waits until the monotonic clock reaches deadlineNs; false if a signal came first.
	Result<bool> waitUntil(int64_t deadlineNs)
	{
		for (;;) {
			int64_t left = deadlineNs - monotonicNs();
			if (left <= 0)
				return true;
			timespec ts = timespecOfNs(left);
			pollfd p{fd_.get(), POLLIN, 0};
			int n = ::ppoll(&p, 1, &ts, nullptr);
			if (n > 0)
				return false;
			if (n < 0 && errno != EINTR)
				return Error::fromErrno("ppoll");
		}
	}

private:
	InterruptFd() = default;
	UniqueFd fd_;
	sigset_t set_{};
	sigset_t old_{};
	bool blocked_ = false;
};

struct Sample {
	double tSec;		// end of the interval, since tracking started
	double dtSec;		// the interval's real length
	uint64_t dirtyChunks;
	uint64_t dirtyBytes;
};

// The analyser's fields, shared by both sample sources; prints j with them.
void printJsonEstimate(JsonValue j, const CycleEstimate &e)
{
	j.set("periodic", e.periodic)
		.set("period_s", e.periodSec)
		.set("confidence", e.confidence)
		.set("duty", e.dutyCycle)
		.set("phase_s", e.phaseSec)
		.set("next_low_start_s", e.nextLowStartSec)
		.set("next_low_end_s", e.nextLowEndSec)
		.set("samples", uint64_t(e.samples))
		.set("verdict", e.verdict());
	fmt::print("{}\n", j.toString());
}

void printJson(const Sample &s, const CycleEstimate &e)
{
	JsonValue j = JsonValue::object();
	j.set("t_s", s.tSec)
		.set("interval_s", s.dtSec)
		.set("dirty_chunks", s.dirtyChunks)
		.set("dirty_bytes", s.dirtyBytes)
		.set("dirty_bytes_per_s", double(s.dirtyBytes) / s.dtSec);
	printJsonEstimate(std::move(j), e);
}

void printText(const Sample &s, const CycleEstimate &e)
{
	fmt::print("{:7.1f}s  dirty {:6} chunks {:8.1f} MiB {:8.1f} MB/s  {}\n", s.tSec, s.dirtyChunks,
		   double(s.dirtyBytes) / (1 << 20), double(s.dirtyBytes) / s.dtSec / 1e6, e.verdict());
}

// Bytes covered by the sorted chunk indices; the region's last chunk may be short.
uint64_t chunkBytes(const std::vector<uint32_t> &chunks, uint64_t chunkSize, uint64_t regionSize)
{
	uint64_t bytes = uint64_t(chunks.size()) * chunkSize;
	uint64_t lastChunk = (regionSize - 1) / chunkSize;
	if (!chunks.empty() && chunks.back() == lastChunk)
		bytes -= (lastChunk + 1) * chunkSize - regionSize;
	return bytes;
}

Status runMonitorLoop(const MonitorArgs &a)
{
	FERRY_ASSIGN(SourceAppHandle src, SourceAppHandle::spawn(a.app.build()).context("start source application"));
	const uint64_t chunkSize = uint64_t(a.chunkKib) * 1024;
	TrackedRegion region{src.pid(), src.base(), src.size(), chunkSize};
	FERRY_ASSIGN(Userfaultfd uffd, src.takeUffd());
	FERRY_ASSIGN(std::unique_ptr<DirtyTracker> tracker,
		     makeUffdWpTracker(region, std::move(uffd)).context("exact tracker"));
	FERRY_ASSIGN(InterruptFd interrupt, InterruptFd::create());

	const double interval = a.intervalMs / 1000;
	CycleAnalyser analyser(interval);
	FERRY_LOG(Info, "monitor", "pid {}: {:.0f} MiB in {} chunks of {} KiB, sampling every {} ms for {} s",
		  src.pid(), double(src.size()) / (1 << 20), tracker->chunkCount(), a.chunkKib, a.intervalMs,
		  a.durationS);

	FERRY_TRY_CTX(tracker->start(), "start tracking");
	const int64_t intervalNs = int64_t(a.intervalMs * 1e6);
	const int64_t t0 = monotonicNs();
	const int64_t endNs = t0 + int64_t(a.durationS * 1e9);
	int64_t last = t0, next = t0 + intervalNs;
	std::vector<uint32_t> dirty;
	while (next <= endNs) {
		FERRY_ASSIGN(bool due, interrupt.waitUntil(next));
		if (!due)
			break;
		FERRY_TRY_CTX(tracker->collect(dirty), "collect at {:.1f}s",
			      double(next - t0) / 1e9);
		int64_t now = monotonicNs();
		Sample s{double(now - t0) / 1e9, double(now - last) / 1e9, dirty.size(),
			 chunkBytes(dirty, chunkSize, src.size())};
		last = now;
		// The analyser assumes evenly spaced samples: a late wake-up (a loaded machine)
		// spreads what it collected over the slots it spans.
		next += intervalNs;
		uint64_t slots = 1;
		if (now >= next) {
			slots += uint64_t((now - next) / intervalNs) + 1;
			next += int64_t(slots - 1) * intervalNs;
			FERRY_LOG_RATELIMITED(Warn, "monitor", "sampling fell {} interval(s) behind", slots - 1);
		}
		for (uint64_t i = 0; i < slots; i++)
			analyser.addSample(double(s.dirtyBytes) / double(slots));
		CycleEstimate e = analyser.estimate();
		if (a.json)
			printJson(s, e);
		else
			printText(s, e);
		std::fflush(stdout);
	}
	src.quit();
	return {};
}

void printQmpJson(const Sample &s, const QemuDirtyRateSample &q, const CycleEstimate &e)
{
	JsonValue j = JsonValue::object();
	j.set("t_s", s.tSec)
		.set("interval_s", s.dtSec)
		.set("dirty_bytes", s.dirtyBytes)
		.set("dirty_bytes_per_s", q.dirtyBytesPerSec())
		.set("source", "qemu")
		.set("mode", dirtyRateModeName(q.mode))
		.set("qemu_dirty_rate", uint64_t(q.dirtyRateMBps)) // QEMU's "MB/s", 2^20 bytes/s
		.set("qemu_calc_time_s", uint64_t(q.calcTimeSec))
		.set("qemu_start_time_s", uint64_t(q.startTime));
	if (q.mode == DirtyRateMode::PageSampling)
		j.set("qemu_sample_pages", uint64_t(q.samplePages));
	printJsonEstimate(std::move(j), e);
}

void printQmpText(const Sample &s, const QemuDirtyRateSample &q, const CycleEstimate &e)
{
	fmt::print("{:7.1f}s  qemu {:>13} {:8.1f} MiB {:8.1f} MB/s  {}\n", s.tSec, dirtyRateModeName(q.mode),
		   double(s.dirtyBytes) / (1 << 20), q.dirtyBytesPerSec() / 1e6, e.verdict());
}

// `--qmp`: the same series from a running, unmodified QEMU. Each sample is one
// calc-dirty-rate window of calc-time whole seconds, started as soon as the previous result
// was read, so windows follow each other with a gap of about one poll interval.
Status runQmpMonitorLoop(const MonitorArgs &a)
{
	using namespace std::chrono_literals;
	FERRY_ASSIGN(InterruptFd interrupt, InterruptFd::create());
	FERRY_ASSIGN(QmpClient qmp, QmpClient::connect(a.qmpPath, 10s).context(fmt::format("QMP {}", a.qmpPath)));
	QemuDirtyRateOptions o;
	o.calcTimeSec = a.calcTimeS;
	FERRY_ASSIGN(o.mode, parseDirtyRateMode(a.mode));
	if (a.samplePages > 0)
		o.samplePagesPerGiB = a.samplePages;
	// QEMU publishes the result right after calc-time; a short poll keeps the gap between
	// windows (time nobody measures) small.
	o.pollInterval = 20ms;
	o.cancelFd = interrupt.fd();
	FERRY_ASSIGN(QemuDirtyRateSampler sampler, QemuDirtyRateSampler::create(qmp, o));

	const double interval = double(a.calcTimeS);
	CycleAnalyser analyser(interval);
	FERRY_LOG(Info, "monitor", "QEMU at {}: {} every {} s for {} s", a.qmpPath, a.mode, a.calcTimeS,
		  a.durationS);

	const int64_t intervalNs = a.calcTimeS * kNsPerSec;
	// One measurement per whole calc-time in the duration (each also costs a poll interval
	// or so of gap, so a deadline would drop the last one).
	const auto count = std::max<uint64_t>(1, uint64_t(a.durationS / interval + 1e-9));
	const int64_t t0 = monotonicNs();
	int64_t last = t0;
	uint64_t slotsDone = 0;
	for (uint64_t n = 0; n < count; n++) {
		auto r = sampler.sample();
		if (!r.ok()) {
			if (r.error().code() == ECANCELED)
				break;
			return r.error().context(fmt::format("sample at {:.1f}s", double(monotonicNs() - t0) / 1e9));
		}
		const QemuDirtyRateSample &q = r.value();
		int64_t now = monotonicNs();
		// The analyser assumes evenly spaced samples, one per calc-time. The slot count
		// follows the real clock, so the small per-window gap does not stretch the time base
		// (it costs a repeated slot now and then), and a result QEMU published late fills
		// the slots it spans with its rate -- what is known about them.
		uint64_t target = uint64_t(std::llround(double(now - t0) / double(intervalNs)));
		uint64_t slots = target > slotsDone ? target - slotsDone : 1;
		if (slots > 2)
			FERRY_LOG_RATELIMITED(Warn, "monitor", "QEMU's result came {} window(s) late", slots - 1);
		slotsDone += slots;
		auto bytes = uint64_t(q.dirtyBytesPerSec() * double(q.calcTimeSec));
		Sample s{double(now - t0) / 1e9, double(now - last) / 1e9, 0, bytes};
		last = now;
		for (uint64_t i = 0; i < slots; i++)
			analyser.addSample(q.dirtyBytesPerSec() * interval);
		CycleEstimate e = analyser.estimate();
		if (a.json)
			printQmpJson(s, q, e);
		else
			printQmpText(s, q, e);
		std::fflush(stdout);
	}
	return {};
}

} // namespace

CommandRunner addMonitorCommand(CLI::App &app)
{
	auto a = std::make_shared<MonitorArgs>();
	auto *c = app.add_subcommand("monitor", "Run the demo application, sample its dirty rate with the exact "
						 "tracker and show the workload-cycle analyser's verdict; or, with "
						 "--qmp, sample a running stock QEMU's dirty rate through QMP");
	a->app.addTo(c);
	auto *interval = c->add_option("--interval-ms", a->intervalMs, "Sampling interval (demo application)")->capture_default_str()->check(CLI::Range(10.0, 10000.0));
	c->add_option("--duration-s", a->durationS, "How long to monitor (with --qmp: duration / calc-time measurements)")->capture_default_str()->check(CLI::PositiveNumber);
	c->add_option("--chunk-kib", a->chunkKib, "Chunk size (power of two >= 4)")->capture_default_str();
	c->add_flag("--json", a->json, "One JSON object per sample instead of text lines");
	auto *qmp = c->add_option("--qmp", a->qmpPath,
				  "Instead of the demo application, sample a running QEMU through its QMP UNIX socket "
				  "(-qmp unix:PATH,server=on) with calc-dirty-rate, back to back. The guest is not "
				  "modified; the demo-application options do not apply");
	qmp->excludes(interval);
	c->add_option("--calc-time-s", a->calcTimeS,
		      "With --qmp: QEMU's measuring window = the sampling interval. QEMU measures whole "
		      "seconds only (1..60), so only periods of several seconds are detectable (the analyser "
		      "needs >= 4 samples per period and 2.5 periods of data)")
		->capture_default_str()->check(CLI::Range(1, 60))->needs(qmp);
	c->add_option("--mode", a->mode,
		      "With --qmp: page-sampling (default; hashes --sample-pages random pages per GiB, an "
		      "estimate of pages whose content changed), dirty-bitmap or dirty-ring (exact, KVM "
		      "only: refused under TCG, where QEMU 7.2 would crash)")
		->capture_default_str()->check(CLI::IsMember({"page-sampling", "dirty-bitmap", "dirty-ring"}))->needs(qmp);
	c->add_option("--sample-pages", a->samplePages,
		      "With --qmp --mode page-sampling: pages sampled per GiB, 128..16384 (default: QEMU's, 512); "
		      "more pages, less noise")
		->check(CLI::Range(128, 16384))->needs(qmp);
	return [a] {
		if (a->chunkKib < 4 || (a->chunkKib & (a->chunkKib - 1))) {
			fmt::print(stderr, "ferry monitor: error: --chunk-kib must be a power of two >= 4\n");
			return 2;
		}
		Status st = a->qmpPath.empty() ? runMonitorLoop(*a) : runQmpMonitorLoop(*a);
		if (!st.ok()) {
			fmt::print(stderr, "ferry monitor: error: {}\n", st.error().message());
			return 1;
		}
		return 0;
	};
}

} // namespace ferry
