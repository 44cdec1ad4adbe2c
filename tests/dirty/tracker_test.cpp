// SPDX-License-Identifier: GPL-2.0-or-later
// DirtyTracker acceptance: both trackers, over anonymous and memfd memory, owned by this
// process or by a forked child that writes a known random set of pages on command. The
// tracker must report exactly the chunks written: none missing, none extra, including
// never-touched pages, pages only read, and over repeated rounds.
#include "ferry/dirty/tracker.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <set>

#include "ferry/sys/mapping.h"
#include "ferry/sys/pagemap_scan.h"
#include "ferry/sys/scm.h"

#include "support/child_process.h"
#include "support/kernel_features.h"
#include "support/test_memory.h"

using namespace ferry;

namespace {

enum class Kind { UffdWp, Xxh3 };
using test::makeMemory;
using test::Memory;

struct Param {
	Kind kind;
	Memory memory;
	bool crossProcess;
	size_t chunkSize;
};

std::string paramName(const ::testing::TestParamInfo<Param> &info)
{
	const Param &p = info.param;
	return fmt::format("{}_{}_{}_{}K", p.kind == Kind::UffdWp ? "UffdWp" : "Xxh3",
			   p.memory == Memory::Anonymous ? "Anon" : "Memfd",
			   p.crossProcess ? "CrossProcess" : "InProcess", p.chunkSize / 1024);
}

void PrintTo(const Param &p, std::ostream *os)
{
	*os << paramName(::testing::TestParamInfo<Param>(p, 0));
}

constexpr size_t kPages = 2048; // 8 MiB with 4 KiB pages

// All of `m`, in this process, in page-sized chunks.
TrackedRegion wholeMapping(const Mapping &m)
{
	return { 0, reinterpret_cast<uintptr_t>(m.data()), m.size(), pageSize() };
}

// Where in page p a round writes: fixed per page, never offset 0 (prepopulation writes
// there), so every round's value differs from what the byte held before.
size_t writeOffset(size_t p)
{
	return 1 + (p * 67) % (pageSize() - 1);
}

// Pre-populates the first half of the pages (the rest stays never-touched).
void prepopulate(uint8_t *base)
{
	for (size_t p = 0; p < kPages / 2; p++)
		base[p * pageSize()] = 0xee;
}

struct Command {
	uint32_t nWrites = 0; // 0 with value 0: exit
	uint32_t nReads = 0;
	uint32_t value = 0;
};

// Writes `value` into each write page and reads each read page: the same code runs in the
// child and in-process.
uint64_t apply(uint8_t *base, const std::vector<uint32_t> &writes,
	       const std::vector<uint32_t> &reads, uint8_t value)
{
	for (uint32_t p : writes)
		base[p * pageSize() + writeOffset(p)] = value;
	uint64_t sum = 0;
	for (uint32_t p : reads)
		sum += *reinterpret_cast<volatile uint8_t *>(base + p * pageSize() + 13);
	return sum;
}

// The child: owns the memory, creates the uffd inside itself for the uffd tracker, sends
// it with the address, then applies commands until told to exit.
int childMain(int sock, Param param)
{
	auto mem = makeMemory(param.memory, kPages * pageSize());
	if (!mem.ok())
		return 10;
	prepopulate(mem->data());
	Userfaultfd uffd;
	if (param.kind == Kind::UffdWp) {
		auto created = createWpAsyncUffd(mem->data(), mem->size());
		if (!created.ok())
			return 11;
		uffd = std::move(*created);
		if (!test::sendUffd(sock, uffd, mem->data()).ok())
			return 12;
	} else if (!test::sendFdsWithAddress(sock, {}, mem->data()).ok()) {
		return 12;
	}
	for (;;) {
		auto cmd = test::recvValue<Command>(sock);
		if (!cmd.ok())
			return 13;
		if (cmd->nWrites == 0 && cmd->nReads == 0 && cmd->value == 0)
			return 0;
		std::vector<uint32_t> writes(cmd->nWrites), reads(cmd->nReads);
		if (!test::recvAll(sock, writes.data(), writes.size() * 4).ok() ||
		    !test::recvAll(sock, reads.data(), reads.size() * 4).ok())
			return 14;
		uint64_t sum = apply(mem->data(), writes, reads, static_cast<uint8_t>(cmd->value));
		if (!test::sendValue(sock, sum).ok())
			return 15;
	}
}

class DirtyTracker : public ::testing::TestWithParam<Param> {
protected:
	void SetUp() override
	{
		const Param &p = GetParam();
		if (p.kind == Kind::UffdWp) {
			REQUIRE_WP_ASYNC();
		}
		if (p.crossProcess) {
			auto child = test::forkChild([p](int sock) { return childMain(sock, p); });
			ASSERT_TRUE(child.ok()) << child.error().message();
			child_ = std::move(*child);
			if (p.kind == Kind::UffdWp) {
				auto got = test::recvUffd(child_.sock.get(), kWpAsyncFeatures);
				ASSERT_TRUE(got.ok()) << got.error().message();
				addr_ = got->addr;
				uffd_ = std::move(got->uffd);
			} else {
				auto got = test::recvFdsWithAddress(child_.sock.get(), 0);
				ASSERT_TRUE(got.ok()) << got.error().message();
				addr_ = got->addr;
			}
		} else {
			auto mem = makeMemory(p.memory, kPages * pageSize());
			ASSERT_TRUE(mem.ok()) << mem.error().message();
			mem_ = std::move(*mem);
			prepopulate(mem_.data());
			addr_ = reinterpret_cast<uintptr_t>(mem_.data());
			// uffd_ stays invalid: the in-process tracker creates its own.
		}
	}

