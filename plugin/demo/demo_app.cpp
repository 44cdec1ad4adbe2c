// SPDX-License-Identifier: GPL-2.0-or-later
#include "demo/demo_app.h"

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <sys/mman.h>
#include <sys/socket.h>
#include <thread>
#include <time.h>

#include "ferry/base/clock.h"
#include "ferry/dirty/tracker.h"
#include "ferry/sys/scm.h"

namespace ferry {

namespace {

constexpr size_t kPage = 4096;

uint64_t xorshift(uint64_t &s)
{
	s ^= s << 13;
	s ^= s >> 7;
	s ^= s << 17;
	return s;
}

Status sendByte(int fd, char c)
{
	if (::send(fd, &c, 1, MSG_NOSIGNAL) != 1)
		return Error::fromErrno("control send");
	return {};
}

Result<char> recvByte(int fd)
{
	char c;
	ssize_t n = ::recv(fd, &c, 1, 0);
	if (n < 0)
		return Error::fromErrno("control recv");
	if (n == 0)
		return Error(ECONNRESET, "control socket closed");
	return c;
}

Result<std::pair<UniqueFd, UniqueFd>> controlPair()
{
	int sv[2];
	if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return Error::fromErrno("socketpair");
	return std::make_pair(UniqueFd(sv[0]), UniqueFd(sv[1]));
}

void put64(std::vector<uint8_t> &v, uint64_t x)
{
	for (int i = 0; i < 8; i++)
		v.push_back(uint8_t(x >> (8 * i)));
}

uint64_t get64(const uint8_t *p)
{
	uint64_t x = 0;
	for (int i = 0; i < 8; i++)
		x |= uint64_t(p[i]) << (8 * i);
	return x;
}

// Paces work at `bytesPerSec`: returns how many bytes may be done now. Smooth: accounts in
// small steps, so a 50 MB/s writer writes a few pages every millisecond, not bursts.
class Pacer {
public:
	explicit Pacer(double bytesPerSec) : rate_(bytesPerSec), start_(monotonicNs()) {}
	uint64_t quota(uint64_t doneSoFar)
	{
		double elapsed = double(monotonicNs() - start_) / 1e9;
		double allowed = rate_ * elapsed;
		return allowed > double(doneSoFar) ? uint64_t(allowed) - doneSoFar : 0;
	}
	void restart(uint64_t doneSoFar)
	{
		start_ = monotonicNs() - int64_t(double(doneSoFar) / rate_ * 1e9);
	}

private:
	double rate_;
	int64_t start_;
};

} // namespace

int runSourceApp(int ctrlFd, const SourceAppOptions &opts)
{
	auto fail = [](const Error &e) {
		fmt::print(stderr, "source app: {}\n", e.message());
		return 1;
	};
	const uint64_t pages = opts.size / kPage;
	auto memfd = createMemfd("ferry-demo-source", opts.size);
	if (!memfd.ok())
		return fail(memfd.error());
	auto map = Mapping::map(memfd->get(), opts.size, PROT_READ | PROT_WRITE, MAP_SHARED);
	if (!map.ok())
		return fail(map.error());
	uint8_t *base = map->data();
	uint64_t rng = opts.seed * 0x9E3779B97F4A7C15ull + 1;
	uint64_t filled = uint64_t(double(pages) * opts.fill);
	for (uint64_t p = 0; p < filled; p++) {
		if (opts.textFill) {
			// Log-like lines: a few random words from a small vocabulary per line, so the
			// page compresses like text does rather than like a constant.
			static constexpr const char *kWords[] = {"alpha", "bravo", "charlie", "delta", "echo",
								 "foxtrot", "golf", "hotel", "india", "juliet",
								 "kilo", "lima", "mike", "november", "oscar", "papa"};
			char *c = reinterpret_cast<char *>(base + p * kPage);
			size_t at = 0;
			while (at < kPage) {
				char line[96];
				int n = std::snprintf(line, sizeof line, "%08llx %s %s %u\n", (unsigned long long)p,
						      kWords[xorshift(rng) % 16], kWords[xorshift(rng) % 16],
						      unsigned(xorshift(rng) % 1000));
				size_t take = std::min(size_t(n), size_t(kPage) - at);
				std::memcpy(c + at, line, take);
				at += take;
			}
			continue;
		}
		auto *w = reinterpret_cast<uint64_t *>(base + p * kPage);
		for (size_t i = 0; i < kPage / 8; i++)
			w[i] = xorshift(rng);
	}
	auto uffd = createWpAsyncUffd(base, opts.size);
	if (!uffd.ok())
		return fail(uffd.error());
	std::vector<uint8_t> payload;
	put64(payload, reinterpret_cast<uintptr_t>(base));
	put64(payload, opts.size);
	int fds[2] = {memfd->get(), uffd->fd()};
	if (auto st = sendFds(ctrlFd, fds, payload); !st.ok())
		return fail(st.error());

	std::mutex lock;
	std::condition_variable cv;
	bool paused = false, parked = false, quit = false;
	std::atomic<bool> pauseFlag{false}, quitFlag{false};
	std::thread writer([&] {
		// Pacing integrates the rate of the current phase, so a cyclic writer switches
		// between writeMBps and lowMBps without bursts at the phase edges.
		auto rateAt = [&](double t) {
			if (opts.periodSec <= 0)
				return opts.writeMBps * 1e6;
			double ph = std::fmod(t / opts.periodSec + opts.phase, 1.0);
			return (ph < opts.duty ? opts.writeMBps : opts.lowMBps) * 1e6;
		};
		double allowed = 0;
		int64_t last = monotonicNs(), t0 = last;
		uint64_t counter = 0, seq = 0, wr = opts.seed * 7919 + 3;
		while (!quitFlag) {
			if (pauseFlag) {
				std::unique_lock g(lock);
				parked = true;
				cv.notify_all();
				cv.wait(g, [&] { return !paused || quit; });
				parked = false;
				last = monotonicNs(); // no catching up after a pause
				continue;
			}
			int64_t now = monotonicNs();
			allowed += rateAt(double(now - t0) / 1e9) * double(now - last) / 1e9;
			allowed = std::min(allowed, 64.0 * kPage * 16); // at most ~4 MiB of credit
			last = now;
			if (allowed < kPage) {
				struct timespec ts{0, 500000}; // 0.5 ms: the pacing granularity
				nanosleep(&ts, nullptr);
				continue;
			}
			while (allowed >= kPage && !pauseFlag) {
				uint64_t page = opts.sequential ? (seq++ % pages) : (xorshift(wr) % pages);
				auto *w = reinterpret_cast<uint64_t *>(base + page * kPage);
				counter++;
				for (size_t i = 0; i < kPage / 8; i++)
					w[i] = (page << 40) ^ (counter << 12) ^ i;
				allowed -= kPage;
			}
		}
	});

	int rc = 0;
	for (;;) {
		auto c = recvByte(ctrlFd);
		if (!c.ok() || *c == 'Q')
			break;
		if (*c == 'S') {
			std::unique_lock g(lock);
			paused = true;
			pauseFlag = true;
			cv.wait(g, [&] { return parked; }); // the writer is quiescent
		} else if (*c == 'R') {
			std::lock_guard g(lock);
			paused = false;
			pauseFlag = false;
			cv.notify_all();
		} else {
			continue;
		}
		if (!sendByte(ctrlFd, 'A').ok()) {
			rc = 1;
			break;
		}
	}
	{
		std::lock_guard g(lock);
		quit = true;
		quitFlag = true;
		cv.notify_all();
	}
	writer.join();
	return rc;
}

int runDestApp(int ctrlFd, const DestAppOptions &opts)
{
	auto fail = [](const Error &e) {
		fmt::print(stderr, "destination app: {}\n", e.message());
		return 1;
	};
	std::vector<uint8_t> payload;
	auto fds = recvFds(ctrlFd, &payload, 1, 64);
	if (!fds.ok())
		return fail(fds.error());
	if (fds->size() != 1 || payload.size() != 8)
		return fail(Error(EPROTO, "expected a memfd and its size"));
	uint64_t size = get64(payload.data());
	// Mapped, never touched before 'G': with the uffd registered, every first access faults.
	auto map = Mapping::map((*fds)[0].get(), size, PROT_READ | PROT_WRITE, MAP_SHARED);
	if (!map.ok())
		return fail(map.error());
	std::optional<Userfaultfd> uffd;
	if (opts.faults) {
		auto u = Userfaultfd::create(UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MISSING_SHMEM);
		if (!u.ok())
			return fail(u.error());
		if (auto st = u->registerRange(map->data(), size, UffdMode::Missing | UffdMode::Minor); !st.ok())
			return fail(st.error());
		uffd.emplace(std::move(u).value());
	}
	std::vector<uint8_t> reply;
	put64(reply, reinterpret_cast<uintptr_t>(map->data()));
	std::vector<int> out;
	if (uffd)
		out.push_back(uffd->fd());
	if (auto st = sendFds(ctrlFd, out, reply); !st.ok())
		return fail(st.error());
	uffd.reset(); // ferry holds it now

	auto go = recvByte(ctrlFd);
	if (!go.ok() || *go != 'G')
		return 0;
	std::atomic<bool> stop{false};
	std::atomic<uint64_t> pagesRead{0};
	std::thread reader([&] {
		if (opts.readMBps <= 0)
			return;
		Pacer pacer(opts.readMBps * 1e6);
		uint64_t rng = opts.seed * 0x2545F4914F6CDD1Dull + 7, done = 0, sink = 0;
		const uint64_t pages = size / kPage;
		while (!stop) {
			uint64_t q = pacer.quota(done);
			if (q < kPage) {
				struct timespec ts{0, 500000};
				nanosleep(&ts, nullptr);
				continue;
			}
			for (uint64_t n = 0; n + kPage <= q && !stop; n += kPage) {
				uint64_t page = xorshift(rng) % pages;
				sink += *reinterpret_cast<volatile uint64_t *>(map->data() + page * kPage);
				done += kPage;
				pagesRead++;
			}
		}
		(void)sink;
	});
	(void)recvByte(ctrlFd); // 'Q' or EOF
	stop = true;
	reader.join();
	std::vector<uint8_t> stats;
	put64(stats, pagesRead.load());
	(void)sendFds(ctrlFd, {}, stats);
	return 0;
}

// --- ferry's side ----------------------------------------------------------------------------

Result<SourceAppHandle> SourceAppHandle::spawn(const SourceAppOptions &opts)
{
	FERRY_ASSIGN(auto pair, controlPair());
	SourceAppHandle h;
	std::vector<std::string> args = {"__app-source",
					 "--ctrl-fd", std::to_string(pair.second.get()),
					 "--size", std::to_string(opts.size),
					 "--write-mbps", fmt::format("{}", opts.writeMBps),
					 "--fill", fmt::format("{}", opts.fill),
					 "--fill-kind", opts.textFill ? "text" : "random",
					 "--seed", std::to_string(opts.seed),
					 "--period-s", fmt::format("{}", opts.periodSec),
					 "--duty", fmt::format("{}", opts.duty),
					 "--low-mbps", fmt::format("{}", opts.lowMBps),
					 "--phase", fmt::format("{}", opts.phase)};
	if (opts.sequential)
		args.push_back("--sequential");
	FERRY_ASSIGN(h.child_, spawnSelf(args, {pair.second.get()}, -1, opts.exe));
	pair.second.reset();
	h.ctrl_ = std::move(pair.first);
	std::vector<uint8_t> payload;
	FERRY_ASSIGN(auto fds, recvFds(h.ctrl_.get(), &payload, 2, 64).context("source app hand-over"));
	if (fds.size() != 2 || payload.size() != 16)
		return Error(EPROTO, "source app sent a malformed hand-over");
	h.memfd_ = std::move(fds[0]);
	h.uffd_ = std::move(fds[1]);
	h.base_ = get64(payload.data());
	h.size_ = get64(payload.data() + 8);
	FERRY_ASSIGN(h.map_, Mapping::map(h.memfd_.get(), h.size_, PROT_READ, MAP_SHARED));
	return h;
}

Result<Userfaultfd> SourceAppHandle::takeUffd()
{
	if (!uffd_)
		return Error(EBADF, "tracking uffd already taken");
	return Userfaultfd::adopt(std::move(uffd_), kWpAsyncFeatures, false);
}

Status SourceAppHandle::command(char c)
{
	FERRY_TRY(sendByte(ctrl_.get(), c));
	FERRY_ASSIGN(char a, recvByte(ctrl_.get()));
	if (a != 'A')
		return Error::format(EPROTO, "source app answered '{}' to '{}'", a, c);
	return {};
}

Status SourceAppHandle::suspend() { return command('S').context("suspend source app"); }
Status SourceAppHandle::resume() { return command('R').context("resume source app"); }

void SourceAppHandle::quit()
{
	(void)sendByte(ctrl_.get(), 'Q');
	(void)child_.waitFor(5000);
}

Result<DestAppHandle> DestAppHandle::spawn(int memfd, uint64_t size, const DestAppOptions &opts)
{
	FERRY_ASSIGN(auto pair, controlPair());
	DestAppHandle h;
	std::vector<std::string> args = {"__app-dest", "--ctrl-fd", std::to_string(pair.second.get()),
					 "--read-mbps", fmt::format("{}", opts.readMBps),
					 "--seed", std::to_string(opts.seed)};
	if (!opts.faults)
		args.push_back("--no-faults");
	FERRY_ASSIGN(h.child_, spawnSelf(args, {pair.second.get()}, -1, opts.exe));
	pair.second.reset();
	h.ctrl_ = std::move(pair.first);
	std::vector<uint8_t> payload;
	put64(payload, size);
	int fds[1] = {memfd};
	FERRY_TRY(sendFds(h.ctrl_.get(), fds, payload).context("hand region to destination app"));
	payload.clear();
	FERRY_ASSIGN(auto got, recvFds(h.ctrl_.get(), &payload, 1, 64).context("destination app hand-over"));
	if (payload.size() != 8 || got.size() != (opts.faults ? 1u : 0u))
		return Error(EPROTO, "destination app sent a malformed hand-over");
	h.base_ = get64(payload.data());
	if (opts.faults)
		h.uffd_ = std::move(got[0]);
	return h;
}

Result<Userfaultfd> DestAppHandle::takeUffd()
{
	if (!uffd_)
		return Error(EBADF, "no fault uffd (taken, or app runs without faults)");
	return Userfaultfd::adopt(std::move(uffd_), UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MISSING_SHMEM, false);
}

Status DestAppHandle::run() { return sendByte(ctrl_.get(), 'G').context("start destination app"); }

Result<uint64_t> DestAppHandle::quit()
{
	FERRY_TRY(sendByte(ctrl_.get(), 'Q'));
	std::vector<uint8_t> payload;
	auto r = recvFds(ctrl_.get(), &payload, 0, 64);
	(void)child_.waitFor(5000);
	if (!r.ok())
		return r.error();
	if (payload.size() != 8)
		return Error(EPROTO, "destination app sent malformed stats");
	return get64(payload.data());
}

LeecherHooks DemoDestination::hooks()
{
	LeecherHooks h;
	h.prepare = [this](uint64_t size, uint32_t) -> Result<DestinationRegion> {
		size_ = size;
		FERRY_ASSIGN(region_, MemfdMapping::create("ferry-demo-destination", size));
		return DestinationRegion{region_.data(), region_.fd.get()};
	};
	h.armFaults = [this]() -> Result<FaultTarget> {
		FERRY_TRY(startApp());
		FERRY_ASSIGN(Userfaultfd u, app_->takeUffd());
		return FaultTarget{std::move(u), app_->base()};
	};
	h.resume = [this]() -> Status {
		if (!app_)
			FERRY_TRY(startApp());
		return app_->run();
	};
	return h;
}

Status DemoDestination::startApp()
{
	FERRY_ASSIGN(DestAppHandle h, DestAppHandle::spawn(region_.fd.get(), size_, opts_));
	app_.emplace(std::move(h));
	return {};
}

} // namespace ferry
