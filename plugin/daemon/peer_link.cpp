// SPDX-License-Identifier: GPL-2.0-or-later
#include "daemon/peer_link.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "ferry/base/log.h"
#include "ferry/wire/endpoint.h"

namespace ferry::daemon {

namespace {

constexpr uint32_t kHandshakePayload = 4096;

Result<Frame> expectFrame(Connection &conn, MsgType want)
{
	FERRY_ASSIGN(Frame f, recvFrame(conn, kHandshakePayload, kPeerHandshakeTimeoutMs));
	if (f.header.type == MsgType::Error)
		return peerError(f.payload);
	if (f.header.type != want)
		return Error::format(EPROTO, "expected {}, got {}", msgTypeName(want), msgTypeName(f.header.type));
	return f;
}

Status startTls(Connection &conn, const std::shared_ptr<const TlsCredentials> &creds)
{
	if (!creds)
		return {};
	return conn.startTls(*creds, kPeerHandshakeTimeoutMs);
}

} // namespace

Result<PeerCredentials> PeerCredentials::load(const TlsConfig &config)
{
	PeerCredentials c;
	if (config.mode == TlsMode::Insecure)
		return c;
	FERRY_ASSIGN(TlsCredentials client, TlsCredentials::load(config, TlsRole::Client));
	FERRY_ASSIGN(TlsCredentials server, TlsCredentials::load(config, TlsRole::Server));
	c.client = std::make_shared<const TlsCredentials>(std::move(client));
	c.server = std::make_shared<const TlsCredentials>(std::move(server));
	return c;
}

Result<Connection> callPeer(const DaemonConfig &config, const PeerConfig &peer, const PeerCredentials &creds)
{
	auto body = [&]() -> Result<Connection> {
		// Autotuned: a stream-mode relay feeds a QEMU that loads slower than the link.
		FERRY_ASSIGN(Connection conn, connectTo(peer.address, kPeerHandshakeTimeoutMs, TcpBuffers::Autotuned));
		FERRY_TRY(startTls(conn, creds.client));
		PeerHelloMsg hello;
		hello.name = config.name;
		FERRY_TRY(conn.send(MsgType::PeerHello, 0, encode(hello)));
		FERRY_ASSIGN(Frame f, expectFrame(conn, MsgType::PeerHelloReply));
		FERRY_ASSIGN(PeerHelloReplyMsg reply, decodePeerHelloReply(f.payload));
		if (reply.name != peer.name)
			return Error::format(EACCES, "the daemon at {} calls itself '{}', not '{}'", peer.address.str(),
					     reply.name, peer.name);
		enableKeepalive(conn);
		return conn;
	};
	return body().context(fmt::format("peer '{}' at {}", peer.name, peer.address.str()));
}

Result<const PeerConfig *> answerPeer(Connection &conn, const DaemonConfig &config, const PeerCredentials &creds)
{
	FERRY_TRY(startTls(conn, creds.server));
	FERRY_ASSIGN(Frame f, expectFrame(conn, MsgType::PeerHello));
	auto hello = decodePeerHello(f.payload);
	if (!hello.ok()) {
		(void)conn.sendError(0, hello.error());
		return hello.error();
	}
	const PeerConfig *peer = config.findPeer(hello->name);
	if (!peer) {
		Error e = Error::format(EACCES, "'{}' is not a peer of '{}'", hello->name, config.name);
		(void)conn.sendError(0, e);
		return e;
	}
	if (hello->minVersion > kDaemonLinkVersion || hello->maxVersion < kDaemonLinkVersion) {
		Error e = Error::format(EPROTONOSUPPORT, "daemon link versions {}..{} offered; this side speaks {}",
					hello->minVersion, hello->maxVersion, kDaemonLinkVersion);
		(void)conn.sendError(0, e);
		return e;
	}
	PeerHelloReplyMsg reply;
	reply.name = config.name;
	FERRY_TRY(conn.send(MsgType::PeerHelloReply, 0, encode(reply)));
	enableKeepalive(conn);
	return peer;
}

Result<Frame> askPeer(const DaemonConfig &config, const PeerConfig &peer, const PeerCredentials &creds, MsgType type,
		      const RelayOpenMsg &about)
{
	FERRY_ASSIGN(Connection conn, callPeer(config, peer, creds));
	FERRY_TRY(conn.send(type, 0, encode(about)));
	return recvFrame(conn, 4096, kPeerHandshakeTimeoutMs);
}

Status requestRelay(Connection &conn, const RelayOpenMsg &open)
{
	FERRY_TRY(conn.send(MsgType::RelayOpen, 0, encode(open)));
	FERRY_ASSIGN(Frame f, expectFrame(conn, MsgType::RelayReady));
	(void)f;
	return {};
}

Result<RelayOpenMsg> receiveRelayOpen(Connection &conn)
{
	FERRY_ASSIGN(Frame f, expectFrame(conn, MsgType::RelayOpen));
	return decodeRelayOpen(f.payload);
}

void enableKeepalive(const Connection &conn)
{
	int on = 1, idle = 10, interval = 5, count = 3;
	// Keepalive probes only an idle connection; with data in flight a dead peer is noticed by
	// the retransmission limit, which TCP_USER_TIMEOUT brings from ~15 minutes to 30 s.
	unsigned userTimeoutMs = 30000;
	// Best effort: a UNIX socket (tests) has no keepalive.
	if (setsockopt(conn.fd(), SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) != 0)
		return;
	(void)setsockopt(conn.fd(), IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	(void)setsockopt(conn.fd(), IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
	(void)setsockopt(conn.fd(), IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
	(void)setsockopt(conn.fd(), IPPROTO_TCP, TCP_USER_TIMEOUT, &userTimeoutMs, sizeof(userTimeoutMs));
}

} // namespace ferry::daemon
