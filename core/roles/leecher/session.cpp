// SPDX-License-Identifier: GPL-2.0-or-later
#include "roles/leecher/session.h"

#include <thread>

#include "ferry/base/clock.h"

namespace ferry {

namespace {

constexpr uint32_t kMaxControlPayload = 64u << 20; // a dirty list of 16M chunks
constexpr int kConnectTimeoutMs = 5000;
constexpr int kHelloTimeoutMs = 10000;
constexpr int kControlReplyTimeoutMs = 30000;
constexpr auto kReconnectBackoff = std::chrono::milliseconds(100);

} // namespace

Result<Connection> SeederSession::connect(const char *role, uint32_t features, HelloReplyMsg *replyOut)
{
	FERRY_ASSIGN(Connection conn, connectTo(opts_.seeder, kConnectTimeoutMs));
	if (opts_.tls)
		FERRY_TRY_CTX(conn.startTls(*opts_.tls, kHelloTimeoutMs), "TLS with the seeder");
	HelloMsg hello{kProtocolVersion, kProtocolVersion, sessionId_, fmt::format("{}/{}", opts_.name, role), features};
	FERRY_TRY(conn.send(MsgType::Hello, 0, encode(hello)));
	FERRY_ASSIGN(Frame f, recvFrame(conn, 64 * 1024, kHelloTimeoutMs));
	if (f.header.type == MsgType::Error)
		return peerError(f.payload).context("seeder refused");
	if (f.header.type != MsgType::HelloReply)
		return Error::format(EPROTO, "expected HelloReply, got {}", msgTypeName(f.header.type));
	FERRY_ASSIGN(HelloReplyMsg reply, decodeHelloReply(f.payload));
	if (sessionId_ != 0 && reply.sessionId != sessionId_)
		return Error(ESTALE, "seeder restarted (different session): progress cannot be resumed");
	if (sessionId_ != 0 && (reply.regionSize != size_ || reply.chunkSize != chunkSize_))
		return Error(ESTALE, "seeder region changed during the session");
	if (replyOut)
		*replyOut = reply;
	return conn;
}

Result<HelloReplyMsg> SeederSession::open(uint32_t features)
{
	HelloReplyMsg reply;
	controlFeatures_ = features;
	FERRY_ASSIGN(Connection c, connect("control", features, &reply));
	sessionId_ = reply.sessionId;
	size_ = reply.regionSize;
	chunkSize_ = reply.chunkSize;
	if (c.encrypted())
		peerIdentity_ = c.peerIdentity();
	ctrl_.emplace(std::move(c));
	return reply;
}

Result<std::vector<uint8_t>> SeederSession::request(MsgType type, MsgType expect, std::span<const uint8_t> payload)
{
	const int64_t deadline = monotonicNs() + int64_t(opts_.reconnectTimeout.count()) * 1000000;
	Error last;
	for (;;) {
		if (!ctrl_) {
			auto c = connect("control", controlFeatures_);
			if (c.ok()) {
				ctrl_.emplace(std::move(c).value());
				reconnects_++;
			} else if (c.error().code() == ESTALE || c.error().code() == EPROTONOSUPPORT) {
				return c.error();
			} else {
				last = c.error();
			}
		}
		if (ctrl_) {
			const uint64_t id = nextId_++;
			bool refused = false; // the seeder answered with an Error: never retried
			auto attempt = [&]() -> Result<std::vector<uint8_t>> {
				FERRY_TRY(ctrl_->send(type, id, payload));
				for (;;) {
					FERRY_ASSIGN(Frame f, recvFrame(*ctrl_, kMaxControlPayload, kControlReplyTimeoutMs));
					if (f.header.type == MsgType::Error) {
						refused = true;
						return peerError(f.payload).context("seeder");
					}
					if (f.header.requestId != id)
						continue; // a late reply to a request from before a reconnect
					if (f.header.type != expect)
						return Error::format(EPROTO, "expected {}, got {}", msgTypeName(expect),
								     msgTypeName(f.header.type));
					return std::move(f.payload);
				}
			};
			auto r = attempt();
			if (r.ok())
				return r;
			if (refused || r.error().code() == EPROTO)
				return r.error().context(msgTypeName(type));
			last = r.error();
			closedBytes_ += ctrl_->bytesReceived();
			ctrl_.reset();
		}
		if (stopping_ || monotonicNs() > deadline)
			return last.context(fmt::format("{} (gave up reconnecting)", msgTypeName(type)));
		std::this_thread::sleep_for(kReconnectBackoff);
	}
}

void SeederSession::close()
{
	if (ctrl_) {
		closedBytes_ += ctrl_->bytesReceived();
		ctrl_.reset();
	}
}

uint64_t SeederSession::bytesReceived() const
{
	return closedBytes_.load() + (ctrl_ ? ctrl_->bytesReceived() : 0);
}

} // namespace ferry
