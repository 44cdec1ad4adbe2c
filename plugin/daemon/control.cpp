// SPDX-License-Identifier: GPL-2.0-or-later
#include "daemon/control.h"

#include <sys/socket.h>
#include <unistd.h>

#include "daemon/config.h"
#include "ferry/wire/endpoint.h"

namespace ferry::daemon {

std::string controlSocketFor(const std::string &configPath, const std::string &socket)
{
	if (!socket.empty())
		return socket;
	if (auto c = loadDaemonConfig(configPath); c.ok())
		return c->controlSocketPath();
	return std::string(kDefaultSocketDir) + "/ferryd.sock";
}

Result<JsonValue> askDaemon(const std::string &controlSocket, const JsonValue &request, int timeoutMs)
{
	auto body = [&]() -> Result<JsonValue> {
		FERRY_ASSIGN(Connection conn, connectTo(Endpoint::unixPath(controlSocket), timeoutMs));
		FERRY_TRY(conn.setIoTimeout(timeoutMs));
		UniqueFd fd = conn.releaseFd();
		std::string line = request.toString() + "\n";
		if (::send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL) != ssize_t(line.size()))
			return Error::fromErrno("send the request");
		std::string reply;
		char buf[4096];
		for (;;) {
			ssize_t n = ::read(fd.get(), buf, sizeof(buf));
			if (n < 0)
				return Error::fromErrno("read the reply");
			if (n == 0)
				break;
			reply.append(buf, size_t(n));
			if (reply.size() > JsonValue::kMaxParseBytes)
				return Error(EMSGSIZE, "reply too large");
		}
		FERRY_ASSIGN(JsonValue j, JsonValue::parse(reply));
		auto ok = j.getBool("ok");
		if (!ok.ok() || !*ok) {
			auto msg = j.getString("error");
			return Error(EPROTO, msg.ok() ? *msg : "malformed reply");
		}
		return j;
	};
	return body().context(fmt::format("ferryd at {} (is ferryd running?)", controlSocket));
}

} // namespace ferry::daemon
