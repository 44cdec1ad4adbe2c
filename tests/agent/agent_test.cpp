// SPDX-License-Identifier: GPL-2.0-or-later
// libferry-agent.so preloaded into agent_host (a stand-in for QEMU): what AgentClient gets
// back acts on the host's memory, byte for byte.
#include <fcntl.h>
#include <grp.h>
#include <linux/falloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ferry/dirty/tracker.h"
#include "ferry/sys/kernel_compat.h"
#include "ferry/sys/mapping.h"
#include "ferry/sys/pagemap_scan.h"
#include "ferry/sys/scm.h"
#include "ferry/sys/userfaultfd.h"

#include "vm/agent_client.h"
#include "agent/agent_protocol.h"
#include "host_pattern.h"
#include "support/kernel_features.h"
#include "support/lines.h"
#include "support/result_checks.h"

using namespace ferry;
using namespace std::chrono_literals;

namespace {

constexpr int kTimeoutMs = 10000;

std::string envOr(const char *name)
{
	const char *v = std::getenv(name);
	return v ? v : "";
}

// agent_host as a child with pipes on stdin/stdout; killed and reaped on destruction.
class Host {
public:
	~Host() { stop(); }

	// Starts the host with LD_PRELOAD=lib and, unless socketPath is empty,
	// FERRY_AGENT_SOCKET=socketPath; waits for its READY line.
	// asUser: run the host as that uid (and gid), without supplementary groups.
	Status start(const std::string &hostBin, const std::string &lib,
		     const std::string &socketPath, const char *option = nullptr, uid_t asUser = 0)
	{
		std::vector<std::string> envs;
		for (char **e = environ; *e; e++) {
			std::string_view kv(*e);
			if (!kv.starts_with("LD_PRELOAD=") && !kv.starts_with("FERRY_AGENT_SOCKET="))
				envs.emplace_back(kv);
		}
		envs.push_back("LD_PRELOAD=" + lib);
		if (!socketPath.empty())
			envs.push_back(std::string(agent::kSocketEnv) + "=" + socketPath);
		std::vector<char *> cenv;
		for (auto &s : envs)
			cenv.push_back(s.data());
		cenv.push_back(nullptr);
		std::string bin = hostBin;
		std::string opt = option ? option : "";
		char *argv[] = { bin.data(), option ? opt.data() : nullptr, nullptr };

		int in[2], out[2];
		if (::pipe2(in, O_CLOEXEC) || ::pipe2(out, O_CLOEXEC))
			return Error::fromErrno("pipe2");
		pid_ = ::fork();
		if (pid_ < 0)
			return Error::fromErrno("fork");
		if (pid_ == 0) {
			::prctl(PR_SET_PDEATHSIG, SIGKILL);
			::dup2(in[0], 0);
			::dup2(out[1], 1);
			if (asUser != 0 && (::setgroups(0, nullptr) != 0 || ::setresgid(asUser, asUser, asUser) != 0 ||
					    ::setresuid(asUser, asUser, asUser) != 0))
				::_exit(126);
			::execve(argv[0], argv, cenv.data());
			::_exit(127);
		}
		::close(in[0]);
		::close(out[1]);
		in_ = UniqueFd(in[1]);
		out_ = UniqueFd(out[0]);

		FERRY_ASSIGN(std::string ready, readLine());
		unsigned long ram, rom;
		int pid;
		if (std::sscanf(ready.c_str(), "READY %d %lx %zu %lx %zu", &pid, &ram, &ramSize_,
				&rom, &romSize_) != 5 || pid != pid_)
			return Error::format(EPROTO, "host said \"{}\"", ready);
		ram_ = ram;
		rom_ = rom;
		return okStatus();
	}

