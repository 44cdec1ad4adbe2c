// SPDX-License-Identifier: GPL-2.0-or-later
// ferry mode under libvirt: a domain prepared for ferry (ferry prepare-domain) has its RAM
// moved by ferry's pull pre-copy (and hybrid post-copy), while QEMU's own stream, carried by
// the relay as in stream mode, holds only device state (x-ignore-shared on both QEMUs).
//
//   destination daemon                                 source daemon
//   incoming QEMU's socket appears ─ FerryOffer ──────▶ the domain runs here: seeder on its
//   (inotify) x-ignore-shared on,    ◀── FerryAccept ── RAM (agent), x-ignore-shared on
//   leecher pulls RAM into the        ═══ ferry protocol, TLS ═══
//   incoming QEMU's memfd              finalize (the leecher's policy): open the gate;
//                                      libvirtd's connect() completes, libvirt issues
//                                      `migrate`, QEMU stops the guest (STOP) and sends
//   the relay holds the device state   device state through the relay
//   until the stale chunks are guarded
//   (hybrid) or fetched (precopy); then QEMU loads it, libvirt resumes the guest on the
//   destination and kills the source QEMU; post-copy serves from the source memfd the seeder
//   still maps; x-ignore-shared is cleared on the destination QEMU at the end.
//
// The gate: the source daemon's migrate socket of a prepared domain is a listener with a
// backlog of 0 whose one slot its own dummy connection holds, so libvirtd's connect() blocks
// (FINDINGS: libvirt, QEMU and the p2p keepalive tolerate it). Opening the gate accepts the
// dummy; failing it lets libvirtd connect and closes its connection at once, so libvirt's
// migration fails and the guest keeps running on the source.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "daemon/config.h"
#include "daemon/peer_link.h"
#include "ferry/base/result.h"
#include "ferry/roles/leecher.h"
#include "ferry/roles/seeder.h"
#include "ferry/wire/connection.h"

namespace ferry::daemon {

// The destination's hold on a domain's device-state stream: the relay waits on it; the ferry
// migration releases it (the stream may flow) or cancels it (the relay refuses the stream).
class DeviceStateHold {
public:
	enum class Outcome { Waiting, Released, Cancelled };
	void release() { settle(Outcome::Released); }
	void cancel() { settle(Outcome::Cancelled); }
	// Waits until settled or the timeout passes (then Waiting).
	Outcome wait(std::chrono::milliseconds timeout);

private:
	void settle(Outcome o);
	std::mutex mu_;
	std::condition_variable cv_;
	Outcome outcome_ = Outcome::Waiting;
};

// What the source side needs of the daemon: its gate for (peer, domain), and where to
// publish the seeder while it serves (nullptr when it no longer does), so that
// `ferry abort` can stop it.
struct GateControl {
	std::function<void()> open; // libvirtd's connect goes through; the stream is relayed
	std::function<void()> fail; // libvirtd's connect goes through and is closed at once
	std::function<void(Seeder *)> serving;
};

struct FerrySocketPaths {
	std::string qmp;   // the domain's private QMP socket (NAME.qmp)
	std::string agent; // FERRY_AGENT_SOCKET
};

// Source: serves the domain's RAM to the leecher of `peer`'s daemon, answering the FerryOffer
// on `conn` with FerryAccept once the seeder listens. Blocks until the migration ended.
// Before the switch-over any failure fails the gate and clears x-ignore-shared: the guest
// keeps running here, untouched.
Status runFerrySource(const DaemonConfig &config, const PeerCredentials &creds, Connection conn,
		      const std::string &peer, const std::string &domain, const FerrySocketPaths &paths,
		      GateControl gate);

// Destination: offers the incoming domain to the peers; with the one that runs it, pulls the
// guest's RAM into the incoming QEMU and releases `hold` when the device state may load.
// Blocks until the migration ended (every chunk here, or failure: `hold` cancelled).
Result<LeecherReport> runFerryDestination(const DaemonConfig &config, const PeerCredentials &creds,
					  const std::string &domain, const std::string &uuid,
					  const FerrySocketPaths &paths, DeviceStateHold &hold, std::string *peerOut);

} // namespace ferry::daemon
