// SPDX-License-Identifier: GPL-2.0-or-later
#include "harness/vm_scenario.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>

#include <cmath>
#include <thread>

#include "ferry/base/log.h"
#include "ferry/link/link_emulator.h"
#include "ferry/wire/endpoint.h"

namespace ferry {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

double msSince(Clock::time_point t0)
{
	return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// A free TCP port on 127.0.0.1: bind port 0 and release it. QEMU binds it right after, a
// race only another process picking the same ephemeral port in between could lose.
Result<uint16_t> pickFreeTcpPort()
{
	UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
	if (!fd)
		return Error::fromErrno("socket");
	sockaddr_in a{};
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (::bind(fd.get(), reinterpret_cast<sockaddr *>(&a), sizeof(a)) < 0)
		return Error::fromErrno("bind 127.0.0.1:0");
	socklen_t len = sizeof(a);
	if (::getsockname(fd.get(), reinterpret_cast<sockaddr *>(&a), &len) < 0)
		return Error::fromErrno("getsockname");
	return ntohs(a.sin_port);
}

std::string formatNumber(double v)
{
	return fmt::format("{:g}", v);
}

} // namespace

std::string WorkloadParams::kernelArgs() const
{
	std::string args = fmt::format("ferry.mode={} ferry.rate={} ferry.wss={} ferry.pattern={} ferry.period={} ferry.duty={}",
				       mode, formatNumber(rateMBps), wssMib, pattern, formatNumber(periodS),
				       formatNumber(duty));
	if (lowRateMBps > 0)
		args += fmt::format(" ferry.low_rate={}", formatNumber(lowRateMBps));
	return args;
}

// ---------------------------------------------------------------------------------------------
// MigrationRecord

JsonValue MigrationRecord::toJson() const
{
	JsonValue o = JsonValue::object();
	auto optI = [&](const char *k, const std::optional<int64_t> &v) {
		o.set(k, v ? JsonValue::integer(*v) : JsonValue());
	};
	auto optU = [&](const char *k, const std::optional<uint64_t> &v) {
		o.set(k, v ? JsonValue::integer(static_cast<int64_t>(*v)) : JsonValue());
	};
	auto optD = [&](const char *k, const std::optional<double> &v) {
		// Three decimals are plenty for ms figures and keep the output readable.
		o.set(k, v ? JsonValue::number(std::round(*v * 1000) / 1000) : JsonValue());
	};
	o.set("mode", mode);
	o.set("run", run);
	o.set("mem_mib", config.memMib);
	JsonValue wl = JsonValue::object();
	wl.set("mode", config.workload.mode)
		.set("rate_mbps", config.workload.rateMBps)
		.set("wss_mib", config.workload.wssMib)
		.set("pattern", config.workload.pattern);
	if (config.workload.mode == "cycle")
		wl.set("period_s", config.workload.periodS)
			.set("duty", config.workload.duty)
			.set("low_rate_mbps", config.workload.lowRateMBps);
	o.set("workload", std::move(wl));
	JsonValue link = JsonValue::object();
	link.set("transport", config.transport).set("rtt_ms", config.linkRttMs).set("mbit", config.linkMbit);
	o.set("link", std::move(link));
	o.set("accel", config.accel == Accel::Kvm ? "kvm" : "tcg");
	optD("max_bandwidth_mbps", config.maxBandwidthMbps);
	optI("downtime_limit_ms", config.downtimeLimitMs);
	o.set("timeout_s", static_cast<double>(config.migrationTimeout.count()) / 1000.0);
	o.set("start_delay_ms", static_cast<int64_t>(config.startDelay.count()));

	o.set("completed", completed);
	o.set("timed_out", timedOut);
	o.set("cancelled", cancelled);
	o.set("status", finalStatus);
	o.set("error", error ? JsonValue::string(*error) : JsonValue());
	o.set("success", success());
	optD("boot_ms", bootMs);
	optD("wall_ms", wallMs);
	optI("total_time_ms", totalTimeMs);
	optI("downtime_ms", downtimeMs);
	optI("setup_time_ms", setupTimeMs);
	optD("event_downtime_ms", eventDowntimeMs);
	optI("bytes_transferred", bytesTransferred);
	optI("passes", passes);
	optD("mbps", mbps);
	optI("postcopy_requests", postcopyRequests);
	o.set("postcopy_started", postcopyStarted);
	optD("postcopy_start_ms", postcopyStartMs);
	optU("link_bytes_relayed", linkBytesRelayed);
	o.set("guest_runs_on", guestRunsOn);
	o.set("guest_alive", guestAlive);
	optU("last_source_seq", lastSourceSeq);
	optU("first_dest_seq", firstDestSeq);
	o.set("verify_error_lines", verifyErrorLines);
	optI("guest_error_count", guestErrorCount);
	o.set("verify_ok", verifyOk);
	JsonValue lines = JsonValue::array();
	for (const auto &l : errorLines)
		lines.append(JsonValue::string(l));
	o.set("error_lines", std::move(lines));
	if (ferryReport)
		o.set("ferry", ferryReport->toJson());
	if (benchUsage)
		o.set("bench_process", benchUsage->toJson());
	o.set("run_dir", runDir);
	return o;
}

bool MigrationRecord::success() const
{
	return completed && !error && guestAlive && verifyOk;
}

// ---------------------------------------------------------------------------------------------
// VmPair

VmPair::~VmPair() = default;

Result<std::unique_ptr<VmPair>> VmPair::start(const ScenarioConfig &cfg, const std::string &runDir,
					      MigrationRecord *record)
{
	std::unique_ptr<VmPair> p(new VmPair());
	p->runDir_ = runDir;

	QemuConfig src;
	src.name = "source";
	src.runDir = runDir;
	src.image = cfg.image;
	src.extraAppend = cfg.workload.kernelArgs();
	if (!cfg.extraAppend.empty())
		src.extraAppend += " " + cfg.extraAppend;
	src.memMib = cfg.memMib;
	src.ram = cfg.ram;
	src.accel = cfg.accel;
	src.accelProps = cfg.accelProps;
	src.env = cfg.sourceEnv;
	src.extraArgs = cfg.sourceArgs;

	const auto t0 = Clock::now();
	FERRY_TRY(p->source_.launch(src));

	// The destination boots nothing (it waits for the stream), so start it while the source
	// guest boots.
	QemuConfig dst = src;
	dst.name = "dest";
	dst.incomingDefer = true;
	dst.env = cfg.destEnv;
	dst.extraArgs = cfg.destArgs;
	FERRY_TRY(p->dest_.launch(dst));

	// Boot: wait for the first heartbeat, in slices so a QEMU that dies is seen at once.
	const auto deadline = Clock::now() + cfg.bootTimeout;
	for (;;) {
		auto hb = p->sourceConsole().waitHeartbeat(250ms);
		if (hb)
			break;
		if (p->source().exited())
			return Error::format(ECHILD, "source QEMU {} during boot: {}", p->source().describeExit(),
					     p->source().stderrTail());
		if (Clock::now() >= deadline)
			return Error::format(ETIMEDOUT, "guest did not boot within {} ms (console: {})",
					     cfg.bootTimeout.count(), p->sourceConsole().lastLines(3));
	}
	if (record)
		record->bootMs = msSince(t0);
	if (cfg.startDelay.count() > 0)
		std::this_thread::sleep_for(cfg.startDelay); // the caller's chosen start moment
	FERRY_TRY(p->checkAlive());
	return p;
}

Status VmPair::Side::launch(const QemuConfig &cfg)
{
	FERRY_ASSIGN(QemuProcess process, QemuProcess::launch(cfg));
	qemu.emplace(std::move(process));
	FERRY_ASSIGN(ConsoleWatcher watcher, ConsoleWatcher::open(qemu->consoleLogPath()));
	console.emplace(std::move(watcher));
	FERRY_ASSIGN(QmpClient client, qemu->connectQmp(10s));
	qmp.emplace(std::move(client));
	return okStatus();
}

Status VmPair::checkAlive()
{
	if (source_.qemu && source_.qemu->exited())
		return Error::format(ECHILD, "source QEMU {}: {}", source_.qemu->describeExit(),
				     source_.qemu->stderrTail(500));
	if (dest_.qemu && dest_.qemu->exited())
		return Error::format(ECHILD, "destination QEMU {}: {}", dest_.qemu->describeExit(),
				     dest_.qemu->stderrTail(500));
	return okStatus();
}

Result<std::string> VmPair::listenIncoming(const ScenarioConfig &cfg)
{
	Endpoint destEp;
	std::string destUri;
	if (cfg.transport == "unix") {
		std::string path = runDir_ + "/migrate.sock";
		destEp = Endpoint::unixPath(path);
		destUri = "unix:" + path;
	} else if (cfg.transport == "tcp") {
		FERRY_ASSIGN(uint16_t port, pickFreeTcpPort());
		destEp = Endpoint::tcp("127.0.0.1", port);
		destUri = fmt::format("tcp:127.0.0.1:{}", port);
	} else {
		return Error::format(EINVAL, "unknown transport '{}' (unix or tcp)", cfg.transport);
	}
	FERRY_TRY_CTX(destQmp().migrateIncoming(destUri), "destination");
	if (cfg.linkRttMs <= 0 && cfg.linkMbit <= 0)
		return destUri;

	Endpoint listenAt = cfg.transport == "unix" ? Endpoint::unixPath(runDir_ + "/link.sock")
						    : Endpoint::tcp("127.0.0.1", 0);
	auto params = LinkParams::symmetric(
		std::chrono::microseconds(static_cast<int64_t>(cfg.linkRttMs * 1000)), cfg.linkMbit);
	ScopedThreadName name("link-qemu"); // the link's threads, for ProcessUsage
	auto link = LinkEmulator::start(listenAt, destEp, params);
	if (!link)
		return link.error().context("link emulator");
	link_ = std::move(link).value();
	Endpoint ep = link_->endpoint();
	if (ep.kind == Endpoint::Kind::Unix)
		return "unix:" + ep.path;
	return fmt::format("tcp:127.0.0.1:{}", ep.port);
}

// ---------------------------------------------------------------------------------------------
// Stock migration

namespace {

// Migration parameters common to both stock modes.
Status configureStock(VmPair &pair, const ScenarioConfig &cfg, bool postcopy)
{
	std::vector<std::pair<std::string, bool>> caps = {{"events", true}};
	if (postcopy)
		caps.push_back({"postcopy-ram", true});
	FERRY_TRY_CTX(pair.sourceQmp().migrateSetCapabilities(caps), "source");
	// postcopy-ram must be set on both sides; the destination needs it before the stream
	// starts (it advises its RAM for userfaultfd on the incoming side).
	FERRY_TRY_CTX(pair.destQmp().migrateSetCapabilities(caps), "destination");

	JsonValue params = JsonValue::object();
	// max-bandwidth is bytes/s. "Unlimited" as libvirt means it: a very large cap.
	int64_t bw = cfg.maxBandwidthMbps ? static_cast<int64_t>(*cfg.maxBandwidthMbps * 1e6 / 8)
					  : (int64_t(1) << 40);
	params.set("max-bandwidth", bw);
	if (cfg.downtimeLimitMs)
		params.set("downtime-limit", *cfg.downtimeLimitMs);
	FERRY_TRY_CTX(pair.sourceQmp().migrateSetParameters(params), "source");
	return okStatus();
}

void fillFromInfo(MigrationRecord &rec, const MigrationInfo &info)
{
	rec.finalStatus = info.status;
	rec.totalTimeMs = info.totalTimeMs;
	rec.downtimeMs = info.downtimeMs;
	rec.setupTimeMs = info.setupTimeMs;
	rec.bytesTransferred = info.ramTransferred;
	rec.passes = info.dirtySyncCount;
	rec.mbps = info.mbps;
	rec.postcopyRequests = info.postcopyRequests;
}

} // namespace

Status runStockMigration(VmPair &pair, const ScenarioConfig &cfg, MigrationRecord &rec, bool postcopy)
{
	QmpClient &src = pair.sourceQmp();
	QmpClient &dst = pair.destQmp();
	FERRY_TRY(configureStock(pair, cfg, postcopy));
	FERRY_ASSIGN(std::string uri, pair.listenIncoming(cfg));

	// Events from before the migration (none expected) must not be taken for its own.
	src.drainEvents();
	dst.drainEvents();
	const auto t0 = Clock::now();
	FERRY_TRY_CTX(src.migrate(uri), "source");
	if (cfg.afterMigrateStarted)
		cfg.afterMigrateStarted(pair);

	const auto deadline = t0 + cfg.migrationTimeout;
	std::optional<QmpEvent> stopEvent;
	std::string status = "setup";
	for (;;) {
		if (Clock::now() >= deadline) {
			rec.timedOut = true;
			break;
		}
		auto slice = std::min<Clock::duration>(deadline - Clock::now(), 200ms);
		auto ev = src.waitEvent({"MIGRATION", "MIGRATION_PASS", "STOP"},
					std::chrono::ceil<std::chrono::milliseconds>(slice));
		if (!ev) {
			if (ev.error().code() != ETIMEDOUT)
				return ev.error().context("source");
			// Nothing from the source for a while: a dead destination shows up as a failed
			// migration soon, but check both processes so neither can make us wait.
			FERRY_TRY(pair.checkAlive());
			continue;
		}
		if (ev->name == "STOP") {
			stopEvent = *ev;
		} else if (ev->name == "MIGRATION_PASS") {
			auto pass = ev->dataInt("pass");
			if (postcopy && !rec.postcopyStarted && pass && pass.value() >= cfg.postcopyAfterPass) {
				FERRY_TRY_CTX(src.migrateStartPostcopy(), "pass {}", pass.value());
				rec.postcopyStarted = true;
				rec.postcopyStartMs = msSince(t0);
			}
		} else {
			FERRY_ASSIGN(status, ev->dataString("status"));
			FERRY_LOG(Debug, "scenario", "[{}] source migration status {} at {:.1f} ms", rec.mode,
				  status, msSince(t0));
			if (status == "completed" || status == "failed" || status == "cancelled")
				break;
		}
	}

	if (rec.timedOut) {
		// A migration that does not converge in time is cancelled; the source keeps running.
		FERRY_TRY_CTX(src.migrateCancel(), "cancel after {} ms", cfg.migrationTimeout.count());
		auto done = Clock::now() + 10s;
		while (status != "cancelled" && status != "failed" && status != "completed") {
			auto left = std::chrono::ceil<std::chrono::milliseconds>(done - Clock::now());
			if (left.count() <= 0)
				return Error::format(ETIMEDOUT, "migration still '{}' 10 s after migrate_cancel", status);
			auto ev = src.waitEvent("MIGRATION", left);
			if (!ev)
				return ev.error().context("waiting for cancellation");
			FERRY_ASSIGN(status, ev->dataString("status"));
		}
	} else {
		rec.wallMs = msSince(t0);
	}

	FERRY_ASSIGN(MigrationInfo info, src.queryMigrate().context("source"));
	// QEMU 7.2 emits the "completed" event before its migration thread stores total-time and
	// downtime (migration_calculate_complete), so a query right after the event can read 0.
	// There is no event for "statistics final"; re-query briefly until they are set.
	for (int i = 0; status == "completed" && i < 100 && info.totalTimeMs.value_or(0) == 0; i++) {
		std::this_thread::sleep_for(10ms);
		FERRY_ASSIGN(info, src.queryMigrate().context("source"));
	}
	fillFromInfo(rec, info);
	rec.finalStatus = status;
	rec.completed = status == "completed";
	rec.cancelled = status == "cancelled";
	if (status == "failed")
		return Error::format(EIO, "migration failed: {}", info.errorDesc.value_or("(no error-desc)"));
	if (!rec.completed)
		return okStatus(); // timed out and cancelled: recorded, the guest stays on the source

	rec.guestRunsOn = "destination";
	// The destination resumes on its own (autostart) once the device state is loaded.
	auto resume = dst.waitEvent("RESUME", 30s);
	if (!resume)
		return resume.error().context("destination did not resume");
	if (stopEvent)
		rec.eventDowntimeMs = static_cast<double>(resume->timestampUs() - stopEvent->timestampUs()) / 1000.0;
	return okStatus();
}

void addStockModes(ScenarioRunner &runner)
{
	runner.addMode("stock-precopy", [](VmPair &p, const ScenarioConfig &c, MigrationRecord &r) {
		return runStockMigration(p, c, r, false);
	});
	runner.addMode("stock-postcopy", [](VmPair &p, const ScenarioConfig &c, MigrationRecord &r) {
		return runStockMigration(p, c, r, true);
	});
}

// ---------------------------------------------------------------------------------------------
// ScenarioRunner

void ScenarioRunner::addMode(std::string name, ModeFn fn)
{
	modes_[std::move(name)] = std::move(fn);
}

std::vector<std::string> ScenarioRunner::modeNames() const
{
	std::vector<std::string> names;
	for (const auto &[n, f] : modes_)
		names.push_back(n);
	return names;
}

namespace {

// Guest check after the mode ran: new heartbeats where the guest should run, no error lines.
void checkGuest(VmPair &pair, const ScenarioConfig &cfg, MigrationRecord &rec)
{
	(void)pair.sourceConsole().poll();
	if (auto hb = pair.sourceConsole().lastHeartbeat())
		rec.lastSourceSeq = hb->seq;

	ConsoleWatcher &console = rec.guestRunsOn == "destination" ? pair.destConsole() : pair.sourceConsole();
	QemuProcess &qemu = rec.guestRunsOn == "destination" ? pair.dest() : pair.source();
	uint64_t from = rec.lastSourceSeq.value_or(0);
	if (rec.guestRunsOn == "source")
		from = console.lastHeartbeat() ? console.lastHeartbeat()->seq : 0;
	uint64_t want = from + static_cast<uint64_t>(std::max(cfg.heartbeatsAfter, 1));

	const auto deadline = Clock::now() + cfg.aliveTimeout;
	for (;;) {
		auto hb = console.waitHeartbeat(250ms, want);
		if (rec.guestRunsOn == "destination" && console.firstHeartbeat())
			rec.firstDestSeq = console.firstHeartbeat()->seq;
		if (hb) {
			rec.guestAlive = true;
			break;
		}
		if (qemu.exited()) {
			if (!rec.error)
				rec.error = fmt::format("{} QEMU {} after migration", rec.guestRunsOn, qemu.describeExit());
			break;
		}
		if (Clock::now() >= deadline) {
			if (!rec.error)
				rec.error = fmt::format("guest not alive on the {}: {}", rec.guestRunsOn,
							hb.error().message());
			break;
		}
	}

	// A guest that crashed and rebooted (panic=-1) on the destination also heartbeats, but its
	// sequence starts again from 0: that is a lost guest, not a live one.
	if (rec.guestRunsOn == "destination" && rec.firstDestSeq && rec.lastSourceSeq &&
	    *rec.firstDestSeq < *rec.lastSourceSeq) {
		rec.guestAlive = false;
		if (!rec.error)
			rec.error = fmt::format("guest restarted on the destination (heartbeat seq {} after {} on the source)",
						*rec.firstDestSeq, *rec.lastSourceSeq);
	}

	for (ConsoleWatcher *c : {&pair.sourceConsole(), &pair.destConsole()}) {
		(void)c->poll();
		rec.verifyErrorLines += c->errorLineCount();
		for (const auto &l : c->errorLines())
			if (rec.errorLines.size() < 8)
				rec.errorLines.push_back(l);
	}
	if (auto hb = console.lastHeartbeat(); hb && hb->errors >= 0)
		rec.guestErrorCount = hb->errors;
	rec.verifyOk = rec.guestAlive && rec.verifyErrorLines == 0 && rec.guestErrorCount.value_or(0) == 0;
}

} // namespace

MigrationRecord ScenarioRunner::run(const ScenarioConfig &cfg, int runIndex)
{
	MigrationRecord rec;
	rec.mode = cfg.mode;
	rec.run = runIndex;
	rec.config = cfg;
	rec.config.afterMigrateStarted = nullptr;

	auto it = modes_.find(cfg.mode);
	if (it == modes_.end()) {
		rec.error = fmt::format("unknown mode '{}'", cfg.mode);
		return rec;
	}

	std::string runDir = cfg.runDir;
	bool ownDir = false;
	if (runDir.empty()) {
		auto d = makeRunDir("ferry-vm");
		if (!d) {
			rec.error = d.error().message();
			return rec;
		}
		runDir = d.value();
		ownDir = true;
	}
	rec.runDir = runDir;

	{
		auto pair = VmPair::start(cfg, runDir, &rec);
		if (!pair) {
			rec.error = pair.error().context("start VMs").message();
		} else {
			VmPair &p = *pair.value();
			ProcessUsageSampler sampler;
			Status s = it->second(p, cfg, rec);
			rec.benchUsage = sampler.stop();
			if (!s)
				rec.error = s.error().context(cfg.mode).message();
			if (p.link())
				rec.linkBytesRelayed = p.link()->bytesRelayed();
			checkGuest(p, cfg, rec);
		}
		// The pair (and its QEMUs) is gone before the run directory is removed.
	}
	if (ownDir && !cfg.keepRunDir && rec.success())
		removeRunDir(runDir);
	else if (ownDir && !cfg.keepRunDir && !rec.success())
		FERRY_LOG(Info, "scenario", "[{} run {}] kept {} for inspection", cfg.mode, runIndex, runDir);
	return rec;
}

} // namespace ferry
