// SPDX-License-Identifier: GPL-2.0-or-later
// QMP client: one move-only owner of a QMP UNIX socket (QEMU's -qmp unix:PATH,server=on).
//
// Protocol contract relied on (QEMU docs/interop/qmp-spec): the server sends one JSON object
// per line terminated by CRLF; first a greeting {"QMP": ...}; commands are accepted only after
// qmp_capabilities; a reply echoes the command's "id"; asynchronous events
// {"event", "timestamp": {"seconds", "microseconds"}, "data"} may arrive at any time, also
// between a command and its reply.
//
// Threading: a QmpClient is used by one thread at a time (no internal locking).
// Every call is bounded by a timeout; once the stream is broken (malformed or oversized
// message, connection closed, I/O error) every later call fails fast with the same cause.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ferry/base/result.h"
#include "ferry/base/json.h"
#include "ferry/sys/fd.h"

namespace ferry {

struct QmpEvent {
	std::string name;
	// QEMU's timestamp (wall clock, g_get_real_time) — comparable across QEMUs on one host.
	int64_t seconds = 0;
	int64_t microseconds = 0;
	std::string dataJson; // "data" member as compact JSON text, "{}" if absent
	int64_t monotonicReceivedNs = 0; // CLOCK_MONOTONIC when the client read it

	int64_t timestampUs() const { return seconds * 1000000 + microseconds; }
	// Parses dataJson (an object; a missing "data" parses as an empty object).
	Result<JsonValue> data() const;
	// Convenience readers of a member of "data".
	Result<std::string> dataString(std::string_view key) const;
	Result<int64_t> dataInt(std::string_view key) const;

	// An {"event": ...} message (monotonicReceivedNs left 0). The name must be a string; a
	// missing, malformed or out-of-range timestamp (seconds outside 0..2^40, microseconds
	// outside 0..999999) reads as 0.
	static Result<QmpEvent> fromMessage(const JsonValue &msg);
};

// The decoding half of the client, pure so it can be tested and fuzzed on its own (QEMU's
// output is as untrusted as the guest that drives it).
// One line from the server, without its '\n': exactly one JSON object (EBADMSG/EMSGSIZE).
Result<JsonValue> parseQmpLine(std::string_view line);
// A reply to `command`: its "return" member, or its error as EREMOTEIO "cmd: Class: desc".
Result<JsonValue> qmpReturn(std::string_view command, const JsonValue &reply);

// query-migrate, the fields the runners record. Absent fields stay nullopt (QEMU reports
// e.g. downtime only once the migration completed).
struct MigrationInfo {
	std::string status; // "none", "setup", "active", "postcopy-active", "device", "completed", "failed", "cancelled", ...
	std::optional<std::string> errorDesc;
	std::optional<int64_t> totalTimeMs;
	std::optional<int64_t> downtimeMs;
	std::optional<int64_t> expectedDowntimeMs;
	std::optional<int64_t> setupTimeMs;
	// "ram" member
	std::optional<int64_t> ramTransferred;
	std::optional<int64_t> ramRemaining;
	std::optional<int64_t> ramTotal;
	std::optional<int64_t> ramDuplicate;
	std::optional<int64_t> ramNormal;
	std::optional<int64_t> dirtySyncCount; // passes
	std::optional<int64_t> dirtyPagesRate;
	std::optional<double> mbps;
	std::optional<int64_t> postcopyRequests;
	std::string rawJson; // the whole reply, for the record

	static Result<MigrationInfo> fromJson(const JsonValue &reply);
};

class QmpClient {
public:
	// Largest single message accepted from the server; a longer line breaks the stream.
	static constexpr size_t kMaxMessageBytes = 16u << 20;
	// Largest number of queued, unconsumed events; older ones are dropped beyond it (a guest
	// can make QEMU emit events, so the queue must not grow without bound).
	static constexpr size_t kMaxQueuedEvents = 4096;

