// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/sys/userfaultfd.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "ferry/dirty/tracker.h"
#include "ferry/sys/mapping.h"
#include "ferry/sys/pagemap_scan.h"
#include "ferry/sys/scm.h"

#include "support/child_process.h"
#include "support/kernel_features.h"
#include "support/test_memory.h"

using namespace ferry;

namespace {

constexpr int kTimeoutMs = 10000;

void fillPattern(uint8_t *p, size_t len, uint32_t seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = static_cast<uint8_t>((i * 131 + seed * 7 + (i >> 12)) & 0xff);
}

// Serves missing faults in [base, base+len) from `source` until `pages` faults were served
// or the timeout expires. Returns the number served.
size_t serveMissing(Userfaultfd &uffd, uint8_t *base, const uint8_t *source, size_t pages)
{
	std::vector<uffd_msg> msgs;
	size_t served = 0;
	const size_t page = pageSize();
	while (served < pages) {
		pollfd p{ uffd.fd(), POLLIN, 0 };
		if (::poll(&p, 1, kTimeoutMs) <= 0)
			break;
		auto n = uffd.readEvents(msgs);
		if (!n.ok())
			break;
		for (const uffd_msg &m : msgs) {
			if (m.event != UFFD_EVENT_PAGEFAULT)
				continue;
			uintptr_t addr = m.arg.pagefault.address & ~(page - 1);
			size_t off = addr - reinterpret_cast<uintptr_t>(base);
			auto r = uffd.copy(base + off, source + off, page);
			// Two threads faulting on one page yield one message each: Exists is fine.
			if (r.ok() && (*r == UffdOutcome::Done || *r == UffdOutcome::Exists))
				served++;
		}
	}
	return served;
}

// Serves minor faults with continueRange() until `pages` were served or the timeout expires;
// every message must be a minor page fault. Returns the number served in *served.
void serveMinor(Userfaultfd &uffd, size_t pages, size_t *served)
{
	std::vector<uffd_msg> msgs;
	const size_t page = pageSize();
	while (*served < pages) {
		pollfd p{ uffd.fd(), POLLIN, 0 };
		if (::poll(&p, 1, kTimeoutMs) <= 0)
			break;
		ASSERT_TRUE(uffd.readEvents(msgs).ok());
		for (const uffd_msg &m : msgs) {
			ASSERT_EQ(m.event, UFFD_EVENT_PAGEFAULT);
			EXPECT_TRUE(m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR);
			void *addr = reinterpret_cast<void *>(m.arg.pagefault.address & ~(page - 1));
			auto r = uffd.continueRange(addr, page);
			ASSERT_TRUE(r.ok()) << r.error().message();
			(*served)++;
		}
	}
}

} // namespace

TEST(Userfaultfd, ProbeReportsFeaturesThisKernelSupports)
{
	auto features = Userfaultfd::probeFeatures();
	if (!features.ok())
		GTEST_SKIP() << "userfaultfd unavailable: " << features.error().message();
	RecordProperty("features", Userfaultfd::featureNames(*features));
	// Anything that probes at all has had missing-mode faults since 4.3.
	EXPECT_NE(*features, 0u);
	std::cout << "userfaultfd features: " << Userfaultfd::featureNames(*features) << "\n";
}

TEST(Userfaultfd, CreateNamesFeaturesTheKernelLacks)
{
	REQUIRE_UFFD(0);
	const uint64_t bogus = uint64_t(1) << 62;
	auto uffd = Userfaultfd::create(bogus);
	ASSERT_FALSE(uffd.ok());
	EXPECT_EQ(uffd.error().code(), ENOTSUP);
	EXPECT_NE(uffd.error().message().find("0x4000000000000000"), std::string::npos)
		<< uffd.error().message();
}

