// SPDX-License-Identifier: GPL-2.0-or-later
// QemuDirtyRateSampler: reply checking and error mapping against a scripted QMP peer, and the
// series of a real stock QEMU (TCG, 256 MiB guest) whose workload dirties memory at a known
// rate, chosen on the kernel command line (vm-images/workload, docs/vm-images.md).
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ferry/cycles/analyser.h"
#include "harness/console_watcher.h"
#include "ferry/qmp/dirty_rate.h"
#include "harness/qemu_launcher.h"

#include "support/fake_qmp_server.h"
#include "support/guest_image.h"
#include "support/result_checks.h"

using namespace std::chrono_literals;
using namespace ferry;
using ferry::test::FakeQmpPeer;
using ferry::test::FakeQmpServer;
using ferry::test::failsWith;

namespace {

constexpr std::string_view kUnstarted =
	R"({"status": "unstarted", "sample-pages": 0, "mode": "page-sampling", "start-time": 0, "calc-time": 0})";
constexpr std::string_view kMeasuring =
	R"({"status": "measuring", "sample-pages": 512, "mode": "page-sampling", "start-time": 9074, "calc-time": 1})";

QmpClient connectFake(FakeQmpServer &server)
{
	auto c = QmpClient::fromConnectedFd(server.takeClientFd(), "fake", 5s);
	EXPECT_TRUE(c.ok()) << c.error().message();
	return std::move(c).value();
}

QemuDirtyRateOptions fastOptions()
{
	QemuDirtyRateOptions o;
	o.calcTimeSec = 1;
	o.pollInterval = 10ms;
	o.slack = 300ms;
	o.commandTimeout = 2s;
	return o;
}

// One sample() against a QEMU that starts our measurement and then returns `measured` to
// query-dirty-rate.
Result<QemuDirtyRateSample> sampleOnceReporting(std::string_view measured)
{
	FakeQmpServer server([measured](FakeQmpPeer &p) {
		p.greet();
		p.reply(p.expectCommand("query-dirty-rate"), kUnstarted);
		p.reply(p.expectCommand("calc-dirty-rate"), "{}");
		p.reply(p.expectCommand("query-dirty-rate"), measured);
	});
	QmpClient qmp = connectFake(server);
	auto sampler = QemuDirtyRateSampler::create(qmp, fastOptions());
	if (!sampler.ok()) {
		ADD_FAILURE() << "create: " << sampler.error().message();
		return sampler.error();
	}
	return sampler->sample();
}

} // namespace

// ---- Scripted peer: every reply shape, no QEMU -------------------------------------------

TEST(QemuDirtyRateInfo, ParsesAMeasuredReplyAndRejectsMalformedOnes)
{
	auto ok = JsonValue::parse(R"({"status": "measured", "sample-pages": 512, "dirty-rate": 38,
		"mode": "page-sampling", "start-time": 9047, "calc-time": 1})");
	ASSERT_TRUE(ok.ok());
	auto info = QemuDirtyRateInfo::fromJson(ok.value());
	ASSERT_TRUE(info.ok()) << info.error().message();
	EXPECT_TRUE(info->measured());
	EXPECT_EQ(info->dirtyRateMBps, 38);
	EXPECT_EQ(info->startTime, 9047);
	EXPECT_EQ(info->calcTimeSec, 1);
	EXPECT_EQ(info->samplePages, 512);
	EXPECT_EQ(info->mode, DirtyRateMode::PageSampling);

	for (const char *bad : {
		     R"([1, 2])",
		     R"({"status": "measured", "sample-pages": 512, "mode": "page-sampling", "start-time": 1, "calc-time": 1})",
		     R"({"status": "done", "sample-pages": 512, "mode": "page-sampling", "start-time": 1, "calc-time": 1})",
		     R"({"status": "measured", "sample-pages": 512, "dirty-rate": "38", "mode": "page-sampling", "start-time": 1, "calc-time": 1})",
		     R"({"status": "measured", "sample-pages": 512, "dirty-rate": 3, "mode": "warp", "start-time": 1, "calc-time": 1})",
		     R"({"status": "measuring", "sample-pages": 512, "mode": "page-sampling", "calc-time": 1})",
		     R"({"status": "measuring", "sample-pages": 512, "mode": "page-sampling", "start-time": 1, "calc-time": -1})",
	     }) {
		auto j = JsonValue::parse(bad);
		ASSERT_TRUE(j.ok()) << bad;
		auto r = QemuDirtyRateInfo::fromJson(j.value());
		ASSERT_FALSE(r.ok()) << bad;
		EXPECT_EQ(r.error().code(), EBADMSG) << bad << ": " << r.error().message();
	}
}