	void TearDown() override
	{
		if (child_.pid > 0) {
			Command exit{};
			(void)test::sendValue(child_.sock.get(), exit);
			auto code = test::waitChild(child_);
			ASSERT_TRUE(code.ok()) << code.error().message();
			EXPECT_EQ(*code, 0) << "child failed";
		}
	}

	Result<std::unique_ptr<ferry::DirtyTracker>> makeTracker()
	{
		const Param &p = GetParam();
		TrackedRegion region{ p.crossProcess ? child_.pid : 0, addr_, kPages * pageSize(),
				      p.chunkSize };
		if (p.kind == Kind::UffdWp)
			return makeUffdWpTracker(region, std::move(uffd_));
		return makeHashTracker(region);
	}

	// Runs one round of writes and reads in the memory's owner.
	void run(const std::vector<uint32_t> &writes, const std::vector<uint32_t> &reads,
		 uint8_t value)
	{
		if (!GetParam().crossProcess) {
			apply(mem_.data(), writes, reads, value);
			return;
		}
		Command cmd{ static_cast<uint32_t>(writes.size()), static_cast<uint32_t>(reads.size()),
			     value };
		ASSERT_TRUE(test::sendValue(child_.sock.get(), cmd).ok());
		ASSERT_TRUE(test::sendAll(child_.sock.get(), writes.data(), writes.size() * 4).ok());
		ASSERT_TRUE(test::sendAll(child_.sock.get(), reads.data(), reads.size() * 4).ok());
		auto ack = test::recvValue<uint64_t>(child_.sock.get());
		ASSERT_TRUE(ack.ok()) << "child did not acknowledge: " << ack.error().message();
	}

