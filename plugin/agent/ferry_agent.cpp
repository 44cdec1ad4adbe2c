// SPDX-License-Identifier: GPL-2.0-or-later
// libferry-agent.so: preloaded into QEMU (LD_PRELOAD), it hands ferry what only code running
// inside QEMU can create: an fd of the guest-RAM backing file and userfaultfds whose ctx->mm
// is QEMU's (every userfaultfd ioctl acts on its creator's mm, wherever the fd travels).
//
// It must be invisible to QEMU: without $FERRY_AGENT_SOCKET it does nothing at all; with it,
// one detached thread with every signal blocked serves one client at a time and touches
// neither guest RAM nor QEMU's state, and nothing is written to stdout. Errors that cannot be
// returned to a client go to stderr prefixed "ferry-agent:". The protocol is described in
// agent_protocol.h.
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/base/result.h"
#include "ferry/dirty/tracker.h"
#include "ferry/sys/fd.h"
#include "ferry/sys/kernel_compat.h"
#include "ferry/sys/mapping.h"
#include "ferry/sys/read.h"
#include "ferry/sys/scm.h"
#include "ferry/sys/userfaultfd.h"

#include "agent_protocol.h"

namespace ferry {

namespace {

// stderr only, one write() per line so that it does not interleave with QEMU's own output.
template<typename... Args>
void logError(fmt::format_string<Args...> f, Args &&...args)
{
	std::string line = "ferry-agent: " + fmt::format(f, std::forward<Args>(args)...) + "\n";
	[[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, line.data(), line.size());
}

// One run of /proc/self/maps lines: adjacent VMAs of the same object (file, offsets
// contiguous) and permissions are merged, because registering a userfaultfd or madvise on a
// part of a VMA splits it, and callers think in terms of the whole RAM block.
struct MapRun {
	uintptr_t start;
	uintptr_t end;
	uintptr_t firstVmaEnd; // /proc/self/map_files/ names are per VMA
	uint64_t offset;
	unsigned devMajor;
	unsigned devMinor;
	uint64_t inode;
	std::string perms;
	std::string path;
};

Result<std::string> readFile(const char *path)
{
	UniqueFd fd(::open(path, O_RDONLY | O_CLOEXEC));
	if (!fd)
		return Error::fromErrno(fmt::format("open {}", path));
	std::string out;
	char buf[16384];
	for (;;) {
		FERRY_ASSIGN(size_t n, readSome(fd, buf, path));
		if (n == 0)
			return out;
		out.append(buf, n);
	}
}

Result<std::vector<MapRun>> readMaps()
{
	FERRY_ASSIGN(std::string text, readFile("/proc/self/maps"));
	std::vector<MapRun> runs;
	size_t pos = 0;
	while (pos < text.size()) {
		size_t eol = text.find('\n', pos);
		if (eol == std::string::npos)
			eol = text.size();
		std::string line = text.substr(pos, eol - pos);
		pos = eol + 1;

		unsigned long start, end, offset, inode;
		unsigned major, minor;
		char perms[8];
		int pathAt = 0;
		if (std::sscanf(line.c_str(), "%lx-%lx %7s %lx %x:%x %lu %n", &start, &end, perms,
				&offset, &major, &minor, &inode, &pathAt) < 7)
			return Error::format(EIO, "/proc/self/maps: unparsable line \"{}\"", line);
		std::string path = pathAt > 0 ? line.substr(static_cast<size_t>(pathAt)) : "";

		if (!runs.empty()) {
			MapRun &prev = runs.back();
			bool sameObject = prev.end == start && prev.inode == inode &&
					  prev.devMajor == major && prev.devMinor == minor &&
					  prev.perms == perms && prev.path == path &&
					  (inode == 0 || prev.offset + (prev.end - prev.start) == offset);
			if (sameObject) {
				prev.end = end;
				continue;
			}
		}
		runs.push_back(MapRun{ start, end, end, offset, major, minor, inode, perms, path });
	}
	return runs;
}

bool sameFile(int fd, const MapRun &run)
{
	struct stat st;
	return ::fstat(fd, &st) == 0 && st.st_ino == run.inode &&
	       ::major(st.st_dev) == run.devMajor && ::minor(st.st_dev) == run.devMinor;
}

// An fd of the file behind `run`, opened read-write as a new open file description.
// Tried in order: the path itself when it still names the file; an fd QEMU already holds
// (memory-backend-memfd keeps its memfd open), reopened through /proc/self/fd which needs no
// privilege; /proc/self/map_files, which needs CAP_SYS_ADMIN (a libvirt-run QEMU lacks it).
Result<UniqueFd> openBackingFile(const MapRun &run)
{
	constexpr std::string_view kDeleted = " (deleted)";
	const bool deleted = run.path.size() >= kDeleted.size() &&
			     run.path.compare(run.path.size() - kDeleted.size(), kDeleted.size(),
					      kDeleted) == 0;
	if (!run.path.empty() && run.path[0] == '/' && !deleted) {
		UniqueFd fd(::open(run.path.c_str(), O_RDWR | O_CLOEXEC));
		if (fd && sameFile(fd.get(), run))
			return fd;
	}

	if (DIR *dir = ::opendir("/proc/self/fd")) {
		UniqueFd found;
		while (dirent *e = ::readdir(dir)) {
			if (e->d_name[0] == '.' || ::dirfd(dir) == std::atoi(e->d_name))
				continue;
			std::string p = fmt::format("/proc/self/fd/{}", e->d_name);
			struct stat st;
			if (::stat(p.c_str(), &st) != 0 || st.st_ino != run.inode)
				continue;
			// Re-check on what was opened: QEMU may close and reuse the number meanwhile.
			UniqueFd fd(::open(p.c_str(), O_RDWR | O_CLOEXEC));
			if (fd && sameFile(fd.get(), run)) {
				found = std::move(fd);
				break;
			}
		}
		::closedir(dir);
		if (found)
			return found;
	}

	std::string mf = fmt::format("/proc/self/map_files/{:x}-{:x}", run.start, run.firstVmaEnd);
	UniqueFd fd(::open(mf.c_str(), O_RDWR | O_CLOEXEC));
	if (!fd)
		return Error::fromErrno(fmt::format("open backing file of \"{}\" ({})", run.path, mf));
	if (!sameFile(fd.get(), run))
		return Error::format(ESTALE, "{} is no longer \"{}\"", mf, run.path);
	return fd;
}

struct Range {
	uintptr_t start;
	size_t len;
	void *addr() const { return reinterpret_cast<void *>(start); }
};

// A decoded TRACK/GUARD range, checked to lie inside one run of /proc/self/maps.
Result<Range> mappedRange(const agent::Request &req)
{
	const uint64_t start = req.start, len = req.length;
	FERRY_ASSIGN(std::vector<MapRun> runs, readMaps());
	for (const MapRun &r : runs) {
		if (start >= r.start && start < r.end) {
			if (start + len > r.end)
				return Error::format(EINVAL,
						     "range {:#x} +{} goes past its mapping {:x}-{:x} {}",
						     start, len, r.start, r.end, r.path);
			return Range{ static_cast<uintptr_t>(start), static_cast<size_t>(len) };
		}
	}
	return Error::format(EFAULT, "range {:#x} +{} is not mapped", start, len);
}

struct Reply {
	std::string text;
	UniqueFd fd;
};

// The agent's copy of the uffd is closed when `uffd` goes out of scope after the reply: the
// client's copy alone keeps the registration (tracking, fault handling) alive.
Result<Reply> uffdReply(const Userfaultfd &uffd)
{
	UniqueFd fd(::dup(uffd.fd()));
	if (!fd)
		return Error::fromErrno("dup userfaultfd");
	return Reply{ "OK", std::move(fd) };
}

Result<Reply> handleFind(std::string_view substring)
{
	FERRY_ASSIGN(std::vector<MapRun> runs, readMaps());
	const MapRun *best = nullptr;
	for (const MapRun &r : runs) {
		if (r.path.find(substring) == std::string::npos)
			continue;
		if (!best || r.end - r.start > best->end - best->start)
			best = &r;
	}
	if (!best)
		return Error::format(ENOENT, "no mapping whose path contains \"{}\"", substring);
	if (best->inode == 0)
		return Error::format(EINVAL, "mapping {:x}-{:x} \"{}\" has no backing file",
				     best->start, best->end, best->path);
	FERRY_ASSIGN(UniqueFd fd, openBackingFile(*best));
	return Reply{ fmt::format("OK {:x} {} {}", best->start, best->end - best->start, best->offset),
		      std::move(fd) };
}

Result<Reply> handleTrack(const agent::Request &req)
{
	FERRY_ASSIGN(Range r, mappedRange(req));
	FERRY_ASSIGN(Userfaultfd uffd, createWpAsyncUffd(r.addr(), r.len));
	return uffdReply(uffd);
}

constexpr uint64_t kGuardFeatures = UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MISSING_SHMEM;

Result<Reply> handleProbe()
{
	FERRY_ASSIGN(Userfaultfd uffd, Userfaultfd::create(kGuardFeatures));
	(void)uffd;
	return Reply{ "OK", UniqueFd() };
}

Result<Reply> handleGuard(const agent::Request &req)
{
	FERRY_ASSIGN(Range r, mappedRange(req));
	FERRY_ASSIGN(Userfaultfd uffd, Userfaultfd::create(kGuardFeatures));
	// Register before dropping the page-table entries: the other order leaves a window in
	// which a vCPU could fault a page back in unnoticed. MADV_DONTNEED on a shared mapping
	// only zaps this process's PTEs and keeps the page cache, so afterwards every access
	// faults to the uffd: MINOR where the file has the page, MISSING where it has a hole.
	FERRY_TRY(uffd.registerRange(r.addr(), r.len, UffdMode::Missing | UffdMode::Minor));
	if (::madvise(r.addr(), r.len, MADV_DONTNEED) != 0)
		return Error::fromErrno(fmt::format("madvise DONTNEED {:#x} +{}", r.start, r.len));
	return uffdReply(uffd);
}

Result<Reply> dispatch(std::string_view request)
{
	FERRY_ASSIGN(agent::Request req, agent::decodeRequest(request, pageSize()));
	switch (req.kind) {
	case agent::Request::Kind::Ping:
		return Reply{ fmt::format("OK pid={}", ::getpid()), UniqueFd() };
	case agent::Request::Kind::Probe:
		return handleProbe().context("PROBE");
	case agent::Request::Kind::Find:
		return handleFind(req.substring).context("FIND");
	case agent::Request::Kind::Track:
		return handleTrack(req).context("TRACK");
	case agent::Request::Kind::Guard:
		return handleGuard(req).context("GUARD");
	}
	return Error(EINVAL, "unknown request kind");
}

Reply handle(std::string_view request)
{
	Result<Reply> r = dispatch(request);
	if (r.ok())
		return std::move(r).value();
	std::string msg = r.error().message();
	for (char &c : msg)
		if (c == '\n')
			c = ' ';
	return Reply{ fmt::format("ERR {} {}", r.error().code() ? r.error().code() : EIO, msg),
		      UniqueFd() };
}

// Serves one connected client until it disconnects or the socket fails.
void serveClient(int sock)
{
	for (;;) {
		std::vector<uint8_t> payload;
		// Fds a client might attach are owned by the result and closed with it.
		auto fds = recvFds(sock, &payload, 4, agent::kMaxRequestBytes);
		Reply reply;
		if (!fds.ok()) {
			if (fds.error().code() != EMSGSIZE)
				return; // peer gone (ECONNRESET) or socket broken
			reply.text = fmt::format("ERR {} request larger than {} bytes or with fds",
						 EMSGSIZE, agent::kMaxRequestBytes);
		} else if (!fds->empty()) {
			reply.text = fmt::format("ERR {} requests carry no fds", EINVAL);
		} else {
			reply = handle(std::string_view(reinterpret_cast<const char *>(payload.data()),
							payload.size()));
		}
		if (reply.text.size() > agent::kMaxReplyBytes)
			reply.text.resize(agent::kMaxReplyBytes);
		int fd = reply.fd.get();
		std::span<const int> fdSpan(&fd, reply.fd.valid() ? 1 : 0);
		std::span<const uint8_t> text(reinterpret_cast<const uint8_t *>(reply.text.data()),
					      reply.text.size());
		if (!sendFds(sock, fdSpan, text).ok())
			return;
	}
}

void *serveThread(void *arg)
{
	UniqueFd listener(static_cast<int>(reinterpret_cast<intptr_t>(arg)));
	for (;;) {
		int c = ::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC);
		if (c < 0) {
			int err = errno;
			if (err == EINTR || err == ECONNABORTED)
				continue;
			if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
				// Resource shortage in QEMU's process: back off instead of spinning.
				logError("accept: {}", std::strerror(err));
				timespec ts{ 0, 100 * 1000 * 1000 };
				::nanosleep(&ts, nullptr);
				continue;
			}
			logError("accept: {}; agent stops", std::strerror(err));
			return nullptr;
		}
		UniqueFd client(c);
		serveClient(client.get());
	}
}

Status startAgent(const std::string &path)
{
	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	if (path.empty() || path.size() >= sizeof(addr.sun_path))
		return Error::format(ENAMETOOLONG, "socket path \"{}\" is empty or too long", path);
	std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);