TEST(Userfaultfd, ServesMissingFaultsWithCopyByteForByte)
{
	REQUIRE_UFFD(0);
	const size_t page = pageSize();
	const size_t pages = 64;
	auto registered = test::registeredAnonymous(pages);
	ASSERT_TRUE(registered.ok()) << registered.error().message();
	auto &[uffd, area] = *registered;
	std::vector<uint8_t> source(pages * page);
	fillPattern(source.data(), source.size(), 1);

	std::atomic<bool> toucherDone{ false };
	std::vector<uint8_t> seen(pages * page);
	std::thread toucher([&] {
		// Reads fault on missing pages; the handler fills them.
		std::memcpy(seen.data(), area.data(), seen.size());
		toucherDone = true;
	});
	size_t served = serveMissing(uffd, area.data(), source.data(), pages);
	toucher.join();
	ASSERT_TRUE(toucherDone);
	EXPECT_EQ(served, pages);
	EXPECT_EQ(std::memcmp(seen.data(), source.data(), seen.size()), 0);
	EXPECT_EQ(std::memcmp(area.data(), source.data(), seen.size()), 0);
}

TEST(Userfaultfd, ServesMinorFaultsOnMemfdWithContinue)
{
	REQUIRE_UFFD(UFFD_FEATURE_MINOR_SHMEM);
	const size_t page = pageSize();
	const size_t pages = 32;
	auto uffd = Userfaultfd::create(UFFD_FEATURE_MINOR_SHMEM);
	ASSERT_TRUE(uffd.ok()) << uffd.error().message();
	auto memfd = createMemfd("minor", pages * page);
	ASSERT_TRUE(memfd.ok());
	auto guest = Mapping::map(memfd->get(), pages * page, PROT_READ | PROT_WRITE, MAP_SHARED);
	auto filler = Mapping::map(memfd->get(), pages * page, PROT_READ | PROT_WRITE, MAP_SHARED);
	ASSERT_TRUE(guest.ok() && filler.ok());
	ASSERT_TRUE(uffd->registerRange(guest->data(), guest->size(),
					static_cast<uint32_t>(UffdMode::Minor))
			    .ok());
	// The page cache is filled through the other mapping: the registered one has no PTEs,
	// so its accesses are minor faults.
	fillPattern(filler->data(), filler->size(), 2);

	std::vector<uint8_t> seen(pages * page);
	std::thread toucher([&] { std::memcpy(seen.data(), guest->data(), seen.size()); });
	size_t served = 0;
	ASSERT_NO_FATAL_FAILURE(serveMinor(*uffd, pages, &served));
	toucher.join();
	EXPECT_EQ(served, pages);
	EXPECT_EQ(std::memcmp(seen.data(), filler->data(), seen.size()), 0);
}

TEST(Userfaultfd, ZeroPageMapsZerosWithoutFault)
{
	REQUIRE_UFFD(0);
	auto registered = test::registeredAnonymous(8);
	ASSERT_TRUE(registered.ok()) << registered.error().message();
	auto &[uffd, area] = *registered;
	auto r = uffd.zeroPage(area.data(), area.size());
	ASSERT_TRUE(r.ok()) << r.error().message();
	EXPECT_EQ(*r, UffdOutcome::Done);
	// Mapped now: reading must not fault (a fault would block this thread forever, so the
	// check is that no message is pending afterwards and the bytes are zero).
	for (size_t i = 0; i < area.size(); i++)
		ASSERT_EQ(area.data()[i], 0) << "at " << i;
	std::vector<uffd_msg> msgs;
	auto n = uffd.readEvents(msgs);
	ASSERT_TRUE(n.ok());
	EXPECT_EQ(*n, 0u);
}

TEST(Userfaultfd, CopyOverMappedPageIsExistsAndFillsTheRest)
{
	REQUIRE_UFFD(0);
	const size_t page = pageSize();
	auto registered = test::registeredAnonymous(4);
	ASSERT_TRUE(registered.ok()) << registered.error().message();
	auto &[uffd, area] = *registered;
	std::vector<uint8_t> first(page, 0x11), all(4 * page, 0x22);
	auto r = uffd.copy(area.data() + page, first.data(), page);
	ASSERT_TRUE(r.ok());
	EXPECT_EQ(*r, UffdOutcome::Done);
	r = uffd.copy(area.data() + page, first.data(), page);
	ASSERT_TRUE(r.ok()) << r.error().message();
	EXPECT_EQ(*r, UffdOutcome::Exists);
	// A range with one page already mapped: that page is left alone, the others filled.
	r = uffd.copy(area.data(), all.data(), all.size());
	ASSERT_TRUE(r.ok()) << r.error().message();
	EXPECT_EQ(*r, UffdOutcome::Exists);
	for (size_t p = 0; p < 4; p++)
		EXPECT_EQ(area.data()[p * page + 5], p == 1 ? 0x11 : 0x22) << "page " << p;
}

