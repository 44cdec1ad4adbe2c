// SPDX-License-Identifier: GPL-2.0-or-later
// The wire contract between libferry-agent.so (preloaded into QEMU) and AgentClient.
//
// Transport: a SOCK_SEQPACKET AF_UNIX socket at $FERRY_AGENT_SOCKET, mode 0600. One request
// per packet, one reply per packet; a request is a short ASCII line without newline:
//   PING                        -> OK pid=<pid>
//   FIND <substring>            -> OK <start-hex> <length> <file-offset> + fd of the backing file
//   TRACK <start-hex> <length>  -> OK + userfaultfd (WP-async, kWpAsyncFeatures)
//   GUARD <start-hex> <length>  -> OK + userfaultfd (MISSING|MINOR, MINOR_SHMEM|MISSING_SHMEM)
//   anything else / a failure   -> ERR <errno> <message>
// Lengths are decimal; addresses hex (an optional "0x" is accepted). Fds travel as
// SCM_RIGHTS with the reply packet. The agent keeps no reference to what it hands out: the
// userfaultfds' lifetime (and so the tracking or fault handling) belongs to the client.
#pragma once

#include <cstddef>

namespace ferry::agent {

constexpr const char *kSocketEnv = "FERRY_AGENT_SOCKET";
// A request longer than this is refused (EMSGSIZE) without being parsed.
constexpr size_t kMaxRequestBytes = 512;
// Replies (ERR messages included) are cut to this size by the agent.
constexpr size_t kMaxReplyBytes = 1024;

} // namespace ferry::agent
