// SPDX-License-Identifier: GPL-2.0-or-later
// Client of libferry-agent.so, the shim preloaded into QEMU (protocol: agent_protocol.h).
//
// Everything it returns was created inside the QEMU process: the userfaultfds act on QEMU's
// mm (addresses are QEMU's), and they keep acting after the agent's own copies are gone, for
// as long as this process holds them and QEMU lives.
//
// Threading: one thread at a time per AgentClient (requests and replies are not tagged).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "ferry/base/result.h"
#include "ferry/sys/fd.h"
#include "ferry/sys/userfaultfd.h"

namespace ferry {

// A mapping found in QEMU: [base, base+size) in QEMU's address space maps `file` from
// fileOffset on (0 for memory backends).
struct AgentRegion {
	uintptr_t base;
	uint64_t size;
	UniqueFd file;
	uint64_t fileOffset = 0;
};

class AgentClient {
public:
	// Default bound on one request/reply round trip.
	static constexpr std::chrono::milliseconds kDefaultRequestTimeout{ 30000 };

	AgentClient(AgentClient &&) noexcept = default;
	AgentClient &operator=(AgentClient &&) noexcept = default;
	AgentClient(const AgentClient &) = delete;
	AgentClient &operator=(const AgentClient &) = delete;

	// Connects to the agent's socket, retrying while it does not exist yet or refuses
	// (QEMU is still starting) until `timeout`.
	static Result<AgentClient> connect(const std::string &socketPath,
					   std::chrono::milliseconds timeout);

	// The pid of the process the agent runs in.
	Result<pid_t> ping();
	// Whether that process may have a userfaultfd for post-copy (GUARD would succeed); the
	// error names the fixes when it may not.
	Status probePostCopy();
	// The largest mapping whose /proc/<pid>/maps pathname contains `substring`, with an fd
	// of its backing file opened read-write. QEMU 7.2 names the memfd of every
	// memory-backend-memfd after the type, not the id: guest RAM shows as
	// "/memfd:memory-backend-memfd (deleted)" (the largest one is guest RAM when there are
	// several); a memory-backend-file shows as its mem-path. The agent starts with the process, before QEMU has
	// created guest RAM: ask once QEMU is up (its QMP greeting comes after machine
	// creation); until then this fails with ENOENT.
	Result<AgentRegion> find(const std::string &substring);
	// A userfaultfd created in the agent's process, registered write-protect with WP_ASYNC
	// over [base, base+size) and armed: hand it to makeUffdWpTracker({pid, base, size, ...}).
	Result<Userfaultfd> track(uintptr_t base, uint64_t size);
	// Drops the agent process's page-table entries of [base, base+size) (a shared mapping:
	// the file keeps its data) and returns a userfaultfd registered MISSING|MINOR over it:
	// from now on every access there blocks until this side resolves it (UFFDIO_CONTINUE for
	// pages the file has, UFFDIO_COPY for holes). Closing the uffd releases the guard.
	Result<Userfaultfd> guard(uintptr_t base, uint64_t size);

	struct Reply {
		std::string text; // after "OK", without it ("" or "pid=..." etc.)
		UniqueFd fd;      // the fd that came with the reply, if any
	};
	// Sends one raw request line and waits for its reply; an "ERR <errno> <msg>" reply
	// becomes an Error with that errno. For diagnostics and tests; the typed calls above
	// are built on it.
	Result<Reply> request(std::string_view line);

	void setRequestTimeout(std::chrono::milliseconds timeout) { requestTimeout_ = timeout; }
	int fd() const { return sock_.get(); }

private:
	explicit AgentClient(UniqueFd sock, std::string path)
		: sock_(std::move(sock)), path_(std::move(path)) {}

	UniqueFd sock_;
	std::string path_;
	std::chrono::milliseconds requestTimeout_ = kDefaultRequestTimeout;
};

} // namespace ferry