	QmpClient(QmpClient &&) noexcept = default;
	QmpClient &operator=(QmpClient &&) noexcept = default;
	QmpClient(const QmpClient &) = delete;
	QmpClient &operator=(const QmpClient &) = delete;
	~QmpClient() = default;

	// Connects to a UNIX socket, reads the greeting, sends qmp_capabilities. Retries the
	// connect (ENOENT, ECONNREFUSED: QEMU creates the socket a moment after it starts) until
	// the timeout, which bounds the whole handshake.
	static Result<QmpClient> connect(const std::string &socketPath, std::chrono::milliseconds timeout);
	// Same handshake over an already-connected stream socket (tests use a socketpair).
	static Result<QmpClient> fromConnectedFd(UniqueFd fd, std::string name, std::chrono::milliseconds timeout);

	// Synchronous command. Returns the "return" member, or an Error "cmd: Class: desc" for a
	// QMP error reply (errno EREMOTEIO). Events that arrive meanwhile are queued; replies to
	// earlier, timed-out commands are discarded by id. Timeout -> ETIMEDOUT (the stream stays
	// usable). QEMU gone -> ECONNRESET "QMP connection closed".
	Result<JsonValue> execute(std::string_view command, const JsonValue *arguments = nullptr,
				  std::chrono::milliseconds timeout = std::chrono::seconds(30));

	Status stop();
	Status cont();
	Result<std::string> queryStatus(); // "running", "paused", "inmigrate", "postmigrate", ...
	Status migrateSetCapabilities(const std::vector<std::pair<std::string, bool>> &caps);
	Status migrateSetParameters(const JsonValue &params);
	Status migrate(std::string_view uri);
	Status migrateIncoming(std::string_view uri);
	Status migrateStartPostcopy();
	Status migrateCancel();
	Result<MigrationInfo> queryMigrate();
	// Sends "quit"; QEMU may close the socket before or after replying, both are success.
	Status quit();

	// Next event with one of these names (all events if empty): first from the queue (events
	// of other names stay queued, in order), then from the socket. Timeout -> ETIMEDOUT.
	Result<QmpEvent> waitEvent(std::string_view name, std::chrono::milliseconds timeout);
	Result<QmpEvent> waitEvent(std::initializer_list<std::string_view> names,
				   std::chrono::milliseconds timeout);
	// Reads whatever is already readable without blocking, then returns and clears the queue.
	std::vector<QmpEvent> drainEvents();
	// Reads what is readable without blocking into the queue. Returns the stream error if any.
	Status pump();

	int fd() const { return fd_.get(); }
	const std::string &name() const { return name_; }
	// True once the stream broke; error() says why.
	bool broken() const { return broken_.has_value(); }

private:
	using Clock = std::chrono::steady_clock;

	QmpClient(UniqueFd fd, std::string name) : fd_(std::move(fd)), name_(std::move(name)) {}

	// execute() for a command whose reply carries nothing ({}): only success matters.
	Status run(std::string_view command, const JsonValue *arguments = nullptr);
	Status handshake(Clock::time_point deadline);
	Status sendLine(const std::string &line, Clock::time_point deadline);
	// Reads one complete message (waiting until deadline); events are not queued here.
	Result<JsonValue> readMessage(Clock::time_point deadline);
	// Reads messages until pred(msg) is true for a non-event message; events are queued.
	Result<JsonValue> readReply(int64_t id, Clock::time_point deadline);
	Status queueEvent(const JsonValue &msg, int64_t receivedNs);
	Error breakStream(Error e);

	UniqueFd fd_;
	std::string name_;
	std::string rbuf_;  // received bytes not yet consumed
	size_t scanned_ = 0; // bytes of rbuf_ already searched for '\n'
	std::deque<QmpEvent> events_;
	uint64_t droppedEvents_ = 0;
	int64_t nextId_ = 1;
	std::optional<Error> broken_;
};

} // namespace ferry
