// SPDX-License-Identifier: GPL-2.0-or-later
#include "daemon/daemon.h"

#include <poll.h>
#include <pwd.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "ferry/base/clock.h"
#include "ferry/base/log.h"

namespace ferry::daemon {

namespace {

constexpr const char *kLog = "ferryd";
// How long the destination waits for the incoming QEMU's socket: libvirt's Prepare step
// starts that QEMU before the source's Perform step connects, so it is normally there.
constexpr int kIncomingSocketWaitMs = 5000;
constexpr size_t kMaxHandshakesPerAddress = 8;

Status makeDir(const std::string &path, mode_t mode)
{
	if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST)
		return Error::fromErrno(fmt::format("mkdir {}", path));
	struct stat st;
	if (::stat(path.c_str(), &st) != 0)
		return Error::fromErrno(fmt::format("stat {}", path));
	if (!S_ISDIR(st.st_mode))
		return Error::format(ENOTDIR, "{} exists and is not a directory", path);
	return {};
}

// Connects to the incoming QEMU's UNIX socket, waiting briefly for it to appear.
Result<UniqueFd> connectIncoming(const std::string &path)
{
	int64_t deadline = monotonicNs() + int64_t(kIncomingSocketWaitMs) * 1000000;
	for (;;) {
		auto conn = connectTo(Endpoint::unixPath(path), kIncomingSocketWaitMs);
		if (conn.ok())
			return conn->releaseFd();
		int err = conn.error().code();
		if ((err != ENOENT && err != ECONNREFUSED) || monotonicNs() > deadline)
			return conn.error().context("is an incoming migration waiting there?");
		std::this_thread::sleep_for(std::chrono::milliseconds(50));
	}
}

} // namespace

Daemon::Daemon(DaemonConfig config, PeerCredentials creds, DomainLister lister)
	: config_(std::move(config)), creds_(std::move(creds)), lister_(std::move(lister))
{
}

Daemon::~Daemon()
{
	stop();
	reapWorkers(false);
	// Workers still running (see run()) are left to the process's exit: the caller must not
	// destroy a daemon with runningWorkers() > 0 and go on (ferryd exits at once).
	for (Worker &w : workers_)
		w.thread.detach();
}