TEST(QemuDirtyRateSampler, RejectsOptionsQemuWouldRefuseBeforeSendingAnything)
{
	FakeQmpServer server([](FakeQmpPeer &p) {
		p.greet();
		EXPECT_EQ(p.readLine(), ""); // nothing sent until the client hangs up
	});
	QmpClient qmp = connectFake(server);
	QemuDirtyRateOptions o = fastOptions();
	o.calcTimeSec = 0;
	EXPECT_EQ(QemuDirtyRateSampler::create(qmp, o).error().code(), EINVAL);
	o.calcTimeSec = 61;
	EXPECT_EQ(QemuDirtyRateSampler::create(qmp, o).error().code(), EINVAL);
	o = fastOptions();
	o.samplePagesPerGiB = 100;
	EXPECT_EQ(QemuDirtyRateSampler::create(qmp, o).error().code(), EINVAL);
	o.samplePagesPerGiB = 512;
	o.mode = DirtyRateMode::DirtyRing;
	EXPECT_EQ(QemuDirtyRateSampler::create(qmp, o).error().code(), EINVAL);
	EXPECT_EQ(parseDirtyRateMode("dirty-bitmap").value(), DirtyRateMode::DirtyBitmap);
	EXPECT_EQ(parseDirtyRateMode("bitmap").error().code(), EINVAL);
	{
		QmpClient gone = std::move(qmp); // hang up: the script's readLine() sees EOF
	}
}