	test::Child child_;
	Mapping mem_;
	uintptr_t addr_ = 0;
	Userfaultfd uffd_;
};

TEST_P(DirtyTracker, ReportsExactlyChunksWrittenAfterClear)
{
	const Param &p = GetParam();
	const size_t pagesPerChunk = p.chunkSize / pageSize();
	auto tracker = makeTracker();
	ASSERT_TRUE(tracker.ok()) << tracker.error().message();
	EXPECT_EQ((*tracker)->chunkCount(), kPages / pagesPerChunk);
	EXPECT_STREQ((*tracker)->name(), p.kind == Kind::UffdWp ? "uffd-wp" : "xxh3");
	Status s = (*tracker)->start();
	ASSERT_TRUE(s.ok()) << s.error().message();

	std::mt19937 rng(static_cast<uint32_t>(p.chunkSize + p.crossProcess * 7 +
					       static_cast<int>(p.memory) * 13));
	std::vector<uint32_t> got;
	for (uint32_t round = 1; round <= 6; round++) {
		// Round 3 writes nothing: an idle interval must report nothing.
		const size_t nWrites = round == 3 ? 0 : 1 + rng() % 48;
		std::set<uint32_t> writeSet;
		while (writeSet.size() < nWrites)
			writeSet.insert(rng() % kPages); // both halves: populated and never-touched
		std::set<uint32_t> expect;
		for (uint32_t w : writeSet)
			expect.insert(static_cast<uint32_t>(w / pagesPerChunk));
		// Reads only of chunks not written this round (a read of a written chunk could
		// not be told apart).
		std::vector<uint32_t> reads;
		for (int i = 0; i < 64; i++) {
			uint32_t r = rng() % kPages;
			if (!expect.count(static_cast<uint32_t>(r / pagesPerChunk)))
				reads.push_back(r);
		}
		std::vector<uint32_t> writes(writeSet.begin(), writeSet.end());
		std::shuffle(writes.begin(), writes.end(), rng);
		run(writes, reads, static_cast<uint8_t>(round));
		if (HasFatalFailure())
			return;

		s = (*tracker)->collect(got);
		ASSERT_TRUE(s.ok()) << s.error().message();
		EXPECT_EQ(got, std::vector<uint32_t>(expect.begin(), expect.end()))
			<< "round " << round;
	}

	// start() again drops whatever was written since the last collect().
	run({ 1, 2, 1000 }, {}, 99);
	ASSERT_TRUE((*tracker)->start().ok());
	ASSERT_TRUE((*tracker)->collect(got).ok());
	EXPECT_TRUE(got.empty()) << got.size() << " chunks reported after re-start";
}

std::vector<Param> allParams()
{
	std::vector<Param> v;
	for (Kind k : { Kind::UffdWp, Kind::Xxh3 })
		for (Memory m : { Memory::Anonymous, Memory::Memfd })
			for (bool cross : { false, true })
				for (size_t chunk : { size_t(4096), size_t(65536) })
					v.push_back({ k, m, cross, chunk });
	return v;
}

INSTANTIATE_TEST_SUITE_P(, DirtyTracker, ::testing::ValuesIn(allParams()), paramName);

} // namespace

// The uffd tracker reports writes, not changes: a byte rewritten with its own value counts.
TEST(DirtyTrackerUffdWp, ReportsWriteOfUnchangedValue)
{
	REQUIRE_WP_ASYNC();
	const size_t page = pageSize();
	auto mem = makeMemory(Memory::Memfd, 16 * page);
	ASSERT_TRUE(mem.ok());
	std::memset(mem->data(), 0x5a, mem->size());
	auto tracker = makeUffdWpTracker(wholeMapping(*mem), Userfaultfd());
	ASSERT_TRUE(tracker.ok()) << tracker.error().message();
	ASSERT_TRUE((*tracker)->start().ok());
	mem->data()[5 * page + 100] = 0x5a;
	std::vector<uint32_t> got;
	ASSERT_TRUE((*tracker)->collect(got).ok());
	EXPECT_EQ(got, std::vector<uint32_t>{ 5 });

	// ...which the hash tracker, by contract, does not see.
	auto hash = makeHashTracker(wholeMapping(*mem));
	ASSERT_TRUE(hash.ok());
	ASSERT_TRUE((*hash)->start().ok());
	mem->data()[5 * page + 100] = 0x5a;
	mem->data()[9 * page + 1] = 0x11;
	ASSERT_TRUE((*hash)->collect(got).ok());
	EXPECT_EQ(got, std::vector<uint32_t>{ 9 });
}

