// SPDX-License-Identifier: GPL-2.0-or-later
#include "monitor.h"

#include <cerrno>
#include <csignal>
#include <ctime>
#include <poll.h>
#include <sys/signalfd.h>
#include <vector>

#include <json-c/json.h>

#include "demo_app.h"
#include "ferry/base/log.h"
#include "ferry/cycles/analyser.h"
#include "ferry/dirty/tracker.h"
#include "ferry/sys/fd.h"

namespace ferry {

namespace {

struct MonitorArgs {
	double sizeMib = 256;
	double writeMbps = 50;
	std::string pattern = "random";
	double periodS = 0, duty = 0.5, lowMbps = 0, phase = 0;
	uint64_t seed = 1;
	double intervalMs = 100;
	double durationS = 20;
	unsigned chunkKib = 64;
	bool json = false;
};

int64_t monotonicNs()
{
	timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

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

	// Waits until the monotonic clock reaches deadlineNs; false if a signal came first.
	Result<bool> waitUntil(int64_t deadlineNs)
	{
		for (;;) {
			int64_t left = deadlineNs - monotonicNs();
			if (left <= 0)
				return true;
			timespec ts{time_t(left / 1'000'000'000), long(left % 1'000'000'000)};
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

// Owns a json-c object for the duration of one print.
struct JsonPtr {
	json_object *o;
	~JsonPtr() { json_object_put(o); }
};

void printJson(const Sample &s, const CycleEstimate &e)
{
	JsonPtr j{json_object_new_object()};
	auto num = [&](const char *k, double v) { json_object_object_add(j.o, k, json_object_new_double(v)); };
	auto u64 = [&](const char *k, uint64_t v) {
		json_object_object_add(j.o, k, json_object_new_int64(int64_t(v)));
	};
	num("t_s", s.tSec);
	num("interval_s", s.dtSec);
	u64("dirty_chunks", s.dirtyChunks);
	u64("dirty_bytes", s.dirtyBytes);
	num("dirty_bytes_per_s", double(s.dirtyBytes) / s.dtSec);
	json_object_object_add(j.o, "periodic", json_object_new_boolean(e.periodic));
	num("period_s", e.periodSec);
	num("confidence", e.confidence);
	num("duty", e.dutyCycle);
	num("phase_s", e.phaseSec);
	num("next_low_start_s", e.nextLowStartSec);
	num("next_low_end_s", e.nextLowEndSec);
	u64("samples", e.samples);
	json_object_object_add(j.o, "verdict", json_object_new_string(e.verdict().c_str()));
	fmt::print("{}\n", json_object_to_json_string_ext(j.o, JSON_C_TO_STRING_PLAIN));
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
	SourceAppOptions app;
	app.size = (uint64_t(a.sizeMib * 1024 * 1024) + 4095) & ~uint64_t(4095);
	app.writeMBps = a.writeMbps;
	app.sequential = a.pattern == "seq";
	app.seed = a.seed;
	app.periodSec = a.periodS;
	app.duty = a.duty;
	app.lowMBps = a.lowMbps;
	app.phase = a.phase;
	FERRY_ASSIGN(SourceAppHandle src, SourceAppHandle::spawn(app).context("start source application"));
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

} // namespace

CommandRunner addMonitorCommand(CLI::App &app)
{
	auto a = std::make_shared<MonitorArgs>();
	auto *c = app.add_subcommand("monitor", "Run the demo application, sample its dirty rate with the exact "
						 "tracker and show the workload-cycle analyser's verdict");
	c->add_option("--size-mib", a->sizeMib, "Region size")->capture_default_str()->check(CLI::PositiveNumber);
	c->add_option("--write-mbps", a->writeMbps, "Application write rate, MB/s of 4 KiB pages")->capture_default_str()->check(CLI::NonNegativeNumber);
	c->add_option("--pattern", a->pattern, "random or seq")->capture_default_str()->check(CLI::IsMember({"random", "seq"}));
	c->add_option("--period-s", a->periodS, "Cyclic writes: period in seconds (0 = constant rate)")->capture_default_str()->check(CLI::NonNegativeNumber);
	c->add_option("--duty", a->duty, "Cyclic writes: fraction of the period at --write-mbps")->capture_default_str()->check(CLI::Range(0.0, 1.0));
	c->add_option("--low-mbps", a->lowMbps, "Cyclic writes: rate in the low phase")->capture_default_str()->check(CLI::NonNegativeNumber);
	c->add_option("--phase", a->phase, "Cyclic writes: starting phase, 0..1")->capture_default_str()->check(CLI::Range(0.0, 1.0));
	c->add_option("--seed", a->seed, "Random seed of the application")->capture_default_str();
	c->add_option("--interval-ms", a->intervalMs, "Sampling interval")->capture_default_str()->check(CLI::Range(10.0, 10000.0));
	c->add_option("--duration-s", a->durationS, "How long to monitor")->capture_default_str()->check(CLI::PositiveNumber);
	c->add_option("--chunk-kib", a->chunkKib, "Chunk size (power of two >= 4)")->capture_default_str();
	c->add_flag("--json", a->json, "One JSON object per sample instead of text lines");
	return [a] {
		if (a->chunkKib < 4 || (a->chunkKib & (a->chunkKib - 1))) {
			fmt::print(stderr, "ferry monitor: error: --chunk-kib must be a power of two >= 4\n");
			return 2;
		}
		Status st = runMonitorLoop(*a);
		if (!st.ok()) {
			fmt::print(stderr, "ferry monitor: error: {}\n", st.error().message());
			return 1;
		}
		return 0;
	};
}

} // namespace ferry
