// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/wire/endpoint.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#include <charconv>
#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>

#include "ferry/sys/poll.h"

namespace ferry {

namespace {

constexpr size_t kMaxUnixPath = sizeof(sockaddr_un::sun_path) - 1;
// The DNS limit on a name's text form; also bounds IPv6 literals with a zone.
constexpr size_t kMaxHostLen = 253;

bool isAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

// A host name or IPv4 address: RFC 1123 characters plus '_' (accepted by resolvers and used
// in container names). Whatever else getaddrinfo might make of it, a space, bracket or '/'
// here is a typo, and str() must print something that parses back to the same endpoint.
bool isHostName(std::string_view h)
{
	for (char c : h)
		if (!isAlnum(c) && c != '-' && c != '.' && c != '_')
			return false;
	return true;
}

// What may stand between brackets: an IPv6 address, optionally with a %zone (an interface
// name or index).
bool isIpv6Literal(std::string_view h)
{
	std::string_view zone;
	if (size_t pct = h.find('%'); pct != std::string_view::npos) {
		zone = h.substr(pct + 1);
		h = h.substr(0, pct);
		if (zone.empty() || !isHostName(zone))
			return false;
	}
	// inet_pton reads a C string: an embedded NUL would hide what follows it.
	if (h.empty() || h.find_first_not_of("0123456789abcdefABCDEF:.") != std::string_view::npos)
		return false;
	in6_addr addr;
	return ::inet_pton(AF_INET6, std::string(h).c_str(), &addr) == 1;
}

int64_t monotonicMs()
{
	timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

Result<sockaddr_un> unixAddress(const std::string &path)
{
	sockaddr_un sa{};
	sa.sun_family = AF_UNIX;
	if (path.empty() || path.size() > kMaxUnixPath)
		return Error::format(ENAMETOOLONG, "UNIX socket path of {} bytes (must be 1..{})",
				     path.size(), kMaxUnixPath);
	std::memcpy(sa.sun_path, path.data(), path.size());
	return sa;
}

struct AddrInfoDeleter {
	void operator()(addrinfo *ai) const { freeaddrinfo(ai); }
};
using AddrInfoPtr = std::unique_ptr<addrinfo, AddrInfoDeleter>;

Result<AddrInfoPtr> resolve(const Endpoint &ep, bool passive)
{
	addrinfo hints{};
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
	std::string port = std::to_string(ep.port);
	addrinfo *res = nullptr;
	int rc = getaddrinfo(ep.host.empty() ? nullptr : ep.host.c_str(), port.c_str(), &hints, &res);
	if (rc != 0)
		return Error::format(rc == EAI_SYSTEM ? errno : EHOSTUNREACH, "resolve {}: {}",
				     ep.str(), gai_strerror(rc));
	return AddrInfoPtr(res);
}

Status setIntOpt(int fd, int level, int opt, int value, const char *name)
{
	if (::setsockopt(fd, level, opt, &value, sizeof(value)) < 0)
		return Error::fromErrno(fmt::format("setsockopt {}", name));
	return {};
}

// A UNIX socket file nobody accepts on is stale: connecting to it is refused.
bool unixSocketIsStale(const std::string &path)
{
	struct stat st;
	if (::lstat(path.c_str(), &st) < 0 || !S_ISSOCK(st.st_mode))
		return false;
	auto sa = unixAddress(path);
	if (!sa.ok())
		return false;
	UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
	if (!fd)
		return false;
	int rc = ::connect(fd.get(), reinterpret_cast<const sockaddr *>(&sa.value()),
			   sizeof(sockaddr_un));
	return rc < 0 && errno == ECONNREFUSED;
}

// Nonblocking connect with a deadline; the returned socket is back in blocking mode.
Result<UniqueFd> connectOne(int family, const sockaddr *sa, socklen_t len, int timeoutMs,
			   TcpBuffers buffers = TcpBuffers::Large)
{
	UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
	if (!fd)
		return Error::fromErrno("socket");
	if (family != AF_UNIX) {
		// Buffer sizes must be set before connect to take part in window scaling.
		FERRY_TRY(tuneStreamSocket(fd.get(), buffers));
	}
	if (::connect(fd.get(), sa, len) < 0) {
		if (errno != EINPROGRESS && errno != EAGAIN)
			return Error::fromErrno("connect");
		FERRY_ASSIGN(short ready, pollOne(fd.get(), POLLOUT, timeoutMs));
		if (ready == 0)
			return Error::format(ETIMEDOUT, "connect: timed out after {} ms", timeoutMs);
		int err = 0;
		socklen_t elen = sizeof(err);
		if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
			return Error::fromErrno("getsockopt SO_ERROR");
		if (err != 0)
			return Error::fromErrno("connect", err);
	}
	int flags = ::fcntl(fd.get(), F_GETFL);
	if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) < 0)
		return Error::fromErrno("fcntl O_NONBLOCK");
	return fd;
}

} // namespace

