// SPDX-License-Identifier: GPL-2.0-or-later
// ferryd's core: the sockets it owns and the migrations it carries. daemon.cpp has the loop,
// the migrate sockets and the stream relays, daemon_ferry.cpp the ferry-mode half (gates,
// the destination's trigger, FerryOffer, abort), daemon_control.cpp the control socket.
//
//   peer listener      TCP (config "listen"): other ferryds deliver migration streams here
//   migrate sockets    SOCKET_DIR/migrate/PEER/DOMAIN.sock for every running domain and peer:
//                      libvirtd connects here for `virsh migrate --migrateuri unix://...`
//   control socket     SOCKET_DIR/ferryd.sock (root only): `ferry status` asks here
//
// One thread (run()) polls all listening sockets, a signal-free wake-up eventfd and a periodic
// resync of the migrate sockets with the running domains. Each migration stream gets a worker
// thread (and its relay a second one), at most kMaxWorkers at once; a connection beyond that
// is closed at once and logged.
//
// Control requests: ping, status, abort (control.h).
//
// Modes: a domain that is not prepared for ferry migrates in stream mode: its stream is carried
// as it is. A prepared one migrates in ferry mode (ferry_mode.h) unless "ferry_mode" is "off":
// its migrate sockets are gated, and the destination daemon, seeing the incoming QEMU's socket
// appear (inotify on SOCKET_DIR/migrate/SELF), starts the ferry migration.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <condition_variable>
#include <list>
#include <map>
#include <set>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "daemon/config.h"
#include "daemon/ferry_mode.h"
#include "daemon/peer_link.h"
#include "daemon/relay.h"
#include "ferry/base/json.h"
#include "ferry/base/result.h"
#include "ferry/sys/fd.h"
#include "ferry/wire/endpoint.h"

namespace ferry::daemon {

struct LocalDomain {
	std::string name;
	std::string uuid;
	bool preparedForFerry = false;
	std::string qmpSocket, agentSocket; // ferry's sockets, when prepared
	std::string notPrepared;            // what ferry mode lacks ("" when prepared or unknown)
};
// The running domains of this host (libvirt, or a fixed list in tests). Called on the
// daemon's loop thread only.
using DomainLister = std::function<Result<std::vector<LocalDomain>>()>;

class Daemon {
public:
	static constexpr size_t kMaxWorkers = 64;
	static constexpr int kResyncIntervalMs = 5000;
	static constexpr size_t kKeptFinished = 32;

	static Result<std::unique_ptr<Daemon>> create(DaemonConfig config, PeerCredentials creds, DomainLister lister);
	~Daemon();

	// Polls until stop(). Returns the error that made it give up, if any.
	Status run();
	// Any thread: run() returns soon; streams in flight are cut (libvirt then fails those
	// migrations before their switch-over, and the source keeps running).
	void stop();
	// Any thread (e.g. libvirt's event loop): resync the migrate sockets with the domains soon.
	void domainsChanged();

	// For `ferry status`: the daemon and its migrations (running and recently finished), all
	// or those of one domain.
	JsonValue status(const std::string &domain) const;
	const DaemonConfig &config() const { return config_; }
	// After run(): migrations that did not end when the daemon stopped (ferryd then exits).
	size_t runningWorkers() const;
	Endpoint peerEndpoint() const { return peerListener_.boundEndpoint(); }

private:
	enum class Direction { Outgoing, Incoming };
	struct Migration {
		uint64_t id = 0;
		std::string domain, uuid, peer;
		Direction direction = Direction::Outgoing;
		int64_t startedNs = 0, endedNs = 0;
		std::string mode = "stream"; // stream, or ferry-hybrid / ferry-precopy
		std::string state = "connecting"; // connecting, relaying (stream); pre-copy (ferry); done, failed
		std::string error;
		std::shared_ptr<Relay> relay;
		Connection *handshaking = nullptr; // the peer link while it is set up (stop() cuts it)
	};
	// A migrate socket. A prepared domain's is gated: its one backlog slot is held by our own
	// dummy connection, so libvirtd's connect() waits (ferry_mode.h).
	struct MigrateSocket {
		// None: not gated. Closed: our dummy holds the slot. Open: the next connection passes
		// (the gate closes behind it). FailNext: the next connection is closed at once.
		enum class Gate { None, Closed, Open, FailNext };
		Listener listener;
		UniqueFd dummy;
		Gate gate = Gate::None;
		int64_t sinceNs = 0; // Open, FailNext: a connection that does not come within the
				     // config's gateWindowMs is not waited for (the gate closes again)
		bool windowed() const { return gate == Gate::Open || gate == Gate::FailNext; }
	};
	struct GateRequest {
		enum class Action { Open, Fail };
		std::string key; // "peer/domain"
		Action action;   // let the next connection through; close it at once
	};
	struct Worker {
		std::thread thread;
		std::atomic<bool> done{false};
	};

