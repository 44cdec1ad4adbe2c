// SPDX-License-Identifier: GPL-2.0-or-later
#include <algorithm>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "ferry/roles/chunk_map.h"

using namespace ferry;

namespace {

// Every chunk index next() hands out now, in the order it hands them out.
std::vector<uint32_t> drain(ChunkMap &m)
{
	std::vector<uint32_t> got;
	while (auto r = m.next(false))
		got.push_back(r->index);
	return got;
}

// The same, sorted: where the order among them is not the property tested.
std::vector<uint32_t> drainSorted(ChunkMap &m)
{
	std::vector<uint32_t> got = drain(m);
	std::sort(got.begin(), got.end());
	return got;
}

} // namespace

TEST(ChunkMap, PreCopyHandsOutEveryChunkOnceInIndexOrder)
{
	ChunkMap m(5);
	for (uint32_t i = 0; i < 5; i++) {
		auto n = m.next(false);
		ASSERT_TRUE(n.has_value());
		EXPECT_EQ(n->index, i);
		EXPECT_EQ(m.state(i), ChunkState::InFlight);
	}
	EXPECT_FALSE(m.next(false).has_value());
	for (uint32_t i = 0; i < 5; i++)
		EXPECT_TRUE(m.completed(i));
	EXPECT_TRUE(m.allLocal());
}

TEST(ChunkMap, DirtyLocalChunkBecomesStaleAndIsRequestedAgain)
{
	ChunkMap m(3);
	for (int i = 0; i < 3; i++)
		m.completed(m.next(false)->index);
	uint32_t dirty[] = {1};
	m.markDirty(dirty);
	EXPECT_EQ(m.state(1), ChunkState::Stale);
	EXPECT_EQ(m.counts().stale, 1u);
	auto n = m.next(false);
	ASSERT_TRUE(n.has_value());
	EXPECT_EQ(n->index, 1u);
	EXPECT_TRUE(m.completed(1));
	EXPECT_TRUE(m.allLocal());
}

TEST(ChunkMap, ChunkDirtiedWhileInFlightIsNotTrustedWhenItsReplyLands)
{
	ChunkMap m(2);
	uint32_t first = m.next(false)->index;
	uint32_t dirty[] = {first};
	m.markDirty(dirty);
	EXPECT_FALSE(m.completed(first)); // the reply may hold data read before the write
	EXPECT_EQ(m.state(first), ChunkState::Stale);
	EXPECT_FALSE(m.allLocal());
}

TEST(ChunkMap, StaleFirstOrderServesStaleChunksBeforeNeverPulledOnes)
{
	ChunkMap m(10);
	for (int i = 0; i < 4; i++)
		m.completed(m.next(false)->index);
	uint32_t dirty[] = {3, 1};
	m.markDirty(dirty);
	m.setOrder(ChunkMap::Order::StaleFirst);
	EXPECT_EQ(m.next(false)->index, 3u);
	EXPECT_EQ(m.next(false)->index, 1u);
	EXPECT_EQ(m.next(false)->index, 4u);
}

TEST(ChunkMap, PrioritizedChunkJumpsTheQueue)
{
	ChunkMap m(100);
	EXPECT_EQ(m.prioritize(77), ChunkState::Missing);
	EXPECT_EQ(m.next(false)->index, 77u);
	EXPECT_EQ(m.next(false)->index, 0u);
}

TEST(ChunkMap, LostRequestIsRequestedAgain)
{
	ChunkMap m(2);
	uint32_t a = m.next(false)->index;
	m.requestFailed(a);
	EXPECT_NE(m.state(a), ChunkState::InFlight);
	EXPECT_EQ(m.next(false)->index, a);
}

TEST(ChunkMap, LocalRunsGroupConsecutiveLocalChunks)
{
	ChunkMap m(8);
	for (int i = 0; i < 8; i++)
		m.next(false);
	for (uint32_t i : {0u, 1u, 2u, 5u, 6u})
		m.completed(i);
	auto runs = m.localRuns(0, 8);
	ASSERT_EQ(runs.size(), 2u);
	EXPECT_EQ(runs[0], std::make_pair(0u, 3u));
	EXPECT_EQ(runs[1], std::make_pair(5u, 7u));
}

TEST(ChunkMap, StaleChunkHeldWholeIsRequestedAsItsWrittenPagesOnly)
{
	ChunkMap m(1);
	m.completed(m.next(false)->index); // chunk 0, whole
	uint32_t dirty[] = {0};
	uint64_t pages[] = {0b101};
	m.markDirty(dirty, pages);
	auto r = m.next(false);
	ASSERT_TRUE(r.has_value());
	EXPECT_EQ(r->index, 0u);
	EXPECT_EQ(r->pageMask, 0b101u);
	// Pages written while that request is in flight are asked for next time.
	uint64_t more[] = {0b10};
	m.markDirty(dirty, more);
	EXPECT_FALSE(m.completed(0, false));
	auto again = m.next(false);
	ASSERT_TRUE(again.has_value());
	EXPECT_EQ(again->index, 0u);
	EXPECT_EQ(again->pageMask, 0b10u);
}

