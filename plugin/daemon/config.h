// SPDX-License-Identifier: GPL-2.0-or-later
// ferryd's configuration: who this host is, where it listens for its peers, the peers it
// trusts, its socket directory and TLS material. A JSON file, by default
// /etc/ferry/ferryd.conf (docs/libvirt.md has a commented example):
//
//   {"name": "a", "listen": "tcp:0.0.0.0:7077", "socket_dir": "/run/ferry",
//    "libvirt": "qemu:///system", "tls": "x509:/etc/pki/ferry", "qemu_user": "libvirt-qemu",
//    "ferry_mode": "hybrid", "finalize": "immediate",
//    "peers": [{"name": "b", "address": "tcp:10.0.0.2:7077"}]}
//
// Only "name" and "peers" are required. One "tls" serves every peer: with x509 the peers'
// certificates share a CA, with psk the key file holds the identities of all of them.
//
// Migration sockets follow one convention, on both hosts:
//   SOCKET_DIR/migrate/PEER/DOMAIN.sock
// On the source host ferryd listens there for every running DOMAIN and every PEER; libvirtd
// connects to it when the operator runs
//   virsh migrate --live --p2p DOMAIN qemu+tcp://PEER-HOST/system
//        --migrateuri unix://SOCKET_DIR/migrate/PEER/DOMAIN.sock
// On the destination host (which is PEER) the same path is where libvirt's incoming QEMU
// listens, and where the destination ferryd delivers the stream. The path thus names the peer
// and the domain, so concurrent migrations never share one.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "ferry/base/result.h"
#include "ferry/wire/endpoint.h"
#include "ferry/wire/tls.h"

namespace ferry::daemon {

inline constexpr std::string_view kDefaultConfigPath = "/etc/ferry/ferryd.conf";
inline constexpr std::string_view kDefaultSocketDir = "/run/ferry";
inline constexpr uint16_t kDefaultPeerPort = 7077;

struct PeerConfig {
	std::string name;
	Endpoint address;
};

struct DaemonConfig {
	std::string name;
	Endpoint listen = Endpoint::tcp("", kDefaultPeerPort);
	std::string socketDir{kDefaultSocketDir};
	std::string libvirtUri = "qemu:///system";
	TlsConfig tls; // x509 in /etc/pki/ferry unless configured
	std::string qemuUser; // owner of the incoming and domain socket directories; "" leaves them root's
	// Domains prepared for ferry: "hybrid" or "precopy" (ferry mode, decided by the
	// destination daemon), or "off" (stream mode like any domain). "finalize" is the policy
	// that picks the moment of the switch-over (ferry leech --finalize).
	std::string ferryMode = "hybrid";
	std::string finalizePolicy = "immediate";
	std::vector<PeerConfig> peers;
	// How long an opened or failing gate waits for libvirtd's connection before it closes
	// again (not in the file: tests shorten it).
	int gateWindowMs = 10000;
	// How long libvirt's migration of a prepared domain may wait at the gate with no peer
	// offering ferry mode before it is failed (not in the file).
	int offerWaitMs = 10000;

	const PeerConfig *findPeer(std::string_view peerName) const;
	// SOCKET_DIR/ferryd.sock: the control socket of the `ferry` CLI.
	std::string controlSocketPath() const;
	// SOCKET_DIR/migrate/PEER: where migrations to PEER start on this host (or, for
	// PEER == name, where incoming QEMUs listen).
	std::string migrateDir(std::string_view peerName) const;
	std::string migrateSocketPath(std::string_view peerName, std::string_view domain) const;
	// SOCKET_DIR/qemu: where prepared domains' QEMUs create their private QMP and agent
	// sockets (`ferry prepare-domain`'s default --socket-dir); QEMU's user owns it.
	std::string domainSocketDir() const;
};

// Parses the JSON text; errors name the key and what is wrong with it.
Result<DaemonConfig> parseDaemonConfig(std::string_view json);
Result<DaemonConfig> loadDaemonConfig(const std::string &path);

// A migrate URI path split back into its peer and domain: SOCKET_DIR/migrate/PEER/DOMAIN.sock.
struct MigratePath {
	std::string peer;
	std::string domain;
};
Result<MigratePath> parseMigratePath(std::string_view socketDir, std::string_view path);

} // namespace ferry::daemon
