// SPDX-License-Identifier: GPL-2.0-or-later
// QmpClient against a scripted fake QMP server: every failure must be a clear Error, never a hang.
#include <cerrno>
#include <chrono>

#include <gtest/gtest.h>

#include "ferry/qmp/qmp_client.h"

#include "support/fake_qmp_server.h"
#include "support/result_checks.h"

using namespace std::chrono_literals;
using ferry::JsonValue;
using ferry::parseQmpLine;
using ferry::QmpClient;
using ferry::QmpEvent;
using ferry::test::FakeQmpPeer;
using ferry::test::FakeQmpServer;
using ferry::test::failsWith;

namespace {

ferry::Result<QmpClient> connectTo(FakeQmpServer &server, std::chrono::milliseconds timeout = 2s)
{
	return QmpClient::fromConnectedFd(server.takeClientFd(), "fake", timeout);
}

} // namespace

TEST(JsonValue, ParsesAndReadsTypedMembers)
{
	auto v = JsonValue::parse(R"({"s": "x", "i": -5, "b": true, "o": {"n": 1}, "a": [1, 2]})");
	ASSERT_TRUE(v.ok()) << v.error().message();
	EXPECT_EQ(v->getString("s").value(), "x");
	EXPECT_EQ(v->getInt("i").value(), -5);
	EXPECT_TRUE(v->getBool("b").value());
	EXPECT_EQ(v->getObject("o")->getInt("n").value(), 1);
	EXPECT_EQ(v->get("a")->size(), 2u);
	EXPECT_EQ(v->getInt("missing").error().code(), ENOENT);
	EXPECT_EQ(v->getInt("s").error().code(), EINVAL);
	EXPECT_EQ(v->getObject("a").error().code(), EINVAL);
}

TEST(JsonValue, ChildOutlivesParent)
{
	JsonValue child;
	{
		auto v = JsonValue::parse(R"({"o": {"n": 7}})");
		ASSERT_TRUE(v.ok());
		child = std::move(v->getObject("o").value());
	}
	EXPECT_EQ(child.getInt("n").value(), 7);
}

TEST(JsonValue, RejectsMalformedTruncatedAndTrailingText)
{
	EXPECT_EQ(JsonValue::parse(R"({"a": )").error().code(), EBADMSG);
	EXPECT_EQ(JsonValue::parse(R"({"a": 1}})").error().code(), EBADMSG);
	EXPECT_EQ(JsonValue::parse(R"({"a": 1} x)").error().code(), EBADMSG);
	EXPECT_EQ(JsonValue::parse("{nope}").error().code(), EBADMSG);
	EXPECT_TRUE(JsonValue::parse("{\"a\": 1}\r\n").ok());
}

TEST(JsonValue, ParsesAScalarThatEndsTheText)
{
	// json-c completes a number or literal only when it sees what follows; found by
	// tests/fuzz/qmp_fuzz.cpp ({"return":3} printed its return value as "3", which failed to
	// parse as "truncated").
	for (const char *text : {"3", "-0.5", "true", "null", "\"s\""}) {
		auto v = JsonValue::parse(text);
		ASSERT_TRUE(v.ok()) << text << ": " << v.error().message();
		EXPECT_EQ(v->toString(), text);
	}
	EXPECT_EQ(JsonValue::parse("tru").error().code(), EBADMSG);
	EXPECT_EQ(JsonValue::parse("[1").error().code(), EBADMSG);
	EXPECT_NE(JsonValue::parse("[1").error().message().find("truncated"), std::string::npos);
}

TEST(JsonValue, RejectsNumbersJsonDoesNotAllowSoWhatItPrintsParsesBackTheSame)
{
	// Found by tests/fuzz/qmp_fuzz.cpp: json-c's lenient mode read {"":07e} and printed it as
	// {"":07}, which parsed back as {"":7}.
	for (const char *text : {R"({"":07e})", R"({"":07})", R"({"":1e})", R"({"":1E+})", R"({"a": [1,]})"})
		EXPECT_EQ(JsonValue::parse(text).error().code(), EBADMSG) << text;
	for (const char *text : {R"({"a":-0.5e-3,"b":0,"c":[1,2],"d":"\u0000"})", R"({"t":1.5e3})"}) {
		auto v = JsonValue::parse(text);
		ASSERT_TRUE(v.ok()) << text << ": " << v.error().message();
		EXPECT_EQ(v->toString(), text);
	}
}

