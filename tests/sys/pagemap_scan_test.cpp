// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/sys/pagemap_scan.h"

#include <gtest/gtest.h>

#include <random>
#include <set>

#include "ferry/dirty/tracker.h"
#include "ferry/sys/kernel_compat.h"
#include "ferry/sys/mapping.h"
#include "ferry/sys/userfaultfd.h"

#include "support/kernel_features.h"
#include "support/test_memory.h"

using namespace ferry;

namespace {

using test::makeMemory;
using test::Memory;

std::set<size_t> writtenPages(const std::vector<PageRange> &ranges, uintptr_t base)
{
	std::set<size_t> pages;
	for (const PageRange &r : ranges) {
		EXPECT_TRUE(r.categories & PAGE_IS_WRITTEN);
		for (uintptr_t a = r.start; a < r.end; a += pageSize())
			pages.insert((a - base) / pageSize());
	}
	return pages;
}

class PagemapScanTest : public ::testing::TestWithParam<Memory> {};

} // namespace

TEST(PagemapScan, SupportedOnThisKernel)
{
	if (!PagemapScanner::supported())
		GTEST_SKIP() << "PAGEMAP_SCAN not supported by this kernel";
	SUCCEED();
}

TEST_P(PagemapScanTest, ReportsExactlyPagesWrittenAfterClear)
{
	REQUIRE_WP_ASYNC();
	const size_t page = pageSize();
	const size_t pages = 1024;
	auto mem = makeMemory(GetParam(), pages * page, "pagemap-scan-test");
	ASSERT_TRUE(mem.ok()) << mem.error().message();
	uint8_t *base = mem->data();
	// Half the pages populated before tracking starts, half never touched.
	for (size_t p = 0; p < pages / 2; p++)
		base[p * page] = 1;
	auto uffd = createWpAsyncUffd(base, mem->size());
	ASSERT_TRUE(uffd.ok()) << uffd.error().message();
	auto scanner = PagemapScanner::open(0);
	ASSERT_TRUE(scanner.ok());
	const uintptr_t addr = reinterpret_cast<uintptr_t>(base);

	std::vector<PageRange> ranges;
	ASSERT_TRUE(scanner->scanWritten(addr, mem->size(), true, ranges).ok());
	EXPECT_TRUE(ranges.empty()) << "dirty right after write-protect";

	std::mt19937 rng(12345);
	for (int round = 0; round < 4; round++) {
		std::set<size_t> expect;
		for (int i = 0; i < 60; i++)
			expect.insert(rng() % pages);
		volatile uint8_t sink = 0;
		for (size_t p : expect)
			base[p * page + (rng() % page)] = static_cast<uint8_t>(round); // may be unchanged
		// Reads of other pages (populated or not) must not count.
		for (int i = 0; i < 60; i++) {
			size_t p = rng() % pages;
			if (!expect.count(p))
				sink = sink + base[p * page + 7];
		}
		ranges.clear();
		Status s = scanner->scanWritten(addr, mem->size(), true, ranges);
		ASSERT_TRUE(s.ok()) << s.error().message();
		EXPECT_EQ(writtenPages(ranges, addr), expect) << "round " << round;
		ranges.clear();
		ASSERT_TRUE(scanner->scanWritten(addr, mem->size(), true, ranges).ok());
		EXPECT_TRUE(ranges.empty()) << "clear did not re-protect, round " << round;
	}
}

TEST_P(PagemapScanTest, ScanWithoutClearKeepsPagesWritten)
{
	REQUIRE_WP_ASYNC();
	const size_t page = pageSize();
	auto mem = makeMemory(GetParam(), 16 * page, "pagemap-scan-test");
	ASSERT_TRUE(mem.ok());
	auto uffd = createWpAsyncUffd(mem->data(), mem->size());
	ASSERT_TRUE(uffd.ok()) << uffd.error().message();
	auto scanner = PagemapScanner::open(0);
	ASSERT_TRUE(scanner.ok());
	const uintptr_t addr = reinterpret_cast<uintptr_t>(mem->data());
	mem->data()[3 * page] = 9;
	for (int i = 0; i < 2; i++) {
		std::vector<PageRange> ranges;
		ASSERT_TRUE(scanner->scanWritten(addr, mem->size(), false, ranges).ok());
		EXPECT_EQ(writtenPages(ranges, addr), std::set<size_t>{ 3 });
	}
}

// 2048 separate written pages need four full output vectors: the scanner must go on from
// walk_end until the whole range is walked.
TEST_P(PagemapScanTest, LoopsUntilTheWholeRangeIsWalked)
{
	REQUIRE_WP_ASYNC();
	const size_t page = pageSize();
	const size_t pages = 4096;
	auto mem = makeMemory(GetParam(), pages * page, "pagemap-scan-test");
	ASSERT_TRUE(mem.ok());
	auto uffd = createWpAsyncUffd(mem->data(), mem->size());
	ASSERT_TRUE(uffd.ok()) << uffd.error().message();
	auto scanner = PagemapScanner::open(0);
	ASSERT_TRUE(scanner.ok());
	std::set<size_t> expect;
	for (size_t p = 0; p < pages; p += 2) {
		mem->data()[p * page] = 1;
		expect.insert(p);
	}
	std::vector<PageRange> ranges;
	const uintptr_t addr = reinterpret_cast<uintptr_t>(mem->data());
	ASSERT_TRUE(scanner->scanWritten(addr, mem->size(), true, ranges).ok());
	EXPECT_EQ(ranges.size(), pages / 2);
	EXPECT_EQ(writtenPages(ranges, addr), expect);
}

INSTANTIATE_TEST_SUITE_P(Memory, PagemapScanTest,
			 ::testing::Values(Memory::Anonymous, Memory::Memfd),
			 [](const auto &info) {
				 return info.param == Memory::Anonymous ? "Anonymous" : "Memfd";
			 });

TEST(PagemapScan, RefusesRangeWithoutAsyncWriteProtect)
{
	if (!PagemapScanner::supported())
		GTEST_SKIP() << "PAGEMAP_SCAN not supported by this kernel";
	auto mem = Mapping::anonymous(4 * pageSize());
	ASSERT_TRUE(mem.ok());
	mem->data()[0] = 1;
	auto scanner = PagemapScanner::open(0);
	ASSERT_TRUE(scanner.ok());
	std::vector<PageRange> ranges;
	Status s = scanner->scanWritten(reinterpret_cast<uintptr_t>(mem->data()), mem->size(), true,
					ranges);
	ASSERT_FALSE(s.ok());
	EXPECT_EQ(s.error().code(), EPERM);
	EXPECT_TRUE(ranges.empty());
}