	Daemon(DaemonConfig config, PeerCredentials creds, DomainLister lister);
	Status prepareSocketDir();
	void resyncDomains();
	void acceptPeer();
	void acceptMigrate(const std::string &key);
	void serveControl();
	void spawn(std::function<void()> fn);
	void reapWorkers(bool all);

	void carryOutgoing(UniqueFd local, std::string domain, std::string peerName);
	void carryIncoming(Connection conn, std::string from);
	Status relayIncoming(Connection &conn, const PeerConfig &peer, const RelayOpenMsg &open,
			     const std::shared_ptr<Migration> &m);
	// The domain a FerryOffer or FerryDecline names, if it runs here in ferry mode (UUID
	// included); otherwise answers the caller ENOENT.
	std::optional<LocalDomain> ferryDomain(Connection &conn, const RelayOpenMsg &about) const;
	void serveFerryOffer(Connection conn, const PeerConfig &peer, const RelayOpenMsg &offer);
	void serveFerryDecline(Connection conn, const PeerConfig &peer, const RelayOpenMsg &decline);
	void watchIncoming();
	void ferryIncoming(std::string domain);
	// Destination: tells the peer running `domain` to let its stream through (FerryDecline).
	void declineFerry(const std::string &domain, const std::string &uuid, const std::string &why);
	// Source, its own thread: libvirt's migration of a prepared domain that waits at the gate
	// while no peer offers ferry mode (the destination's ferryd is down, or cannot reach this
	// one) is failed after config_.offerWaitMs, rather than left waiting for `ferry abort`.
	void watchGates();
	Status gateSocket(MigrateSocket &s);
	void applyGateRequests();
	void requestGate(const std::string &key, GateRequest::Action action);
	// `ferry abort DOMAIN`: stops its ferry migration's seeder and fails its gates, so that a
	// libvirt migration waiting there fails and the guest keeps running here.
	JsonValue abort(const std::string &domain);
	std::optional<LocalDomain> snapshotDomain(const std::string &name) const;
	std::shared_ptr<Migration> record(Direction dir, std::string domain, std::string peer);
	void finish(const std::shared_ptr<Migration> &m, const Status &st);

	DaemonConfig config_;
	PeerCredentials creds_;
	DomainLister lister_;
	UniqueFd wake_; // eventfd: stop() and domainsChanged()
	std::atomic<bool> stopping_{false};
	std::atomic<bool> resyncWanted_{true};
	Listener peerListener_;
	Listener controlListener_;
	std::map<std::string, LocalDomain> domains_;  // name -> running domain (loop thread)
	std::map<std::string, MigrateSocket> migrateSockets_; // "peer/domain" (loop thread)
	UniqueFd incomingWatch_; // inotify on SOCKET_DIR/migrate/SELF
	std::list<Worker> workers_; // loop thread
	std::thread gateWatcher_;   // watchGates()

	mutable std::mutex mu_; // guards the members below
	std::condition_variable stopped_; // stop() wakes watchGates()
	uint64_t nextId_ = 1;
	std::vector<std::shared_ptr<Migration>> active_;
	std::deque<std::shared_ptr<Migration>> finished_;
	std::vector<GateRequest> gateRequests_;
	std::map<std::string, LocalDomain> domainSnapshot_; // domains_ for other threads
	std::map<std::string, std::shared_ptr<DeviceStateHold>> holds_; // incoming ferry migrations
	std::map<std::string, Seeder *> seeders_; // outgoing ferry migrations serving, by domain
	std::set<std::string> declined_; // "peer/domain": gates opened by the peer's FerryDecline
};

} // namespace ferry::daemon