TEST(QmpEvent, TimestampOutOfRangeReadsAsZero)
{
	// Found by tests/fuzz/qmp_fuzz.cpp: timestampUs() overflowed (UBSan) on seconds near
	// INT64_MAX.
	auto decode = [](const char *line) {
		auto msg = parseQmpLine(line);
		EXPECT_TRUE(msg.ok());
		auto ev = QmpEvent::fromMessage(msg.value());
		EXPECT_TRUE(ev.ok()) << ev.error().message();
		return std::move(ev).value();
	};
	QmpEvent ok = decode(R"({"event": "STOP", "timestamp": {"seconds": 1700000000, "microseconds": 5}})");
	EXPECT_EQ(ok.timestampUs(), 1700000000000005);
	for (const char *line : {
		     R"({"event": "STOP", "timestamp": {"seconds": 9223372036854775807, "microseconds": 1}})",
		     R"({"event": "STOP", "timestamp": {"seconds": -1, "microseconds": -1}})",
		     R"({"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 1000000}})",
		     R"({"event": "STOP", "timestamp": {"seconds": 1, "microseconds": -9223372036854775808}})",
	     }) {
		QmpEvent ev = decode(line);
		EXPECT_EQ(ev.seconds, 0) << line;
		EXPECT_EQ(ev.microseconds, 0) << line;
		EXPECT_EQ(ev.timestampUs(), 0) << line;
	}
}

TEST(JsonValue, BuildsCompactText)
{
	JsonValue o = JsonValue::object();
	JsonValue caps = JsonValue::array();
	caps.append(JsonValue::string("a/b"));
	o.set("n", 3).set("s", "x\"y").set("t", true).set("l", std::move(caps));
	EXPECT_EQ(o.toString(), R"({"n":3,"s":"x\"y","t":true,"l":["a/b"]})");
}

TEST(QmpClient, HandshakeSendsCapabilitiesAfterGreeting)
{
	FakeQmpServer server([](FakeQmpPeer &p) { p.greet(); });
	auto c = connectTo(server);
	ASSERT_TRUE(c.ok()) << c.error().message();
}

TEST(QmpClient, RejectsGreetingWithoutQmpMember)
{
	FakeQmpServer server([](FakeQmpPeer &p) { p.sendLine(R"({"hello": 1})"); });
	auto c = connectTo(server);
	ASSERT_TRUE(failsWith(c, EPROTO, "greeting"));
}

TEST(QmpClient, HandshakeTimesOutWithoutGreeting)
{
	FakeQmpServer server([](FakeQmpPeer &p) { p.readLine(); /* until the client hangs up */ });
	auto start = std::chrono::steady_clock::now();
	auto c = connectTo(server, 200ms);
	ASSERT_TRUE(failsWith(c, ETIMEDOUT));
	EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
}

TEST(QmpClient, CommandReturnsReturnMember)
{
	FakeQmpServer server([](FakeQmpPeer &p) {
		p.greet();
		int64_t id = p.expectCommand("query-status");
		p.reply(id, R"({"status": "running", "singlestep": false, "running": true})");
	});
	auto c = connectTo(server);
	ASSERT_TRUE(c.ok()) << c.error().message();
	auto st = c->queryStatus();
	ASSERT_TRUE(st.ok()) << st.error().message();
	EXPECT_EQ(st.value(), "running");
}

TEST(QmpClient, SendsArgumentsVerbatim)
{
	std::string seen;
	FakeQmpServer server([&](FakeQmpPeer &p) {
		p.greet();
		seen = p.readLine();
		auto cmd = JsonValue::parse(seen);
		p.reply(cmd.ok() ? cmd->getInt("id").value() : 0, "{}");
	});
	auto c = connectTo(server);
	ASSERT_TRUE(c.ok());
	ASSERT_TRUE(c->migrateSetCapabilities({{"postcopy-ram", true}, {"events", false}}).ok());
	auto cmd = JsonValue::parse(seen);
	ASSERT_TRUE(cmd.ok()) << seen;
	EXPECT_EQ(cmd->getString("execute").value(), "migrate-set-capabilities");
	auto caps = cmd->getObject("arguments")->get("capabilities");
	ASSERT_TRUE(caps.ok());
	ASSERT_EQ(caps->size(), 2u);
	EXPECT_EQ(caps->at(0)->getString("capability").value(), "postcopy-ram");
	EXPECT_TRUE(caps->at(0)->getBool("state").value());
	EXPECT_FALSE(caps->at(1)->getBool("state").value());
}

TEST(QmpClient, QmpErrorCarriesClassAndDesc)
{
	FakeQmpServer server([](FakeQmpPeer &p) {
		p.greet();
		int64_t id = p.expectCommand("migrate");
		p.sendLine(fmt::format(R"({{"id": {}, "error": {{"class": "GenericError", "desc": "Failed to connect socket"}}}})", id));
	});
	auto c = connectTo(server);
	ASSERT_TRUE(c.ok());
	auto s = c->migrate("unix:/nonexistent");
	ASSERT_TRUE(failsWith(s, EREMOTEIO));
	EXPECT_EQ(s.error().message(), "migrate: GenericError: Failed to connect socket");
}

