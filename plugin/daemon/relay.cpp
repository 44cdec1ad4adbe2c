// SPDX-License-Identifier: GPL-2.0-or-later
#include "daemon/relay.h"

#include <sys/socket.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include "ferry/wire/daemon_protocol.h"
#include "ferry/wire/endpoint.h"

namespace ferry::daemon {

namespace {

constexpr int kLocalSendBufferBytes = 1 << 20;

} // namespace

Relay::Relay(UniqueFd local, Connection peer) : local_(std::move(local)), peer_(std::move(peer))
{
	// A UNIX socket's writer holds what is queued for its reader, up to the writer's send
	// buffer (212992 bytes by default). Towards the incoming QEMU, a larger one lets the relay
	// hand over whole frames and go back to the peer while QEMU loads pages: with the default
	// the stream through ferryd ran at ~0.8x QEMU's direct TCP stream (docs/benchmarks.md,
	// section 15). Not larger: what is queued at the switch-over drains inside the downtime.
	// Best effort: a smaller buffer is slower, not wrong.
	(void)setSocketBuffer(local_.get(), SocketBuffer::Send, kLocalSendBufferBytes);
}

void Relay::stop()
{
	stopped_ = true;
	::shutdown(local_.get(), SHUT_RDWR);
	peer_.shutdown();
}

Status Relay::run()
{
	Status back;
	std::thread t([&] {
		back = peerToLocal();
		if (!back.ok())
			stop();
	});
	Status forth = localToPeer();
	if (!forth.ok())
		stop();
	t.join();
	if (stopped_ && (forth.ok() || back.ok()))
		return Error(ECANCELED, "relay stopped");
	if (!forth.ok())
		return forth;
	return back;
}

Status Relay::localToPeer()
{
	std::vector<uint8_t> buf(kMaxRelayData);
	for (;;) {
		ssize_t n = ::read(local_.get(), buf.data(), buf.size());
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return Error::fromErrno("relay: read the local socket");
		if (n == 0) {
			localEof_ = true;
			return peer_.send(MsgType::RelayEnd, 0, {}).context("relay: send the end of the stream");
		}
		FERRY_TRY_CTX(peer_.send(MsgType::RelayData, 0, std::span<const uint8_t>(buf.data(), size_t(n))),
			      "relay: send to the peer");
		toPeer_.fetch_add(uint64_t(n), std::memory_order_relaxed);
	}
}

Status Relay::peerToLocal()
{
	std::vector<uint8_t> buf(kMaxRelayData);
	bool localGone = false;
	for (;;) {
		FERRY_ASSIGN(FrameHeader h, peer_.recvHeader(kMaxRelayData).context("relay: receive from the peer"));
		switch (h.type) {
		case MsgType::RelayData: {
			FERRY_TRY_CTX(peer_.recvExact(buf.data(), h.payloadLen), "relay: receive from the peer");
			fromPeer_.fetch_add(h.payloadLen, std::memory_order_relaxed);
			size_t done = 0;
			while (!localGone && done < h.payloadLen) {
				ssize_t n = ::send(local_.get(), buf.data() + done, h.payloadLen - done, MSG_NOSIGNAL);
				if (n < 0 && errno == EINTR)
					continue;
				if (n < 0 && (errno == EPIPE || errno == ECONNRESET) && localEof_) {
					localGone = true; // the local end closed its socket after its stream ended
					break;
				}
				if (n < 0)
					return Error::fromErrno("relay: write the local socket");
				done += size_t(n);
			}
			break;
		}
		case MsgType::RelayEnd:
			::shutdown(local_.get(), SHUT_WR);
			return {};
		case MsgType::Error: {
			FERRY_ASSIGN(auto payload, peer_.recvPayload(h));
			return peerError(payload).context("relay");
		}
		default:
			return Error::format(EPROTO, "relay: unexpected {} frame", msgTypeName(h.type));
		}
	}
}

} // namespace ferry::daemon
