// SPDX-License-Identifier: GPL-2.0-or-later
#include "daemon/config.h"

#include <fstream>
#include <sstream>

#include "ferry/base/json.h"
#include "ferry/finalize/policy.h"
#include "ferry/wire/daemon_protocol.h"

namespace ferry::daemon {

namespace {

// An optional string member: absent keeps `out`; present must be a string.
Status optionalString(const JsonValue &obj, std::string_view key, std::string &out)
{
	if (!obj.has(key))
		return {};
	FERRY_ASSIGN(out, obj.getString(key).context(fmt::format("\"{}\"", key)));
	return {};
}

Result<PeerConfig> parsePeer(const JsonValue &v, size_t index)
{
	std::string where = fmt::format("peers[{}]", index);
	if (!v.isObject())
		return Error::format(EINVAL, "{}: expected an object", where);
	PeerConfig p;
	FERRY_ASSIGN(p.name, v.getString("name").context(where));
	FERRY_TRY_CTX(checkPathName("peer name", p.name, kMaxDaemonNameLen), "{}", where);
	where = fmt::format("peer '{}'", p.name);
	FERRY_ASSIGN(std::string addr, v.getString("address").context(where));
	FERRY_ASSIGN(p.address, parseEndpoint(addr).context(fmt::format("{} \"address\"", where)));
	if (p.address.kind == Endpoint::Kind::Tcp && p.address.port == 0)
		p.address.port = kDefaultPeerPort;
	if (v.has("tls"))
		return Error::format(EINVAL, "{}: \"tls\" is per daemon, not per peer", where);
	return p;
}

} // namespace

const PeerConfig *DaemonConfig::findPeer(std::string_view peerName) const
{
	for (const PeerConfig &p : peers)
		if (p.name == peerName)
			return &p;
	return nullptr;
}

std::string DaemonConfig::controlSocketPath() const { return socketDir + "/ferryd.sock"; }

std::string DaemonConfig::domainSocketDir() const { return socketDir + "/qemu"; }

std::string DaemonConfig::migrateDir(std::string_view peerName) const
{
	return fmt::format("{}/migrate/{}", socketDir, peerName);
}

std::string DaemonConfig::migrateSocketPath(std::string_view peerName, std::string_view domain) const
{
	return fmt::format("{}/{}.sock", migrateDir(peerName), domain);
}

Result<DaemonConfig> parseDaemonConfig(std::string_view json)
{
	FERRY_ASSIGN(JsonValue root, JsonValue::parse(json));
	if (!root.isObject())
		return Error(EINVAL, "expected a JSON object at the top level");
	DaemonConfig c;
	FERRY_ASSIGN(c.name, root.getString("name").context("\"name\" (this host's name, as its peers call it)"));
	FERRY_TRY_CTX(checkPathName("host name", c.name, kMaxDaemonNameLen), "\"name\"");
	if (root.has("listen")) {
		FERRY_ASSIGN(std::string listen, root.getString("listen").context("\"listen\""));
		FERRY_ASSIGN(c.listen, parseEndpoint(listen).context("\"listen\""));
	}
	FERRY_TRY(optionalString(root, "socket_dir", c.socketDir));
	if (c.socketDir.empty() || c.socketDir[0] != '/')
		return Error::format(EINVAL, "\"socket_dir\" must be an absolute path, not '{}'", c.socketDir);
	while (c.socketDir.size() > 1 && c.socketDir.back() == '/')
		c.socketDir.pop_back();
	FERRY_TRY(optionalString(root, "libvirt", c.libvirtUri));
	FERRY_TRY(optionalString(root, "qemu_user", c.qemuUser));
	FERRY_TRY(optionalString(root, "ferry_mode", c.ferryMode));
	if (c.ferryMode != "hybrid" && c.ferryMode != "precopy" && c.ferryMode != "off")
		return Error::format(EINVAL, "\"ferry_mode\" is '{}': hybrid, precopy or off", c.ferryMode);
	FERRY_TRY(optionalString(root, "finalize", c.finalizePolicy));
	if (auto p = makeFinalizePolicy(c.finalizePolicy, PolicyOptions{}); !p.ok())
		return p.error().context("\"finalize\"");
	if (root.has("tls")) {
		FERRY_ASSIGN(std::string spec, root.getString("tls").context("\"tls\""));
		FERRY_ASSIGN(c.tls, parseTlsConfig(spec).context("\"tls\""));
	}
	FERRY_ASSIGN(JsonValue peers, root.get("peers").context("\"peers\" (the ferryds this host migrates with)"));
	if (!peers.isArray())
		return Error(EINVAL, "\"peers\": expected an array");
	for (size_t i = 0; i < peers.size(); i++) {
		FERRY_ASSIGN(JsonValue v, peers.at(i));
		FERRY_ASSIGN(PeerConfig p, parsePeer(v, i));
		if (p.name == c.name)
			return Error::format(EINVAL, "peer '{}' has this host's own name", p.name);
		if (c.findPeer(p.name))
			return Error::format(EINVAL, "peer '{}' is listed twice", p.name);
		c.peers.push_back(std::move(p));
	}
	// Migrate socket paths must fit in sockaddr_un (107 bytes and a NUL) with room for domain
	// names of kMinDomainRoom bytes; longer domain names are refused per domain, with a log line.
	constexpr size_t kMinDomainRoom = 24;
	for (const std::string &peerName : [&] {
		     std::vector<std::string> names{c.name};
		     for (const PeerConfig &p : c.peers)
			     names.push_back(p.name);
		     return names;
	     }()) {
		size_t len = c.migrateSocketPath(peerName, std::string(kMinDomainRoom, 'x')).size();
		if (len > 107)
			return Error::format(EINVAL, "\"socket_dir\" '{}' is too long for peer '{}': its migrate socket "
					     "paths would exceed the 107 bytes of a UNIX socket path", c.socketDir, peerName);
	}
	return c;
}

Result<DaemonConfig> loadDaemonConfig(const std::string &path)
{
	std::ifstream in(path);
	if (!in)
		return Error::fromErrno(fmt::format("open {}", path)).context("ferryd configuration");
	std::ostringstream text;
	text << in.rdbuf();
	return parseDaemonConfig(text.str()).context(path);
}

Result<MigratePath> parseMigratePath(std::string_view socketDir, std::string_view path)
{
	std::string prefix = fmt::format("{}/migrate/", socketDir);
	if (!path.starts_with(prefix))
		return Error::format(EINVAL, "'{}' is not under {}", path, prefix);
	std::string_view rest = path.substr(prefix.size());
	size_t slash = rest.find('/');
	if (slash == std::string_view::npos || !rest.ends_with(".sock"))
		return Error::format(EINVAL, "'{}' is not {}PEER/DOMAIN.sock", path, prefix);
	MigratePath m{std::string(rest.substr(0, slash)),
		      std::string(rest.substr(slash + 1, rest.size() - slash - 1 - 5))};
	FERRY_TRY(checkPathName("peer name", m.peer, kMaxDaemonNameLen));
	FERRY_TRY(checkPathName("domain name", m.domain, kMaxDomainNameLen));
	return m;
}

} // namespace ferry::daemon