	void stop()
	{
		if (pid_ <= 0)
			return;
		// A host already gone (or stuck in a fault) cannot take the command; fine.
		(void)send("Q\n");
		in_.reset();
		// The host exits on Q or EOF: wait for the EOF of its stdout, then reap it.
		// SIGKILL only for a host that does not exit (e.g. blocked on an unserved fault).
		const auto deadline = std::chrono::steady_clock::now() + 5s;
		for (;;) {
			auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
				deadline - std::chrono::steady_clock::now());
			pollfd p{ out_.get(), POLLIN, 0 };
			if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
				::kill(pid_, SIGKILL);
				break;
			}
			char sink[4096];
			if (::read(out_.get(), sink, sizeof(sink)) <= 0)
				break;
		}
		::waitpid(pid_, nullptr, 0);
		pid_ = -1;
	}

	Status send(const std::string &cmd)
	{
		if (::write(in_.get(), cmd.data(), cmd.size()) != static_cast<ssize_t>(cmd.size()))
			return Error::fromErrno("write to host");
		return okStatus();
	}

	// Waits until the host's stdout is readable, or `other` (if >= 0) is; true for stdout.
	Result<bool> waitReadable(int other, int timeoutMs = kTimeoutMs)
	{
		if (!buf_.empty())
			return true;
		pollfd p[2] = { { out_.get(), POLLIN, 0 }, { other, POLLIN, 0 } };
		int r = ::poll(p, other >= 0 ? 2 : 1, timeoutMs);
		if (r < 0)
			return Error::fromErrno("poll");
		if (r == 0)
			return Error(ETIMEDOUT, "host did not answer in time");
		return (p[0].revents & (POLLIN | POLLHUP)) != 0;
	}

	Result<std::string> readLine()
	{
		for (;;) {
			if (auto line = test::takeLine(buf_))
				return *line;
			FERRY_TRY(fill());
		}
	}

	Result<std::vector<uint8_t>> readPage(size_t page)
	{
		FERRY_TRY(send(fmt::format("R {}\n", page)));
		return readData();
	}

	// After an "R" command: "DATA\n" + one page.
	Result<std::vector<uint8_t>> readData()
	{
		FERRY_ASSIGN(std::string line, readLine());
		if (line != "DATA")
			return Error::format(EPROTO, "host said \"{}\"", line);
		while (buf_.size() < pageSize())
			FERRY_TRY(fill());
		std::vector<uint8_t> data(buf_.begin(), buf_.begin() + static_cast<long>(pageSize()));
		buf_.erase(0, pageSize());
		return data;
	}

	Status write(size_t page, unsigned value)
	{
		FERRY_TRY(send(fmt::format("W {} {}\n", page, value)));
		FERRY_ASSIGN(std::string line, readLine());
		if (line != "OK")
			return Error::format(EPROTO, "host said \"{}\"", line);
		return okStatus();
	}

	pid_t pid() const { return pid_; }
	uintptr_t ram() const { return ram_; }
	size_t ramSize() const { return ramSize_; }
	uintptr_t rom() const { return rom_; }
	size_t romSize() const { return romSize_; }

private:
	Status fill()
	{
		FERRY_ASSIGN(bool ready, waitReadable(-1));
		(void)ready;
		char tmp[8192];
		ssize_t n = ::read(out_.get(), tmp, sizeof(tmp));
		if (n < 0)
			return Error::fromErrno("read from host");
		if (n == 0)
			return Error(ECONNRESET, "host exited");
		buf_.append(tmp, static_cast<size_t>(n));
		return okStatus();
	}

	pid_t pid_ = -1;
	UniqueFd in_, out_;
	std::string buf_;
	uintptr_t ram_ = 0, rom_ = 0;
	size_t ramSize_ = 0, romSize_ = 0;
};

std::vector<uint8_t> expectedPage(unsigned region, size_t page)
{
	std::vector<uint8_t> v(pageSize());
	for (size_t i = 0; i < v.size(); i++)
		v[i] = test::hostPattern(region, page * pageSize() + i);
	return v;
}

