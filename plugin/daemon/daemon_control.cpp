// SPDX-License-Identifier: GPL-2.0-or-later
// The daemon's control socket (control.h): status of the migrations, and the requests of the
// `ferry` CLI.
#include "daemon/daemon.h"

#include <sys/socket.h>
#include <unistd.h>

#include "ferry/base/clock.h"

namespace ferry::daemon {

namespace {

constexpr size_t kMaxControlRequest = 4096;

const char *directionName(bool outgoing) { return outgoing ? "outgoing" : "incoming"; }

} // namespace

JsonValue Daemon::status(const std::string &domain) const
{
	JsonValue out = JsonValue::object();
	out.set("name", config_.name).set("listen", peerListener_.boundEndpoint().str())
		.set("tls", creds_.server ? creds_.server->describe() : std::string("insecure"));
	JsonValue peers = JsonValue::array();
	for (const PeerConfig &p : config_.peers) {
		JsonValue peer = JsonValue::object();
		peer.set("name", p.name).set("address", p.address.str());
		peers.append(std::move(peer));
	}
	out.set("peers", std::move(peers));
	JsonValue list = JsonValue::array();
	auto add = [&](const Migration &m) {
		if (!domain.empty() && m.domain != domain)
			return;
		int64_t end = m.endedNs ? m.endedNs : monotonicNs();
		double seconds = double(end - m.startedNs) / 1e9;
		uint64_t sent = m.relay ? m.relay->bytesToPeer() : 0;
		uint64_t received = m.relay ? m.relay->bytesFromPeer() : 0;
		bool outgoing = m.direction == Direction::Outgoing;
		uint64_t stream = outgoing ? sent : received;
		JsonValue j = JsonValue::object();
		j.set("id", m.id).set("domain", m.domain).set("peer", m.peer)
			.set("direction", directionName(outgoing)).set("mode", m.mode).set("phase", m.state)
			.set("elapsed_s", seconds).set("stream_bytes", stream)
			.set("return_bytes", outgoing ? received : sent)
			.set("stream_mbytes_per_s", seconds > 0 ? double(stream) / 1e6 / seconds : 0.0);
		if (!m.error.empty())
			j.set("error", m.error);
		list.append(std::move(j));
	};
	std::lock_guard lock(mu_);
	for (const auto &m : active_)
		add(*m);
	for (const auto &m : finished_)
		add(*m);
	out.set("migrations", std::move(list));
	return out;
}

void Daemon::serveControl()
{
	auto conn = controlListener_.accept(0);
	if (!conn.ok())
		return;
	(void)conn->setIoTimeout(1000);
	UniqueFd fd = conn->releaseFd();
	std::string request;
	char buf[512];
	while (request.find('\n') == std::string::npos && request.size() < kMaxControlRequest) {
		ssize_t n = ::read(fd.get(), buf, sizeof(buf));
		if (n <= 0)
			break;
		request.append(buf, size_t(n));
	}
	JsonValue reply = JsonValue::object();
	auto parsed = JsonValue::parse(request.substr(0, request.find('\n')));
	auto member = [&](std::string_view key) -> std::string {
		if (!parsed.ok() || !parsed->isObject())
			return "";
		auto v = parsed->getString(key);
		return v.ok() ? *v : "";
	};
	std::string cmd = member("cmd");
	if (cmd == "status") {
		reply = status(member("domain"));
		reply.set("ok", true);
	} else if (cmd == "abort" && !member("domain").empty()) {
		reply = abort(member("domain"));
	} else if (cmd == "ping") {
		reply.set("ok", true).set("name", config_.name);
	} else {
		reply.set("ok", false).set("error", "unknown request; send {\"cmd\":\"status\"}, {\"cmd\":\"abort\",\"domain\":D} or {\"cmd\":\"ping\"}");
	}
	std::string text = reply.toString() + "\n";
	(void)::send(fd.get(), text.data(), text.size(), MSG_NOSIGNAL);
}

} // namespace ferry::daemon