TEST(Userfaultfd, CopyIntoUnregisteredRangeIsAnError)
{
	REQUIRE_UFFD(0);
	auto uffd = Userfaultfd::create(0);
	ASSERT_TRUE(uffd.ok());
	auto area = Mapping::anonymous(pageSize());
	ASSERT_TRUE(area.ok());
	std::vector<uint8_t> src(pageSize(), 1);
	auto r = uffd->copy(area->data(), src.data(), src.size());
	ASSERT_FALSE(r.ok());
	EXPECT_NE(r.error().message().find("UFFDIO_COPY"), std::string::npos);
}

// The fd crosses a process boundary: the child creates it (UFFDIO_API done there), the
// parent registers the child's range, serves the child's faults with copy(), and the child
// checks every byte.
TEST(Userfaultfd, ParentRegistersAndServesFaultsOfChildThatCreatedIt)
{
	REQUIRE_UFFD(0);
	const size_t page = pageSize();
	const size_t pages = 32;
	std::vector<uint8_t> source(pages * page);
	fillPattern(source.data(), source.size(), 3);

	auto child =
		test::forkChildHandingUnregisteredUffd(test::Memory::Anonymous, pages, 0, [&](int sock, Mapping &area) {
			// Wait until the parent registered the range, then fault on every page.
			if (!test::recvValue<uint8_t>(sock).ok())
				return 12;
			if (std::memcmp(area.data(), source.data(), source.size()) != 0)
				return 13;
			return 0;
		});
	ASSERT_TRUE(child.ok()) << child.error().message();

	auto got = test::recvUffd(child->sock.get(), 0);
	ASSERT_TRUE(got.ok()) << got.error().message();
	const uintptr_t addr = got->addr;
	Userfaultfd &uffd = got->uffd;
	uint8_t *base = reinterpret_cast<uint8_t *>(addr);
	Status reg = uffd.registerRange(base, pages * page, static_cast<uint32_t>(UffdMode::Missing));
	ASSERT_TRUE(reg.ok()) << reg.error().message();
	ASSERT_TRUE(test::sendValue<uint8_t>(child->sock.get(), 1).ok());

	EXPECT_EQ(serveMissing(uffd, base, source.data(), pages), pages);
	auto code = test::waitChild(*child);
	ASSERT_TRUE(code.ok()) << code.error().message();
	EXPECT_EQ(*code, 0) << "child saw wrong bytes or failed (code " << *code << ")";
}

// Minor faults across processes: the child maps a memfd and creates the uffd; the parent
// fills the page cache through its own mapping of the same memfd and resolves the child's
// minor faults with continueRange() on the child's addresses.
TEST(Userfaultfd, ParentServesMinorFaultsOfChildWithContinue)
{
	REQUIRE_UFFD(UFFD_FEATURE_MINOR_SHMEM);
	const size_t page = pageSize();
	const size_t pages = 16;
	std::vector<uint8_t> expect(pages * page);
	fillPattern(expect.data(), expect.size(), 4);

	auto child = test::forkChild([&](int sock) -> int {
		auto memfd = createMemfd("child-minor", pages * page);
		if (!memfd.ok())
			return 10;
		auto area = Mapping::map(memfd->get(), pages * page, PROT_READ | PROT_WRITE,
					 MAP_SHARED);
		auto uffd = Userfaultfd::create(UFFD_FEATURE_MINOR_SHMEM);
		if (!area.ok() || !uffd.ok())
			return 11;
		uintptr_t addr = reinterpret_cast<uintptr_t>(area->data());
		int fds[2] = { uffd->fd(), memfd->get() };
		if (!sendFds(sock, fds, std::span(reinterpret_cast<const uint8_t *>(&addr), sizeof(addr)))
			     .ok())
			return 12;
		if (!test::recvValue<uint8_t>(sock).ok())
			return 13;
		return std::memcmp(area->data(), expect.data(), expect.size()) == 0 ? 0 : 14;
	});
	ASSERT_TRUE(child.ok());

	auto got = test::recvUffd(child->sock.get(), UFFD_FEATURE_MINOR_SHMEM, 2);
	ASSERT_TRUE(got.ok()) << got.error().message();
	const uintptr_t addr = got->addr;
	Userfaultfd &uffd = got->uffd;
	auto mine = Mapping::map(got->fds[1].get(), pages * page, PROT_READ | PROT_WRITE, MAP_SHARED);
	ASSERT_TRUE(mine.ok());
	std::memcpy(mine->data(), expect.data(), expect.size());
	uint8_t *base = reinterpret_cast<uint8_t *>(addr);
	ASSERT_TRUE(uffd.registerRange(base, pages * page, static_cast<uint32_t>(UffdMode::Minor)).ok());
	ASSERT_TRUE(test::sendValue<uint8_t>(child->sock.get(), 1).ok());

	size_t served = 0;
	ASSERT_NO_FATAL_FAILURE(serveMinor(uffd, pages, &served));
	EXPECT_EQ(served, pages);
	auto code = test::waitChild(*child);
	ASSERT_TRUE(code.ok());
	EXPECT_EQ(*code, 0);
}