TEST(QemuDirtyRateSampler, SendsNamedModeAndReturnsTheMeasuredSample)
{
	FakeQmpServer server([](FakeQmpPeer &p) {
		p.greet();
		p.reply(p.expectCommand("query-dirty-rate"), kUnstarted);
		std::string line = p.readLine();
		auto cmd = JsonValue::parse(line);
		ASSERT_TRUE(cmd.ok()) << line;
		EXPECT_EQ(cmd->getString("execute").value(), "calc-dirty-rate");
		auto args = cmd->getObject("arguments");
		ASSERT_TRUE(args.ok()) << line;
		EXPECT_EQ(args->getInt("calc-time").value(), 1);
		EXPECT_EQ(args->getInt("sample-pages").value(), 4096);
		EXPECT_EQ(args->getString("mode").value(), "page-sampling");
		p.reply(cmd->getInt("id").value(), "{}");
		p.reply(p.expectCommand("query-dirty-rate"), kMeasuring);
		p.reply(p.expectCommand("query-dirty-rate"),
			R"({"status": "measured", "sample-pages": 4096, "dirty-rate": 28, "mode": "page-sampling", "start-time": 9075, "calc-time": 1})");
	});
	QmpClient qmp = connectFake(server);
	QemuDirtyRateOptions o = fastOptions();
	o.samplePagesPerGiB = 4096;
	auto sampler = QemuDirtyRateSampler::create(qmp, o);
	ASSERT_TRUE(sampler.ok()) << sampler.error().message();
	auto s = sampler->sample();
	ASSERT_TRUE(s.ok()) << s.error().message();
	EXPECT_EQ(s->dirtyRateMBps, 28);
	EXPECT_EQ(s->startTime, 9075);
	EXPECT_EQ(s->calcTimeSec, 1);
	EXPECT_EQ(s->samplePages, 4096);
	EXPECT_DOUBLE_EQ(s->dirtyBytesPerSec(), 28.0 * (1 << 20));
	// No result is asked for before calc-time has passed.
	EXPECT_GE(s->monotonicEndNs - s->monotonicStartNs, 1'000'000'000);
}

TEST(QemuDirtyRateSampler, MapsQemuRefusalsToActionableErrors)
{
	FakeQmpServer server([](FakeQmpPeer &p) {
		p.greet();
		// Someone else's measurement is running.
		p.reply(p.expectCommand("query-dirty-rate"), kMeasuring);
		// QEMU refuses in the instant between our query and our start.
		p.reply(p.expectCommand("query-dirty-rate"), kUnstarted);
		p.sendLine(fmt::format(R"({{"error": {{"class": "GenericError", "desc": "the dirty rate is already being measured."}}, "id": {}}})",
				       p.expectCommand("calc-dirty-rate")));
		// A QEMU without the command.
		p.reply(p.expectCommand("query-dirty-rate"), kUnstarted);
		p.sendLine(fmt::format(R"({{"error": {{"class": "CommandNotFound", "desc": "The command calc-dirty-rate has not been found"}}, "id": {}}})",
				       p.expectCommand("calc-dirty-rate")));
	});
	QmpClient qmp = connectFake(server);
	auto sampler = QemuDirtyRateSampler::create(qmp, fastOptions());
	ASSERT_TRUE(sampler.ok()) << sampler.error().message();
	auto busy = sampler->sample();
	ASSERT_TRUE(failsWith(busy, EBUSY));
	auto busy2 = sampler->sample();
	ASSERT_TRUE(failsWith(busy2, EBUSY));
	auto missing = sampler->sample();
	ASSERT_TRUE(failsWith(missing, ENOTSUP, "5.2"));
}

TEST(QemuDirtyRateSampler, TimesOutWhenQemuNeverPublishes)
{
	FakeQmpServer server([](FakeQmpPeer &p) {
		p.greet();
		p.reply(p.expectCommand("query-dirty-rate"), kUnstarted);
		p.reply(p.expectCommand("calc-dirty-rate"), "{}");
		// Stuck in "measuring" until the client hangs up.
		for (;;) {
			auto cmd = JsonValue::parse(p.readLine());
			if (!cmd.ok())
				return;
			p.reply(cmd->getInt("id").value(), kMeasuring);
		}
	});
	QmpClient qmp = connectFake(server);
	auto sampler = QemuDirtyRateSampler::create(qmp, fastOptions());
	ASSERT_TRUE(sampler.ok()) << sampler.error().message();
	auto t0 = std::chrono::steady_clock::now();
	auto stuck = sampler->sample();
	auto took = std::chrono::steady_clock::now() - t0;
	ASSERT_TRUE(failsWith(stuck, ETIMEDOUT));
	// calc-time 1 s + slack 0.3 s, not more than a poll interval or so beyond.
	EXPECT_GE(took, 1300ms);
	EXPECT_LT(took, 2500ms);
	{
		QmpClient gone = std::move(qmp);
	}
}

TEST(QemuDirtyRateSampler, NoSampledRamIsENodataNotARateOfMinusOne)
{
	auto r = sampleOnceReporting(
		R"({"status": "measured", "sample-pages": 512, "dirty-rate": -1, "mode": "page-sampling", "start-time": 9, "calc-time": 1})");
	ASSERT_TRUE(failsWith(r, ENODATA));
}

TEST(QemuDirtyRateSampler, ForeignResultIsNotTakenForOurs)
{
	auto r = sampleOnceReporting(
		R"({"status": "measured", "sample-pages": 0, "dirty-rate": 7, "mode": "dirty-bitmap", "start-time": 9, "calc-time": 1})");
	ASSERT_TRUE(failsWith(r, EBUSY));
}

TEST(QemuDirtyRateSampler, KvmOnlyModeIsNotSentToAQemuWithoutKvm)
{
	FakeQmpServer server([](FakeQmpPeer &p) {
		p.greet();
		p.reply(p.expectCommand("query-kvm"), R"({"enabled": false, "present": true})");
		EXPECT_EQ(p.readLine(), ""); // calc-dirty-rate never comes
	});
	QmpClient qmp = connectFake(server);
	QemuDirtyRateOptions o = fastOptions();
	o.mode = DirtyRateMode::DirtyBitmap;
	auto r = QemuDirtyRateSampler::create(qmp, o);
	ASSERT_TRUE(failsWith(r, ENOTSUP));
	{
		QmpClient gone = std::move(qmp);
	}
}

// ---- A real stock QEMU -------------------------------------------------------------------

namespace {

// A guest under TCG running one workload, with its QMP connection and console.
class Guest {
public:
	~Guest()
	{
		qmp_.reset();
		console_.reset();
		qemu_.reset();
		if (!dir_.empty())
			removeRunDir(dir_);
	}

	// Boots and waits until the workload reports its working set ready.
	Status boot(const GuestImage &image, std::string workload, Accel accel = Accel::Tcg)
	{
		FERRY_ASSIGN(dir_, makeRunDir("ferry-dirty-rate-test"));
		QemuConfig cfg;
		cfg.name = "guest";
		cfg.runDir = dir_;
		cfg.image = image;
		cfg.extraAppend = std::move(workload);
		// Page sampling skips RAM blocks smaller than 128 MiB.
		cfg.memMib = 256;
		cfg.accel = accel;
		FERRY_ASSIGN(QemuProcess q, QemuProcess::launch(cfg));
		qemu_.emplace(std::move(q));
		FERRY_ASSIGN(ConsoleWatcher c, ConsoleWatcher::open(qemu_->consoleLogPath()));
		console_.emplace(std::move(c));
		FERRY_ASSIGN(QmpClient m, qemu_->connectQmp(10s));
		qmp_.emplace(std::move(m));
		auto ready = console_->waitForLine("FERRY-READY", 60s);
		if (!ready.ok())
			return ready.error().context("guest workload not ready; console: " + console_->lastLines(5));
		return {};
	}

	// The next heartbeat's (uptime ms, MB written so far): what the guest actually achieves
	// under TCG, which may be less than asked for.
	Result<std::pair<double, double>> progress()
	{
		FERRY_TRY(console_->poll());
		FERRY_ASSIGN(ConsoleWatcher::Line line, console_->waitForLine("FERRY-HB", 5s, console_->lineCount()));
		auto hb = parseHeartbeat(line.text);
		size_t at = line.text.find("written_mb=");
		if (!hb || at == std::string::npos)
			return Error(EBADMSG, "bad heartbeat: " + line.text);
		const char *p = line.text.data() + at + 11;
		uint64_t mb = 0;
		std::from_chars(p, line.text.data() + line.text.size(), mb);
		return std::pair<double, double>{double(hb->uptimeMs), double(mb)};
	}

	QemuProcess &qemu() { return *qemu_; }
	QmpClient &qmp() { return *qmp_; }

private:
	std::string dir_;
	std::optional<QemuProcess> qemu_;
	std::optional<ConsoleWatcher> console_;
	std::optional<QmpClient> qmp_;
};

// 1 s windows, 4096 sample pages per GiB: 1024 pages of a 256 MiB guest, so one changed
// sample is 0.25 MiB/s and a rate of ~38 MiB/s is ~150 changed samples (+-8 %).
QemuDirtyRateOptions realOptions()
{
	QemuDirtyRateOptions o;
	o.calcTimeSec = 1;
	o.samplePagesPerGiB = 4096;
	o.slack = 10s; // a guest saturating the TCG vCPU slows QEMU's main loop
	return o;
}

std::vector<int64_t> sampleRates(QemuDirtyRateSampler &sampler, int n)
{
	std::vector<int64_t> rates;
	for (int i = 0; i < n; i++) {
		auto s = sampler.sample();
		EXPECT_TRUE(s.ok()) << s.error().message();
		if (!s.ok())
			break;
		EXPECT_EQ(s->mode, DirtyRateMode::PageSampling);
		EXPECT_EQ(s->calcTimeSec, 1);
		rates.push_back(s->dirtyRateMBps);
	}
	return rates;
}

std::string join(const std::vector<int64_t> &v)
{
	std::string s;
	for (int64_t x : v)
		s += std::to_string(x) + " ";
	return s;
}

} // namespace

TEST(QemuDirtyRateReal, IdleGuestReadsNearZero)
{
	REQUIRE_GUEST_IMAGE(image);
	Guest g;
	ASSERT_OK(g.boot(image, "ferry.mode=idle"));
	auto sampler = QemuDirtyRateSampler::create(g.qmp(), realOptions());
	ASSERT_TRUE(sampler.ok()) << sampler.error().message();
	std::vector<int64_t> rates = sampleRates(*sampler, 3);
	ASSERT_EQ(rates.size(), 3u);
	// The idle guest's kernel still touches a few pages (timers, console): measured 0 here.
	EXPECT_LE(*std::max_element(rates.begin(), rates.end()), 3) << join(rates);
}

TEST(QemuDirtyRateReal, GuestDirtyingAt40MBpsReadsItsRate)
{
	REQUIRE_GUEST_IMAGE(image);
	Guest g;
	// Sequential writes through 64 MiB: a 1 s window at 40 MB/s never revisits a page, so
	// the distinct pages QEMU counts equal what the guest wrote (~38 MiB/s).
	ASSERT_OK(g.boot(image, "ferry.mode=dirty ferry.rate=40 ferry.wss=64 ferry.pattern=seq"));
	auto sampler = QemuDirtyRateSampler::create(g.qmp(), realOptions());
	ASSERT_TRUE(sampler.ok()) << sampler.error().message();
	auto before = g.progress();
	ASSERT_TRUE(before.ok()) << before.error().message();
	std::vector<int64_t> rates = sampleRates(*sampler, 3);
	auto after = g.progress();
	ASSERT_TRUE(after.ok()) << after.error().message();
	ASSERT_EQ(rates.size(), 3u);
	double achievedMiBps = (after->second - before->second) * 1e6 / double(1 << 20) /
			       ((after->first - before->first) / 1000);
	std::sort(rates.begin(), rates.end());
	double median = double(rates[1]);
	RecordProperty("guest_mib_per_s", std::to_string(achievedMiBps));
	RecordProperty("qemu_rates", join(rates));
	// The guest must really be dirtying, or the comparison says nothing.
	ASSERT_GE(achievedMiBps, 20) << "guest wrote only " << achievedMiBps << " MiB/s under TCG";
	EXPECT_GE(median, 0.6 * achievedMiBps) << "qemu " << join(rates) << "guest " << achievedMiBps;
	EXPECT_LE(median, 1.3 * achievedMiBps) << "qemu " << join(rates) << "guest " << achievedMiBps;
	EXPECT_GE(rates[0], 15) << join(rates); // clearly above an idle guest's 0..3
}

TEST(QemuDirtyRateReal, SecondMeasurementWhileOneRunsIsBusyAndTheFirstCompletes)
{
	REQUIRE_GUEST_IMAGE(image);
	Guest g;
	ASSERT_OK(g.boot(image, "ferry.mode=idle"));
	QemuDirtyRateOptions o = realOptions();
	o.calcTimeSec = 2;
	auto first = QemuDirtyRateSampler::create(g.qmp(), o);
	ASSERT_TRUE(first.ok()) << first.error().message();
	ASSERT_TRUE(first->start().ok());
	// QEMU's measuring thread flips "unstarted" to "measuring" a moment after the command
	// returned; before that QEMU itself would accept a second one. Wait for it (bounded).
	auto seen = first->query();
	for (auto until = std::chrono::steady_clock::now() + 1s;
	     seen.ok() && seen->status == "unstarted" && std::chrono::steady_clock::now() < until;)
		seen = first->query();
	ASSERT_TRUE(seen.ok()) << seen.error().message();
	ASSERT_EQ(seen->status, "measuring");
	auto second = QemuDirtyRateSampler::create(g.qmp(), realOptions());
	ASSERT_TRUE(second.ok()) << second.error().message();
	auto busy = second->start();
	ASSERT_FALSE(busy.ok()) << "second measurement accepted while status was " << seen->status;
	EXPECT_EQ(busy.error().code(), EBUSY) << busy.error().message();
	auto done = first->wait();
	ASSERT_TRUE(done.ok()) << done.error().message();
	EXPECT_EQ(done->calcTimeSec, 2);
}

TEST(QemuDirtyRateReal, KvmOnlyModesAreRefusedUnderTcgAndQemuSurvives)
{
	REQUIRE_GUEST_IMAGE(image);
	Guest g;
	ASSERT_OK(g.boot(image, "ferry.mode=idle"));
	for (DirtyRateMode m : {DirtyRateMode::DirtyBitmap, DirtyRateMode::DirtyRing}) {
		QemuDirtyRateOptions o = realOptions();
		o.samplePagesPerGiB.reset();
		o.mode = m;
		auto r = QemuDirtyRateSampler::create(g.qmp(), o);
		ASSERT_FALSE(r.ok()) << dirtyRateModeName(m);
		EXPECT_EQ(r.error().code(), ENOTSUP) << r.error().message();
	}
	// QEMU 7.2 segfaults if either mode reaches it under TCG: it must still be running.
	EXPECT_FALSE(g.qemu().exited()) << g.qemu().describeExit();
	auto status = g.qmp().queryStatus();
	ASSERT_TRUE(status.ok()) << status.error().message();
	EXPECT_EQ(status.value(), "running");
}

TEST(QemuDirtyRateReal, DirtyBitmapModeMeasuresAGuestUnderKvm)
{
	REQUIRE_GUEST_IMAGE(image);
	if (!kvmUsable(image, 10s))
		GTEST_SKIP() << "dirty-bitmap needs KVM (QEMU 7.2 crashes when asked under TCG) and guests do "
				"not boot under KVM on this host";
	Guest g;
	ASSERT_OK(g.boot(image, "ferry.mode=dirty ferry.rate=40 ferry.wss=64 ferry.pattern=seq", Accel::Kvm));
	QemuDirtyRateOptions o = realOptions();
	o.samplePagesPerGiB.reset();
	o.mode = DirtyRateMode::DirtyBitmap;
	auto sampler = QemuDirtyRateSampler::create(g.qmp(), o);
	ASSERT_TRUE(sampler.ok()) << sampler.error().message();
	auto s = sampler->sample();
	ASSERT_TRUE(s.ok()) << s.error().message();
	EXPECT_EQ(s->mode, DirtyRateMode::DirtyBitmap);
	EXPECT_GE(s->dirtyRateMBps, 15);
}

// The analyser on QEMU's series. Whole-second windows give an 8 s cycle 8 samples per period;
// the analyser wants 2.5 periods and in practice called this series periodic after 31..36
// samples here, so 42 are taken and the last estimate is judged.
TEST(QemuDirtyRateReal, CycleGuestIsCalledPeriodicWithItsPeriod)
{
	REQUIRE_GUEST_IMAGE(image);
	Guest g;
	ASSERT_OK(g.boot(image, "ferry.mode=cycle ferry.rate=40 ferry.period=8 ferry.duty=0.5 ferry.wss=64"));
	QemuDirtyRateOptions o = realOptions();
	o.samplePagesPerGiB = 16384; // QEMU's most: the least sampling noise, still cheap
	o.pollInterval = 20ms;
	auto sampler = QemuDirtyRateSampler::create(g.qmp(), o);
	ASSERT_TRUE(sampler.ok()) << sampler.error().message();
	CycleAnalyser analyser(1.0);
	std::vector<int64_t> rates;
	for (int i = 0; i < 42; i++) {
		auto s = sampler->sample();
		ASSERT_TRUE(s.ok()) << s.error().message();
		rates.push_back(s->dirtyRateMBps);
		analyser.addSample(s->dirtyBytesPerSec());
	}
	CycleEstimate e = analyser.estimate();
	RecordProperty("verdict", e.verdict());
	RecordProperty("qemu_rates", join(rates));
	EXPECT_TRUE(e.periodic) << e.verdict() << "; series " << join(rates);
	EXPECT_NEAR(e.periodSec, 8.0, 1.6) << e.verdict() << "; series " << join(rates);
	// High half near the guest's ~38 MiB/s of distinct pages, low half near zero.
	EXPECT_GE(*std::max_element(rates.begin(), rates.end()), 20) << join(rates);
	EXPECT_LE(*std::min_element(rates.begin(), rates.end()), 3) << join(rates);
}