TEST(QmpClient, EventsBeforeReplyAreQueuedInOrder)
{
	FakeQmpServer server([](FakeQmpPeer &p) {
		p.greet();
		int64_t id = p.expectCommand("stop");
		p.event("MIGRATION", R"({"status": "active"})", 1700000000, 1);
		p.event("STOP", "{}", 1700000000, 2);
		p.event("MIGRATION", R"({"status": "completed"})", 1700000000, 3);
		p.reply(id, "{}");
	});
	auto c = connectTo(server);
	ASSERT_TRUE(c.ok());
	ASSERT_TRUE(c->stop().ok());
	auto stop = c->waitEvent("STOP", 100ms);
	ASSERT_TRUE(stop.ok()) << stop.error().message();
	EXPECT_EQ(stop->seconds, 1700000000);
	EXPECT_EQ(stop->microseconds, 2);
	EXPECT_GT(stop->monotonicReceivedNs, 0);
	// The other events stay queued, in arrival order.
	auto m1 = c->waitEvent("MIGRATION", 100ms);
	auto m2 = c->waitEvent("MIGRATION", 100ms);
	ASSERT_TRUE(m1.ok() && m2.ok());
	EXPECT_EQ(m1->dataString("status").value(), "active");
	EXPECT_EQ(m2->dataString("status").value(), "completed");
	EXPECT_TRUE(c->drainEvents().empty());
}

TEST(QmpClient, WaitEventReadsFromSocketAndMatchesAnyOfNames)
{
	FakeQmpServer server([](FakeQmpPeer &p) {
		p.greet();
		p.event("RTC_CHANGE", R"({"offset": 1})");
		p.event("SHUTDOWN", R"({"guest": false, "reason": "host-qmp-quit"})");
	});
	auto c = connectTo(server);
	ASSERT_TRUE(c.ok());
	auto e = c->waitEvent({"RESUME", "SHUTDOWN"}, 2s);
	ASSERT_TRUE(e.ok()) << e.error().message();
	EXPECT_EQ(e->name, "SHUTDOWN");
	EXPECT_EQ(e->dataString("reason").value(), "host-qmp-quit");
	auto rest = c->drainEvents();
	ASSERT_EQ(rest.size(), 1u);
	EXPECT_EQ(rest[0].name, "RTC_CHANGE");
}

TEST(QmpClient, WaitEventTimesOut)
{
	FakeQmpServer server([](FakeQmpPeer &p) {
		p.greet();
		p.readLine(); // until the client hangs up
	});
	auto c = connectTo(server);
	ASSERT_TRUE(c.ok());
	auto start = std::chrono::steady_clock::now();
	auto e = c->waitEvent("RESUME", 150ms);
	ASSERT_TRUE(failsWith(e, ETIMEDOUT));
	EXPECT_GE(std::chrono::steady_clock::now() - start, 150ms);
	EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
}

TEST(QmpClient, MalformedJsonIsAClearErrorAndBreaksTheStream)
{
	FakeQmpServer server([](FakeQmpPeer &p) {
		p.greet();
		p.expectCommand("query-status");
		p.sendLine(R"({"return": {"status": "running"})"); // missing brace
	});
	auto c = connectTo(server);
	ASSERT_TRUE(c.ok());
	auto st = c->queryStatus();
	ASSERT_TRUE(failsWith(st, EBADMSG, "malformed JSON"));
	EXPECT_TRUE(c->broken());
	// Later calls fail fast with the same cause instead of reading a desynchronized stream.
	auto again = c->queryStatus();
	ASSERT_TRUE(failsWith(again, EBADMSG));
}

TEST(QmpClient, NonObjectMessageIsRejected)
{
	FakeQmpServer server([](FakeQmpPeer &p) {
		p.greet();
		p.expectCommand("query-status");
		p.sendLine("[1, 2, 3]");
	});
	auto c = connectTo(server);
	ASSERT_TRUE(c.ok());
	auto st = c->queryStatus();
	ASSERT_TRUE(failsWith(st, EBADMSG));
}

TEST(QmpClient, OversizedReplyIsRejected)
{
	FakeQmpServer server([](FakeQmpPeer &p) {
		p.greet();
		int64_t id = p.expectCommand("query-status");
		// A reply string larger than the bound, never terminated: the client must stop
		// buffering at the limit rather than grow without bound.
		std::string huge = fmt::format(R"({{"id": {}, "return": {{"status": ")", id);
		huge.append(QmpClient::kMaxMessageBytes + 4096, 'x');
		p.send(huge);
	});
	auto c = connectTo(server);
	ASSERT_TRUE(c.ok());
	auto st = c->queryStatus();
	ASSERT_TRUE(failsWith(st, EMSGSIZE));
}

