// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/wire/daemon_protocol.h"

#include "ferry/wire/protocol.h"

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

std::vector<uint8_t> encode(const PeerHelloMsg &m)
{
	std::vector<uint8_t> out;
	PayloadWriter w(out);
	w.u32(m.minVersion);
	w.u32(m.maxVersion);
	w.string(m.name);
	return out;
}

std::vector<uint8_t> encode(const PeerHelloReplyMsg &m)
{
	std::vector<uint8_t> out;
	PayloadWriter w(out);
	w.u32(m.version);
	w.string(m.name);
	return out;
}

std::vector<uint8_t> encode(const RelayOpenMsg &m)
{
	std::vector<uint8_t> out;
	PayloadWriter w(out);
	w.string(m.domain);
	w.string(m.uuid);
	return out;
}

std::vector<uint8_t> encode(const FerryAcceptMsg &m)
{
	std::vector<uint8_t> out;
	PayloadWriter(out).u16(m.port);
	return out;
}

Result<FerryAcceptMsg> decodeFerryAccept(std::span<const uint8_t> in)
{
	auto body = [&]() -> Result<FerryAcceptMsg> {
		PayloadReader r(in);
		FerryAcceptMsg m;
		FERRY_ASSIGN(m.port, r.u16());
		FERRY_TRY(r.expectEnd());
		if (m.port == 0)
			return Error(EPROTO, "port 0");
		return m;
	};
	return body().context("FerryAccept");
}

Result<PeerHelloMsg> decodePeerHello(std::span<const uint8_t> in)
{
	auto body = [&]() -> Result<PeerHelloMsg> {
		PayloadReader r(in);
		PeerHelloMsg m;
		FERRY_ASSIGN(m.minVersion, r.u32());
		FERRY_ASSIGN(m.maxVersion, r.u32());
		FERRY_ASSIGN(m.name, r.string(kMaxDaemonNameLen));
		FERRY_TRY(r.expectEnd());
		if (m.minVersion == 0 || m.minVersion > m.maxVersion)
			return Error::format(EPROTO, "bad version range {}..{}", m.minVersion, m.maxVersion);
		if (auto st = checkPathName("daemon name", m.name, kMaxDaemonNameLen); !st.ok())
			return Error(EPROTO, st.error().message());
		return m;
	};
	return body().context("PeerHello");
}

Result<PeerHelloReplyMsg> decodePeerHelloReply(std::span<const uint8_t> in)
{
	auto body = [&]() -> Result<PeerHelloReplyMsg> {
		PayloadReader r(in);
		PeerHelloReplyMsg m;
		FERRY_ASSIGN(m.version, r.u32());
		FERRY_ASSIGN(m.name, r.string(kMaxDaemonNameLen));
		FERRY_TRY(r.expectEnd());
		if (m.version != kDaemonLinkVersion)
			return Error::format(EPROTONOSUPPORT, "peer chose daemon link version {}; this side speaks {}",
					     m.version, kDaemonLinkVersion);
		if (auto st = checkPathName("daemon name", m.name, kMaxDaemonNameLen); !st.ok())
			return Error(EPROTO, st.error().message());
		return m;
	};
	return body().context("PeerHelloReply");
}

Result<RelayOpenMsg> decodeRelayOpen(std::span<const uint8_t> in)
{
	auto body = [&]() -> Result<RelayOpenMsg> {
		PayloadReader r(in);
		RelayOpenMsg m;
		FERRY_ASSIGN(m.domain, r.string(kMaxDomainNameLen));
		FERRY_ASSIGN(m.uuid, r.string(kMaxDomainUuidLen));
		FERRY_TRY(r.expectEnd());
		if (auto st = checkPathName("domain name", m.domain, kMaxDomainNameLen); !st.ok())
			return Error(EPROTO, st.error().message());
		for (char c : m.uuid) {
			if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == '-'))
				return Error(EPROTO, "domain UUID holds a byte that is not a hex digit or '-'");
		}
		return m;
	};
	return body().context("RelayOpen");
}

} // namespace ferry