Result<std::unique_ptr<Daemon>> Daemon::create(DaemonConfig config, PeerCredentials creds, DomainLister lister)
{
	std::unique_ptr<Daemon> d(new Daemon(std::move(config), std::move(creds), std::move(lister)));
	d->wake_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	if (!d->wake_.valid())
		return Error::fromErrno("eventfd");
	FERRY_TRY(d->prepareSocketDir());
	FERRY_ASSIGN(d->peerListener_, Listener::listen(d->config_.listen).context("peer listener"));
	// A relay's far end is QEMU loading the stream, slower than the link: large fixed buffers
	// would fill in front of it and drain inside the downtime (wire/endpoint.h).
	d->peerListener_.setTcpBuffers(TcpBuffers::Autotuned);
	FERRY_ASSIGN(d->controlListener_,
		     Listener::listen(Endpoint::unixPath(d->config_.controlSocketPath())).context("control socket"));
	if (::chmod(d->config_.controlSocketPath().c_str(), 0600) != 0)
		return Error::fromErrno(fmt::format("chmod {}", d->config_.controlSocketPath()));
	// Incoming QEMUs create their sockets here: a prepared domain's starts ferry mode.
	d->incomingWatch_ = UniqueFd(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
	if (!d->incomingWatch_.valid())
		return Error::fromErrno("inotify_init1");
	std::string incoming = d->config_.migrateDir(d->config_.name);
	if (::inotify_add_watch(d->incomingWatch_.get(), incoming.c_str(), IN_CREATE) < 0)
		return Error::fromErrno(fmt::format("inotify_add_watch {}", incoming));
	return d;
}

Status Daemon::prepareSocketDir()
{
	FERRY_TRY(makeDir(config_.socketDir, 0755));
	FERRY_TRY(makeDir(config_.socketDir + "/migrate", 0755));
	for (const PeerConfig &p : config_.peers)
		FERRY_TRY(makeDir(config_.migrateDir(p.name), 0700));
	// QEMUs create sockets in two directories, which must be writable by QEMU's user: incoming
	// QEMUs their listening sockets, prepared domains' QEMUs their QMP and agent sockets (the
	// latter only QEMU's user and root may enter: those sockets control the guest).
	std::string incoming = config_.migrateDir(config_.name);
	FERRY_TRY(makeDir(incoming, 0755));
	FERRY_TRY(makeDir(config_.domainSocketDir(), 0700));
	if (!config_.qemuUser.empty()) {
		struct passwd *pw = ::getpwnam(config_.qemuUser.c_str());
		if (!pw)
			return Error::format(ENOENT, "\"qemu_user\" '{}' is not a user on this host", config_.qemuUser);
		for (const std::string &dir : {incoming, config_.domainSocketDir()})
			if (::chown(dir.c_str(), pw->pw_uid, pw->pw_gid) != 0)
				return Error::fromErrno(fmt::format("chown {} to {}", dir, config_.qemuUser));
	}
	return {};
}

void Daemon::stop()
{
	{
		std::lock_guard lock(mu_);
		stopping_ = true;
	}
	stopped_.notify_all();
	uint64_t one = 1;
	if (wake_.valid())
		(void)::write(wake_.get(), &one, sizeof(one));
}

void Daemon::domainsChanged()
{
	resyncWanted_ = true;
	uint64_t one = 1;
	(void)::write(wake_.get(), &one, sizeof(one));
}

Status Daemon::run()
{
	FERRY_LOG(Info, kLog, "'{}' listening for peers on {} ({}), control socket {}", config_.name,
		  peerListener_.boundEndpoint().str(), creds_.server ? creds_.server->describe() : "insecure: no TLS",
		  config_.controlSocketPath());
	if (!creds_.server)
		FERRY_LOG(Warn, kLog, "peer links are plaintext and unauthenticated (\"tls\": \"insecure\"): "
				      "anyone who reaches {} can inject migration streams", peerListener_.boundEndpoint().str());
	int64_t nextResync = 0;
	gateWatcher_ = std::thread([this] { watchGates(); });
	while (!stopping_) {
		applyGateRequests(); // first: a gate it removes is made again by the resync
		if (resyncWanted_.exchange(false) || monotonicNs() >= nextResync) {
			resyncDomains();
			nextResync = monotonicNs() + int64_t(kResyncIntervalMs) * 1000000;
		}
		std::vector<pollfd> fds{{wake_.get(), POLLIN, 0},
					{peerListener_.fd(), POLLIN, 0},
					{controlListener_.fd(), POLLIN, 0},
					{incomingWatch_.get(), POLLIN, 0}};
		std::vector<std::string> keys;
		for (auto &[key, sock] : migrateSockets_) {
			if (sock.gate == MigrateSocket::Gate::Closed)
				continue; // our dummy connection waits there; libvirtd's waits behind it
			fds.push_back({sock.listener.fd(), POLLIN, 0});
			keys.push_back(key);
		}
		int64_t wakeAt = nextResync;
		for (auto &[key, sock] : migrateSockets_)
			if (sock.windowed())
				wakeAt = std::min(wakeAt, sock.sinceNs + int64_t(config_.gateWindowMs) * 1000000);
		int timeout = int(std::max<int64_t>(0, (wakeAt - monotonicNs()) / 1000000)) + 1;
		int n = ::poll(fds.data(), fds.size(), timeout);
		if (n < 0 && errno != EINTR) {
			Error e = Error::fromErrno("poll");
			stop();
			gateWatcher_.join();
			return e;
		}
		if (fds[0].revents) {
			uint64_t v;
			(void)::read(wake_.get(), &v, sizeof(v));
		}
		if (fds[1].revents)
			acceptPeer();
		if (fds[2].revents)
			serveControl();
		if (fds[3].revents)
			watchIncoming();
		for (size_t i = 0; i < keys.size(); i++)
			if (fds[4 + i].revents)
				acceptMigrate(keys[i]);
		reapWorkers(false);
	}
	FERRY_LOG(Info, kLog, "stopping: {} stream(s) in flight are cut", [&] {
		std::lock_guard lock(mu_);
		return active_.size();
	}());
	{
		std::lock_guard lock(mu_);
		for (auto &m : active_) {
			if (m->relay)
				m->relay->stop();
			else if (m->handshaking)
				m->handshaking->shutdown();
		}
	}
	peerListener_.shutdown();
	gateWatcher_.join();
	migrateSockets_.clear();
	{
		std::lock_guard lock(mu_);
		for (auto &[domain, seeder] : seeders_)
			seeder->stop();
	}
	// A leecher pulling into an incoming QEMU cannot be interrupted: give the rest a few
	// seconds, then leave them to the process's exit (their peers see the connections close).
	for (int i = 0; i < 50; i++) {
		reapWorkers(false);
		if (workers_.empty())
			break;
		std::this_thread::sleep_for(std::chrono::milliseconds(100));
	}
	if (!workers_.empty())
		FERRY_LOG(Warn, kLog, "stopping with {} migration(s) still running: they end with the process",
			  workers_.size());
	return {};
}

size_t Daemon::runningWorkers() const { return workers_.size(); }

void Daemon::resyncDomains()
{
	auto listed = lister_();
	if (!listed.ok()) {
		FERRY_LOG_RATELIMITED(Warn, kLog, "cannot list running domains (migrate sockets left as they are): {}",
				      listed.error().message());
		return;
	}
	std::map<std::string, LocalDomain> now;
	for (LocalDomain &d : *listed) {
		if (auto st = checkPathName("domain name", d.name, kMaxDomainNameLen); !st.ok()) {
			if (!domains_.count(d.name))
				FERRY_LOG(Warn, kLog, "domain '{}' cannot be migrated through ferryd: {}", d.name,
					  st.error().message());
			continue;
		}
		std::string name = d.name;
		now.emplace(std::move(name), std::move(d));
	}
	for (auto it = migrateSockets_.begin(); it != migrateSockets_.end();) {
		std::string domain = it->first.substr(it->first.find('/') + 1);
		if (now.count(domain)) {
			++it;
			continue;
		}
		FERRY_LOG(Debug, kLog, "domain {}: no longer running here, closing {}", domain,
			  it->second.listener.boundEndpoint().path);
		it = migrateSockets_.erase(it);
	}
	const bool ferryMode = config_.ferryMode != "off";
	for (auto &[name, d] : now) {
		const bool gated = d.preparedForFerry && ferryMode;
		if (!domains_.count(name))
			FERRY_LOG(Info, kLog, "domain {}: running here ({}); migrate it with --migrateuri unix://{}",
				  name,
				  gated ? "prepared for ferry: ferry mode"
					: d.preparedForFerry ? "prepared for ferry, but \"ferry_mode\" is off: stream mode"
					: d.notPrepared.empty() ? "not prepared for ferry: stream mode"
								: "not prepared for ferry: " + d.notPrepared + ": stream mode",
				  config_.migrateSocketPath("PEER", name));
		for (const PeerConfig &p : config_.peers) {
			std::string key = p.name + "/" + name;
			if (migrateSockets_.count(key))
				continue;
			// A gated socket has no backlog beyond its dummy: libvirtd's connect must wait.
			auto l = Listener::listen(Endpoint::unixPath(config_.migrateSocketPath(p.name, name)), gated ? 0 : 8);
			MigrateSocket sock;
			Status st = l.ok() ? Status() : Status(l.error());
			if (st.ok()) {
				sock.listener = std::move(*l);
				if (gated)
					st = gateSocket(sock);
			}
			if (!st.ok()) {
				FERRY_LOG_RATELIMITED(Warn, kLog, "domain {}: cannot listen for migrations to {}: {}", name,
						      p.name, st.error().message());
				continue;
			}
			migrateSockets_.emplace(key, std::move(sock));
		}
	}
	domains_ = std::move(now);
	std::lock_guard lock(mu_);
	domainSnapshot_ = domains_;
}

void Daemon::spawn(std::function<void()> fn)
{
	Worker &w = workers_.emplace_back();
	w.thread = std::thread([&w, fn = std::move(fn)] {
		fn();
		w.done = true;
	});
}

void Daemon::reapWorkers(bool all)
{
	for (auto it = workers_.begin(); it != workers_.end();) {
		if (all || it->done) {
			it->thread.join();
			it = workers_.erase(it);
		} else {
			++it;
		}
	}
}

void Daemon::acceptPeer()
{
	auto conn = peerListener_.accept(0);
	if (!conn.ok()) {
		if (conn.error().code() != ETIMEDOUT && conn.error().code() != EAGAIN)
			FERRY_LOG_RATELIMITED(Warn, kLog, "accept a peer: {}", conn.error().message());
		return;
	}
	auto addr = peerAddress(*conn);
	std::string from = addr.ok() ? addr->str() : "unknown address";
	std::string host = addr.ok() ? addr->host : "";
	if (workers_.size() >= kMaxWorkers) {
		FERRY_LOG_RATELIMITED(Warn, kLog, "refused a peer connection from {}: {} streams in flight already",
				      from, workers_.size());
		return;
	}
	{
		std::lock_guard lock(mu_);
		size_t handshaking = std::count_if(active_.begin(), active_.end(), [&](const auto &m) {
			return m->state == "connecting" && m->peer.starts_with(host + ":");
		});
		if (handshaking >= kMaxHandshakesPerAddress) {
			FERRY_LOG_RATELIMITED(Warn, kLog, "refused a peer connection from {}: {} handshakes from there "
							  "in progress", from, handshaking);
			return;
		}
	}
	spawn([this, c = std::make_shared<Connection>(std::move(*conn)), from]() mutable {
		carryIncoming(std::move(*c), from);
	});
}

void Daemon::acceptMigrate(const std::string &key)
{
	auto it = migrateSockets_.find(key);
	if (it == migrateSockets_.end())
		return;
	auto conn = it->second.listener.accept(0);
	if (!conn.ok()) {
		if (conn.error().code() != ETIMEDOUT && conn.error().code() != EAGAIN)
			FERRY_LOG_RATELIMITED(Warn, kLog, "accept on {}: {}", it->second.listener.boundEndpoint().path,
					      conn.error().message());
		return;
	}
	std::string peer = key.substr(0, key.find('/'));
	std::string domain = key.substr(key.find('/') + 1);
	if (it->second.gate == MigrateSocket::Gate::FailNext) {
		// Ferry mode failed, or was aborted, before the switch-over: libvirt's migration fails with it.
		FERRY_LOG(Warn, kLog, "domain {}: refusing libvirt's migration stream to {}: its gate was failed (ferry "
				      "mode failed or was aborted before the switch-over; see above)", domain, peer);
		migrateSockets_.erase(it); // closes it; the resync gates a new one
		resyncWanted_ = true;
		return;
	}
	if (workers_.size() >= kMaxWorkers) {
		FERRY_LOG(Error, kLog, "domain {}: migration to {} refused: {} streams in flight already", domain, peer,
			  workers_.size());
		return;
	}
	if (it->second.gate == MigrateSocket::Gate::Open) {
		// One connection passes an opened gate; it closes behind it for the next migration.
		if (auto st = gateSocket(it->second); !st.ok()) {
			FERRY_LOG(Warn, kLog, "domain {}: cannot close the gate to {} again: {}", domain, peer,
				  st.error().message());
			migrateSockets_.erase(it); // the resync gates a new one
			resyncWanted_ = true;
		}
	}
	spawn([this, fd = std::make_shared<UniqueFd>(conn->releaseFd()), domain, peer]() mutable {
		carryOutgoing(std::move(*fd), domain, peer);
	});
}

std::shared_ptr<Daemon::Migration> Daemon::record(Direction dir, std::string domain, std::string peer)
{
	auto m = std::make_shared<Migration>();
	m->direction = dir;
	m->domain = std::move(domain);
	m->peer = std::move(peer);
	m->startedNs = monotonicNs();
	std::lock_guard lock(mu_);
	m->id = nextId_++;
	active_.push_back(m);
	return m;
}

void Daemon::finish(const std::shared_ptr<Migration> &m, const Status &st)
{
	std::lock_guard lock(mu_);
	m->endedNs = monotonicNs();
	m->state = st.ok() ? "done" : "failed";
	if (!st.ok())
		m->error = st.error().message();
	std::erase(active_, m);
	finished_.push_back(m);
	while (finished_.size() > kKeptFinished)
		finished_.pop_front();
}

void Daemon::carryOutgoing(UniqueFd local, std::string domain, std::string peerName)
{
	auto m = record(Direction::Outgoing, domain, peerName);
	const PeerConfig *peer = config_.findPeer(peerName);
	auto local_domain = snapshotDomain(domain);
	const bool gated = local_domain && local_domain->preparedForFerry && config_.ferryMode != "off";
	bool declined = false;
	{
		std::lock_guard lock(mu_);
		declined = declined_.erase(peerName + "/" + domain) > 0;
	}
	const bool ferry = gated && !declined;
	std::string uuid = local_domain ? local_domain->uuid : "";
	if (declined) {
		FERRY_LOG(Info, kLog, "domain {}: migration to {} starts: stream mode ({} declined ferry mode)", domain,
			  peerName, peerName);
	} else if (ferry) {
		m->mode = "ferry";
		FERRY_LOG(Info, kLog, "domain {}: ferry mode: the gate opened, carrying the device state to {}", domain,
			  peerName);
	} else {
		FERRY_LOG(Info, kLog, "domain {}: migration to {} starts: stream mode ({})", domain, peerName,
			  local_domain && local_domain->preparedForFerry ? "prepared for ferry, \"ferry_mode\" off"
									 : "not prepared for ferry");
	}
	auto body = [&]() -> Status {
		FERRY_ASSIGN(Connection conn, callPeer(config_, *peer, creds_));
		FERRY_TRY_CTX(requestRelay(conn, RelayOpenMsg{domain, uuid}), "peer '{}'", peerName);
		auto relay = std::make_shared<Relay>(std::move(local), std::move(conn));
		{
			std::lock_guard lock(mu_);
			m->relay = relay;
			m->state = "relaying";
			if (stopping_)
				relay->stop();
		}
		return relay->run();
	};
	Status st = body();
	finish(m, st);
	if (st.ok())
		FERRY_LOG(Info, kLog, "domain {}: stream to {} ended: {} bytes sent, {} received back", domain, peerName,
			  m->relay->bytesToPeer(), m->relay->bytesFromPeer());
	else
		FERRY_LOG(Error, kLog, "domain {}: migration to {} failed: {}", domain, peerName, st.error().message());
}

void Daemon::carryIncoming(Connection conn, std::string from)
{
	auto m = record(Direction::Incoming, "", from);
	{
		std::lock_guard lock(mu_);
		m->handshaking = &conn;
		if (stopping_)
			conn.shutdown();
	}
	bool ferryExchange = false; // FerryOffer or FerryDecline, not a stream
	auto body = [&]() -> Status {
		FERRY_ASSIGN(const PeerConfig *peer, answerPeer(conn, config_, creds_).context(fmt::format("peer at {}", from)));
		{
			std::lock_guard lock(mu_);
			m->peer = peer->name;
		}
		auto first = recvFrame(conn, 4096, kPeerHandshakeTimeoutMs);
		if (!first.ok())
			return first.error().context(fmt::format("peer '{}'", peer->name));
		if (first->header.type == MsgType::FerryOffer || first->header.type == MsgType::FerryDecline) {
			FERRY_ASSIGN(RelayOpenMsg offer, decodeRelayOpen(first->payload));
			ferryExchange = true;
			{
				std::lock_guard lock(mu_);
				m->handshaking = nullptr;
			}
			if (first->header.type == MsgType::FerryOffer)
				serveFerryOffer(std::move(conn), *peer, offer);
			else
				serveFerryDecline(std::move(conn), *peer, offer);
			return {};
		}
		if (first->header.type != MsgType::RelayOpen) {
			Error e = Error::format(EPROTO, "expected RelayOpen or FerryOffer, got {}", msgTypeName(first->header.type));
			(void)conn.sendError(0, e);
			return e;
		}
		FERRY_ASSIGN(RelayOpenMsg open, decodeRelayOpen(first->payload));
		return relayIncoming(conn, *peer, open, m);
	};
	Status st = body();
	if (ferryExchange) { // a FerryOffer is recorded by serveFerryOffer as a migration of its own
		std::lock_guard lock(mu_);
		std::erase(active_, m);
		return;
	}
	finish(m, st);
	if (st.ok())
		FERRY_LOG(Info, kLog, "domain {}: stream from {} ended: {} bytes received, {} sent back", m->domain,
			  m->peer, m->relay->bytesFromPeer(), m->relay->bytesToPeer());
	else
		FERRY_LOG(Error, kLog, "domain {}: incoming migration from {} failed: {}",
			  m->domain.empty() ? "?" : m->domain, m->peer, st.error().message());
}

Status Daemon::relayIncoming(Connection &conn, const PeerConfig &peer, const RelayOpenMsg &open,
			     const std::shared_ptr<Migration> &m)
{
	std::string who = conn.encrypted() ? conn.peerIdentity() : "unauthenticated";
	std::shared_ptr<DeviceStateHold> hold;
	{
		std::lock_guard lock(mu_);
		m->domain = open.domain;
		m->uuid = open.uuid;
		if (auto it = holds_.find(open.domain); it != holds_.end())
			hold = it->second;
	}
	if (hold) {
		// Ferry mode: the device state waits until the RAM it refers to is guarded or here.
		FERRY_LOG(Info, kLog, "domain {}: device state from {} ({}) held until the stale chunks are dealt with",
			  open.domain, peer.name, who);
		std::lock_guard lock(mu_);
		m->mode = "ferry";
		m->state = "holding";
	} else {
		FERRY_LOG(Info, kLog, "domain {}: incoming migration from {} ({})", open.domain, peer.name, who);
	}
	if (hold) {
		auto outcome = hold->wait(std::chrono::minutes(10));
		if (outcome != DeviceStateHold::Outcome::Released) {
			Error e = Error::format(ECANCELED, "the ferry migration of {} {}", open.domain,
						outcome == DeviceStateHold::Outcome::Cancelled ? "failed" : "timed out");
			(void)conn.sendError(0, e);
			return e;
		}
	}
	std::string path = config_.migrateSocketPath(config_.name, open.domain);
	auto local = connectIncoming(path);
	if (!local.ok()) {
		(void)conn.sendError(0, local.error());
		return local.error();
	}
	FERRY_TRY(conn.send(MsgType::RelayReady, 0, {}));
	std::shared_ptr<Relay> relay;
	{
		std::lock_guard lock(mu_);
		m->handshaking = nullptr;
		relay = std::make_shared<Relay>(std::move(*local), std::move(conn));
		m->relay = relay;
		m->state = "relaying";
		if (stopping_)
			relay->stop();
	}
	return relay->run();
}

} // namespace ferry::daemon