Endpoint Endpoint::tcp(std::string host, uint16_t port)
{
	Endpoint e;
	e.kind = Kind::Tcp;
	e.host = std::move(host);
	e.port = port;
	return e;
}

Endpoint Endpoint::unixPath(std::string path)
{
	Endpoint e;
	e.kind = Kind::Unix;
	e.path = std::move(path);
	return e;
}

std::string Endpoint::str() const
{
	if (kind == Kind::Unix)
		// "unix://x" would read as the URI form with a host: keep a leading "//" explicit.
		return (path.starts_with("//") ? "unix://" : "unix:") + path;
	if (host.find(':') != std::string::npos)
		return fmt::format("tcp:[{}]:{}", host, port);
	return fmt::format("tcp:{}:{}", host, port);
}

std::string PeerAddress::str() const
{
	if (host == "unix")
		return host;
	if (host.find(':') != std::string::npos)
		return fmt::format("[{}]:{}", host, port);
	return fmt::format("{}:{}", host, port);
}

Result<PeerAddress> peerAddress(const Connection &c)
{
	sockaddr_storage ss{};
	socklen_t len = sizeof ss;
	if (::getpeername(c.fd(), reinterpret_cast<sockaddr *>(&ss), &len) < 0)
		return Error::fromErrno("getpeername");
	char buf[INET6_ADDRSTRLEN] = {};
	switch (ss.ss_family) {
	case AF_INET: {
		auto *a = reinterpret_cast<sockaddr_in *>(&ss);
		::inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
		return PeerAddress{buf, ntohs(a->sin_port)};
	}
	case AF_INET6: {
		auto *a = reinterpret_cast<sockaddr_in6 *>(&ss);
		::inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
		return PeerAddress{buf, ntohs(a->sin6_port)};
	}
	case AF_UNIX:
		return PeerAddress{"unix", 0};
	default:
		return Error::format(EAFNOSUPPORT, "getpeername: address family {}", int(ss.ss_family));
	}
}

Result<Endpoint> parseEndpoint(std::string_view s)
{
	auto bad = [&](std::string_view why) {
		return Error::format(EINVAL, "endpoint \"{}\": {}", s, why);
	};
	std::string_view rest = s;
	if (rest.starts_with("unix:")) {
		rest.remove_prefix(5);
		// unix:///abs/path is the URI form; unix://x would be a host name, which we lack.
		if (rest.starts_with("//")) {
			rest.remove_prefix(2);
			if (!rest.starts_with("/"))
				return bad("unix:// must be followed by an absolute path");
		}
		if (rest.empty())
			return bad("empty UNIX socket path");
		if (rest.size() > kMaxUnixPath)
			return bad(fmt::format("UNIX socket path longer than {} bytes", kMaxUnixPath));
		if (rest.find('\0') != std::string_view::npos)
			return bad("NUL byte in UNIX socket path");
		return Endpoint::unixPath(std::string(rest));
	}
	if (rest.starts_with("tcp:")) {
		rest.remove_prefix(4);
		if (rest.starts_with("//"))
			rest.remove_prefix(2);
	}
	std::string_view host;
	std::string_view port;
	if (rest.starts_with("[")) {
		size_t close = rest.find(']');
		if (close == std::string_view::npos)
			return bad("unterminated '[' in IPv6 address");
		host = rest.substr(1, close - 1);
		rest.remove_prefix(close + 1);
		if (!rest.starts_with(":"))
			return bad("expected ':PORT' after ']'");
		port = rest.substr(1);
		if (host.size() > kMaxHostLen || !isIpv6Literal(host))
			return bad("brackets must hold an IPv6 address: [addr]:port or [addr%zone]:port");
	} else {
		size_t colon = rest.rfind(':');
		if (colon == std::string_view::npos)
			return bad("expected HOST:PORT, tcp:HOST:PORT or unix:/path");
		host = rest.substr(0, colon);
		port = rest.substr(colon + 1);
		if (host.find(':') != std::string_view::npos)
			return bad("IPv6 addresses must be written in brackets: [addr]:port");
		if (host.size() > kMaxHostLen)
			return bad(fmt::format("host name longer than {} bytes", kMaxHostLen));
		if (!isHostName(host))
			return bad("host names hold only letters, digits, '-', '.' and '_'");
	}
	unsigned value = 0;
	auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
	if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535)
		return bad(fmt::format("bad port \"{}\" (must be 0..65535)", port));
	return Endpoint::tcp(std::string(host), uint16_t(value));
}

