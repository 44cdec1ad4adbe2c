// SPDX-License-Identifier: GPL-2.0-or-later
#include <gtest/gtest.h>

#include "ferry/base/result.h"
#include "ferry/sys/fd.h"

#include <fcntl.h>

using namespace ferry;

namespace {
Result<int> parsePositive(int v)
{
	if (v <= 0)
		return Error(EINVAL, fmt::format("{} is not positive", v));
	return v;
}

Result<int> doubled(int v)
{
	FERRY_ASSIGN(int x, parsePositive(v));
	return 2 * x;
}

Status checked(int v)
{
	FERRY_TRY_CTX(parsePositive(v), "value {}", v);
	return {};
}
} // namespace

TEST(Result, PropagatesValueAndErrorWithContext)
{
	auto ok = doubled(21);
	ASSERT_TRUE(ok.ok());
	EXPECT_EQ(*ok, 42);

	auto bad = doubled(-1);
	ASSERT_FALSE(bad.ok());
	EXPECT_EQ(bad.error().code(), EINVAL);

	auto st = checked(0);
	ASSERT_FALSE(st.ok());
	EXPECT_EQ(st.error().message(), "value 0: 0 is not positive");
	EXPECT_EQ(st.error().code(), EINVAL);
}

TEST(Error, FromErrnoKeepsCodeAndDescribesIt)
{
	Error e = Error::fromErrno("open /nonexistent", ENOENT);
	EXPECT_EQ(e.code(), ENOENT);
	EXPECT_EQ(e.message(), "open /nonexistent: No such file or directory");
}

TEST(UniqueFd, ClosesOnDestructionAndMoves)
{
	int raw;
	{
		UniqueFd a(::open("/dev/null", O_RDONLY));
		ASSERT_TRUE(a.valid());
		raw = a.get();
		UniqueFd b(std::move(a));
		EXPECT_FALSE(a.valid());
		EXPECT_EQ(b.get(), raw);
	}
	EXPECT_EQ(::fcntl(raw, F_GETFD), -1);
	EXPECT_EQ(errno, EBADF);
}