TEST(QmpClient, ServerClosingMidReplyIsAClearError)
{
	FakeQmpServer server([](FakeQmpPeer &p) {
		p.greet();
		p.expectCommand("query-status");
		p.send(R"({"return": {"stat)");
		p.close();
	});
	auto c = connectTo(server);
	ASSERT_TRUE(c.ok());
	auto st = c->queryStatus();
	ASSERT_TRUE(failsWith(st, ECONNRESET, "middle of a message"));
}

TEST(QmpClient, ServerGoneIsAClearErrorForCommandsAndEvents)
{
	FakeQmpServer server([](FakeQmpPeer &p) {
		p.greet();
		p.close();
	});
	auto c = connectTo(server);
	ASSERT_TRUE(c.ok());
	auto e = c->waitEvent("SHUTDOWN", 2s);
	ASSERT_TRUE(failsWith(e, ECONNRESET));
	auto st = c->queryStatus();
	ASSERT_FALSE(st.ok());
	EXPECT_TRUE(st.error().code() == ECONNRESET || st.error().code() == EPIPE) << st.error().message();
	EXPECT_NE(st.error().message().find("QMP connection closed"), std::string::npos) << st.error().message();
}

TEST(QmpClient, ReplyTimeoutLeavesStreamUsableAndDropsLateReply)
{
	FakeQmpServer server([](FakeQmpPeer &p) {
		p.greet();
		int64_t slowId = p.expectCommand("query-migrate");
		int64_t nextId = p.expectCommand("query-status");
		// The reply to the timed-out command arrives late, then the current one.
		p.reply(slowId, R"({"status": "active"})");
		p.reply(nextId, R"({"status": "paused", "running": false})");
	});
	auto c = connectTo(server);
	ASSERT_TRUE(c.ok());
	auto start = std::chrono::steady_clock::now();
	auto slow = c->execute("query-migrate", nullptr, 100ms);
	ASSERT_TRUE(failsWith(slow, ETIMEDOUT));
	EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
	auto st = c->queryStatus();
	ASSERT_TRUE(st.ok()) << st.error().message();
	EXPECT_EQ(st.value(), "paused");
}

TEST(QmpClient, QueryMigrateParsesRamCounters)
{
	FakeQmpServer server([](FakeQmpPeer &p) {
		p.greet();
		int64_t id = p.expectCommand("query-migrate");
		// One line: QMP frames messages by CRLF.
		p.reply(id, R"({"status": "completed", "setup-time": 3, "downtime": 42, "total-time": 1234, )"
			    R"("ram": {"transferred": 1000, "remaining": 0, "total": 268435456, "duplicate": 5, )"
			    R"("normal": 7, "dirty-sync-count": 4, "dirty-pages-rate": 0, "mbps": 812.5, )"
			    R"("postcopy-requests": 0, "page-size": 4096}})");
	});
	auto c = connectTo(server);
	ASSERT_TRUE(c.ok());
	auto info = c->queryMigrate();
	ASSERT_TRUE(info.ok()) << info.error().message();
	EXPECT_EQ(info->status, "completed");
	EXPECT_EQ(info->downtimeMs, 42);
	EXPECT_EQ(info->totalTimeMs, 1234);
	EXPECT_EQ(info->setupTimeMs, 3);
	EXPECT_EQ(info->ramTransferred, 1000);
	EXPECT_EQ(info->dirtySyncCount, 4);
	EXPECT_DOUBLE_EQ(info->mbps.value(), 812.5);
	EXPECT_FALSE(info->expectedDowntimeMs.has_value());
}

TEST(QmpClient, QueryMigrateBeforeAnyMigrationIsNone)
{
	FakeQmpServer server([](FakeQmpPeer &p) {
		p.greet();
		p.reply(p.expectCommand("query-migrate"), "{}");
	});
	auto c = connectTo(server);
	ASSERT_TRUE(c.ok());
	auto info = c->queryMigrate();
	ASSERT_TRUE(info.ok());
	EXPECT_EQ(info->status, "none");
}

TEST(QmpClient, ConnectToMissingSocketGivesUpAtTimeout)
{
	auto start = std::chrono::steady_clock::now();
	auto c = QmpClient::connect("/tmp/ferry-qmp-test-does-not-exist.sock", 100ms);
	ASSERT_TRUE(failsWith(c, ENOENT));
	EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
}