class AgentShim : public ::testing::Test {
protected:
	void SetUp() override
	{
		lib_ = envOr("FERRY_AGENT_LIB");
		hostBin_ = envOr("FERRY_AGENT_HOST");
		ASSERT_FALSE(lib_.empty() || hostBin_.empty())
			<< "FERRY_AGENT_LIB and FERRY_AGENT_HOST must be set (meson test does)";
		char tmpl[] = "/tmp/ferry-agent-test-XXXXXX";
		ASSERT_NE(::mkdtemp(tmpl), nullptr);
		dir_ = tmpl;
		socket_ = dir_ + "/agent.sock";
		Status s = host_.start(hostBin_, lib_, socket_);
		ASSERT_TRUE(s.ok()) << s.error().message();
		auto c = AgentClient::connect(socket_, 10s);
		ASSERT_TRUE(c.ok()) << c.error().message();
		client_.emplace(std::move(c).value());
	}

	void TearDown() override
	{
		client_.reset();
		host_.stop();
		std::error_code ec;
		std::filesystem::remove_all(dir_, ec);
	}

	std::string lib_, hostBin_, dir_, socket_;
	Host host_;
	std::optional<AgentClient> client_;
};

TEST_F(AgentShim, PingReportsTheHostPid)
{
	auto pid = client_->ping();
	ASSERT_TRUE(pid.ok()) << pid.error().message();
	EXPECT_EQ(*pid, host_.pid());
}

