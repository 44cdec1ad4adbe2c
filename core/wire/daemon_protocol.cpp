// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/wire/daemon_protocol.h"

#include "ferry/wire/protocol.h"
#include "wire/payload_layout.h"

namespace ferry {

namespace {

bool pathNameByte(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
	       c == '_' || c == '+' || c == '-';
}

} // namespace

Status checkPathName(std::string_view what, std::string_view name, size_t maxLen)
{
	if (name.empty())
		return Error::format(EINVAL, "{} is empty", what);
	if (name.size() > maxLen)
		return Error::format(EINVAL, "{} is {} bytes long; at most {} allowed", what, name.size(), maxLen);
	if (name[0] == '.' || name[0] == '-')
		return Error::format(EINVAL, "{} '{}' starts with '{}'", what, name, name[0]);
	for (size_t i = 0; i < name.size(); i++) {
		if (!pathNameByte(name[i]))
			return Error::format(EINVAL, "{} has byte {:#04x} at offset {}; allowed are letters, digits and ._+-",
					     what, uint8_t(name[i]), i);
	}
	return {};
}

// The daemon names a peer acts on are checked by their owners before they are encoded
// (checkPathName at configuration and domain lookup), so no field here is cut when encoding.

namespace {

Status checkDaemonName(const std::string &name)
{
	if (auto st = checkPathName("daemon name", name, kMaxDaemonNameLen); !st.ok())
		return Error(EPROTO, st.error().message());
	return {};
}

} // namespace

template <>
struct Layout<PeerHelloMsg> {
	static constexpr auto fields = std::tuple{Field{&PeerHelloMsg::minVersion}, Field{&PeerHelloMsg::maxVersion},
						  Field{&PeerHelloMsg::name, kMaxDaemonNameLen}};
};

std::vector<uint8_t> encode(const PeerHelloMsg &m) { return encodeLayout(m); }

Result<PeerHelloMsg> decodePeerHello(std::span<const uint8_t> in)
{
	return decodeLayout<PeerHelloMsg>(in, "PeerHello", [](const PeerHelloMsg &m) -> Status {
		if (m.minVersion == 0 || m.minVersion > m.maxVersion)
			return Error::format(EPROTO, "bad version range {}..{}", m.minVersion, m.maxVersion);
		return checkDaemonName(m.name);
	});
}

template <>
struct Layout<PeerHelloReplyMsg> {
	static constexpr auto fields =
		std::tuple{Field{&PeerHelloReplyMsg::version}, Field{&PeerHelloReplyMsg::name, kMaxDaemonNameLen}};
};

std::vector<uint8_t> encode(const PeerHelloReplyMsg &m) { return encodeLayout(m); }

Result<PeerHelloReplyMsg> decodePeerHelloReply(std::span<const uint8_t> in)
{
	return decodeLayout<PeerHelloReplyMsg>(in, "PeerHelloReply", [](const PeerHelloReplyMsg &m) -> Status {
		if (m.version != kDaemonLinkVersion)
			return Error::format(EPROTONOSUPPORT, "peer chose daemon link version {}; this side speaks {}",
					     m.version, kDaemonLinkVersion);
		return checkDaemonName(m.name);
	});
}

// RelayOpen and FerryOffer.
template <>
struct Layout<RelayOpenMsg> {
	static constexpr auto fields = std::tuple{Field{&RelayOpenMsg::domain, kMaxDomainNameLen},
						  Field{&RelayOpenMsg::uuid, kMaxDomainUuidLen}};
};

std::vector<uint8_t> encode(const RelayOpenMsg &m) { return encodeLayout(m); }

Result<RelayOpenMsg> decodeRelayOpen(std::span<const uint8_t> in)
{
	return decodeLayout<RelayOpenMsg>(in, "RelayOpen", [](const RelayOpenMsg &m) -> Status {
		if (auto st = checkPathName("domain name", m.domain, kMaxDomainNameLen); !st.ok())
			return Error(EPROTO, st.error().message());
		for (char c : m.uuid) {
			if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == '-'))
				return Error(EPROTO, "domain UUID holds a byte that is not a hex digit or '-'");
		}
		return {};
	});
}

template <>
struct Layout<FerryAcceptMsg> {
	static constexpr auto fields = std::tuple{Field{&FerryAcceptMsg::port}};
};

std::vector<uint8_t> encode(const FerryAcceptMsg &m) { return encodeLayout(m); }

Result<FerryAcceptMsg> decodeFerryAccept(std::span<const uint8_t> in)
{
	return decodeLayout<FerryAcceptMsg>(in, "FerryAccept", [](const FerryAcceptMsg &m) -> Status {
		if (m.port == 0)
			return Error(EPROTO, "port 0");
		return {};
	});
}

} // namespace ferry
