// SPDX-License-Identifier: GPL-2.0-or-later
#include "harness/vm_modes.h"

#include <atomic>
#include <future>
#include <unistd.h>

#include "ferry/base/log.h"
#include "harness/process_usage.h"
#include "ferry/link/link_emulator.h"
#include "vm/vm_migration.h"

namespace ferry {

bool isFerryMode(const std::string &mode)
{
	return mode == "ferry-hybrid" || mode == "ferry-hybrid-acked" || mode == "ferry-precopy";
}

ScenarioConfig prepareFerryConfig(ScenarioConfig cfg)
{
	static std::atomic<int> counter{0};
	int n = counter++;
	std::string base = fmt::format("/tmp/ferry-agent-{}-{}", ::getpid(), n);
	cfg.ram = RamBackend::Memfd;
	cfg.sourceEnv.push_back({"LD_PRELOAD", agentLibraryPath()});
	cfg.sourceEnv.push_back({"FERRY_AGENT_SOCKET", base + "-src.sock"});
	cfg.destEnv.push_back({"LD_PRELOAD", agentLibraryPath()});
	cfg.destEnv.push_back({"FERRY_AGENT_SOCKET", base + "-dst.sock"});
	cfg.destArgs.push_back("-S"); // paused after the device-state load; ferry resumes it
	return cfg;
}

namespace {

std::string envValue(const std::vector<std::pair<std::string, std::string>> &env, const char *key)
{
	for (auto &[k, v] : env)
		if (k == key)
			return v;
	return {};
}

Status runFerryVm(VmPair &pair, const ScenarioConfig &cfg, MigrationRecord &rec, MigrationMode mode,
		  const FerryVmParams &params, bool switchOverAtFinalize = true)
{
	std::string srcAgent = envValue(cfg.sourceEnv, "FERRY_AGENT_SOCKET");
	std::string dstAgent = envValue(cfg.destEnv, "FERRY_AGENT_SOCKET");
	if (srcAgent.empty() || dstAgent.empty())
		return Error(EINVAL, "ferry modes need prepareFerryConfig() (agent shim not configured)");

	FERRY_TRY_CTX(configureFerryCapabilities(pair.destQmp()), "destination QEMU");
	FERRY_ASSIGN(std::string deviceUri, pair.listenIncoming(cfg));

	SeederOptions so;
	so.name = "seeder";
	so.chunkSize = params.chunkKib * 1024;
	so.compression = params.compression;
	// Thread names tell ferry's threads from the harness's (ProcessUsage): every thread a role
	// starts inherits the name of the thread that started it.
	std::optional<ScopedThreadName> seederName(std::in_place, "ferry-seeder");
	FERRY_ASSIGN(auto seeder, VmSeeder::create({&pair.sourceQmp(), srcAgent}, pair.source().pid(), deviceUri, so));
	seederName.reset();
	FERRY_ASSIGN(Listener listener, Listener::listen(Endpoint::tcp("127.0.0.1", 0)));
	Endpoint target = listener.boundEndpoint();
	std::unique_ptr<LinkEmulator> link;
	if (cfg.linkRttMs > 0 || cfg.linkMbit > 0) {
		// ferry's own connections cross the same emulated link as QEMU's stream.
		ScopedThreadName name("link-ferry");
		FERRY_ASSIGN(link, LinkEmulator::start(Endpoint::tcp("127.0.0.1", 0), target,
						       LinkParams::symmetric(std::chrono::microseconds(int64_t(cfg.linkRttMs * 1000)),
									     cfg.linkMbit)));
		target = link->endpoint();
	}
	pair.sourceQmp().drainEvents();
	pair.destQmp().drainEvents();
	auto served = std::async(std::launch::async, [&] {
		ScopedThreadName name("ferry-seeder");
		return seeder->serve(listener);
	});

	LeecherOptions lo;
	lo.name = "leecher";
	lo.seeder = target;
	lo.mode = mode;
	lo.connections = params.connections;
	lo.depth = params.depth;
	lo.finalizePolicy = params.finalize;
	lo.policy.deadlineSec = params.deadlineSec;
	lo.verify = params.verify;
	lo.compression = params.compression.enabled();
	lo.reconnectTimeout = params.reconnectTimeout;
	lo.switchOverAtFinalize = switchOverAtFinalize;
	lo.onProgress = [&pair, l = link.get(), &params](const LeecherProgress &p) {
		FERRY_LOG(Debug, "leecher", "{:6.2f}s {:<10} pull {:5.1f} MB/s dirty {:6.1f} MB/s, {} local {} stale {} missing, {:.1f} MiB in; {}",
			  p.elapsedSec, leecherStateName(p.state), p.pullBytesPerSec / 1e6, p.dirtyBytesPerSec / 1e6,
			  p.chunksLocal, p.chunksStale, p.chunksMissing, double(p.bytesTransferred) / (1 << 20),
			  p.policyStatus);
		if (params.inject)
			params.inject(pair, l, p);
	};
	VmReceiveOptions ro;
	ro.verify = params.verify;
	ro.configure = false;
	auto t0 = std::chrono::steady_clock::now();
	std::optional<ScopedThreadName> leecherName(std::in_place, "ferry-leecher");
	auto rep = receiveVm({&pair.destQmp(), dstAgent}, lo, ro);
	leecherName.reset();
	double wallMs = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
	if (!rep.ok())
		seeder->stop(); // before the switch-over this resumes the source
	Status sst = served.get();
	if (!rep.ok())
		return rep.error();
	if (!sst.ok())
		FERRY_LOG(Warn, "vm", "seeder: {}", sst.error().message());

	rec.completed = rep->completed;
	rec.finalStatus = "completed";
	rec.guestRunsOn = "destination";
	rec.wallMs = wallMs;
	rec.totalTimeMs = int64_t(rep->precopyMs + rep->downtimeMs + rep->postcopyMs);
	rec.downtimeMs = int64_t(rep->downtimeMs);
	rec.passes = rep->rounds;
	auto qinfo = pair.sourceQmp().queryMigrate();
	int64_t qemuBytes = qinfo.ok() ? qinfo->ramTransferred.value_or(0) : 0;
	rec.bytesTransferred = int64_t(rep->bytesTransferred) + qemuBytes;
	rec.ferryReport = *rep;
	// The same downtime figure as the stock modes: source STOP to destination RESUME.
	std::optional<QmpEvent> stop;
	for (auto &e : pair.sourceQmp().drainEvents())
		if (e.name == "STOP")
			stop = e;
	auto resume = pair.destQmp().waitEvent("RESUME", std::chrono::seconds(10));
	if (stop && resume.ok())
		rec.eventDowntimeMs = double(resume->timestampUs() - stop->timestampUs()) / 1000.0;
	if (rep->verified.has_value() && !*rep->verified)
		return Error(EIO, "guest RAM on the destination differs from the source");
	return {};
}

} // namespace

void addFerryModes(ScenarioRunner &runner, FerryVmParams params)
{
	runner.addMode("ferry-hybrid", [params](VmPair &p, const ScenarioConfig &c, MigrationRecord &r) {
		return runFerryVm(p, c, r, MigrationMode::Hybrid, params);
	});
	// The two-round-trip handover (Finalize, then SwitchOver), for comparison.
	runner.addMode("ferry-hybrid-acked", [params](VmPair &p, const ScenarioConfig &c, MigrationRecord &r) {
		return runFerryVm(p, c, r, MigrationMode::Hybrid, params, false);
	});
	runner.addMode("ferry-precopy", [params](VmPair &p, const ScenarioConfig &c, MigrationRecord &r) {
		return runFerryVm(p, c, r, MigrationMode::PreCopy, params);
	});
}

} // namespace ferry
