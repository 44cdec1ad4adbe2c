// SPDX-License-Identifier: GPL-2.0-or-later
#include "daemon/ferry_mode.h"

#include <atomic>
#include <chrono>
#include <thread>

#include "ferry/base/log.h"
#include "ferry/qmp/qmp_client.h"
#include "ferry/wire/daemon_protocol.h"
#include "ferry/wire/endpoint.h"
#include "vm/agent_client.h"
#include "vm/vm_migration.h"

namespace ferry::daemon {

namespace {

constexpr const char *kLog = "ferryd";
constexpr auto kQmpTimeout = std::chrono::seconds(3); // the domain runs: its socket is there
// From the gate's opening to QEMU's STOP: libvirt connects, issues getfd and migrate, QEMU
// stops the guest within milliseconds of it (FINDINGS §5).
constexpr auto kStopTimeout = std::chrono::seconds(30);
// Guests write 4 KiB pages at random: small chunks re-send less (as `ferry migrate`).
constexpr uint32_t kChunkSize = 16 * 1024;
// From the hold's release to the destination QEMU's incoming migration ending: the relay
// connects, QEMU reads ~0.3 MB of device state (milliseconds; FINDINGS §5).
constexpr auto kIncomingLoadTimeout = std::chrono::seconds(60);
// From the hold's release to libvirt's `cont` on the destination: the device state loads,
// then libvirt's Finish step (milliseconds; docs/benchmarks.md section 15).
constexpr auto kResumeWait = std::chrono::seconds(10);

// libvirt restores only the capabilities it knows: ferry's must be cleared by ferry.
void clearIgnoreShared(QmpClient &qmp, const std::string &domain, const char *side)
{
	if (auto st = qmp.migrateSetCapabilities({{"x-ignore-shared", false}}); !st.ok())
		FERRY_LOG(Warn, kLog, "domain {}: cannot clear x-ignore-shared on the {} QEMU: {}", domain, side,
			  st.error().message());
}

// The destination QEMU compares its x-ignore-shared with the source's when the stream's
// configuration section arrives, so the capability may be cleared only once the stream has
// loaded: cleared as soon as the pull ended, which in precopy mode is the moment the hold is
// released, it failed one migration in five ("Capability x-ignore-shared is off, but received
// capability is on"). Waits for the incoming migration to end, however it ends (a QEMU that
// libvirt ended meanwhile ends the wait too).
void waitForTheIncomingStream(QmpClient &qmp, const std::string &domain)
{
	const auto deadline = std::chrono::steady_clock::now() + kIncomingLoadTimeout;
	for (;;) {
		auto info = qmp.queryMigrate();
		if (!info.ok())
			return;
		if (info->status == "completed" || info->status == "failed" || info->status == "cancelled")
			return;
		if (std::chrono::steady_clock::now() > deadline) {
			FERRY_LOG(Warn, kLog, "domain {}: the incoming device state did not load within {} s (status "
					      "'{}'); clearing x-ignore-shared all the same", domain,
				  std::chrono::duration_cast<std::chrono::seconds>(kIncomingLoadTimeout).count(),
				  info->status);
			return;
		}
		std::this_thread::sleep_for(std::chrono::milliseconds(5));
	}
}

} // namespace

DeviceStateHold::Outcome DeviceStateHold::wait(std::chrono::milliseconds timeout)
{
	std::unique_lock lock(mu_);
	cv_.wait_for(lock, timeout, [&] { return outcome_ != Outcome::Waiting; });
	return outcome_;
}

void DeviceStateHold::settle(Outcome o)
{
	std::lock_guard lock(mu_);
	if (outcome_ == Outcome::Waiting)
		outcome_ = o;
	cv_.notify_all();
}

Status runFerrySource(const DaemonConfig &config, const PeerCredentials &creds, Connection conn,
		      const std::string &peer, const std::string &domain, const FerrySocketPaths &paths,
		      GateControl gate)
{
	std::atomic<bool> gateOpened{false};
	std::optional<QmpClient> qmp;
	auto setUp = [&]() -> Result<std::pair<std::unique_ptr<VmSeeder>, Listener>> {
		FERRY_ASSIGN(QmpClient client, QmpClient::connect(paths.qmp, kQmpTimeout).context("source QMP"));
		qmp.emplace(std::move(client));
		pid_t pid;
		{
			FERRY_ASSIGN(AgentClient agent, AgentClient::connect(paths.agent, std::chrono::seconds(5))
							       .context("source agent"));
			FERRY_ASSIGN(pid, agent.ping().context("source agent"));
		}
		QmpClient *q = &*qmp;
		SeederHooks hooks;
		hooks.suspend = [q, &gate, &gateOpened, &domain]() -> Status {
			// libvirt takes it from here: its migrate stops the guest.
			gateOpened = true;
			gate.open();
			FERRY_ASSIGN(QmpEvent ev, q->waitEvent("STOP", kStopTimeout)
							  .context("wait for libvirt's migration to stop the guest"));
			(void)ev;
			FERRY_LOG(Info, kLog, "domain {}: stopped by libvirt's migration", domain);
			return {};
		};
		// Before the switch-over libvirt resumes the guest itself when its migration fails;
		// resuming it here too is harmless (cont on a running guest does nothing).
		hooks.resume = [q] { return q->cont().context("resume source VM"); };
		hooks.release = [] {}; // libvirt ends the source QEMU
		SeederOptions so;
		so.name = fmt::format("ferryd {} seeder", domain);
		so.chunkSize = kChunkSize;
		so.tls = creds.server;
		FERRY_ASSIGN(auto seeder, VmSeeder::createWithHooks({q, paths.agent}, pid, std::move(hooks), std::move(so)));
		std::string host = config.listen.kind == Endpoint::Kind::Tcp ? config.listen.host : "";
		FERRY_ASSIGN(Listener l, Listener::listen(Endpoint::tcp(host, 0)).context("seeder listener"));
		return std::make_pair(std::move(seeder), std::move(l));
	};
	auto ready = setUp();
	if (!ready.ok()) {
		(void)conn.sendError(0, ready.error());
		if (qmp)
			clearIgnoreShared(*qmp, domain, "source");
		gate.fail();
		return ready.error().context(fmt::format("domain {}: ferry mode", domain));
	}
	auto &[seeder, listener] = *ready;
	FERRY_TRY(conn.send(MsgType::FerryAccept, 0, encode(FerryAcceptMsg{listener.boundEndpoint().port})));
	conn.shutdown();
	FERRY_LOG(Info, kLog, "domain {}: ferry mode: serving its RAM to {} on {}", domain, peer,
		  listener.boundEndpoint().str());
	gate.serving(&seeder->seeder());
	Status st = seeder->serve(listener);
	gate.serving(nullptr);
	if (!st.ok() && !gateOpened) {
		clearIgnoreShared(*qmp, domain, "source");
		gate.fail();
	}
	return st;
}

Result<LeecherReport> runFerryDestination(const DaemonConfig &config, const PeerCredentials &creds,
					  const std::string &domain, const std::string &uuid,
					  const FerrySocketPaths &paths, DeviceStateHold &hold, std::string *peerOut)
{
	// Which peer runs the domain: the one that accepts the offer.
	const PeerConfig *source = nullptr;
	uint16_t port = 0;
	for (const PeerConfig &p : config.peers) {
		auto f = askPeer(config, p, creds, MsgType::FerryOffer, RelayOpenMsg{domain, uuid});
		if (!f.ok()) {
			FERRY_LOG(Warn, kLog, "domain {}: cannot offer ferry mode to {}: {}", domain, p.name,
				  f.error().message());
			continue;
		}
		if (f->header.type == MsgType::FerryAccept) {
			auto a = decodeFerryAccept(f->payload);
			if (a.ok()) {
				source = &p;
				port = a->port;
				break;
			}
		} else if (f->header.type == MsgType::Error) {
			Error e = peerError(f->payload);
			if (e.code() != ENOENT)
				FERRY_LOG(Warn, kLog, "domain {}: {} refused ferry mode: {}", domain, p.name, e.message());
		}
	}
	if (!source) {
		// No peer serves it in ferry mode: the stream (if any comes) passes as in stream mode.
		hold.release();
		return Error::format(ENOENT, "no peer runs {} in ferry mode; its stream passes as in stream mode", domain);
	}
	*peerOut = source->name;
	FERRY_LOG(Info, kLog, "domain {}: ferry mode ({}) from {}: pulling its RAM from port {}", domain,
		  config.ferryMode, source->name, port);

	auto body = [&]() -> Result<LeecherReport> {
		FERRY_ASSIGN(QmpClient qmp, QmpClient::connect(paths.qmp, kQmpTimeout).context("destination QMP"));
		LeecherOptions lo;
		lo.name = fmt::format("ferryd {} leecher", domain);
		lo.seeder = Endpoint::tcp(source->address.host, port);
		if (!parseMigrationMode(config.ferryMode, &lo.mode))
			return Error::format(EINVAL, "ferry_mode '{}'", config.ferryMode);
		lo.depth = 256;
		lo.finalizePolicy = config.finalizePolicy;
	// libvirt's own migration is the handover here, and decides rollback itself: ferry's
	// SwitchOver round trip stays (it costs a LAN round trip, and keeps the tested behaviour).
	lo.switchOverAtFinalize = false;
		lo.tls = creds.client;
		VmReceiveOptions ro;
		ro.configure = true;
		ro.resume = [&hold, &domain, &qmp]() -> Status {
			FERRY_LOG(Info, kLog, "domain {}: device state may load now", domain);
			hold.release();
			// Until libvirt resumes the guest only faults are pulled (the device state has
			// the link and the CPUs); a migration libvirt abandons here just lets the
			// background pull start a little later.
			auto resumed = qmp.waitEvent("RESUME", kResumeWait);
			if (!resumed.ok())
				FERRY_LOG(Warn, kLog, "domain {}: no RESUME from the incoming QEMU within {} s: {}", domain,
					  kResumeWait.count(), resumed.error().message());
			return {};
		};
		auto rep = receiveVm({&qmp, paths.agent}, std::move(lo), ro);
		if (rep.ok())
			waitForTheIncomingStream(qmp, domain);
		clearIgnoreShared(qmp, domain, "destination");
		return rep;
	};
	auto rep = body();
	if (!rep.ok())
		hold.cancel();
	return rep;
}

} // namespace ferry::daemon
