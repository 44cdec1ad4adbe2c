// SPDX-License-Identifier: GPL-2.0-or-later
// The daemon's ferry-mode half (ferry_mode.h has the sequence): the gates of prepared domains'
// migrate sockets, the destination's trigger (inotify on the incoming directory), the source's
// answer to a FerryOffer, and `ferry abort`.
#include "daemon/daemon.h"

#include <sys/inotify.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "ferry/base/clock.h"
#include "ferry/base/log.h"
#include "ferry/qmp/qmp_client.h"
#include "ferry/wire/daemon_protocol.h"
#include "vm/agent_client.h"

namespace ferry::daemon {

namespace {

constexpr const char *kLog = "ferryd";

// The state of one of QEMU's migration capabilities.
Result<bool> migrationCapability(QmpClient &qmp, std::string_view name)
{
	FERRY_ASSIGN(JsonValue caps, qmp.execute("query-migrate-capabilities"));
	for (size_t i = 0; i < caps.size(); i++) {
		auto c = caps.at(i);
		if (c.ok() && c->getString("capability").ok() && *c->getString("capability") == name)
			return c->getBool("state").ok() && *c->getBool("state");
	}
	return false;
}

// libvirt's --postcopy turns on postcopy-ram on both QEMUs before the incoming socket appears;
// QEMU refuses x-ignore-shared with it ("Postcopy is not compatible with ignore-shared").
Result<bool> postcopyRequested(const std::string &qmpSocket)
{
	FERRY_ASSIGN(QmpClient qmp, QmpClient::connect(qmpSocket, std::chrono::seconds(3)));
	return migrationCapability(qmp, "postcopy-ram");
}

// Whether libvirt's outgoing migration of the domain waits to connect: libvirt 9.0 turns on
// pause-before-switchover on the source QEMU before it connects to the migrate URI (and
// restores it when its migration ends, whichever way), and QEMU's own migration starts only
// once libvirt has connected. (A migration that does not go through ferryd, to a plain TCP
// URI, shows QEMU migrating.)
Result<bool> libvirtWaitsToConnect(const std::string &qmpSocket)
{
	// Short: a running QEMU's socket is there, and a busy one is looked at again next round.
	FERRY_ASSIGN(QmpClient qmp, QmpClient::connect(qmpSocket, std::chrono::milliseconds(500)));
	FERRY_ASSIGN(bool begun, migrationCapability(qmp, "pause-before-switchover"));
	if (!begun)
		return false;
	FERRY_ASSIGN(JsonValue info, qmp.execute("query-migrate"));
	auto status = info.getString("status");
	static const std::set<std::string> notMigrating{"none", "completed", "failed", "cancelled"};
	return !status.ok() || notMigrating.count(*status) > 0;
}

constexpr auto kGateWatchInterval = std::chrono::seconds(2);

} // namespace

std::optional<LocalDomain> Daemon::snapshotDomain(const std::string &name) const
{
	std::lock_guard lock(mu_);
	auto it = domainSnapshot_.find(name);
	if (it == domainSnapshot_.end())
		return std::nullopt;
	return it->second;
}

std::optional<LocalDomain> Daemon::ferryDomain(Connection &conn, const RelayOpenMsg &about) const
{
	auto d = snapshotDomain(about.domain);
	if (!d || (!about.uuid.empty() && d->uuid != about.uuid) || !d->preparedForFerry || config_.ferryMode == "off") {
		(void)conn.sendError(0, Error::format(ENOENT, "{} does not run here in ferry mode", about.domain));
		return std::nullopt;
	}
	return d;
}

void Daemon::serveFerryOffer(Connection conn, const PeerConfig &peer, const RelayOpenMsg &offer)
{
	auto d = ferryDomain(conn, offer);
	if (!d)
		return;
	auto m = record(Direction::Outgoing, offer.domain, peer.name);
	{
		std::lock_guard lock(mu_);
		m->mode = "ferry";
		m->state = "pre-copy";
	}
	std::string key = peer.name + "/" + offer.domain;
	GateControl gate{[this, key] { requestGate(key, GateRequest::Action::Open); },
			 [this, key] { requestGate(key, GateRequest::Action::Fail); },
			 [this, domain = offer.domain](Seeder *s) {
				 std::lock_guard lock(mu_);
				 if (s)
					 seeders_[domain] = s;
				 else
					 seeders_.erase(domain);
			 }};
	Status st = runFerrySource(config_, creds_, std::move(conn), peer.name, offer.domain,
				   FerrySocketPaths{d->qmpSocket, d->agentSocket}, std::move(gate));
	finish(m, st);
	if (st.ok())
		FERRY_LOG(Info, kLog, "domain {}: ferry migration to {} complete: the destination holds every chunk",
			  offer.domain, peer.name);
	else
		FERRY_LOG(Error, kLog, "domain {}: ferry migration to {} failed: {}", offer.domain, peer.name,
			  st.error().message());
}

void Daemon::serveFerryDecline(Connection conn, const PeerConfig &peer, const RelayOpenMsg &decline)
{
	if (!ferryDomain(conn, decline))
		return;
	// Only the gate towards the caller: a peer can let through a stream to itself, no other.
	std::string key = peer.name + "/" + decline.domain;
	{
		std::lock_guard lock(mu_);
		declined_.insert(key);
	}
	requestGate(key, GateRequest::Action::Open);
	FERRY_LOG(Warn, kLog, "domain {}: {} declined ferry mode (its log says why): the stream passes as in stream mode",
		  decline.domain, peer.name);
	(void)conn.send(MsgType::RelayReady, 0, {});
}

void Daemon::declineFerry(const std::string &domain, const std::string &uuid, const std::string &why)
{
	FERRY_LOG(Warn, kLog, "domain {}: not in ferry mode: {}; its stream passes as in stream mode", domain, why);
	for (const PeerConfig &p : config_.peers) {
		auto f = askPeer(config_, p, creds_, MsgType::FerryDecline, RelayOpenMsg{domain, uuid});
		if (!f.ok())
			FERRY_LOG(Warn, kLog, "domain {}: cannot tell {} to let the stream through: {}", domain, p.name,
				  f.error().message());
		else if (f->header.type == MsgType::RelayReady)
			return; // the peer that runs it opened its gate
	}
	FERRY_LOG(Warn, kLog, "domain {}: no peer runs it in ferry mode; a stream that comes passes as in stream mode",
		  domain);
}

void Daemon::watchIncoming()
{
	alignas(inotify_event) char buf[4096];
	for (;;) {
		ssize_t n = ::read(incomingWatch_.get(), buf, sizeof(buf));
		if (n <= 0)
			return;
		for (char *p = buf; p < buf + n;) {
			auto *ev = reinterpret_cast<inotify_event *>(p);
			p += sizeof(inotify_event) + ev->len;
			std::string_view file = ev->len ? std::string_view(ev->name) : std::string_view();
			if (!file.ends_with(".sock"))
				continue;
			std::string domain(file.substr(0, file.size() - 5));
			if (!checkPathName("domain name", domain, kMaxDomainNameLen).ok())
				continue;
			spawn([this, domain] { ferryIncoming(domain); });
		}
	}
}

void Daemon::ferryIncoming(std::string domain)
{
	// The incoming domain runs here now (paused): is it prepared? The loop's next resync
	// (asked for now) lists it.
	domainsChanged();
	std::optional<LocalDomain> d;
	for (int i = 0; i < 100 && !stopping_; i++) {
		if ((d = snapshotDomain(domain)))
			break;
		std::this_thread::sleep_for(std::chrono::milliseconds(50));
	}
	if (!d) {
		FERRY_LOG(Warn, kLog, "domain {}: an incoming migration socket appeared, but libvirt lists no such "
				      "running domain here: stream mode", domain);
		return;
	}
	if (!d->preparedForFerry)
		return; // stream mode
	// The source's ferryd holds libvirt's connection at its gate for a prepared domain: a
	// destination that will not run ferry mode must say so, or libvirt waits there.
	if (config_.ferryMode == "off") {
		declineFerry(domain, d->uuid, "\"ferry_mode\" is off here");
		return;
	}
	if (auto postcopy = postcopyRequested(d->qmpSocket); !postcopy.ok() || *postcopy) {
		declineFerry(domain, d->uuid,
			     postcopy.ok() ? "libvirt asked for QEMU's post-copy (--postcopy), which QEMU cannot combine "
					     "with x-ignore-shared; migrate without --postcopy for ferry mode"
					   : "cannot read the incoming QEMU's migration capabilities: " +
						     postcopy.error().message());
		return;
	}
	// Hybrid mode serves post-copy faults through a userfaultfd made in the incoming QEMU:
	// if its user may not have one that sees the kernel's accesses, say so now, while the
	// stream can still pass as in stream mode, not after the switch-over's pause.
	if (config_.ferryMode == "hybrid") {
		auto agent = AgentClient::connect(d->agentSocket, std::chrono::seconds(5));
		Status probe = agent.ok() ? agent->probePostCopy() : Status(agent.error());
		if (!probe.ok()) {
			declineFerry(domain, d->uuid,
				     "the incoming QEMU cannot serve ferry's post-copy (" + probe.error().message() +
					     "); or set \"ferry_mode\": \"precopy\" here, which needs no userfaultfd on "
					     "this side");
			return;
		}
	}
	auto hold = std::make_shared<DeviceStateHold>();
	auto m = record(Direction::Incoming, domain, "?");
	{
		std::lock_guard lock(mu_);
		holds_[domain] = hold;
		m->mode = "ferry-" + config_.ferryMode;
		m->state = "pre-copy";
	}
	std::string peer;
	auto rep = runFerryDestination(config_, creds_, domain, d->uuid, FerrySocketPaths{d->qmpSocket, d->agentSocket},
				       *hold, &peer);
	{
		std::lock_guard lock(mu_);
		holds_.erase(domain);
		m->peer = peer.empty() ? "-" : peer;
	}
	finish(m, rep.ok() ? Status() : Status(rep.error()));
	if (rep.ok())
		FERRY_LOG(Info, kLog, "domain {}: ferry migration from {} complete: {}", domain, peer, rep->toJson().toString());
	else
		FERRY_LOG(Error, kLog, "domain {}: ferry migration failed: {}", domain, rep.error().message());
}

void Daemon::watchGates()
{
	std::map<std::string, int64_t> waitingSinceNs; // domain -> first seen waiting
	std::unique_lock lock(mu_);
	while (!stopping_) {
		stopped_.wait_for(lock, kGateWatchInterval, [this] { return stopping_.load(); });
		if (stopping_)
			break;
		// Prepared domains running here (not arriving: those have an incoming socket) with no
		// migration in flight: if libvirt's has begun, it waits at the gate for an offer.
		std::vector<LocalDomain> candidates;
		for (const auto &[name, d] : domainSnapshot_) {
			bool busy = std::any_of(active_.begin(), active_.end(), [&](const auto &m) { return m->domain == name; });
			if (d.preparedForFerry && config_.ferryMode != "off" && !busy &&
			    ::access(config_.migrateSocketPath(config_.name, name).c_str(), F_OK) != 0)
				candidates.push_back(d);
		}
		lock.unlock();
		std::set<std::string> waiting;
		for (const LocalDomain &d : candidates) {
			if (stopping_)
				break;
			auto waits = libvirtWaitsToConnect(d.qmpSocket);
			if (waits.ok() && *waits)
				waiting.insert(d.name);
		}
		std::erase_if(waitingSinceNs, [&](const auto &w) { return !waiting.count(w.first); });
		const int64_t now = monotonicNs();
		for (const std::string &domain : waiting) {
			int64_t since = waitingSinceNs.try_emplace(domain, now).first->second;
			if (now - since < int64_t(config_.offerWaitMs) * 1000000)
				continue;
			FERRY_LOG(Error, kLog, "domain {}: libvirt's migration has waited {:.0f} s at the gate and no peer "
					       "offered ferry mode: is ferryd running on the destination, and can it reach "
					       "this host (`ferry doctor` there)? Failing the migration; the guest keeps "
					       "running here", domain, (now - since) / 1e9);
			for (const PeerConfig &p : config_.peers)
				requestGate(p.name + "/" + domain, GateRequest::Action::Fail);
			waitingSinceNs.erase(domain);
		}
		lock.lock();
	}
}

Status Daemon::gateSocket(MigrateSocket &s)
{
	// The listener's backlog is empty: this connect completes at once and takes its one slot.
	auto dummy = connectTo(s.listener.boundEndpoint(), 1000);
	if (!dummy.ok())
		return dummy.error().context("gate: connect the dummy");
	s.dummy = dummy->releaseFd();
	s.gate = MigrateSocket::Gate::Closed;
	return {};
}

JsonValue Daemon::abort(const std::string &domain)
{
	JsonValue reply = JsonValue::object();
	bool stopped = false;
	{
		std::lock_guard lock(mu_);
		if (auto it = seeders_.find(domain); it != seeders_.end()) {
			it->second->stop();
			stopped = true;
		}
	}
	// A serving seeder fails its gate itself when it stops (once: a second failure would hit
	// the gate re-armed for the next migration). Without one, libvirt may wait at a gate
	// nobody will open: fail them all.
	size_t gates = 0;
	if (!stopped) {
		for (const PeerConfig &p : config_.peers) {
			requestGate(p.name + "/" + domain, GateRequest::Action::Fail);
			gates++;
		}
	}
	FERRY_LOG(Warn, kLog, "domain {}: aborted by the operator ({})", domain,
		  stopped ? "its ferry migration stopped" : "no ferry migration was serving");
	reply.set("ok", true).set("domain", domain).set("seeder_stopped", stopped).set("gates_failed", uint64_t(gates));
	return reply;
}

void Daemon::requestGate(const std::string &key, GateRequest::Action action)
{
	{
		std::lock_guard lock(mu_);
		gateRequests_.push_back({key, action});
	}
	uint64_t one = 1;
	(void)::write(wake_.get(), &one, sizeof(one));
}

void Daemon::applyGateRequests()
{
	std::vector<GateRequest> requests;
	{
		std::lock_guard lock(mu_);
		requests.swap(gateRequests_);
	}
	// A gate left open or failing that no connection came through (`ferry abort` with no
	// libvirt migration waiting; a FerryDecline whose migration never came) closes again
	// instead of deciding some later migration.
	const int64_t window = int64_t(config_.gateWindowMs) * 1000000;
	for (auto it = migrateSockets_.begin(); it != migrateSockets_.end();) {
		const MigrateSocket &sock = it->second;
		if (!sock.windowed() || monotonicNs() - sock.sinceNs <= window) {
			++it;
			continue;
		}
		FERRY_LOG(Warn, kLog, "gate {}: {}, but no migration came within {} s: closed again", it->first,
			  sock.gate == MigrateSocket::Gate::Open ? "opened" : "failing", config_.gateWindowMs / 1000.0);
		if (sock.gate == MigrateSocket::Gate::Open) {
			std::lock_guard lock(mu_);
			declined_.erase(it->first);
		}
		it = migrateSockets_.erase(it);
		resyncWanted_ = true;
	}
	for (const GateRequest &r : requests) {
		auto it = migrateSockets_.find(r.key);
		if (it == migrateSockets_.end())
			continue;
		MigrateSocket &sock = it->second;
		if (sock.gate != MigrateSocket::Gate::Closed)
			continue;
		// Our dummy is first in the queue: taking it lets libvirtd's connect() complete.
		(void)sock.listener.accept(0);
		sock.dummy.reset();
		sock.gate = r.action == GateRequest::Action::Open ? MigrateSocket::Gate::Open : MigrateSocket::Gate::FailNext;
		sock.sinceNs = monotonicNs();
		FERRY_LOG(Info, kLog, "gate {}: {}", r.key, r.action == GateRequest::Action::Open ? "open" : "failing");
	}
}

} // namespace ferry::daemon
