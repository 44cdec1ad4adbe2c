// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/sys/scm.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>

#include <cstring>

#include "ferry/sys/mapping.h"
#include "ferry/sys/userfaultfd.h"

#include "support/child_process.h"
#include "support/kernel_features.h"
#include "support/test_memory.h"

using namespace ferry;

namespace {

struct SocketPair {
	UniqueFd a, b;
};

SocketPair socketPair(int type = SOCK_STREAM)
{
	int sv[2];
	if (::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) < 0)
		return {};
	return { UniqueFd(sv[0]), UniqueFd(sv[1]) };
}

ino_t inodeOf(int fd)
{
	struct stat st{};
	::fstat(fd, &st);
	return st.st_ino;
}

} // namespace

TEST(Scm, PassesFdsAndPayloadWithinProcess)
{
	auto sp = socketPair();
	ASSERT_TRUE(sp.a && sp.b);
	auto m1 = createMemfd("scm1", 4096);
	auto m2 = createMemfd("scm2", 8192);
	ASSERT_TRUE(m1.ok() && m2.ok());
	int fds[2] = { m1->get(), m2->get() };
	const uint8_t payload[] = { 1, 2, 3, 4, 5 };
	ASSERT_TRUE(sendFds(sp.a.get(), fds, payload).ok());

	std::vector<uint8_t> got;
	auto r = recvFds(sp.b.get(), &got, 4, sizeof(payload));
	ASSERT_TRUE(r.ok()) << r.error().message();
	ASSERT_EQ(r->size(), 2u);
	EXPECT_EQ(inodeOf((*r)[0].get()), inodeOf(m1->get()));
	EXPECT_EQ(inodeOf((*r)[1].get()), inodeOf(m2->get()));
	EXPECT_TRUE(::fcntl((*r)[0].get(), F_GETFD) & FD_CLOEXEC);
	ASSERT_EQ(got.size(), sizeof(payload));
	EXPECT_EQ(std::memcmp(got.data(), payload, sizeof(payload)), 0);
}

TEST(Scm, RejectsMoreFdsThanAllowedWithoutLeaking)
{
	auto sp = socketPair(SOCK_SEQPACKET);
	ASSERT_TRUE(sp.a && sp.b);
	std::vector<UniqueFd> owned;
	std::vector<int> fds;
	for (int i = 0; i < 4; i++) {
		auto m = createMemfd("many", 0);
		ASSERT_TRUE(m.ok());
		fds.push_back(m->get());
		owned.push_back(std::move(*m));
	}
	ASSERT_TRUE(sendFds(sp.a.get(), fds, {}).ok());
	auto r = recvFds(sp.b.get(), nullptr, 2);
	ASSERT_FALSE(r.ok());
	EXPECT_EQ(r.error().code(), EMSGSIZE);
}

TEST(Scm, RejectsPayloadLargerThanAllowed)
{
	auto sp = socketPair(SOCK_SEQPACKET);
	ASSERT_TRUE(sp.a && sp.b);
	std::vector<uint8_t> big(100, 9);
	ASSERT_TRUE(sendFds(sp.a.get(), {}, big).ok());
	std::vector<uint8_t> got;
	auto r = recvFds(sp.b.get(), &got, 1, 10);
	ASSERT_FALSE(r.ok());
	EXPECT_EQ(r.error().code(), EMSGSIZE);
}

TEST(Scm, PeerCloseIsConnectionReset)
{
	auto sp = socketPair();
	sp.a.reset();
	auto r = recvFds(sp.b.get(), nullptr);
	ASSERT_FALSE(r.ok());
	EXPECT_EQ(r.error().code(), ECONNRESET);
}

// A userfaultfd created in a child arrives in the parent as the same uffd: the parent's
// copy() fills the child's page (child's address space), which the child then reads.
TEST(Scm, UserfaultfdRoundTripBetweenProcesses)
{
	REQUIRE_UFFD(0);
	const size_t page = pageSize();

	auto child = test::forkChildHandingUffd(1, [&](int sock, test::MissingArea &registered) -> int {
		// Filled by the parent before this message: the read does not fault.
		if (!test::recvValue<uint8_t>(sock).ok())
			return 13;
		for (size_t i = 0; i < page; i++)
			if (registered.area.data()[i] != static_cast<uint8_t>(i ^ 0x5a))
				return 14;
		return 0;
	});
	ASSERT_TRUE(child.ok());

	auto got = test::recvUffd(child->sock.get(), 0);
	ASSERT_TRUE(got.ok()) << got.error().message();
	const uintptr_t addr = got->addr;
	Userfaultfd &uffd = got->uffd;
	std::vector<uint8_t> src(page);
	for (size_t i = 0; i < page; i++)
		src[i] = static_cast<uint8_t>(i ^ 0x5a);
	auto r = uffd.copy(reinterpret_cast<void *>(addr), src.data(), page);
	ASSERT_TRUE(r.ok()) << r.error().message();
	EXPECT_EQ(*r, UffdOutcome::Done);
	ASSERT_TRUE(test::sendValue<uint8_t>(child->sock.get(), 1).ok());
	auto code = test::waitChild(*child);
	ASSERT_TRUE(code.ok());
	EXPECT_EQ(*code, 0);
}