TEST(Userfaultfd, OperationsOnExitedProcessAreGone)
{
	REQUIRE_UFFD(0);
	const size_t page = pageSize();
	auto child = test::forkChildHandingUffd(1, [](int, test::MissingArea &) { return 0; });
	ASSERT_TRUE(child.ok());
	auto got = test::recvUffd(child->sock.get(), 0);
	ASSERT_TRUE(got.ok()) << got.error().message();
	const uintptr_t addr = got->addr;
	Userfaultfd &uffd = got->uffd;
	auto code = test::waitChild(*child);
	ASSERT_TRUE(code.ok());
	ASSERT_EQ(*code, 0);
	std::vector<uint8_t> src(page, 7);
	auto r = uffd.copy(reinterpret_cast<void *>(addr), src.data(), page);
	ASSERT_TRUE(r.ok()) << r.error().message();
	EXPECT_EQ(*r, UffdOutcome::Gone);
}

namespace {

// A raw userfaultfd with UFFD_USER_MODE_ONLY (what an unprivileged user may always have).
Result<Userfaultfd> userModeOnly(uint64_t features)
{
	int fd = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY));
	if (fd < 0)
		return Error::fromErrno("userfaultfd(UFFD_USER_MODE_ONLY)");
	return Userfaultfd::adopt(UniqueFd(fd), features, true);
}

// A pipe holding one page of `seed`'s pattern, for a read() that lands in registered memory:
// the kernel's own access (copy_to_user), not the process's.
struct PagePipe {
	UniqueFd r, w;
	std::vector<uint8_t> bytes;
};
PagePipe pagePipe(uint32_t seed)
{
	int p[2];
	EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
	PagePipe pp{UniqueFd(p[0]), UniqueFd(p[1]), std::vector<uint8_t>(pageSize())};
	fillPattern(pp.bytes.data(), pp.bytes.size(), seed);
	EXPECT_EQ(::write(pp.w.get(), pp.bytes.data(), pp.bytes.size()), ssize_t(pp.bytes.size()));
	return pp;
}

} // namespace

// The fact UffdScope rests on: a read() into a page that is not there yet is reported to an
// ordinary userfaultfd (and lands once served), but a user-mode-only one fails it with EFAULT
// and reports nothing, so post-copy with one would hand the guest I/O errors.
TEST(Userfaultfd, UserModeOnlyFailsAKernelAccessInsteadOfReportingIt)
{
	REQUIRE_UFFD(0);
	const size_t page = pageSize();
	{
		auto registered = test::registeredAnonymous(4);
		ASSERT_TRUE(registered.ok()) << registered.error().message();
		auto &[uffd, area] = *registered;
		PagePipe pp = pagePipe(3);
		std::vector<uint8_t> source(4 * page);
		fillPattern(source.data(), source.size(), 9);
		ssize_t got = -1;
		std::thread reader([&] { got = ::read(pp.r.get(), area.data() + page, page); });
		size_t served = serveMissing(uffd, area.data(), source.data(), 1);
		reader.join();
		EXPECT_EQ(served, 1u);
		ASSERT_EQ(got, ssize_t(page)) << std::strerror(errno);
		EXPECT_EQ(std::memcmp(area.data() + page, pp.bytes.data(), page), 0);
	}
	auto uffd = userModeOnly(0);
	if (!uffd.ok())
		GTEST_SKIP() << uffd.error().message();
	auto area = Mapping::anonymous(4 * page);
	ASSERT_TRUE(area.ok());
	ASSERT_TRUE(uffd->registerRange(area->data(), area->size(), static_cast<uint32_t>(UffdMode::Missing)).ok());
	PagePipe pp = pagePipe(4);
	errno = 0;
	EXPECT_EQ(::read(pp.r.get(), area->data() + page, page), -1);
	EXPECT_EQ(errno, EFAULT);
	pollfd p{uffd->fd(), POLLIN, 0};
	EXPECT_EQ(::poll(&p, 1, 100), 0) << "the kernel's access was reported after all";
}