TEST(ChunkMap, ChunkWhoseRequestFailedIsRequestedWhole)
{
	ChunkMap m(1);
	m.completed(m.next(false)->index);
	uint32_t dirty[] = {0};
	uint64_t pages[] = {0b1};
	m.markDirty(dirty, pages);
	auto r = m.next(false);
	ASSERT_EQ(r->pageMask, 0b1u);
	m.requestFailed(0); // local bytes may be half-written now
	auto whole = m.next(false);
	ASSERT_TRUE(whole.has_value());
	EXPECT_EQ(whole->pageMask, 0u);
}

// The hot-chunk hold: the never-pulled chunks the source keeps writing wait, the rest flow.
TEST(ChunkMap, HotHoldPassesOverRecentlyWrittenChunksAndHandsThemOutOnceCool)
{
	ChunkMap m(6);
	m.setClock(1.0);
	uint32_t hot[] = {1, 4};
	m.markDirty(hot); // never pulled, but written: remembered all the same
	m.setHotHold(0.5);
	EXPECT_EQ(drain(m), (std::vector<uint32_t>{0, 2, 3, 5}));
	EXPECT_EQ(m.state(1), ChunkState::Missing);
	EXPECT_EQ(m.state(4), ChunkState::Missing);

	m.setClock(1.4); // still within the window
	EXPECT_FALSE(m.next(false).has_value());
	m.setClock(1.6); // cooled down
	EXPECT_EQ(drainSorted(m), (std::vector<uint32_t>{1, 4}));
}

TEST(ChunkMap, HotHoldDefersStaleChunksUntilLiftedButNeverUrgentOnes)
{
	ChunkMap m(4);
	for (int i = 0; i < 4; i++)
		m.completed(m.next(false)->index);
	m.setClock(2.0);
	uint32_t dirty[] = {0, 2, 3};
	m.markDirty(dirty);
	m.setHotHold(std::numeric_limits<double>::infinity());
	EXPECT_FALSE(m.next(false).has_value());
	m.setClock(100.0); // infinity: written at all is hot
	EXPECT_FALSE(m.next(false).has_value());

	EXPECT_EQ(m.prioritize(2), ChunkState::Stale); // a fault waits on it
	auto urgent = m.next(false);
	ASSERT_TRUE(urgent.has_value());
	EXPECT_EQ(urgent->index, 2u);
	EXPECT_FALSE(m.next(false).has_value());

	m.setHotHold(0);
	EXPECT_EQ(drainSorted(m), (std::vector<uint32_t>{0, 3}));
}

TEST(ChunkMap, FirstPassRunStopsAtAHeldChunk)
{
	ChunkMap m(8);
	m.setMaxRun(8);
	uint32_t hot[] = {3};
	m.markDirty(hot);
	m.setHotHold(std::numeric_limits<double>::infinity());
	auto a = m.next(false);
	ASSERT_TRUE(a.has_value());
	EXPECT_EQ(a->index, 0u);
	EXPECT_EQ(a->count, 3u);
	auto b = m.next(false);
	ASSERT_TRUE(b.has_value());
	EXPECT_EQ(b->index, 4u);
	EXPECT_EQ(b->count, 4u);
	EXPECT_FALSE(m.next(false).has_value());
	EXPECT_FALSE(m.firstPassDone());
}

TEST(ChunkMap, LenientHotHoldServesHotChunksLastNeverPulledOnesFirst)
{
	ChunkMap m(8);
	m.completed(m.next(false)->index); // chunk 0 local
	m.setClock(5.0);
	uint32_t old[] = {6};
	m.markDirty(old);
	m.setClock(9.0);
	uint32_t recent[] = {0, 5};
	m.markDirty(recent); // 0 goes stale, 5 is still missing
	m.setHotHold(2.0, false);
	// The cold rest in index order (6 was written at 5.0: cold by now), then the hot ones:
	// the never-pulled 5 before the stale 0.
	EXPECT_EQ(drain(m), (std::vector<uint32_t>{1, 2, 3, 4, 6, 7, 5, 0}));
	EXPECT_EQ(m.counts().inFlight, 8u);
}

TEST(ChunkMap, ChunksReportedZeroAreLocalUnrequestedAndCanGoStale)
{
	ChunkMap m(8);
	auto first = m.next(false);
	ASSERT_TRUE(first.has_value());
	EXPECT_EQ(first->index, 0u);
	m.markZero(0, 6); // chunk 0 is in flight: left alone
	EXPECT_EQ(m.state(0), ChunkState::InFlight);
	for (uint32_t i = 1; i < 6; i++)
		EXPECT_EQ(m.state(i), ChunkState::Local) << i;
	EXPECT_EQ(m.counts().local, 5u);
	EXPECT_FALSE(m.firstPassDone());
	EXPECT_TRUE(m.completed(0));
	// Only the chunks not reported zero are requested.
	std::vector<uint32_t> asked;
	while (auto r = m.next(false))
		for (uint32_t i = 0; i < r->count; i++)
			asked.push_back(r->index + i);
	EXPECT_EQ(asked, (std::vector<uint32_t>{6, 7}));
	m.completed(6);
	m.completed(7);
	EXPECT_TRUE(m.firstPassDone());
	// Written at the source after the report: requested again like any local chunk.
	const uint32_t dirty[] = {3};
	m.markDirty(dirty);
	EXPECT_EQ(m.state(3), ChunkState::Stale);
	auto again = m.next(false);
	ASSERT_TRUE(again.has_value());
	EXPECT_EQ(again->index, 3u);
}