	// A stale socket from an earlier run is replaced; anything else at that path is not ours.
	struct stat st;
	if (::lstat(path.c_str(), &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return Error::format(EEXIST, "{} exists and is not a socket", path);
		if (::unlink(path.c_str()) != 0)
			return Error::fromErrno(fmt::format("unlink stale {}", path));
	}

	UniqueFd sock(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
	if (!sock)
		return Error::fromErrno("socket");
	// The socket file gets its mode from the umask at bind(): create it 0600 directly so
	// that no one else can connect in between. We run in a constructor, before main() and
	// QEMU's threads, so changing the process-wide umask for a moment is safe.
	mode_t oldMask = ::umask(0177);
	int rc = ::bind(sock.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr));
	int err = errno;
	::umask(oldMask);
	if (rc != 0)
		return Error::fromErrno(fmt::format("bind {}", path), err);
	if (::listen(sock.get(), 4) != 0)
		return Error::fromErrno(fmt::format("listen {}", path));

	// The thread must never receive QEMU's signals (SIGUSR1/SIG_IPI kicks, SIGCHLD, ...):
	// a new thread inherits the creator's mask, so block everything around pthread_create.
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_t tid;
	int listenFd = sock.get();
	rc = pthread_create(&tid, &attr, serveThread,
			    reinterpret_cast<void *>(static_cast<intptr_t>(listenFd)));
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, nullptr);
	if (rc != 0) {
		::unlink(path.c_str());
		return Error::fromErrno("pthread_create", rc);
	}
	sock.release(); // now owned by the thread
	pthread_setname_np(tid, "ferry-agent");
	return okStatus();
}

__attribute__((constructor)) void ferryAgentInit()
{
	const char *env = std::getenv(agent::kSocketEnv);
	if (!env)
		return;
	std::string path(env);
	// Processes QEMU spawns inherit LD_PRELOAD; they must not replace our socket.
	::unsetenv(agent::kSocketEnv);
	Status s = startAgent(path);
	if (!s.ok())
		logError("{}", s.error().message());
}

} // namespace

} // namespace ferry
