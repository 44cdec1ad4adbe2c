// SPDX-License-Identifier: GPL-2.0-or-later
// The QMP reply/event parser (qmp/src/qmp_client.cpp, core/base/json.cpp) on what QEMU, and so a
// guest that has taken it over, can write to the QMP socket. The input is the byte stream;
// it is cut into lines at '\n' as QmpClient does, and each line decoded the way the client
// does: parseQmpLine, then QmpEvent::fromMessage for events and qmpReturn for replies, whose
// "return" then goes through the reply readers (MigrationInfo, QemuDirtyRateInfo). As in
// the client, the first malformed line ends the stream.
//
// Invariants checked beyond "no crash": JSON that parsed prints to text that parses to the
// same text again; an event's data parses; errors carry the errno the API documents.
#include "ferry/qmp/dirty_rate.h"
#include "ferry/base/json.h"
#include "ferry/qmp/qmp_client.h"

#include "fuzz_check.h"

using namespace ferry;

namespace {

constexpr size_t kMaxLines = 32;

void checkPrintsStably(const JsonValue &v)
{
	std::string text = v.toString();
	auto again = JsonValue::parse(text);
	FUZZ_CHECK(again.ok());
	FUZZ_CHECK(again->toString() == text);
}

void event(const JsonValue &msg)
{
	auto ev = QmpEvent::fromMessage(msg);
	if (!ev.ok()) {
		FUZZ_CHECK(ev.error().code() == EINVAL); // "event" is not a string
		return;
	}
	FUZZ_CHECK(ev->monotonicReceivedNs == 0);
	// The runners subtract the timestamps of two events (downtime between STOP and RESUME).
	[[maybe_unused]] volatile int64_t us = ev->timestampUs();
	auto data = ev->data();
	FUZZ_CHECK(data.ok());
	if (auto status = ev->dataString("status"); !status.ok())
		FUZZ_CHECK(status.error().code() == ENOENT || status.error().code() == EINVAL);
	if (auto pass = ev->dataInt("pass"); !pass.ok())
		FUZZ_CHECK(pass.error().code() == ENOENT || pass.error().code() == EINVAL);
}

void reply(const JsonValue &msg)
{
	auto ret = qmpReturn("query-migrate", msg);
	if (!ret.ok()) {
		FUZZ_CHECK(ret.error().code() == EREMOTEIO || ret.error().code() == ENOENT);
		return;
	}
	checkPrintsStably(*ret);
	if (auto info = MigrationInfo::fromJson(*ret); info.ok())
		FUZZ_CHECK(!info->status.empty() || ret->has("status"));
	(void)QemuDirtyRateInfo::fromJson(*ret);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	std::string_view in = ferry::fuzz::asText({data, size});
	for (size_t lines = 0; lines < kMaxLines && !in.empty(); lines++) {
		// The client only parses complete lines; a last one without '\n' is parsed anyway,
		// as if the newline had come in the next read.
		size_t nl = in.find('\n');
		std::string_view line = in.substr(0, nl);
		in = nl == std::string_view::npos ? std::string_view() : in.substr(nl + 1);

		auto msg = parseQmpLine(line);
		if (!msg.ok()) {
			FUZZ_CHECK(msg.error().code() == EBADMSG || msg.error().code() == EMSGSIZE);
			break;
		}
		FUZZ_CHECK(msg->isObject());
		checkPrintsStably(*msg);
		if (msg->has("event"))
			event(*msg);
		else if (msg->has("return") || msg->has("error"))
			reply(*msg);
	}
	return 0;
}
