// SPDX-License-Identifier: GPL-2.0-or-later
// The wire contract between libferry-agent.so (preloaded into QEMU) and AgentClient.
//
// Transport: a SOCK_SEQPACKET AF_UNIX socket at $FERRY_AGENT_SOCKET, mode 0600. One request
// per packet, one reply per packet; a request is a short ASCII line without newline:
//   PING                        -> OK pid=<pid>
//   PROBE                       -> OK when this process may have a userfaultfd for post-copy
//                                  (one that sees the kernel's accesses: UffdScope), else ERR
//   FIND <substring>            -> OK <start-hex> <length> <file-offset> + fd of the backing file
//   TRACK <start-hex> <length>  -> OK + userfaultfd (WP-async, kWpAsyncFeatures)
//   GUARD <start-hex> <length>  -> OK + userfaultfd (MISSING|MINOR, MINOR_SHMEM|MISSING_SHMEM)
//   anything else / a failure   -> ERR <errno> <message>
// Lengths are decimal; addresses hex (an optional "0x" is accepted). Fds travel as
// SCM_RIGHTS with the reply packet. The agent keeps no reference to what it hands out: the
// userfaultfds' lifetime (and so the tracking or fault handling) belongs to the client.
//
// The decoders below are pure (no I/O), shared by both ends, and treat their input as hostile:
// the agent's requests come from whoever can open the socket, the client's replies from a
// QEMU process a guest may have taken over.
#pragma once

#include <sys/types.h>

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ferry/base/result.h"

namespace ferry::agent {

constexpr const char *kSocketEnv = "FERRY_AGENT_SOCKET";
// A request longer than this is refused (EMSGSIZE) without being parsed.
constexpr size_t kMaxRequestBytes = 512;
// Replies (ERR messages included) are cut to this size by the agent.
constexpr size_t kMaxReplyBytes = 1024;

// A whole field as a number: decimal (base 10) or hex with an optional "0x" (base 16).
inline bool parseNumber(std::string_view s, int base, uint64_t *out)
{
	if (base == 16 && (s.starts_with("0x") || s.starts_with("0X")))
		s.remove_prefix(2);
	if (s.empty())
		return false;
	auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out, base);
	return ec == std::errc() && end == s.data() + s.size();
}

struct Request {
	enum class Kind { Ping, Probe, Find, Track, Guard };
	Kind kind = Kind::Ping;
	std::string_view substring; // Find: non-empty, a view into the request
	uint64_t start = 0;         // Track, Guard: page-aligned, length > 0, no wrap-around
	uint64_t length = 0;
};

// EINVAL naming the request for anything malformed; whether a range is mapped is for the
// agent to find out.
inline Result<Request> decodeRequest(std::string_view line, size_t pageSize)
{
	size_t sp = line.find(' ');
	std::string_view cmd = line.substr(0, sp);
	std::string_view args = sp == std::string_view::npos ? std::string_view() : line.substr(sp + 1);
	Request req;
	if (cmd == "PING" && sp == std::string_view::npos)
		return req;
	if (cmd == "PROBE" && sp == std::string_view::npos) {
		req.kind = Request::Kind::Probe;
		return req;
	}
	if (cmd == "FIND") {
		if (args.empty())
			return Error(EINVAL, "FIND: FIND needs a substring");
		req.kind = Request::Kind::Find;
		req.substring = args;
		return req;
	}
	if (cmd != "TRACK" && cmd != "GUARD")
		return Error(EINVAL, "unknown request (PING, PROBE, FIND, TRACK, GUARD)");
	req.kind = cmd == "TRACK" ? Request::Kind::Track : Request::Kind::Guard;
	size_t asp = args.find(' ');
	if (asp == std::string_view::npos || !parseNumber(args.substr(0, asp), 16, &req.start) ||
	    !parseNumber(args.substr(asp + 1), 10, &req.length))
		return Error::format(EINVAL, "{}: expected \"<start-hex> <length>\"", cmd);
	if (req.length == 0 || req.start % pageSize || req.length % pageSize ||
	    req.start + req.length < req.start)
		return Error::format(EINVAL, "{}: range {:#x} +{} is empty, not page-aligned or wraps",
				     cmd, req.start, req.length);
	return req;
}

// "OK" or "OK <text>" gives the text; "ERR <errno> <message>" gives an Error with that errno
// (EPROTO when it is not one in 1..4095) and the message; anything else is EPROTO.
inline Result<std::string_view> decodeReply(std::string_view packet)
{
	if (packet.starts_with("ERR ")) {
		packet.remove_prefix(4);
		size_t sp = packet.find(' ');
		uint64_t err = 0;
		if (!parseNumber(packet.substr(0, sp), 10, &err) || err == 0 || err > 4095)
			err = EPROTO;
		std::string_view msg = sp == std::string_view::npos ? "" : packet.substr(sp + 1);
		return Error::format(static_cast<int>(err), "{}", msg);
	}
	if (packet != "OK" && !packet.starts_with("OK "))
		return Error::format(EPROTO, "malformed reply \"{}\"", packet.substr(0, 80));
	return packet.size() > 3 ? packet.substr(3) : std::string_view();
}

// The text of a PING reply, "pid=<pid>".
inline Result<pid_t> decodePingReply(std::string_view text)
{
	uint64_t pid = 0;
	if (!text.starts_with("pid=") || !parseNumber(text.substr(4), 10, &pid) || pid == 0 ||
	    pid > static_cast<uint64_t>(INT32_MAX))
		return Error::format(EPROTO, "PING: malformed reply \"{}\"", text);
	return static_cast<pid_t>(pid);
}

// The text of a FIND reply, "<start-hex> <length>[ <file-offset>]" (more fields are ignored).
struct FoundRegion {
	uint64_t base = 0;
	uint64_t size = 0;
	uint64_t fileOffset = 0;
};
inline Result<FoundRegion> decodeFindReply(std::string_view text)
{
	std::string_view f[3];
	size_t n = 0;
	for (std::string_view rest = text; n < 3 && !rest.empty(); n++) {
		size_t sp = rest.find(' ');
		f[n] = rest.substr(0, sp);
		rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
	}
	FoundRegion r;
	if (n < 2 || !parseNumber(f[0], 16, &r.base) || !parseNumber(f[1], 10, &r.size) ||
	    (n >= 3 && !parseNumber(f[2], 10, &r.fileOffset)))
		return Error::format(EPROTO, "malformed reply \"{}\"", text);
	return r;
}

} // namespace ferry::agent
