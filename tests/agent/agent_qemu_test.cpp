// SPDX-License-Identifier: GPL-2.0-or-later
// libferry-agent.so inside a real QEMU 7.2 (TCG, no guest image needed: SeaBIOS is enough to
// write guest RAM): the agent finds guest RAM, hands out a WP-async uffd, and QEMU carries on.
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ferry/dirty/tracker.h"
#include "harness/qemu_launcher.h"
#include "ferry/sys/mapping.h"
#include "ferry/sys/pagemap_scan.h"
#include "ferry/sys/userfaultfd.h"

#include "vm/agent_client.h"
#include "agent/agent_protocol.h"
#include "support/kernel_features.h"

using namespace ferry;
using namespace std::chrono_literals;

namespace {

constexpr const char *kQemu = "qemu-system-x86_64";

// Runs `request` (an agent command over all of guest RAM) and prints how long it took.
template<typename F>
auto timed(const char *what, F &&request)
{
	const auto t0 = std::chrono::steady_clock::now();
	auto r = request();
	std::cout << what << " of 256 MiB took "
		  << std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count()
		  << " us\n";
	return r;
}

bool inPath(const std::string &bin)
{
	const char *path = std::getenv("PATH");
	std::string_view rest = path ? path : "/usr/bin:/bin";
	while (!rest.empty()) {
		size_t colon = rest.find(':');
		std::string dir(rest.substr(0, colon));
		if (!dir.empty() && ::access((dir + "/" + bin).c_str(), X_OK) == 0)
			return true;
		if (colon == std::string_view::npos)
			break;
		rest.remove_prefix(colon + 1);
	}
	return false;
}

struct RunDir {
	std::string path;
	~RunDir()
	{
		if (!path.empty())
			removeRunDir(path);
	}
};

// A paused (-S) QEMU with 256 MiB of memfd guest RAM and the agent preloaded, its QMP
// connected and the agent's client connected.
struct AgentQemu {
	RunDir dir;
	std::optional<QemuProcess> qemu;
	std::optional<QmpClient> qmp;
	std::optional<AgentClient> agent;
	static constexpr uint64_t kRam = 256ull << 20;

