// SPDX-License-Identifier: GPL-2.0-or-later
// The agent protocol's decoders (plugin/agent/agent_protocol.h) on one SEQPACKET packet: as a
// request the agent inside QEMU decodes (from whoever can open its socket), and as a reply
// AgentClient decodes (from a QEMU a guest may have taken over), including the PING and FIND
// reply texts. Packets longer than the side's limit are never decoded, so neither are they here.
//
// Invariants checked beyond "no crash": a decoded request re-encodes to a request that decodes
// to the same thing, its range is non-empty, page-aligned and does not wrap; a reply's errno
// is one; decoded PING/FIND texts re-encode to texts that decode the same.
#include <fmt/format.h>

#include "agent/agent_protocol.h"

#include "fuzz_check.h"

using namespace ferry;

namespace {

constexpr size_t kPage = 4096;

bool sameRequest(const agent::Request &a, const agent::Request &b)
{
	return a.kind == b.kind && a.substring == b.substring && a.start == b.start &&
	       a.length == b.length;
}

std::string encodeRequest(const agent::Request &r)
{
	switch (r.kind) {
	case agent::Request::Kind::Ping:
		return "PING";
	case agent::Request::Kind::Probe:
		return "PROBE";
	case agent::Request::Kind::Find:
		return fmt::format("FIND {}", r.substring);
	case agent::Request::Kind::Track:
		return fmt::format("TRACK {:x} {}", r.start, r.length);
	case agent::Request::Kind::Guard:
		return fmt::format("GUARD {:x} {}", r.start, r.length);
	}
	return {};
}

void request(std::string_view line)
{
	auto r = agent::decodeRequest(line, kPage);
	if (!r.ok()) {
		FUZZ_CHECK(r.error().code() == EINVAL);
		return;
	}
	switch (r->kind) {
	case agent::Request::Kind::Ping:
		FUZZ_CHECK(line == "PING");
		break;
	case agent::Request::Kind::Probe:
		FUZZ_CHECK(line == "PROBE");
		break;
	case agent::Request::Kind::Find:
		FUZZ_CHECK(!r->substring.empty() && line == fmt::format("FIND {}", r->substring));
		break;
	case agent::Request::Kind::Track:
	case agent::Request::Kind::Guard:
		FUZZ_CHECK(r->length > 0 && r->start % kPage == 0 && r->length % kPage == 0);
		FUZZ_CHECK(r->start + r->length > r->start);
		break;
	}
	std::string again = encodeRequest(*r);
	auto r2 = agent::decodeRequest(again, kPage);
	FUZZ_CHECK(r2.ok() && sameRequest(*r, *r2));
}

void reply(std::string_view packet)
{
	auto text = agent::decodeReply(packet);
	if (!text.ok()) {
		FUZZ_CHECK(text.error().code() > 0 && text.error().code() < 4096);
		return;
	}
	FUZZ_CHECK(packet.starts_with("OK") && packet.ends_with(*text));

	if (auto pid = agent::decodePingReply(*text); pid.ok()) {
		FUZZ_CHECK(*pid > 0);
		auto again = agent::decodePingReply(fmt::format("pid={}", *pid));
		FUZZ_CHECK(again.ok() && *again == *pid);
	} else {
		FUZZ_CHECK(pid.error().code() == EPROTO);
	}
	if (auto found = agent::decodeFindReply(*text); found.ok()) {
		auto again = agent::decodeFindReply(
			fmt::format("{:x} {} {}", found->base, found->size, found->fileOffset));
		FUZZ_CHECK(again.ok() && again->base == found->base && again->size == found->size &&
			   again->fileOffset == found->fileOffset);
	} else {
		FUZZ_CHECK(found.error().code() == EPROTO);
	}
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	std::string_view packet = ferry::fuzz::asText({data, size});
	if (packet.size() <= agent::kMaxRequestBytes)
		request(packet);
	if (packet.size() <= agent::kMaxReplyBytes)
		reply(packet);
	return 0;
}
