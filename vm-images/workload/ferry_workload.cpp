// SPDX-License-Identifier: GPL-2.0-or-later
//
// ferry's guest workload: runs inside the test/benchmark guest (started by the
// initramfs /init) and writes guest memory at a controlled rate so migrations
// have something to track, while printing heartbeats on the serial console so
// liveness and downtime are visible from the host.
//
// Statically linked and self-contained (no ferry libraries): the guest has
// nothing but busybox. Parameters come from the kernel command line
// (/proc/cmdline, tokens "ferry.<key>=<value>"); tokens given as arguments
// override them, which also lets the program run on a host for a quick check:
//   ferry_workload ferry.mode=verify ferry.wss=16 ferry.duration=3
//
// Output lines are an interface parsed by the launcher (see docs/vm-images.md):
//   FERRY-READY mode=<m> wss=<MiB> rate=<MB/s> ...
//   FERRY-HB <seq> <uptime_ms> mode=<m> written_mb=<n> errors=<n>
//   FERRY-VERIFY-ERROR page=<n> expected_gen=<g> word=<i> got=<hex>
//   FERRY-DONE ... / FERRY-FATAL <message>
// Each line is emitted with one write(2) so lines from the heartbeat and the
// writer thread never interleave on the tty.

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

namespace ferry {
namespace {

constexpr size_t kPageSize = 4096;
constexpr size_t kWordsPerPage = kPageSize / sizeof(uint64_t);
constexpr double kBytesPerMB = 1e6;
constexpr uint64_t kMiB = 1024 * 1024;
// The writer wakes this often and writes what the rate allows since the last
// wake-up, so the dirty rate is smooth at the scale a dirty tracker samples.
constexpr int64_t kTickNs = 2'000'000;
// Credit for time the writer did not run (VM paused for migration, vCPU
// starved) is capped: after a pause the guest resumes at its rate instead of
// bursting to "catch up", like a real application.
constexpr int64_t kMaxCreditNs = 50'000'000;
// At most this many FERRY-VERIFY-ERROR lines per second; all are counted.
constexpr int kVerifyErrorLinesPerSecond = 10;

enum class Mode { Idle, Dirty, Cycle, Verify };
enum class Pattern { Random, Seq };

// Each enum's names in enum order, once for both directions: what ferry.mode= and
// ferry.pattern= accept and what the status lines print.
constexpr const char *kModeNames[] = { "idle", "dirty", "cycle", "verify" };
constexpr const char *kPatternNames[] = { "random", "seq" };
static_assert(std::size(kModeNames) == size_t(Mode::Verify) + 1);
static_assert(std::size(kPatternNames) == size_t(Pattern::Seq) + 1);

const char *modeName(Mode m) { return kModeNames[size_t(m)]; }
const char *patternName(Pattern p) { return kPatternNames[size_t(p)]; }

struct Params {
	Mode mode = Mode::Idle;
	double rateMBps = 50;
	double wssMiB = 64;
	std::optional<Pattern> pattern; // default depends on the mode
	double periodS = 4;
	double duty = 0.5;
	double lowRateMBps = 0;
	double hbHz = 20;
	double durationS = 0; // 0: run forever
	uint64_t seed = 1;
	uint64_t injectStale = 0; // verify self-test: pages rolled back once
};

void writeAll(const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = ::write(STDOUT_FILENO, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return; // console gone: nothing better to do
		}
		buf += n;
		len -= static_cast<size_t>(n);
	}
}

// Formats one line and emits it with a single write(2).
[[gnu::format(printf, 1, 2)]] void emit(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	size_t len = std::min(static_cast<size_t>(n), sizeof(buf) - 2);
	buf[len++] = '\n';
	writeAll(buf, len);
}

int64_t monotonicNs()
{
	timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

void sleepUntil(int64_t deadlineNs)
{
	timespec ts;
	ts.tv_sec = deadlineNs / 1'000'000'000;
	ts.tv_nsec = deadlineNs % 1'000'000'000;
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
	}
}

// splitmix64's finalizer: a bijection on 64-bit words, so distinct
// (page, generation) headers give distinct page contents.
constexpr uint64_t mix64(uint64_t x)
{
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

// ---- Parameters ------------------------------------------------------------

std::optional<double> parseNumber(std::string_view s)
{
	double v = 0;
	auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
	if (ec != std::errc() || end != s.data() + s.size())
		return std::nullopt;
	return v;
}

bool inRange(std::optional<double> v, double lo, double hi)
{
	return v && *v >= lo && *v <= hi;
}

// Sets `out` to the E that `val` names in `names` (E's names in enum order); returns "" or the
// error: `bad` and the names allowed.
template<typename E, typename Out, size_t N>
std::string applyWord(const char *const (&names)[N], std::string_view val, Out &out, const std::string &bad)
{
	std::string allowed;
	for (size_t i = 0; i < N; i++) {
		if (val == names[i]) {
			out = E(i);
			return "";
		}
		allowed += (i ? "|" : "") + std::string(names[i]);
	}
	return bad + " (expected " + allowed + ")";
}

// Applies one "ferry.key=value" token; returns an error message or "".
std::string applyToken(Params &p, std::string_view token)
{
	constexpr std::string_view kPrefix = "ferry.";
	if (token.substr(0, kPrefix.size()) != kPrefix)
		return "";
	std::string_view kv = token.substr(kPrefix.size());
	size_t eq = kv.find('=');
	std::string_view key = kv.substr(0, eq);
	std::string_view val = eq == std::string_view::npos ? std::string_view() : kv.substr(eq + 1);
	auto bad = [&] {
		return "bad value for ferry." + std::string(key) + ": '" + std::string(val) + "'";
	};
	auto number = [&](double lo, double hi, double *out) -> std::string {
		auto v = parseNumber(val);
		if (!inRange(v, lo, hi)) {
			char range[64];
			snprintf(range, sizeof(range), " (expected a number in %g..%g)", lo, hi);
			return bad() + range;
		}
		*out = *v;
		return "";
	};

	if (key == "mode")
		return applyWord<Mode>(kModeNames, val, p.mode, bad());
	if (key == "pattern")
		return applyWord<Pattern>(kPatternNames, val, p.pattern, bad());
	if (key == "rate")
		return number(0, 1e5, &p.rateMBps);
	if (key == "wss")
		return number(0, 1 << 20, &p.wssMiB);
	if (key == "period")
		return number(0.01, 86400, &p.periodS);
	if (key == "duty")
		return number(0, 1, &p.duty);
	if (key == "low_rate")
		return number(0, 1e5, &p.lowRateMBps);
	if (key == "hb_hz")
		return number(0.01, 1000, &p.hbHz);
	if (key == "duration")
		return number(0, 1e9, &p.durationS);
	if (key == "seed" || key == "inject_stale") {
		double v = 0;
		std::string err = number(0, 1e15, &v);
		if (!err.empty())
			return err;
		(key == "seed" ? p.seed : p.injectStale) = static_cast<uint64_t>(v);
		return "";
	}
	// Read by /init, not by this program.
	if (key == "shell")
		return "";
	return "unknown parameter ferry." + std::string(key);
}

std::string applyLine(Params &p, std::string_view line)
{
	size_t i = 0;
	while (i < line.size()) {
		while (i < line.size() && (line[i] == ' ' || line[i] == '\n' || line[i] == '\t'))
			i++;
		size_t j = i;
		while (j < line.size() && line[j] != ' ' && line[j] != '\n' && line[j] != '\t')
			j++;
		if (j > i) {
			std::string err = applyToken(p, line.substr(i, j - i));
			if (!err.empty())
				return err;
		}
		i = j;
	}
	return "";
}

std::string readProcCmdline()
{
	int fd = ::open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return "";
	std::string out;
	char buf[4096];
	ssize_t n;
	while ((n = ::read(fd, buf, sizeof(buf))) > 0)
		out.append(buf, static_cast<size_t>(n));
	::close(fd);
	return out;
}

// ---- Working set -----------------------------------------------------------

class WorkingSet {
public:
	WorkingSet() = default;
	WorkingSet(const WorkingSet &) = delete;
	WorkingSet &operator=(const WorkingSet &) = delete;
	~WorkingSet()
	{
		if (base_)
			::munmap(base_, pages_ * kPageSize);
	}

	// MAP_POPULATE on a private writable mapping pre-faults every page for
	// write, so the guest's RAM is really backed before READY and the first
	// sweep measures writes, not page faults.
	std::string allocate(size_t pages)
	{
		pages_ = pages;
		if (pages == 0)
			return "";
		void *p = ::mmap(nullptr, pages * kPageSize, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
		if (p == MAP_FAILED) {
			pages_ = 0;
			return std::string("mmap working set: ") + strerror(errno);
		}
		base_ = static_cast<uint64_t *>(p);
		return "";
	}

	size_t pages() const { return pages_; }
	uint64_t *page(size_t n) { return base_ + n * kWordsPerPage; }

private:
	uint64_t *base_ = nullptr;
	size_t pages_ = 0;
};

// Keeps the compiler from assuming it knows memory contents across pages:
// every verify check must load from memory.
inline void compilerBarrier()
{
	asm volatile("" ::: "memory");
}

class Rng {
public:
	explicit Rng(uint64_t seed) : state_(seed) {}
	uint64_t next()
	{
		state_ += 0x9e3779b97f4a7c15ULL;
		return mix64(state_);
	}
	size_t below(size_t n)
	{
		return static_cast<size_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
	}

private:
	uint64_t state_;
};

// Dirty/cycle page contents: pseudo-random words, so the page is neither a
// zero page nor trivially compressible.
void fillNoise(uint64_t *page, uint64_t seed)
{
	uint64_t x = seed | 1;
	for (size_t i = 0; i < kWordsPerPage; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		page[i] = x;
	}
}

// Verify page contents for (page, gen): word 0 is the header
// (page << 32 | gen), word i > 0 is mix64(header) ^ mix64(i). A page is thus
// self-describing: a stale generation, a page copied to the wrong place or a
// torn page all fail the check. The formula is part of the documented interface.
struct VerifyPattern {
	uint64_t wordKey[kWordsPerPage];

	VerifyPattern()
	{
		for (size_t i = 0; i < kWordsPerPage; i++)
			wordKey[i] = mix64(i);
	}

	static uint64_t header(uint64_t page, uint32_t gen) { return page << 32 | gen; }

	void write(uint64_t *p, uint64_t page, uint32_t gen) const
	{
		uint64_t h = header(page, gen);
		uint64_t base = mix64(h);
		p[0] = h;
		for (size_t i = 1; i < kWordsPerPage; i++)
			p[i] = base ^ wordKey[i];
	}

	// Returns the first mismatching word index, or -1.
	long check(const uint64_t *p, uint64_t page, uint32_t gen) const
	{
		uint64_t h = header(page, gen);
		if (p[0] != h)
			return 0;
		uint64_t base = mix64(h);
		for (size_t i = 1; i < kWordsPerPage; i++)
			if (p[i] != (base ^ wordKey[i]))
				return static_cast<long>(i);
		return -1;
	}
};

// ---- Writer ----------------------------------------------------------------

struct Counters {
	std::atomic<uint64_t> writtenBytes{0};
	std::atomic<uint64_t> errors{0};
	std::atomic<bool> stop{false};
};

class Writer {
public:
	Writer(const Params &params, Pattern pattern, WorkingSet &ws, Counters &counters)
		: params_(params), pattern_(pattern), ws_(ws), counters_(counters), rng_(params.seed)
	{
	}

	// Before READY: give every page defined contents (verify: generation 0).
	void fill()
	{
		if (params_.mode == Mode::Verify) {
			gens_.assign(ws_.pages(), 0);
			for (size_t n = 0; n < ws_.pages(); n++)
				verifyPattern_.write(ws_.page(n), n, 0);
		} else {
			for (size_t n = 0; n < ws_.pages(); n++)
				fillNoise(ws_.page(n), rng_.next());
		}
		compilerBarrier();
	}

	void run(int64_t startNs)
	{
		double creditBytes = 0;
		int64_t last = monotonicNs();
		int64_t next = last + kTickNs;
		while (!counters_.stop.load(std::memory_order_relaxed)) {
			sleepUntil(next);
			int64_t now = monotonicNs();
			int64_t dt = std::min(now - last, kMaxCreditNs);
			last = now;
			creditBytes += rateBytesPerNs(now - startNs) * static_cast<double>(dt);
			uint64_t pages = static_cast<uint64_t>(creditBytes / kPageSize);
			creditBytes -= static_cast<double>(pages * kPageSize);
			for (uint64_t i = 0; i < pages; i++)
				touch(nextPage());
			if (pages)
				counters_.writtenBytes.fetch_add(pages * kPageSize,
								 std::memory_order_relaxed);
			next += kTickNs;
			if (next < now)
				next = now + kTickNs;
		}
	}

private:
	double rateBytesPerNs(int64_t sinceStartNs) const
	{
		double rate = params_.rateMBps;
		if (params_.mode == Mode::Cycle) {
			int64_t periodNs = static_cast<int64_t>(params_.periodS * 1e9);
			int64_t phase = sinceStartNs % periodNs;
			if (static_cast<double>(phase) >= params_.duty * static_cast<double>(periodNs))
				rate = params_.lowRateMBps;
		}
		return rate * kBytesPerMB / 1e9;
	}

	size_t nextPage()
	{
		if (pattern_ == Pattern::Random)
			return rng_.below(ws_.pages());
		size_t n = cursor_;
		cursor_ = cursor_ + 1 == ws_.pages() ? 0 : cursor_ + 1;
		return n;
	}

	void touch(size_t n)
	{
		uint64_t *p = ws_.page(n);
		if (params_.mode != Mode::Verify) {
			fillNoise(p, rng_.next());
			return;
		}
		uint32_t gen = gens_[n];
		long bad = verifyPattern_.check(p, n, gen);
		if (bad >= 0)
			reportMismatch(n, gen, static_cast<size_t>(bad), p[bad]);
		gens_[n] = gen + 1;
		verifyPattern_.write(p, n, gen + 1);
		compilerBarrier();
		rewrites_++;
		// Self-test of the checker: once every page was rewritten, roll pages
		// back to their previous generation, which is exactly what a lost
		// dirty page looks like after a migration.
		if (params_.injectStale && !injected_ && rewrites_ >= ws_.pages()) {
			injected_ = true;
			uint64_t rolledBack = 0;
			for (uint64_t k = 0; k < params_.injectStale && k < ws_.pages(); k++) {
				size_t victim = (ws_.pages() / 2 + k) % ws_.pages();
				if (gens_[victim] == 0)
					continue; // never rewritten (random pattern): no older generation
				verifyPattern_.write(ws_.page(victim), victim, gens_[victim] - 1);
				rolledBack++;
			}
			compilerBarrier();
			emit("FERRY-INJECT stale_pages=%llu", static_cast<unsigned long long>(rolledBack));
		}
	}

	void reportMismatch(size_t page, uint32_t gen, size_t word, uint64_t got)
	{
		counters_.errors.fetch_add(1, std::memory_order_relaxed);
		int64_t second = monotonicNs() / 1'000'000'000;
		if (second != errorSecond_) {
			errorSecond_ = second;
			errorLines_ = 0;
		}
		if (errorLines_++ >= kVerifyErrorLinesPerSecond)
			return;
		emit("FERRY-VERIFY-ERROR page=%zu expected_gen=%u word=%zu got=%016llx", page, gen, word,
		     static_cast<unsigned long long>(got));
	}

	const Params &params_;
	const Pattern pattern_;
	WorkingSet &ws_;
	Counters &counters_;
	Rng rng_;
	VerifyPattern verifyPattern_;
	std::vector<uint32_t> gens_;
	size_t cursor_ = 0;
	uint64_t rewrites_ = 0;
	bool injected_ = false;
	int64_t errorSecond_ = -1;
	int errorLines_ = 0;
};

// ---- Main ------------------------------------------------------------------

void heartbeat(uint64_t seq, const Params &p, const Counters &c)
{
	emit("FERRY-HB %llu %lld mode=%s written_mb=%llu errors=%llu",
	     static_cast<unsigned long long>(seq),
	     static_cast<long long>(monotonicNs() / 1'000'000), modeName(p.mode),
	     static_cast<unsigned long long>(
		     static_cast<double>(c.writtenBytes.load(std::memory_order_relaxed)) / kBytesPerMB),
	     static_cast<unsigned long long>(c.errors.load(std::memory_order_relaxed)));
}

int run(int argc, char **argv)
{
	// Firmware leaves terminal escape sequences without a newline on the
	// serial line; start on a fresh line so every FERRY- line begins one.
	writeAll("\n", 1);
	Params params;
	std::string err = applyLine(params, readProcCmdline());
	for (int i = 1; err.empty() && i < argc; i++)
		err = applyToken(params, argv[i]);
	if (err.empty() && params.mode != Mode::Idle && params.wssMiB * kMiB < kPageSize)
		err = std::string("ferry.wss must be at least one page in mode ") + modeName(params.mode);
	if (!err.empty()) {
		emit("FERRY-FATAL %s", err.c_str());
		return 2;
	}
	Pattern pattern = params.pattern.value_or(params.mode == Mode::Verify ? Pattern::Seq
										: Pattern::Random);
	size_t pages = static_cast<size_t>(params.wssMiB * kMiB) / kPageSize;

	// A working set the guest cannot hold would end in the OOM killer, far
	// from the cause; refuse it with a clear message instead.
	struct sysinfo si;
	if (::sysinfo(&si) == 0) {
		double ram = static_cast<double>(si.totalram) * si.mem_unit;
		if (static_cast<double>(pages * kPageSize) > ram * 0.9) {
			emit("FERRY-FATAL ferry.wss=%g MiB does not fit in guest RAM (%.0f MiB)",
			     params.wssMiB, ram / kMiB);
			return 2;
		}
	}

	WorkingSet ws;
	err = ws.allocate(pages);
	if (!err.empty()) {
		emit("FERRY-FATAL %s", err.c_str());
		return 2;
	}
	// The heartbeat must not wait behind a writer that saturates the vCPU
	// (measured: 480 ms gaps at 900 MB/s under TCG with both SCHED_OTHER),
	// so this thread, which only sleeps and prints, runs SCHED_FIFO. Needs
	// CAP_SYS_NICE: always there in the guest; on a host run without it,
	// heartbeats are best effort (READY says hb_sched=other).
	sched_param fifo{};
	fifo.sched_priority = 10;
	bool realtime = pthread_setschedparam(pthread_self(), SCHED_FIFO, &fifo) == 0;

	Counters counters;
	Writer writer(params, pattern, ws, counters);
	writer.fill();

	emit("FERRY-READY mode=%s wss=%g rate=%g pattern=%s period=%g duty=%g low_rate=%g hb_hz=%g "
	     "duration=%g pages=%zu hb_sched=%s",
	     modeName(params.mode), params.wssMiB, params.rateMBps, patternName(pattern),
	     params.periodS, params.duty, params.lowRateMBps, params.hbHz, params.durationS, pages,
	     realtime ? "fifo" : "other");

	int64_t start = monotonicNs();
	std::thread writerThread;
	if (params.mode != Mode::Idle) {
		writerThread = std::thread([&] {
			// Created with the heartbeat thread's SCHED_FIFO (inherited):
			// the writer runs at normal priority.
			sched_param normal{};
			pthread_setschedparam(pthread_self(), SCHED_OTHER, &normal);
			writer.run(start);
		});
	}

	// Heartbeats are scheduled on absolute deadlines; deadlines missed while
	// the guest did not run are skipped, not replayed, so seq stays
	// contiguous (one per line) and a pause shows as a jump in uptime_ms
	// (and in the host's receive times).
	int64_t intervalNs = static_cast<int64_t>(1e9 / params.hbHz);
	int64_t end = params.durationS > 0 ? start + static_cast<int64_t>(params.durationS * 1e9) : 0;
	uint64_t seq = 0;
	int64_t next = start;
	for (;;) {
		heartbeat(seq++, params, counters);
		next += intervalNs;
		int64_t now = monotonicNs();
		if (next <= now)
			next = now + intervalNs - (now - next) % intervalNs;
		if (end && next >= end) {
			sleepUntil(end);
			break;
		}
		sleepUntil(next);
	}

	counters.stop.store(true);
	if (writerThread.joinable())
		writerThread.join();
	heartbeat(seq++, params, counters);
	uint64_t errors = counters.errors.load();
	emit("FERRY-DONE mode=%s written_mb=%llu errors=%llu", modeName(params.mode),
	     static_cast<unsigned long long>(static_cast<double>(counters.writtenBytes.load()) /
					     kBytesPerMB),
	     static_cast<unsigned long long>(errors));
	return errors ? 1 : 0;
}

} // namespace
} // namespace ferry

int main(int argc, char **argv)
{
	return ferry::run(argc, argv);
}
