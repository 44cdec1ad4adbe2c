// SPDX-License-Identifier: GPL-2.0-or-later
#include "vm/agent_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include <cstring>
#include <vector>

#include "ferry/dirty/tracker.h"
#include "ferry/sys/kernel_compat.h"
#include "ferry/sys/scm.h"

#include "agent/agent_protocol.h"

namespace ferry {

namespace {

using Clock = std::chrono::steady_clock;

int remainingMs(Clock::time_point deadline)
{
	auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
	return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

} // namespace

Result<AgentClient> AgentClient::connect(const std::string &socketPath,
					 std::chrono::milliseconds timeout)
{
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	if (socketPath.empty() || socketPath.size() >= sizeof(addr.sun_path))
		return Error::format(ENAMETOOLONG, "agent socket path \"{}\" empty or too long",
				     socketPath);
	std::memcpy(addr.sun_path, socketPath.c_str(), socketPath.size() + 1);

	const auto deadline = Clock::now() + timeout;
	for (;;) {
		UniqueFd sock(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
		if (!sock)
			return Error::fromErrno("socket");
		if (::connect(sock.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) == 0)
			return AgentClient(std::move(sock), socketPath);
		int err = errno;
		// The socket appears when QEMU's dynamic loader runs the agent's constructor; there
		// is no event to wait for from here, so retry at a short interval.
		if ((err != ENOENT && err != ECONNREFUSED && err != EINTR) ||
		    Clock::now() >= deadline)
			return Error::fromErrno(fmt::format("connect to agent {}", socketPath), err);
		timespec ts{ 0, 10 * 1000 * 1000 };
		::nanosleep(&ts, nullptr);
	}
}

Result<AgentClient::Reply> AgentClient::request(std::string_view line)
{
	if (!sock_)
		return Error(EBADF, "agent client not connected");
	const std::string what = fmt::format("agent {} \"{}\"", path_, line.substr(0, 64));
	if (line.size() > agent::kMaxRequestBytes)
		return Error::format(EMSGSIZE, "{}: request longer than {} bytes", what,
				     agent::kMaxRequestBytes);
	if (line.empty())
		// A zero-length SEQPACKET message reads as end-of-connection on the other side.
		return Error::format(EINVAL, "{}: empty request", what);

	FERRY_TRY_CTX(sendFds(sock_.get(), {},
			      std::span(reinterpret_cast<const uint8_t *>(line.data()), line.size())),
		      "{}", what);

	const auto deadline = Clock::now() + requestTimeout_;
	for (;;) {
		pollfd p{ sock_.get(), POLLIN, 0 };
		int r = ::poll(&p, 1, remainingMs(deadline));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return Error::fromErrno("poll").context(what);
		if (r == 0) {
			// The reply may still come and would then answer the next request: the
			// connection is no longer usable.
			sock_.reset();
			return Error::format(ETIMEDOUT, "{}: no reply within {} ms", what,
					     requestTimeout_.count());
		}
		break;
	}

	std::vector<uint8_t> payload;
	auto fds = recvFds(sock_.get(), &payload, 1, agent::kMaxReplyBytes);
	if (!fds.ok())
		return fds.error().context(what);
	auto text = agent::decodeReply(
		std::string_view(reinterpret_cast<const char *>(payload.data()), payload.size()));
	if (!text.ok())
		return text.error().context(what);
	Reply reply;
	reply.text = std::string(text.value());
	if (!fds->empty())
		reply.fd = std::move(fds->front());
	return reply;
}

Result<pid_t> AgentClient::ping()
{
	// Not FERRY_ASSIGN: GCC 12 sees the moved-from variant's string as maybe-uninitialized.
	auto r = request("PING");
	if (!r.ok())
		return r.error();
	return agent::decodePingReply(r->text).context(fmt::format("agent {}", path_));
}

Status AgentClient::probePostCopy()
{
	auto r = request("PROBE");
	if (!r.ok())
		return r.error();
	return {};
}

Result<AgentRegion> AgentClient::find(const std::string &substring)
{
	if (substring.empty() || substring.find_first_of(std::string_view("\0\n", 2)) != std::string::npos)
		return Error(EINVAL, "agent FIND: empty substring or one with NUL/newline");
	FERRY_ASSIGN(Reply r, request("FIND " + substring));
	auto found = agent::decodeFindReply(r.text);
	if (!found.ok() || !r.fd)
		return Error::format(EPROTO, "agent {}: FIND {}: malformed reply \"{}\"{}", path_,
				     substring, r.text, r.fd ? "" : " without fd");
	return AgentRegion{ static_cast<uintptr_t>(found->base), found->size, std::move(r.fd),
			    found->fileOffset };
}

Result<Userfaultfd> AgentClient::track(uintptr_t base, uint64_t size)
{
	FERRY_ASSIGN(Reply r, request(fmt::format("TRACK {:x} {}", base, size)));
	if (!r.fd)
		return Error::format(EPROTO, "agent {}: TRACK: reply without a userfaultfd", path_);
	// The agent did UFFDIO_API with these features (createWpAsyncUffd).
	return Userfaultfd::adopt(std::move(r.fd), kWpAsyncFeatures, false);
}

Result<Userfaultfd> AgentClient::guard(uintptr_t base, uint64_t size)
{
	FERRY_ASSIGN(Reply r, request(fmt::format("GUARD {:x} {}", base, size)));
	if (!r.fd)
		return Error::format(EPROTO, "agent {}: GUARD: reply without a userfaultfd", path_);
	return Userfaultfd::adopt(std::move(r.fd),
				  UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MISSING_SHMEM, false);
}

} // namespace ferry