	Status start(const char *lib)
	{
		FERRY_ASSIGN(dir.path, makeRunDir("ferry-agent-qemu"));
		const std::string qmpPath = dir.path + "/qmp.sock";
		const std::string agentPath = dir.path + "/agent.sock";
		std::vector<std::string> argv = {
			kQemu, "-accel", "tcg", "-nodefaults", "-display", "none", "-S", "-m", "256",
			"-object", "memory-backend-memfd,id=ram0,size=256M,share=on",
			"-machine", "pc,memory-backend=ram0",
			"-qmp", "unix:" + qmpPath + ",server=on,wait=off",
		};
		FERRY_ASSIGN(qemu, QemuProcess::spawn("agent-qemu", argv,
						      { { "LD_PRELOAD", lib },
							{ agent::kSocketEnv, agentPath } },
						      dir.path + "/qemu.log", qmpPath));
		// The agent listens from the moment QEMU's loader runs it, long before QEMU has
		// created guest RAM; QMP greets only once QEMU's main loop runs, i.e. after
		// machine creation.
		auto q = qemu->connectQmp(20s);
		if (!q.ok())
			return q.error().context(qemu->stderrTail());
		qmp.emplace(std::move(q).value());
		FERRY_ASSIGN(agent, AgentClient::connect(agentPath, 20s));
		return okStatus();
	}
};

// The test's preconditions; empty when it can run.
std::string skipReason()
{
	if (!inPath(kQemu))
		return std::string(kQemu) + " not installed";
	return {};
}

TEST(AgentQemu, FindsGuestRamAndTracksItWhileQmpAnswers)
{
	if (auto why = skipReason(); !why.empty())
		GTEST_SKIP() << why;
	if (!PagemapScanner::supported())
		GTEST_SKIP() << "PAGEMAP_SCAN not supported by this kernel";
	const char *lib = std::getenv("FERRY_AGENT_LIB");
	ASSERT_NE(lib, nullptr) << "FERRY_AGENT_LIB must be set (meson test does)";

	AgentQemu vm;
	Status started = vm.start(lib);
	ASSERT_TRUE(started.ok()) << started.error().message();
	auto pid = vm.agent->ping();
	ASSERT_TRUE(pid.ok()) << pid.error().message();
	EXPECT_EQ(*pid, vm.qemu->pid());

	// QEMU 7.2 names every memory-backend-memfd's memfd after the type, not the object id:
	// guest RAM shows as "/memfd:memory-backend-memfd (deleted)" in /proc/<pid>/maps.
	auto ram = vm.agent->find("memory-backend-memfd");
	ASSERT_TRUE(ram.ok()) << ram.error().message();
	EXPECT_EQ(ram->size, AgentQemu::kRam);
	struct stat st;
	ASSERT_EQ(::fstat(ram->file.get(), &st), 0);
	EXPECT_EQ(static_cast<uint64_t>(st.st_size), AgentQemu::kRam);

	auto uffd = timed("TRACK", [&] { return vm.agent->track(ram->base, ram->size); });
	ASSERT_TRUE(uffd.ok()) << uffd.error().message();
	auto tracker = makeUffdWpTracker({ vm.qemu->pid(), ram->base, ram->size, 64 << 10 },
					 std::move(uffd).value());
	ASSERT_TRUE(tracker.ok()) << tracker.error().message();
	ASSERT_TRUE((*tracker)->start().ok());
	auto status = vm.qmp->queryStatus();
	ASSERT_TRUE(status.ok()) << status.error().message();
	EXPECT_EQ(*status, "prelaunch");

	// Let the firmware run: whatever it writes into guest RAM must show up.
	ASSERT_TRUE(vm.qmp->cont().ok());
	std::vector<uint32_t> dirty;
	size_t total = 0;
	const auto deadline = std::chrono::steady_clock::now() + 30s;
	while (total == 0 && std::chrono::steady_clock::now() < deadline) {
		Status s = (*tracker)->collect(dirty);
		ASSERT_TRUE(s.ok()) << s.error().message();
		total += dirty.size();
		if (total == 0) {
			// Nothing to wait on for "the guest wrote something": ask QMP meanwhile,
			// which also shows QEMU keeps answering while tracked.
			status = vm.qmp->queryStatus();
			ASSERT_TRUE(status.ok()) << status.error().message();
		}
	}
	EXPECT_GT(total, 0u) << "the running firmware wrote no tracked guest RAM";
	std::cout << "firmware dirtied " << total << " chunks of 64 KiB in its first pass\n";
	status = vm.qmp->queryStatus();
	ASSERT_TRUE(status.ok()) << status.error().message();
	EXPECT_EQ(*status, "running");
	EXPECT_FALSE(vm.qemu->exited()) << vm.qemu->stderrTail();
	EXPECT_TRUE(vm.qmp->quit().ok());
}

// The destination's post-copy path: after GUARD, every guest RAM access of QEMU's vCPU
// blocks until this process resolves it (MINOR: the page is in the memfd; MISSING: a hole).
TEST(AgentQemu, GuardedGuestRamRunsOnFaultsServedByTheClient)
{
	if (auto why = skipReason(); !why.empty())
		GTEST_SKIP() << why;
	REQUIRE_UFFD(UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MISSING_SHMEM);
	const char *lib = std::getenv("FERRY_AGENT_LIB");
	ASSERT_NE(lib, nullptr) << "FERRY_AGENT_LIB must be set (meson test does)";

	AgentQemu vm;
	Status started = vm.start(lib);
	ASSERT_TRUE(started.ok()) << started.error().message();
	auto ram = vm.agent->find("memory-backend-memfd");
	ASSERT_TRUE(ram.ok()) << ram.error().message();
	// As on a destination that already pulled part of the RAM: the low 1 MiB (where the
	// firmware runs) is in the memfd, so faults there are MINOR; the rest is holes.
	std::vector<uint8_t> zeros(1 << 20);
	ASSERT_EQ(::pwrite(ram->file.get(), zeros.data(), zeros.size(), 0),
		  static_cast<ssize_t>(zeros.size()));
	auto guarded = timed("GUARD", [&] { return vm.agent->guard(ram->base, ram->size); });
	ASSERT_TRUE(guarded.ok()) << guarded.error().message();
	Userfaultfd &uffd = *guarded;
	ASSERT_TRUE(vm.qmp->cont().ok());

	// Serve until the firmware has faulted in a good number of pages; QMP is asked in
	// between (QEMU's main loop must keep answering while a vCPU waits on a fault).
	const size_t page = pageSize();
	size_t minor = 0, missing = 0;
	std::vector<uffd_msg> msgs;
	const auto deadline = std::chrono::steady_clock::now() + 30s;
	while (minor + missing < 64 && std::chrono::steady_clock::now() < deadline) {
		pollfd p{ uffd.fd(), POLLIN, 0 };
		int r = ::poll(&p, 1, 100);
		ASSERT_GE(r, 0) << std::strerror(errno);
		if (r == 0) {
			auto status = vm.qmp->queryStatus();
			ASSERT_TRUE(status.ok()) << status.error().message();
			continue;
		}
		auto n = uffd.readEvents(msgs);
		ASSERT_TRUE(n.ok()) << n.error().message();
		for (const uffd_msg &m : msgs) {
			ASSERT_EQ(m.event, UFFD_EVENT_PAGEFAULT);
			uint64_t addr = m.arg.pagefault.address & ~(uint64_t(page) - 1);
			ASSERT_GE(addr, ram->base);
			ASSERT_LT(addr, ram->base + ram->size);
			void *at = reinterpret_cast<void *>(addr);
			auto outcome = (m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR) ?
					       uffd.continueRange(at, page) :
					       uffd.zeroPage(at, page);
			ASSERT_TRUE(outcome.ok()) << outcome.error().message();
			// Exists: another vCPU access already got the same page resolved.
			ASSERT_TRUE(*outcome == UffdOutcome::Done || *outcome == UffdOutcome::Exists)
				<< toString(*outcome);
			((m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR) ? minor : missing)++;
		}
	}
	std::cout << "served " << minor << " minor and " << missing << " missing faults\n";
	EXPECT_GE(minor + missing, 64u) << "the guest stopped faulting";
	EXPECT_GT(minor, 0u) << "no access to the pages present in the memfd";
	auto status = vm.qmp->queryStatus();
	ASSERT_TRUE(status.ok()) << status.error().message();
	EXPECT_EQ(*status, "running");

	// Closing the uffd releases the guard: the guest runs on without us.
	*guarded = Userfaultfd();
	status = vm.qmp->queryStatus();
	ASSERT_TRUE(status.ok()) << status.error().message();
	EXPECT_EQ(*status, "running");
	EXPECT_FALSE(vm.qemu->exited()) << vm.qemu->stderrTail();
	EXPECT_TRUE(vm.qmp->quit().ok());
}

} // namespace