// Guest RAM on a memfd is often filled through another mapping (a migration destination
// writing pages): those pages are in the page cache but not mapped in the tracked mapping.
// A write through the tracked mapping must still be reported, a read must not.
TEST(DirtyTrackerUffdWp, ReportsWritesToPagesPopulatedThroughAnotherMapping)
{
	REQUIRE_WP_ASYNC();
	const size_t page = pageSize();
	auto fd = createMemfd("other-mapping", 64 * page);
	ASSERT_TRUE(fd.ok());
	auto tracked = Mapping::map(fd->get(), 64 * page, PROT_READ | PROT_WRITE, MAP_SHARED);
	auto other = Mapping::map(fd->get(), 64 * page, PROT_READ | PROT_WRITE, MAP_SHARED);
	ASSERT_TRUE(tracked.ok() && other.ok());
	std::memset(other->data(), 0x33, other->size());
	auto tracker = makeUffdWpTracker(wholeMapping(*tracked), Userfaultfd());
	ASSERT_TRUE(tracker.ok()) << tracker.error().message();
	ASSERT_TRUE((*tracker)->start().ok());
	volatile uint8_t sink = tracked->data()[3 * page];
	(void)sink;
	tracked->data()[7 * page] = 0x44;
	std::vector<uint32_t> got;
	ASSERT_TRUE((*tracker)->collect(got).ok());
	EXPECT_EQ(got, std::vector<uint32_t>{ 7 });
}

// The agent side may hand over a uffd whose range is not registered yet: the tracker in the
// other process registers the creator's range itself (the ioctl acts on the creator's mm).
TEST(DirtyTrackerUffdWp, RegistersRangeOfAnotherProcessItself)
{
	REQUIRE_WP_ASYNC();
	const size_t page = pageSize();
	auto child = test::forkChildHandingUnregisteredUffd(
		Memory::Memfd, 32, kWpAsyncFeatures, [&](int sock, Mapping &mem) {
			if (!test::recvValue<uint8_t>(sock).ok())
				return 12;
			mem.data()[20 * page] = 1;
			return test::sendValue<uint8_t>(sock, 1).ok() && test::recvValue<uint8_t>(sock).ok() ? 0 : 13;
		});
	ASSERT_TRUE(child.ok());
	auto handed = test::recvUffd(child->sock.get(), kWpAsyncFeatures);
	ASSERT_TRUE(handed.ok()) << handed.error().message();
	auto tracker = makeUffdWpTracker({ child->pid, handed->addr, 32 * page, page },
					 std::move(handed->uffd));
	ASSERT_TRUE(tracker.ok()) << tracker.error().message();
	Status s = (*tracker)->start();
	ASSERT_TRUE(s.ok()) << s.error().message();
	ASSERT_TRUE(test::sendValue<uint8_t>(child->sock.get(), 1).ok());
	ASSERT_TRUE(test::recvValue<uint8_t>(child->sock.get()).ok());
	std::vector<uint32_t> got;
	s = (*tracker)->collect(got);
	ASSERT_TRUE(s.ok()) << s.error().message();
	EXPECT_EQ(got, std::vector<uint32_t>{ 20 });
	ASSERT_TRUE(test::sendValue<uint8_t>(child->sock.get(), 1).ok());
	auto code = test::waitChild(*child);
	ASSERT_TRUE(code.ok());
	EXPECT_EQ(*code, 0);
}

TEST(DirtyTrackerRegion, RejectsBadChunkSizesAndUnalignedRegions)
{
	const size_t page = pageSize();
	auto mem = Mapping::anonymous(4 * page);
	ASSERT_TRUE(mem.ok());
	const uintptr_t a = reinterpret_cast<uintptr_t>(mem->data());
	EXPECT_FALSE(makeHashTracker({ 0, a, 4 * page, page / 2 }).ok());
	EXPECT_FALSE(makeHashTracker({ 0, a, 4 * page, 3 * page }).ok());
	EXPECT_FALSE(makeHashTracker({ 0, a + 1, 4 * page, page }).ok());
	EXPECT_FALSE(makeHashTracker({ 0, a, 0, page }).ok());
	auto ok = makeHashTracker({ 0, a, 3 * page, 2 * page });
	ASSERT_TRUE(ok.ok());
	EXPECT_EQ((*ok)->chunkCount(), 2u); // last chunk short
}