TEST_F(AgentShim, SocketIsPrivateToItsOwner)
{
	struct stat st;
	ASSERT_EQ(::lstat(socket_.c_str(), &st), 0);
	EXPECT_TRUE(S_ISSOCK(st.st_mode));
	EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(AgentShim, FindReturnsTheMappingAndAnFdOfItsBytes)
{
	auto region = client_->find("ferry-agent-host-ram");
	ASSERT_TRUE(region.ok()) << region.error().message();
	EXPECT_EQ(region->base, host_.ram());
	EXPECT_EQ(region->size, host_.ramSize());
	EXPECT_EQ(region->fileOffset, 0u);

	std::vector<uint8_t> file(region->size);
	ASSERT_EQ(::pread(region->file.get(), file.data(), file.size(), 0),
		  static_cast<ssize_t>(file.size()));
	size_t mismatches = 0;
	for (size_t i = 0; i < file.size(); i++)
		mismatches += file[i] != test::hostPattern(0, i);
	EXPECT_EQ(mismatches, 0u);

	// The fd is the host's RAM itself, opened read-write.
	std::vector<uint8_t> page(pageSize(), 0xe7);
	ASSERT_EQ(::pwrite(region->file.get(), page.data(), page.size(), 2 * pageSize()),
		  static_cast<ssize_t>(page.size()));
	auto seen = host_.readPage(2);
	ASSERT_TRUE(seen.ok()) << seen.error().message();
	EXPECT_EQ(*seen, page);
}

TEST_F(AgentShim, FindPicksTheLargestMatchingMapping)
{
	auto ram = client_->find("ferry-agent-host");
	ASSERT_TRUE(ram.ok()) << ram.error().message();
	EXPECT_EQ(ram->base, host_.ram());
	EXPECT_EQ(ram->size, host_.ramSize());

	auto rom = client_->find("ferry-agent-host-rom");
	ASSERT_TRUE(rom.ok()) << rom.error().message();
	EXPECT_EQ(rom->base, host_.rom());
	EXPECT_EQ(rom->size, host_.romSize());
	std::vector<uint8_t> first(pageSize());
	ASSERT_EQ(::pread(rom->file.get(), first.data(), first.size(), 0),
		  static_cast<ssize_t>(first.size()));
	EXPECT_EQ(first, expectedPage(1, 0));
}

TEST_F(AgentShim, FindOfAnUnknownNameFailsWithENOENT)
{
	auto r = client_->find("no-such-mapping-anywhere");
	ASSERT_FALSE(r.ok());
	EXPECT_EQ(r.error().code(), ENOENT) << r.error().message();
}

TEST_F(AgentShim, TrackReportsExactlyThePagesTheHostWrites)
{
	REQUIRE_WP_ASYNC();

	auto region = client_->find("ferry-agent-host-ram");
	ASSERT_TRUE(region.ok()) << region.error().message();
	auto uffd = client_->track(region->base, region->size);
	ASSERT_TRUE(uffd.ok()) << uffd.error().message();
	auto tracker = makeUffdWpTracker({ host_.pid(), region->base, region->size, pageSize() },
					 std::move(uffd).value());
	ASSERT_TRUE(tracker.ok()) << tracker.error().message();
	DirtyTracker &t = **tracker;
	ASSERT_OK(t.start());

	std::vector<uint32_t> dirty;
	ASSERT_OK(t.collect(dirty));
	EXPECT_TRUE(dirty.empty()) << dirty.size() << " pages dirty before any write";

	ASSERT_OK(host_.write(517, 3));
	ASSERT_OK(host_.write(3, 1));
	ASSERT_OK(host_.write(100, 2));
	ASSERT_OK(host_.write(100, 2));
	auto read = host_.readPage(5); // a read marks nothing
	ASSERT_TRUE(read.ok()) << read.error().message();
	EXPECT_EQ(*read, expectedPage(0, 5));

	ASSERT_OK(t.collect(dirty));
	EXPECT_EQ(dirty, (std::vector<uint32_t>{ 3, 100, 517 }));
	ASSERT_OK(t.collect(dirty));
	EXPECT_TRUE(dirty.empty());

	// Writing the value a byte already holds is still a write.
	ASSERT_OK(host_.write(3, 1));
	ASSERT_OK(t.collect(dirty));
	EXPECT_EQ(dirty, (std::vector<uint32_t>{ 3 }));
}

// Waits for the one fault the host's pending "R" causes; fails if the host answers first.
Result<uffd_msg> waitFault(Host &host, Userfaultfd &uffd)
{
	FERRY_ASSIGN(bool hostFirst, host.waitReadable(uffd.fd()));
	if (hostFirst)
		return Error(EPROTO, "the host read the page without a fault");
	std::vector<uffd_msg> msgs;
	FERRY_ASSIGN(size_t n, uffd.readEvents(msgs));
	if (n != 1 || msgs[0].event != UFFD_EVENT_PAGEFAULT)
		return Error::format(EPROTO, "expected one page fault, got {} messages", n);
	return msgs[0];
}

TEST_F(AgentShim, GuardMakesHostAccessesFaultUntilServed)
{
	REQUIRE_UFFD(UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MISSING_SHMEM);

	auto region = client_->find("ferry-agent-host-ram");
	ASSERT_TRUE(region.ok()) << region.error().message();
	auto mine = Mapping::map(region->file.get(), region->size, PROT_READ | PROT_WRITE,
				 MAP_SHARED);
	ASSERT_TRUE(mine.ok()) << mine.error().message();
	auto guarded = client_->guard(region->base, region->size);
	ASSERT_TRUE(guarded.ok()) << guarded.error().message();
	Userfaultfd &uffd = *guarded;
	const size_t page = pageSize();
	auto hostPage = [&](size_t i) { return reinterpret_cast<void *>(region->base + i * page); };

	// Page 7 is in the file: a minor fault, served by writing through our own mapping of
	// the file and mapping that page cache page into the host (UFFDIO_CONTINUE).
	std::vector<uint8_t> served7(page);
	for (size_t i = 0; i < page; i++)
		served7[i] = static_cast<uint8_t>(0xc3 ^ i);
	std::memcpy(mine->data() + 7 * page, served7.data(), page);
	ASSERT_OK(host_.send("R 7\n"));
	auto fault = waitFault(host_, uffd);
	ASSERT_TRUE(fault.ok()) << fault.error().message();
	EXPECT_TRUE(fault->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR);
	EXPECT_EQ(fault->arg.pagefault.address & ~(page - 1), region->base + 7 * page);
	auto done = uffd.continueRange(hostPage(7), page);
	ASSERT_TRUE(done.ok()) << done.error().message();
	EXPECT_EQ(*done, UffdOutcome::Done);
	auto data = host_.readData();
	ASSERT_TRUE(data.ok()) << data.error().message();
	EXPECT_EQ(*data, served7);

	// Page 9 becomes a hole: a missing fault, served with UFFDIO_COPY, which also puts the
	// data into the file.
	ASSERT_EQ(::fallocate(region->file.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      static_cast<off_t>(9 * page), static_cast<off_t>(page)),
		  0)
		<< std::strerror(errno);
	std::vector<uint8_t> served9(page);
	for (size_t i = 0; i < page; i++)
		served9[i] = static_cast<uint8_t>(i * 7 + 0x11);
	ASSERT_OK(host_.send("R 9\n"));
	fault = waitFault(host_, uffd);
	ASSERT_TRUE(fault.ok()) << fault.error().message();
	EXPECT_FALSE(fault->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR);
	EXPECT_EQ(fault->arg.pagefault.address & ~(page - 1), region->base + 9 * page);
	done = uffd.copy(hostPage(9), served9.data(), page);
	ASSERT_TRUE(done.ok()) << done.error().message();
	EXPECT_EQ(*done, UffdOutcome::Done);
	data = host_.readData();
	ASSERT_TRUE(data.ok()) << data.error().message();
	EXPECT_EQ(*data, served9);
	EXPECT_EQ(std::memcmp(mine->data() + 9 * page, served9.data(), page), 0);

	// A served page stays mapped: reading it again does not fault.
	data = host_.readPage(7);
	ASSERT_TRUE(data.ok()) << data.error().message();
	EXPECT_EQ(*data, served7);
	std::vector<uffd_msg> msgs;
	auto pending = uffd.readEvents(msgs);
	ASSERT_TRUE(pending.ok()) << pending.error().message();
	EXPECT_EQ(*pending, 0u);
}

TEST_F(AgentShim, MalformedRequestsGetErrAndTheAgentKeepsServing)
{
	const size_t page = pageSize();
	const uintptr_t base = host_.ram();
	const size_t size = host_.ramSize();
	struct Case {
		std::string request;
		int err;
	};
	const std::vector<Case> cases = {
		{ "HELLO", EINVAL },
		{ "PING now", EINVAL },
		{ "FIND", EINVAL },
		{ "FIND ", EINVAL },
		{ "TRACK", EINVAL },
		{ "TRACK zz 4096", EINVAL },
		{ fmt::format("TRACK {:x}", base), EINVAL },
		{ fmt::format("TRACK {:x} {}", base + 1, page), EINVAL },
		{ fmt::format("TRACK {:x} 0", base), EINVAL },
		{ fmt::format("TRACK {:x} {}", base, size + page), EINVAL },
		{ fmt::format("GUARD {:x} {}", base + size - page, 2 * page), EINVAL },
		{ fmt::format("GUARD {:x} 99999999999999999999999", base), EINVAL },
		{ fmt::format("TRACK fffffffffffff000 {}", 2 * page), EINVAL },
		{ fmt::format("GUARD {:x} {}", page, page), EFAULT },
	};
	for (const Case &c : cases) {
		auto r = client_->request(c.request);
		ASSERT_FALSE(r.ok()) << "\"" << c.request << "\" was accepted";
		EXPECT_EQ(r.error().code(), c.err) << c.request << ": " << r.error().message();
	}

	// Oversized requests and requests carrying fds, sent raw (the client refuses them).
	std::string huge(agent::kMaxRequestBytes + 100, 'F');
	ASSERT_OK(sendFds(client_->fd(), {},
			  std::span(reinterpret_cast<const uint8_t *>(huge.data()), huge.size())));
	std::vector<uint8_t> reply;
	auto fds = recvFds(client_->fd(), &reply, 1, agent::kMaxReplyBytes);
	ASSERT_TRUE(fds.ok()) << fds.error().message();
	EXPECT_TRUE(std::string(reply.begin(), reply.end()).starts_with(fmt::format("ERR {} ", EMSGSIZE)));

	int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
	ASSERT_GE(devnull, 0);
	UniqueFd owned(devnull);
	const std::string ping = "PING";
	ASSERT_OK(sendFds(client_->fd(), std::span(&devnull, 1),
			  std::span(reinterpret_cast<const uint8_t *>(ping.data()), ping.size())));
	fds = recvFds(client_->fd(), &reply, 1, agent::kMaxReplyBytes);
	ASSERT_TRUE(fds.ok()) << fds.error().message();
	EXPECT_TRUE(std::string(reply.begin(), reply.end()).starts_with(fmt::format("ERR {} ", EINVAL)));

	// Neither the agent nor the host was hurt.
	auto pid = client_->ping();
	ASSERT_TRUE(pid.ok()) << pid.error().message();
	EXPECT_EQ(*pid, host_.pid());
	auto data = host_.readPage(1);
	ASSERT_TRUE(data.ok()) << data.error().message();
	EXPECT_EQ(*data, expectedPage(0, 1));
}

TEST_F(AgentShim, ServesTheNextClientAfterOneLeaves)
{
	client_.reset();
	for (int i = 0; i < 3; i++) {
		auto c = AgentClient::connect(socket_, 5s);
		ASSERT_TRUE(c.ok()) << c.error().message();
		auto pid = c->ping();
		ASSERT_TRUE(pid.ok()) << pid.error().message();
		EXPECT_EQ(*pid, host_.pid());
	}
}

// The tid of the host's thread named `name`, or 0.
pid_t findThread(pid_t pid, const std::string &name)
{
	std::error_code ec;
	for (const auto &e : std::filesystem::directory_iterator(fmt::format("/proc/{}/task", pid), ec)) {
		std::ifstream comm(e.path() / "comm");
		std::string n;
		std::getline(comm, n);
		if (n == name)
			return static_cast<pid_t>(std::stol(e.path().filename().string()));
	}
	return 0;
}

TEST_F(AgentShim, AgentThreadBlocksEverySignal)
{
	pid_t tid = findThread(host_.pid(), "ferry-agent");
	ASSERT_NE(tid, 0) << "no ferry-agent thread in the host";
	std::ifstream status(fmt::format("/proc/{}/task/{}/status", host_.pid(), tid));
	std::string line;
	uint64_t blocked = 0;
	bool found = false;
	while (std::getline(status, line))
		if (line.starts_with("SigBlk:")) {
			blocked = std::stoull(line.substr(7), nullptr, 16);
			found = true;
		}
	ASSERT_TRUE(found);
	for (int sig : { SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2, SIGCHLD, SIGALRM, SIGIO,
			 SIGPIPE, SIGRTMIN, SIGRTMAX })
		EXPECT_TRUE(blocked & (1ull << (sig - 1))) << "signal " << sig << " not blocked";
}

// Without an fd of the file in the host, the agent falls back to /proc/self/map_files
// (which needs CAP_SYS_ADMIN).
TEST(AgentShimNoFd, FindOpensTheFileThroughTheMapping)
{
	if (::geteuid() != 0)
		GTEST_SKIP() << "/proc/self/map_files needs CAP_SYS_ADMIN; not root";
	std::string lib = envOr("FERRY_AGENT_LIB"), hostBin = envOr("FERRY_AGENT_HOST");
	ASSERT_FALSE(lib.empty() || hostBin.empty());
	char tmpl[] = "/tmp/ferry-agent-test-XXXXXX";
	ASSERT_NE(::mkdtemp(tmpl), nullptr);
	std::string dir = tmpl;
	{
		Host host;
		Status s = host.start(hostBin, lib, dir + "/agent.sock", "--close-fds");
		ASSERT_TRUE(s.ok()) << s.error().message();
		auto client = AgentClient::connect(dir + "/agent.sock", 10s);
		ASSERT_TRUE(client.ok()) << client.error().message();
		auto region = client->find("ferry-agent-host-ram");
		ASSERT_TRUE(region.ok()) << region.error().message();
		EXPECT_EQ(region->base, host.ram());
		std::vector<uint8_t> first(pageSize());
		ASSERT_EQ(::pread(region->file.get(), first.data(), first.size(), 4 * pageSize()),
			  static_cast<ssize_t>(first.size()));
		EXPECT_EQ(first, expectedPage(0, 4));
	}
	std::error_code ec;
	std::filesystem::remove_all(dir, ec);
}

TEST_F(AgentShim, ProbeSaysThisProcessMayServePostCopy)
{
	Status probe = client_->probePostCopy();
	EXPECT_TRUE(probe.ok()) << probe.error().message();
}

// A QEMU whose user may not have a userfaultfd that sees the kernel's accesses (the host
// refuses unprivileged ones): PROBE says so, naming the fixes, and GUARD, which post-copy
// would use, is refused the same way rather than handing out a user-mode-only one.
TEST(AgentShimUnprivileged, ProbeAndGuardAreRefusedWithTheFixesNamed)
{
	REQUIRE_USERFAULTFD_PRIVILEGED();
	std::string lib = envOr("FERRY_AGENT_LIB"), hostBin = envOr("FERRY_AGENT_HOST");
	ASSERT_FALSE(lib.empty() || hostBin.empty());
	// The build tree may sit where nobody cannot reach it (a home directory of mode 0700).
	pid_t pid = ::fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		bool reach = ::setresgid(65534, 65534, 65534) == 0 && ::setresuid(65534, 65534, 65534) == 0 &&
			     ::access(hostBin.c_str(), X_OK) == 0 && ::access(lib.c_str(), R_OK) == 0;
		::_exit(reach ? 0 : 1);
	}
	int status = 0;
	::waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		GTEST_SKIP() << "user nobody cannot reach " << hostBin << " or " << lib;
	char tmpl[] = "/tmp/ferry-agent-test-XXXXXX";
	ASSERT_NE(::mkdtemp(tmpl), nullptr);
	std::string dir = tmpl;
	ASSERT_EQ(::chmod(dir.c_str(), 0777), 0); // nobody creates the agent's socket there
	{
		Host host;
		Status s = host.start(hostBin, lib, dir + "/agent.sock", nullptr, 65534);
		ASSERT_TRUE(s.ok()) << s.error().message();
		auto client = AgentClient::connect(dir + "/agent.sock", 10s);
		ASSERT_TRUE(client.ok()) << client.error().message();
		Status probe = client->probePostCopy();
		ASSERT_FALSE(probe.ok()) << "nobody may serve post-copy here?";
		EXPECT_EQ(probe.error().code(), EPERM) << probe.error().message();
		EXPECT_NE(probe.error().message().find("vm.unprivileged_userfaultfd=1"), std::string::npos)
			<< probe.error().message();
		auto guard = client->guard(host.ram(), pageSize());
		ASSERT_FALSE(guard.ok()) << "GUARD handed nobody a userfaultfd";
		EXPECT_EQ(guard.error().code(), EPERM) << guard.error().message();
		// Tracking (write-protect, WP_ASYNC) still works for it, user-mode-only.
		auto track = client->track(host.ram(), 16 * pageSize());
		EXPECT_TRUE(track.ok()) << track.error().message();
	}
	std::error_code ec;
	std::filesystem::remove_all(dir, ec);
}

