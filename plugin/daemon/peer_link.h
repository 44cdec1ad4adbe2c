// SPDX-License-Identifier: GPL-2.0-or-later
// The daemons' peer link, one TLS connection per migration stream (payloads in
// ferry/wire/daemon_protocol.h): calling a configured peer, and answering a caller.
//
// Trust: mutual TLS first (the peers' certificates share a CA, or their PSKs are in the key
// file), then the caller must name itself as one of this daemon's configured peers. A caller
// that fails either gets an Error frame (when TLS got that far) and the connection closes.
// Every step before the stream flows has a deadline, so a silent caller cannot hold a thread.
#pragma once

#include <memory>
#include <string>

#include "daemon/config.h"
#include "ferry/base/result.h"
#include "ferry/wire/connection.h"
#include "ferry/wire/daemon_protocol.h"
#include "ferry/wire/tls.h"

namespace ferry::daemon {

// Deadline of each handshake step (TCP connect, TLS, hello, relay open).
inline constexpr int kPeerHandshakeTimeoutMs = 10000;

// Loaded once at start: the daemon calls its peers as a TLS client and answers them as a
// server. Null when the configuration says "insecure" (plaintext, logged loudly).
struct PeerCredentials {
	std::shared_ptr<const TlsCredentials> client;
	std::shared_ptr<const TlsCredentials> server;

	static Result<PeerCredentials> load(const TlsConfig &config);
};

// Connects to `peer`, runs TLS and the PeerHello exchange. The peer must answer with the name
// this host's configuration gives it.
Result<Connection> callPeer(const DaemonConfig &config, const PeerConfig &peer, const PeerCredentials &creds);

// On a connection this daemon accepted: TLS as server, then the caller's PeerHello, which must
// name a configured peer. Returns that peer.
Result<const PeerConfig *> answerPeer(Connection &conn, const DaemonConfig &config, const PeerCredentials &creds);

// Calls `peer` about a domain (FerryOffer, FerryDecline: a RelayOpenMsg) and returns its answer
// (read within the handshake deadline).
Result<Frame> askPeer(const DaemonConfig &config, const PeerConfig &peer, const PeerCredentials &creds, MsgType type,
		      const RelayOpenMsg &about);

// Asks the peer to open the stream of `open.domain` on its side; waits for RelayReady.
Status requestRelay(Connection &conn, const RelayOpenMsg &open);
// Reads the caller's RelayOpen (within the handshake deadline).
Result<RelayOpenMsg> receiveRelayOpen(Connection &conn);

// TCP keepalive and a user timeout on a peer connection, so a peer host that vanished (no FIN)
// is noticed within about half a minute, whether the stream is idle (libvirt's
// pause-before-switchover) or has bytes in flight.
void enableKeepalive(const Connection &conn);

} // namespace ferry::daemon
