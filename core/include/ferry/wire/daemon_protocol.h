// SPDX-License-Identifier: GPL-2.0-or-later
// The daemons' peer link (ferryd <-> ferryd): payloads of the PeerHello..RelayEnd frames of
// ferry/wire/protocol.h, and the names they carry. docs/protocol.md ("Daemon link") is the
// normative description.
//
// A link is one TLS connection per purpose. The connecting daemon (C) sends PeerHello, the
// accepting one (A) answers PeerHelloReply or Error and closes. Then C sends RelayOpen naming
// a domain; A connects to that domain's migration socket in its own socket directory (A
// builds the path itself from the name: a peer never names a path) and answers RelayReady or
// Error. From then on both sides send RelayData and, when their direction of the stream ends,
// RelayEnd; the link closes when both directions ended.
//
// Ferry mode (a domain prepared for ferry, docs/libvirt.md): the destination daemon, seeing an
// incoming migration of such a domain, sends FerryOffer{domain, uuid} to its peers; the one
// running that domain answers FerryAccept{port}, where its seeder serves the guest's RAM (the
// ferry protocol, TLS with the same credentials), or Error (ENOENT: not here).
//
// Pure and hostile-input safe like protocol.h: decoders check every length and name.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/base/result.h"

namespace ferry {

inline constexpr uint32_t kDaemonLinkVersion = 1;
inline constexpr size_t kMaxDaemonNameLen = 64;
inline constexpr size_t kMaxDomainNameLen = 64;
inline constexpr size_t kMaxDomainUuidLen = 36;
// One RelayData frame: large enough that framing costs nothing next to the bytes.
inline constexpr uint32_t kMaxRelayData = 256u << 10;

// Names that become path components (daemon and domain names): 1..maxLen bytes of
// [A-Za-z0-9._+-], not starting with '.' or '-'. EINVAL naming the first bad byte otherwise.
Status checkPathName(std::string_view what, std::string_view name, size_t maxLen);

struct PeerHelloMsg {
	uint32_t minVersion = kDaemonLinkVersion;
	uint32_t maxVersion = kDaemonLinkVersion;
	std::string name; // the calling daemon's name in the callee's configuration
};

struct PeerHelloReplyMsg {
	uint32_t version = kDaemonLinkVersion;
	std::string name; // the accepting daemon's own name
};

struct RelayOpenMsg {
	std::string domain; // libvirt domain name (checkPathName)
	std::string uuid;   // its UUID as text, "" if not known; for logs and cross-checks
};

// FerryOffer's payload is a RelayOpenMsg (domain and UUID; the UUID is required there).
struct FerryAcceptMsg {
	uint16_t port = 0; // the seeder's TCP port on the accepting daemon's host
};

std::vector<uint8_t> encode(const PeerHelloMsg &m);
std::vector<uint8_t> encode(const FerryAcceptMsg &m);
Result<FerryAcceptMsg> decodeFerryAccept(std::span<const uint8_t> in);
std::vector<uint8_t> encode(const PeerHelloReplyMsg &m);
std::vector<uint8_t> encode(const RelayOpenMsg &m);
Result<PeerHelloMsg> decodePeerHello(std::span<const uint8_t> in);
Result<PeerHelloReplyMsg> decodePeerHelloReply(std::span<const uint8_t> in);
Result<RelayOpenMsg> decodeRelayOpen(std::span<const uint8_t> in);

} // namespace ferry