TEST(AgentShimInert, DoesNothingWithoutTheSocketVariable)
{
	std::string lib = envOr("FERRY_AGENT_LIB"), hostBin = envOr("FERRY_AGENT_HOST");
	ASSERT_FALSE(lib.empty() || hostBin.empty());
	Host host;
	Status s = host.start(hostBin, lib, "");
	ASSERT_TRUE(s.ok()) << s.error().message();
	// The library is loaded, yet no thread was started and the host works as before.
	std::ifstream maps(fmt::format("/proc/{}/maps", host.pid()));
	std::string text((std::istreambuf_iterator<char>(maps)), std::istreambuf_iterator<char>());
	EXPECT_NE(text.find("libferry-agent.so"), std::string::npos);
	EXPECT_EQ(findThread(host.pid(), "ferry-agent"), 0);
	auto data = host.readPage(3);
	ASSERT_TRUE(data.ok()) << data.error().message();
	EXPECT_EQ(*data, expectedPage(0, 3));
}

TEST(AgentShimInert, ConnectTimesOutWhenNoAgentListens)
{
	auto start = std::chrono::steady_clock::now();
	auto c = AgentClient::connect("/tmp/ferry-agent-test-no-such-dir/agent.sock", 100ms);
	ASSERT_FALSE(c.ok());
	EXPECT_EQ(c.error().code(), ENOENT) << c.error().message();
	EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

} // namespace
