// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/sys/scm.h"

#include <sys/socket.h>

#include <cstring>

namespace ferry {

namespace {
constexpr size_t kMaxScmFds = 253; // SCM_MAX_FD
}

Status sendFds(int sock, std::span<const int> fds, std::span<const uint8_t> payload)
{
	if (fds.size() > kMaxScmFds)
		return Error::format(EINVAL, "sendFds: {} fds, at most {}", fds.size(), kMaxScmFds);

	uint8_t dummy = 0;
	iovec iov{};
	if (payload.empty()) {
		iov.iov_base = &dummy;
		iov.iov_len = 1;
	} else {
		iov.iov_base = const_cast<uint8_t *>(payload.data());
		iov.iov_len = payload.size();
	}

	std::vector<uint8_t> control(fds.empty() ? 0 : CMSG_SPACE(fds.size_bytes()));
	msghdr msg{};
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	if (!fds.empty()) {
		msg.msg_control = control.data();
		msg.msg_controllen = control.size();
		cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		cmsg->cmsg_len = CMSG_LEN(fds.size_bytes());
		std::memcpy(CMSG_DATA(cmsg), fds.data(), fds.size_bytes());
	}

	// The fds are attached to the first sendmsg(); if the payload is sent short, the rest
	// goes without ancillary data.
	while (iov.iov_len > 0) {
		ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return Error::fromErrno(fmt::format("sendmsg {} fds + {} bytes", fds.size(),
							    payload.size()));
		}
		iov.iov_base = static_cast<uint8_t *>(iov.iov_base) + n;
		iov.iov_len -= static_cast<size_t>(n);
		msg.msg_control = nullptr;
		msg.msg_controllen = 0;
	}
	return okStatus();
}

Result<std::vector<UniqueFd>> recvFds(int sock, std::vector<uint8_t> *payload, size_t maxFds,
				      size_t maxPayload)
{
	if (maxFds > kMaxScmFds)
		maxFds = kMaxScmFds;
	std::vector<uint8_t> buf(maxPayload ? maxPayload : 1);
	std::vector<uint8_t> control(CMSG_SPACE(sizeof(int) * (maxFds ? maxFds : 1)));
	iovec iov{ buf.data(), buf.size() };
	msghdr msg{};
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = control.data();
	msg.msg_controllen = control.size();

	ssize_t n;
	do {
		n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return Error::fromErrno("recvmsg");

	// Take ownership of whatever arrived before judging the message, so that nothing leaks
	// on the error paths.
	std::vector<UniqueFd> fds;
	for (cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < count; i++) {
			int fd;
			std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			fds.emplace_back(fd);
		}
	}

	if (n == 0)
		return Error(ECONNRESET, "recvmsg: peer closed the connection");
	if (msg.msg_flags & MSG_CTRUNC)
		return Error::format(EMSGSIZE, "recvmsg: more than {} fds sent", maxFds);
	if (msg.msg_flags & MSG_TRUNC)
		return Error::format(EMSGSIZE, "recvmsg: payload larger than {} bytes", maxPayload);
	if (fds.size() > maxFds)
		return Error::format(EMSGSIZE, "recvmsg: {} fds, at most {}", fds.size(), maxFds);
	if (payload) {
		buf.resize(maxPayload ? static_cast<size_t>(n) : 0);
		*payload = std::move(buf);
	}
	return fds;
}

} // namespace ferry
