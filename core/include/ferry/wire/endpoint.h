// SPDX-License-Identifier: GPL-2.0-or-later
// Where to listen or connect: TCP host:port or a UNIX socket path, plus the listening socket.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "ferry/base/result.h"
#include "ferry/sys/fd.h"
#include "ferry/wire/connection.h"

namespace ferry {

struct Endpoint {
	enum class Kind { Tcp, Unix };

	Kind kind = Kind::Tcp;
	std::string host; // Tcp; "" means every interface when listening, loopback when connecting
	uint16_t port = 0; // Tcp; 0 when listening means "pick a free port"
	std::string path; // Unix

	// "tcp:HOST:PORT" (IPv6 hosts in brackets) or "unix:/path"; parseEndpoint() accepts it.
	std::string str() const;

	static Endpoint tcp(std::string host, uint16_t port);
	static Endpoint unixPath(std::string path);
};

// Accepts "tcp:HOST:PORT", "tcp://HOST:PORT", "HOST:PORT", "[v6addr]:PORT", "[v6addr%zone]:PORT",
// "unix:/path", "unix:///path" and "unix:relative/path". HOST is empty or a name/IPv4 address
// of letters, digits, '-', '.' and '_' (at most 253 bytes). EINVAL with the reason otherwise.
// For every endpoint it accepts, parseEndpoint(e.str()) gives e back.
Result<Endpoint> parseEndpoint(std::string_view s);

// Stream sockets get TCP_NODELAY (requests are small and latency-bound) and, by default,
// 4 MiB SO_SNDBUF/SO_RCVBUF so a window covers high bandwidth-delay links (setSocketBuffer):
// what ferry's pull wants, its receiver keeping up with the link. A relay whose receiver is
// slower than the link (QEMU loading a migration stream) wants TCP's autotuning instead:
// fixed large buffers fill up in front of it, and what they hold must drain through the
// receiver before the stream's last byte arrives (docs/benchmarks.md section 18).
inline constexpr int kSocketBufferBytes = 4 << 20;
enum class TcpBuffers { Large, Autotuned };

enum class SocketBuffer { Send, Receive };

// Gives a socket's send or receive buffer `bytes`, as far as the host allows. The plain
// SO_SNDBUF/SO_RCVBUF is clamped to net.core.[wr]mem_max (212992 on a stock Debian host) and
// turns TCP's autotuning off, which alone would have grown the buffer to tcp_[wr]mem's
// maximum (4-6 MiB): a TCP connection clamped so would cap a 20 ms link at ~20 MB/s. So: the
// FORCE variant (CAP_NET_ADMIN: ferryd, a root CLI), else the plain option where the
// maximum allows `bytes`, else a TCP socket is left to autotuning and a UNIX socket gets
// what the maximum allows. Returns whether the buffer got `bytes`.
Result<bool> setSocketBuffer(int fd, SocketBuffer which, int bytes);

// A listening socket. Move-only. accept() may block in one thread while shutdown() is
// called from another: accept then fails with ECANCELED.
class Listener {
public:
	Listener() = default;
	Listener(Listener &&) noexcept = default;
	Listener &operator=(Listener &&) noexcept;
	~Listener();

	// TCP: SO_REUSEADDR. UNIX: a stale socket file (nobody accepting) is removed first; a live
	// one is EADDRINUSE. The UNIX path is unlinked again by close() if it is still ours.
	static Result<Listener> listen(const Endpoint &ep, int backlog = 128);
	// The buffers of the TCP connections accept() returns (default Large).
	void setTcpBuffers(TcpBuffers b) { buffers_ = b; }

	// timeoutMs < 0 waits forever; ETIMEDOUT on expiry.
	Result<Connection> accept(int timeoutMs = -1);
	// The endpoint actually bound: the real port when 0 was asked.
	Endpoint boundEndpoint() const { return bound_; }
	int fd() const { return fd_.get(); }
	// Wakes a thread blocked in accept(); safe from any thread.
	void shutdown();
	void close();

private:
	UniqueFd fd_;
	Endpoint bound_;
	TcpBuffers buffers_ = TcpBuffers::Large;
	// Identity of the UNIX socket file we created, so close() never unlinks a successor's.
	dev_t unixDev_ = 0;
	ino_t unixIno_ = 0;
};

// Connects with a timeout (ETIMEDOUT); tries every address the host resolves to.
Result<Connection> connectTo(const Endpoint &ep, int timeoutMs = 5000, TcpBuffers buffers = TcpBuffers::Large);

// The remote end of a connected stream socket, for logs and per-peer limits: `host` is the
// numeric address ("127.0.0.1", "::1") or "unix" for a UNIX socket (which has no address),
// str() adds the port ("127.0.0.1:40312", "[::1]:40312", "unix").
struct PeerAddress {
	std::string host;
	uint16_t port = 0;
	std::string str() const;
};
Result<PeerAddress> peerAddress(const Connection &c);

// Applies the TCP options above to a socket (no-op for UNIX sockets).
Status tuneStreamSocket(int fd, TcpBuffers buffers = TcpBuffers::Large);

} // namespace ferry
