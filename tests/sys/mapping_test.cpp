// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/sys/mapping.h"

#include <gtest/gtest.h>

#include <cstring>

using namespace ferry;

TEST(Mapping, AnonymousIsZeroedWritableAndMoveOnly)
{
	auto m = Mapping::anonymous(3 * pageSize());
	ASSERT_TRUE(m.ok()) << m.error().message();
	EXPECT_EQ(m->size(), 3 * pageSize());
	for (size_t i = 0; i < m->size(); i += 512)
		EXPECT_EQ(m->data()[i], 0);
	m->data()[5] = 42;
	Mapping moved = std::move(*m);
	EXPECT_FALSE(m->valid());
	ASSERT_TRUE(moved.valid());
	EXPECT_EQ(moved.data()[5], 42);
}

TEST(Mapping, TwoSharedMappingsOfAMemfdSeeTheSameBytes)
{
	auto a = MemfdMapping::create("mapping-test", 2 * pageSize());
	ASSERT_TRUE(a.ok()) << a.error().message();
	EXPECT_EQ(a->map.size(), 2 * pageSize());
	auto b = Mapping::map(a->fd.get(), 2 * pageSize(), PROT_READ, MAP_SHARED);
	ASSERT_TRUE(b.ok()) << b.error().message();
	std::memset(a->data() + pageSize(), 0xab, 100);
	EXPECT_EQ(b->data()[pageSize() + 99], 0xab);
}

TEST(Mapping, ZeroLengthIsAnError)
{
	auto m = Mapping::anonymous(0);
	ASSERT_FALSE(m.ok());
	EXPECT_EQ(m.error().code(), EINVAL);
}