Status tuneStreamSocket(int fd, TcpBuffers buffers)
{
	sockaddr_storage ss{};
	socklen_t len = sizeof(ss);
	if (::getsockname(fd, reinterpret_cast<sockaddr *>(&ss), &len) < 0)
		return Error::fromErrno("getsockname");
	if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)
		return {};
	// Requests are tiny and latency-bound; Nagle would hold them back for an ACK.
	FERRY_TRY(setIntOpt(fd, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY"));
	if (buffers == TcpBuffers::Autotuned)
		return {};
	// Large buffers from the start, so one connection can fill a high bandwidth-delay link.
	FERRY_TRY(setSocketBuffer(fd, SocketBuffer::Send, kSocketBufferBytes));
	FERRY_TRY(setSocketBuffer(fd, SocketBuffer::Receive, kSocketBufferBytes));
	return {};
}

Result<bool> setSocketBuffer(int fd, SocketBuffer which, int bytes)
{
	const bool send = which == SocketBuffer::Send;
	if (::setsockopt(fd, SOL_SOCKET, send ? SO_SNDBUFFORCE : SO_RCVBUFFORCE, &bytes, sizeof(bytes)) == 0)
		return true;
	if (errno != EPERM)
		return Error::fromErrno(send ? "setsockopt SO_SNDBUFFORCE" : "setsockopt SO_RCVBUFFORCE");
	const char *sysctl = send ? "/proc/sys/net/core/wmem_max" : "/proc/sys/net/core/rmem_max";
	long max = 0;
	if (FILE *f = std::fopen(sysctl, "re")) {
		if (std::fscanf(f, "%ld", &max) != 1)
			max = 0;
		std::fclose(f);
	}
	sockaddr_storage ss{};
	socklen_t len = sizeof(ss);
	const bool tcp = ::getsockname(fd, reinterpret_cast<sockaddr *>(&ss), &len) == 0 &&
			 (ss.ss_family == AF_INET || ss.ss_family == AF_INET6);
	if (max < bytes && tcp)
		return false; // autotuning grows further than the clamped size would
	FERRY_TRY(setIntOpt(fd, SOL_SOCKET, send ? SO_SNDBUF : SO_RCVBUF, bytes, send ? "SO_SNDBUF" : "SO_RCVBUF"));
	return max >= bytes;
}

// --- Listener -------------------------------------------------------------------------------

Listener &Listener::operator=(Listener &&o) noexcept
{
	if (this != &o) {
		close();
		fd_ = std::move(o.fd_);
		bound_ = std::move(o.bound_);
		buffers_ = o.buffers_;
		unixDev_ = std::exchange(o.unixDev_, 0);
		unixIno_ = std::exchange(o.unixIno_, 0);
	}
	return *this;
}

Listener::~Listener() { close(); }

Result<Listener> Listener::listen(const Endpoint &ep, int backlog)
{
	Listener l;
	l.bound_ = ep;
	if (ep.kind == Endpoint::Kind::Unix) {
		FERRY_ASSIGN(sockaddr_un sa, unixAddress(ep.path));
		l.fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
		if (!l.fd_)
			return Error::fromErrno("socket");
		int rc = ::bind(l.fd_.get(), reinterpret_cast<sockaddr *>(&sa), sizeof(sa));
		if (rc < 0 && errno == EADDRINUSE && unixSocketIsStale(ep.path)) {
			// Left behind by a process that died without unlinking it.
			::unlink(ep.path.c_str());
			rc = ::bind(l.fd_.get(), reinterpret_cast<sockaddr *>(&sa), sizeof(sa));
		}
		if (rc < 0)
			return Error::fromErrno(fmt::format("bind {}", ep.str()));
		struct stat st;
		if (::stat(ep.path.c_str(), &st) == 0) {
			l.unixDev_ = st.st_dev;
			l.unixIno_ = st.st_ino;
		}
		if (::listen(l.fd_.get(), backlog) < 0)
			return Error::fromErrno(fmt::format("listen {}", ep.str()));
		return l;
	}

	FERRY_ASSIGN(AddrInfoPtr ai, resolve(ep, true));
	Error last(EADDRNOTAVAIL, "no address");
	for (addrinfo *a = ai.get(); a; a = a->ai_next) {
		UniqueFd fd(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
		if (!fd) {
			last = Error::fromErrno("socket");
			continue;
		}
		// Accepted sockets inherit the buffer sizes; setting them here (before listen) is
		// what lets the window scale be negotiated for them.
		auto st = setIntOpt(fd.get(), SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
		if (!st.ok()) {
			last = st.error();
			continue;
		}
		if (auto rcv = setSocketBuffer(fd.get(), SocketBuffer::Receive, kSocketBufferBytes); !rcv.ok()) {
			last = rcv.error();
			continue;
		}
		if (::bind(fd.get(), a->ai_addr, a->ai_addrlen) < 0) {
			last = Error::fromErrno("bind");
			continue;
		}
		if (::listen(fd.get(), backlog) < 0) {
			last = Error::fromErrno("listen");
			continue;
		}
		sockaddr_storage ss{};
		socklen_t len = sizeof(ss);
		if (::getsockname(fd.get(), reinterpret_cast<sockaddr *>(&ss), &len) < 0)
			return Error::fromErrno("getsockname");
		l.bound_.port = ntohs(ss.ss_family == AF_INET6
					      ? reinterpret_cast<sockaddr_in6 *>(&ss)->sin6_port
					      : reinterpret_cast<sockaddr_in *>(&ss)->sin_port);
		l.fd_ = std::move(fd);
		return l;
	}
	return last.context(fmt::format("listen {}", ep.str()));
}

Result<Connection> Listener::accept(int timeoutMs)
{
	if (!fd_)
		return Error(EBADF, "accept on a closed listener");
	int64_t deadline = timeoutMs < 0 ? -1 : monotonicMs() + timeoutMs;
	for (;;) {
		int left = -1;
		if (deadline >= 0)
			left = int(std::min<int64_t>(std::max<int64_t>(0, deadline - monotonicMs()),
						     INT_MAX));
		FERRY_ASSIGN(short ready, pollOne(fd_.get(), POLLIN, left));
		if (ready == 0)
			return Error::format(ETIMEDOUT, "accept on {}: timed out after {} ms", bound_.str(),
					     timeoutMs);
		// shutdown() on a listening socket makes poll report POLLHUP and accept EINVAL.
		if (ready & (POLLHUP | POLLERR | POLLNVAL))
			return Error::format(ECANCELED, "accept on {}: listener shut down", bound_.str());
		UniqueFd fd(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
		if (!fd) {
			// The connection may have been reset between poll and accept; wait again.
			if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED)
				continue;
			if (errno == EINVAL)
				return Error::format(ECANCELED, "accept on {}: listener shut down",
						     bound_.str());
			return Error::fromErrno(fmt::format("accept on {}", bound_.str()));
		}
		FERRY_TRY_CTX(tuneStreamSocket(fd.get(), buffers_), "accept on {}", bound_.str());
		return Connection(std::move(fd));
	}
}

void Listener::shutdown()
{
	if (fd_)
		::shutdown(fd_.get(), SHUT_RDWR);
}

void Listener::close()
{
	if (!fd_)
		return;
	if (bound_.kind == Endpoint::Kind::Unix && unixIno_ != 0) {
		struct stat st;
		if (::stat(bound_.path.c_str(), &st) == 0 && st.st_dev == unixDev_ &&
		    st.st_ino == unixIno_)
			::unlink(bound_.path.c_str());
	}
	fd_.reset();
	unixDev_ = 0;
	unixIno_ = 0;
}

Result<Connection> connectTo(const Endpoint &ep, int timeoutMs, TcpBuffers buffers)
{
	if (ep.kind == Endpoint::Kind::Unix) {
		FERRY_ASSIGN(sockaddr_un sa, unixAddress(ep.path));
		auto fd = connectOne(AF_UNIX, reinterpret_cast<sockaddr *>(&sa), sizeof(sa), timeoutMs);
		if (!fd.ok())
			return fd.error().context(fmt::format("connect {}", ep.str()));
		return Connection(std::move(fd).value());
	}
	FERRY_ASSIGN(AddrInfoPtr ai, resolve(ep, false));
	Error last(EADDRNOTAVAIL, "no address");
	for (addrinfo *a = ai.get(); a; a = a->ai_next) {
		auto fd = connectOne(a->ai_family, a->ai_addr, a->ai_addrlen, timeoutMs, buffers);
		if (fd.ok())
			return Connection(std::move(fd).value());
		last = fd.error();
	}
	return last.context(fmt::format("connect {}", ep.str()));
}

} // namespace ferry