// ...while write-protect tracking with WP_ASYNC sees the kernel's writes through a
// user-mode-only userfaultfd too: the kernel resolves them itself and PAGEMAP_SCAN reports
// the page written.
TEST(Userfaultfd, UserModeOnlyWpAsyncTracksTheKernelsWrites)
{
	REQUIRE_WP_ASYNC();
	const size_t page = pageSize();
	auto area = Mapping::anonymous(8 * page);
	ASSERT_TRUE(area.ok());
	std::memset(area->data(), 1, area->size());
	auto uffd = userModeOnly(kWpAsyncFeatures);
	if (!uffd.ok())
		GTEST_SKIP() << uffd.error().message();
	ASSERT_TRUE(uffd->registerRange(area->data(), area->size(), static_cast<uint32_t>(UffdMode::WriteProtect)).ok());
	auto wp = uffd->writeProtect(area->data(), area->size(), true);
	ASSERT_TRUE(wp.ok() && *wp == UffdOutcome::Done);
	PagePipe pp = pagePipe(5);
	ASSERT_EQ(::read(pp.r.get(), area->data() + 5 * page, page), ssize_t(page)) << std::strerror(errno);
	EXPECT_EQ(std::memcmp(area->data() + 5 * page, pp.bytes.data(), page), 0);
	auto scanner = PagemapScanner::open(0);
	ASSERT_TRUE(scanner.ok());
	std::vector<PageRange> ranges;
	const uintptr_t base = reinterpret_cast<uintptr_t>(area->data());
	ASSERT_TRUE(scanner->scanWritten(base, area->size(), true, ranges).ok());
	ASSERT_EQ(ranges.size(), 1u);
	EXPECT_EQ(ranges[0].start, base + 5 * page);
	EXPECT_EQ(ranges[0].end, base + 6 * page);
}

// An unprivileged user (here `nobody`, with vm.unprivileged_userfaultfd=0 and /dev/userfaultfd
// closed to it) gets a user-mode-only userfaultfd for tracking, and for post-copy an EPERM that
// names the fixes instead of one that would fail the kernel's accesses.
TEST(Userfaultfd, AnUnprivilegedUserIsRefusedPostCopyWithTheFixesNamed)
{
	REQUIRE_WP_ASYNC();
	REQUIRE_USERFAULTFD_PRIVILEGED();
	auto child = test::forkChild([](int sock) -> int {
		if (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
		    ::setresuid(65534, 65534, 65534) != 0)
			return 10;
		auto full = Userfaultfd::create(0);
		if (full.ok())
			return 20; // one that would fail the kernel's accesses
		std::string msg = full.error().message();
		(void)::write(sock, msg.data(), msg.size());
		if (full.error().code() != EPERM)
			return 11;
		auto tracking = Userfaultfd::create(kWpAsyncFeatures, UffdScope::UserModeOnlyAllowed);
		return tracking.ok() ? 0 : 12;
	});
	ASSERT_TRUE(child.ok()) << child.error().message();
	auto code = test::waitChild(*child);
	ASSERT_TRUE(code.ok());
	EXPECT_NE(*code, 20) << "nobody was given a userfaultfd for post-copy (user-mode-only)";
	char buf[1024] = {};
	(void)::read(child->sock.get(), buf, sizeof(buf) - 1);
	ASSERT_EQ(*code, 0) << "child exit " << *code << ": " << buf;
	std::string msg = buf;
	EXPECT_NE(msg.find("/dev/userfaultfd"), std::string::npos) << msg;
	EXPECT_NE(msg.find("vm.unprivileged_userfaultfd=1"), std::string::npos) << msg;
}
