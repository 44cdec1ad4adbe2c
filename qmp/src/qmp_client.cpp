// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/base/clock.h"
#include "ferry/qmp/qmp_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include <algorithm>
#include <thread>

#include "ferry/base/log.h"
#include "ferry/sys/poll.h"

namespace ferry {

namespace {

using Clock = std::chrono::steady_clock;

// Milliseconds left until deadline, rounded up, for poll(); 0 once passed.
int msUntil(Clock::time_point deadline)
{
	auto left = deadline - Clock::now();
	if (left <= Clock::duration::zero())
		return 0;
	auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
	return static_cast<int>(std::min<int64_t>(ms, 1 << 30));
}

} // namespace

Result<JsonValue> QmpEvent::data() const
{
	return JsonValue::parse(dataJson.empty() ? std::string_view("{}") : std::string_view(dataJson));
}

Result<std::string> QmpEvent::dataString(std::string_view key) const
{
	FERRY_ASSIGN(JsonValue d, data());
	return d.getString(key).context(fmt::format("event {}", name));
}

Result<int64_t> QmpEvent::dataInt(std::string_view key) const
{
	FERRY_ASSIGN(JsonValue d, data());
	return d.getInt(key).context(fmt::format("event {}", name));
}

Result<QmpEvent> QmpEvent::fromMessage(const JsonValue &msg)
{
	QmpEvent ev;
	FERRY_ASSIGN(ev.name, msg.getString("event"));
	if (auto ts = msg.getObject("timestamp")) {
		ev.seconds = ts->getInt("seconds").ok() ? ts->getInt("seconds").value() : 0;
		ev.microseconds = ts->getInt("microseconds").ok() ? ts->getInt("microseconds").value() : 0;
		// timestampUs() and the differences the runners take of it must not overflow:
		// 2^40 s is 34000 years, anything beyond (or negative) is not a real clock.
		if (ev.seconds < 0 || ev.seconds >= (int64_t(1) << 40) || ev.microseconds < 0 ||
		    ev.microseconds >= 1000000)
			ev.seconds = ev.microseconds = 0;
	}
	if (auto d = msg.get("data"))
		ev.dataJson = d->toString();
	else
		ev.dataJson = "{}";
	return ev;
}

Result<JsonValue> parseQmpLine(std::string_view line)
{
	auto parsed = JsonValue::parse(line);
	if (!parsed)
		return parsed.error().context("QMP message");
	if (!parsed->isObject())
		return Error(EBADMSG, "QMP message is not a JSON object");
	return parsed;
}

Result<JsonValue> qmpReturn(std::string_view command, const JsonValue &reply)
{
	if (reply.has("error")) {
		auto err = reply.getObject("error");
		std::string cls = "?", desc = reply.toString();
		if (err) {
			if (auto c = err->getString("class"))
				cls = c.value();
			if (auto d = err->getString("desc"))
				desc = d.value();
		}
		return Error::format(EREMOTEIO, "{}: {}: {}", command, cls, desc);
	}
	auto ret = reply.get("return");
	if (!ret)
		return ret.error().context(command);
	return ret;
}

Result<MigrationInfo> MigrationInfo::fromJson(const JsonValue &reply)
{
	MigrationInfo info;
	info.rawJson = reply.toString();
	if (!reply.isObject())
		return Error(EBADMSG, "query-migrate: reply is not an object");
	// Before any migration QEMU returns {} (no status): report "none".
	if (reply.has("status")) {
		FERRY_ASSIGN(info.status, reply.getString("status").context("query-migrate"));
	} else {
		info.status = "none";
	}
	auto optInt = [](const JsonValue &o, std::string_view key) -> std::optional<int64_t> {
		auto r = o.getInt(key);
		if (!r)
			return std::nullopt;
		return r.value();
	};
	if (auto e = reply.getString("error-desc"))
		info.errorDesc = e.value();
	info.totalTimeMs = optInt(reply, "total-time");
	info.downtimeMs = optInt(reply, "downtime");
	info.expectedDowntimeMs = optInt(reply, "expected-downtime");
	info.setupTimeMs = optInt(reply, "setup-time");
	if (auto ram = reply.getObject("ram")) {
		const JsonValue &r = ram.value();
		info.ramTransferred = optInt(r, "transferred");
		info.ramRemaining = optInt(r, "remaining");
		info.ramTotal = optInt(r, "total");
		info.ramDuplicate = optInt(r, "duplicate");
		info.ramNormal = optInt(r, "normal");
		info.dirtySyncCount = optInt(r, "dirty-sync-count");
		info.dirtyPagesRate = optInt(r, "dirty-pages-rate");
		info.postcopyRequests = optInt(r, "postcopy-requests");
		if (auto m = r.getDouble("mbps"))
			info.mbps = m.value();
	}
	return info;
}

Result<QmpClient> QmpClient::connect(const std::string &socketPath, std::chrono::milliseconds timeout)
{
	const auto deadline = Clock::now() + timeout;
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	if (socketPath.size() >= sizeof(addr.sun_path))
		return Error::format(ENAMETOOLONG, "QMP socket path too long: {}", socketPath);
	std::copy(socketPath.begin(), socketPath.end(), addr.sun_path);

	for (;;) {
		UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
		if (!fd)
			return Error::fromErrno("socket");
		if (::connect(fd.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) == 0) {
			auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
			return fromConnectedFd(std::move(fd), socketPath,
					       std::max(left, std::chrono::milliseconds(1)));
		}
		int err = errno;
		// ENOENT: QEMU has not created the socket yet; ECONNREFUSED: created but not yet
		// listening (or a stale file). Anything else will not fix itself.
		if (err != ENOENT && err != ECONNREFUSED && err != EINTR)
			return Error::fromErrno(fmt::format("connect {}", socketPath), err);
		if (Clock::now() >= deadline)
			return Error::fromErrno(fmt::format("connect {} (gave up after {} ms)", socketPath,
							    timeout.count()), err == EINTR ? ETIMEDOUT : err);
		// The socket file appears once, early in QEMU's start-up; a short back-off costs at
		// most a few ms of start-up latency and avoids an inotify watch per connect.
		std::this_thread::sleep_for(std::chrono::milliseconds(5));
	}
}

Result<QmpClient> QmpClient::fromConnectedFd(UniqueFd fd, std::string name, std::chrono::milliseconds timeout)
{
	QmpClient c(std::move(fd), std::move(name));
	FERRY_TRY_CTX(c.handshake(Clock::now() + timeout), "QMP {}", c.name_);
	return c;
}

Status QmpClient::handshake(Clock::time_point deadline)
{
	auto g = readMessage(deadline);
	if (!g)
		return g.error().context("greeting");
	JsonValue greeting = std::move(g).value();
	if (!greeting.has("QMP"))
		return breakStream(Error::format(EPROTO, "greeting: expected {{\"QMP\": ...}}, got {}",
						 greeting.toString().substr(0, 200)));
	int64_t id = nextId_++;
	FERRY_TRY(sendLine(fmt::format("{{\"execute\":\"qmp_capabilities\",\"id\":{}}}", id), deadline));
	auto r = readReply(id, deadline);
	if (!r)
		return r.error().context("qmp_capabilities");
	JsonValue reply = std::move(r).value();
	if (reply.has("error")) {
		std::string desc = reply.toString();
		return Error::format(EREMOTEIO, "qmp_capabilities refused: {}", desc.substr(0, 500));
	}
	return okStatus();
}

Error QmpClient::breakStream(Error e)
{
	if (!broken_)
		broken_ = e;
	return e;
}

Status QmpClient::sendLine(const std::string &line, Clock::time_point deadline)
{
	if (broken_)
		return *broken_;
	std::string out = line + "\n";
	size_t off = 0;
	while (off < out.size()) {
		auto ready = pollOne(fd_.get(), POLLOUT, msUntil(deadline));
		if (!ready)
			return breakStream(ready.error());
		if (*ready == 0)
			// A partial command on the wire would desynchronize the stream.
			return breakStream(Error(ETIMEDOUT, "send: timed out writing a command"));
		// MSG_NOSIGNAL: a QEMU that exited must give EPIPE, not kill us with SIGPIPE.
		ssize_t w = ::send(fd_.get(), out.data() + off, out.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			int err = errno;
			if (err == EPIPE || err == ECONNRESET)
				return breakStream(Error(err, "QMP connection closed (QEMU gone?)"));
			return breakStream(Error::fromErrno("send", err));
		}
		off += static_cast<size_t>(w);
	}
	return okStatus();
}

Result<JsonValue> QmpClient::readMessage(Clock::time_point deadline)
{
	if (broken_)
		return *broken_;
	for (;;) {
		size_t nl = rbuf_.find('\n', scanned_);
		if (nl != std::string::npos) {
			auto parsed = parseQmpLine(std::string_view(rbuf_.data(), nl));
			rbuf_.erase(0, nl + 1);
			scanned_ = 0;
			if (!parsed)
				// After a malformed line we cannot trust what follows to be framed the way
				// we think: fail this and every later call.
				return breakStream(parsed.error());
			return std::move(parsed).value();
		}
		scanned_ = rbuf_.size();
		if (rbuf_.size() > kMaxMessageBytes)
			return breakStream(Error::format(EMSGSIZE, "QMP message exceeds {} bytes",
							 kMaxMessageBytes));

		auto ready = pollOne(fd_.get(), POLLIN, msUntil(deadline));
		if (!ready)
			return breakStream(ready.error());
		if (*ready == 0)
			return Error(ETIMEDOUT, "timed out waiting for QMP message");
		char buf[65536];
		ssize_t r = ::recv(fd_.get(), buf, sizeof(buf), MSG_DONTWAIT);
		if (r < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			int err = errno;
			if (err == ECONNRESET)
				return breakStream(Error(err, "QMP connection closed (QEMU gone?)"));
			return breakStream(Error::fromErrno("recv", err));
		}
		if (r == 0) {
			if (!rbuf_.empty())
				return breakStream(Error::format(ECONNRESET,
								 "QMP connection closed in the middle of a message ({} bytes pending)",
								 rbuf_.size()));
			return breakStream(Error(ECONNRESET, "QMP connection closed (QEMU gone?)"));
		}
		rbuf_.append(buf, static_cast<size_t>(r));
	}
}

Status QmpClient::queueEvent(const JsonValue &msg, int64_t receivedNs)
{
	FERRY_ASSIGN(QmpEvent ev, QmpEvent::fromMessage(msg));
	ev.monotonicReceivedNs = receivedNs;
	FERRY_LOG(Debug, "qmp", "[qmp {}] event {} {}", name_, ev.name, ev.dataJson);
	if (events_.size() >= kMaxQueuedEvents) {
		events_.pop_front();
		droppedEvents_++;
		FERRY_LOG_RATELIMITED(Warn, "qmp", "[qmp {}] event queue full, dropped {} so far",
				      name_, droppedEvents_);
	}
	events_.push_back(std::move(ev));
	return okStatus();
}

Result<JsonValue> QmpClient::readReply(int64_t id, Clock::time_point deadline)
{
	for (;;) {
		FERRY_ASSIGN(JsonValue msg, readMessage(deadline));
		if (msg.has("event")) {
			FERRY_TRY(queueEvent(msg, monotonicNs()));
			continue;
		}
		if (!msg.has("return") && !msg.has("error"))
			return breakStream(Error::format(EPROTO, "unexpected QMP message: {}",
							 msg.toString().substr(0, 200)));
		auto rid = msg.getInt("id");
		if (!rid || rid.value() != id) {
			// A late reply to a command that timed out earlier (or one without our id).
			FERRY_LOG(Debug, "qmp", "[qmp {}] discarding reply for another id: {}", name_,
				  msg.toString().substr(0, 200));
			continue;
		}
		return msg;
	}
}

Result<JsonValue> QmpClient::execute(std::string_view command, const JsonValue *arguments,
				     std::chrono::milliseconds timeout)
{
	const auto deadline = Clock::now() + timeout;
	int64_t id = nextId_++;
	JsonValue cmd = JsonValue::object();
	cmd.set("execute", command);
	if (arguments && !arguments->isNull())
		cmd.set("arguments", arguments->clone());
	cmd.set("id", id);
	auto sent = sendLine(cmd.toString(), deadline);
	if (!sent)
		return sent.error().context(command);
	auto reply = readReply(id, deadline);
	if (!reply)
		return reply.error().context(command);
	return qmpReturn(command, reply.value());
}

Status QmpClient::run(std::string_view command, const JsonValue *arguments)
{
	FERRY_ASSIGN([[maybe_unused]] JsonValue r, execute(command, arguments));
	return okStatus();
}

Status QmpClient::stop() { return run("stop"); }

Status QmpClient::cont() { return run("cont"); }

Result<std::string> QmpClient::queryStatus()
{
	FERRY_ASSIGN(JsonValue r, execute("query-status"));
	return r.getString("status").context("query-status");
}

Status QmpClient::migrateSetCapabilities(const std::vector<std::pair<std::string, bool>> &caps)
{
	JsonValue list = JsonValue::array();
	for (const auto &[name, on] : caps) {
		JsonValue c = JsonValue::object();
		c.set("capability", name).set("state", on);
		list.append(std::move(c));
	}
	JsonValue args = JsonValue::object();
	args.set("capabilities", std::move(list));
	return run("migrate-set-capabilities", &args);
}

Status QmpClient::migrateSetParameters(const JsonValue &params)
{
	return run("migrate-set-parameters", &params);
}

Status QmpClient::migrate(std::string_view uri)
{
	JsonValue args = JsonValue::object();
	args.set("uri", uri);
	return run("migrate", &args);
}

Status QmpClient::migrateIncoming(std::string_view uri)
{
	JsonValue args = JsonValue::object();
	args.set("uri", uri);
	return run("migrate-incoming", &args);
}

Status QmpClient::migrateStartPostcopy() { return run("migrate-start-postcopy"); }

Status QmpClient::migrateCancel() { return run("migrate_cancel"); }

Result<MigrationInfo> QmpClient::queryMigrate()
{
	FERRY_ASSIGN(JsonValue r, execute("query-migrate"));
	return MigrationInfo::fromJson(r);
}

Status QmpClient::quit()
{
	auto r = execute("quit", nullptr, std::chrono::seconds(10));
	// QEMU may exit before its reply reaches us; a closed connection is the expected outcome.
	if (!r && r.error().code() != ECONNRESET && r.error().code() != EPIPE)
		return r.error();
	return okStatus();
}

Result<QmpEvent> QmpClient::waitEvent(std::string_view name, std::chrono::milliseconds timeout)
{
	return waitEvent({name}, timeout);
}

Result<QmpEvent> QmpClient::waitEvent(std::initializer_list<std::string_view> names,
				      std::chrono::milliseconds timeout)
{
	const auto deadline = Clock::now() + timeout;
	auto matches = [&](const QmpEvent &e) {
		if (names.size() == 0)
			return true;
		for (auto n : names)
			if (n.empty() || e.name == n)
				return true;
		return false;
	};
	auto fromQueue = [&]() -> std::optional<QmpEvent> {
		for (auto it = events_.begin(); it != events_.end(); ++it) {
			if (matches(*it)) {
				QmpEvent e = std::move(*it);
				events_.erase(it);
				return e;
			}
		}
		return std::nullopt;
	};
	if (auto e = fromQueue())
		return std::move(*e);
	for (;;) {
		auto msg = readMessage(deadline);
		if (!msg) {
			if (msg.error().code() == ETIMEDOUT) {
				std::string list;
				for (auto n : names)
					list += (list.empty() ? "" : "|") + std::string(n);
				return Error::format(ETIMEDOUT, "timed out after {} ms waiting for event {}",
						     timeout.count(), list.empty() ? "(any)" : list);
			}
			return msg.error();
		}
		if (!msg->has("event")) {
			FERRY_LOG(Debug, "qmp", "[qmp {}] discarding stray reply: {}", name_,
				  msg->toString().substr(0, 200));
			continue;
		}
		FERRY_TRY(queueEvent(msg.value(), monotonicNs()));
		if (auto e = fromQueue())
			return std::move(*e);
	}
}

Status QmpClient::pump()
{
	for (;;) {
		// Deadline "now": readMessage polls with 0 ms and returns ETIMEDOUT once nothing is
		// readable.
		auto msg = readMessage(Clock::now());
		if (!msg) {
			if (msg.error().code() == ETIMEDOUT)
				return okStatus();
			return msg.error();
		}
		if (msg->has("event"))
			FERRY_TRY(queueEvent(msg.value(), monotonicNs()));
	}
}

std::vector<QmpEvent> QmpClient::drainEvents()
{
	// A broken stream still yields what was queued before it broke.
	(void)pump();
	std::vector<QmpEvent> out(std::make_move_iterator(events_.begin()),
				  std::make_move_iterator(events_.end()));
	events_.clear();
	return out;
}

} // namespace ferry
