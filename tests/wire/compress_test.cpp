// SPDX-License-Identifier: GPL-2.0-or-later
// Chunk compression: what goes in comes out byte for byte, incompressible chunks are left
// raw, and no frame a peer sends can make the decompressor write outside the chunk or
// accept a chunk of the wrong size.
#include <cstring>
#include <random>

#include <gtest/gtest.h>

#include "ferry/wire/compress.h"
#include "support/result_checks.h"

using namespace ferry;
using ferry::test::failsWith;

namespace {

std::vector<uint8_t> textChunk(size_t len, uint32_t seed)
{
	std::mt19937 rng(seed);
	static const char *words[] = {"migrate", "page", "chunk", "dirty", "guest", "fault", "pull", "link"};
	std::string s;
	while (s.size() < len)
		s += fmt::format("{:06} {} {}\n", rng() % 100000, words[rng() % 8], words[rng() % 8]);
	return std::vector<uint8_t>(s.begin(), s.begin() + ptrdiff_t(len));
}

std::vector<uint8_t> randomChunk(size_t len, uint32_t seed)
{
	std::mt19937_64 rng(seed);
	std::vector<uint8_t> v(len);
	for (size_t i = 0; i + 8 <= len; i += 8) {
		uint64_t x = rng();
		std::memcpy(&v[i], &x, 8);
	}
	return v;
}

// Compresses `src` and returns the frame (empty if the compressor declined).
std::vector<uint8_t> frameOf(const std::vector<uint8_t> &src, int level = 1)
{
	ChunkCompressor c(level);
	std::vector<uint8_t> out(ChunkCompressor::bound(src.size()));
	auto n = c.compress(src, out);
	if (!n)
		return {};
	out.resize(*n);
	return out;
}

} // namespace

TEST(CompressionSpec, ParsesWhatOperatorsType)
{
	EXPECT_EQ(parseCompressionSpec("none")->level, 0);
	EXPECT_FALSE(parseCompressionSpec("none")->enabled());
	EXPECT_EQ(parseCompressionSpec("zstd")->level, 1);
	EXPECT_EQ(parseCompressionSpec("zstd:19")->level, 19);
	EXPECT_EQ(parseCompressionSpec("zstd:3")->toString(), "zstd:3");
	EXPECT_EQ(parseCompressionSpec("zstd")->toString(), "zstd");
	EXPECT_FALSE(parseCompressionSpec("zstd")->adaptive);
	EXPECT_TRUE(parseCompressionSpec("auto")->adaptive);
	EXPECT_TRUE(parseCompressionSpec("auto")->enabled());
	EXPECT_EQ(parseCompressionSpec("auto")->toString(), "auto");
	for (const char *bad : {"", "lz4", "zstd:", "zstd:0", "zstd:20", "zstd:3x", "zstd:-1"}) {
		auto r = parseCompressionSpec(bad);
		ASSERT_FALSE(r.ok()) << bad;
		EXPECT_EQ(r.error().code(), EINVAL);
		EXPECT_NE(r.error().message().find("expected auto, none, zstd or zstd:LEVEL"), std::string::npos);
	}
}

TEST(ChunkCompression, TextRoundTripsByteForByteAndShrinks)
{
	ChunkDecompressor d;
	for (size_t len : {size_t(4096), size_t(16384), size_t(65536), size_t(65536 - 100)}) {
		auto src = textChunk(len, uint32_t(len));
		auto frame = frameOf(src);
		ASSERT_FALSE(frame.empty()) << len;
		EXPECT_LT(frame.size(), src.size() / 2) << "text compresses well below half";
		std::vector<uint8_t> out(len, 0xAA);
		ASSERT_TRUE(d.decompress(frame, out).ok());
		EXPECT_EQ(out, src);
	}
}

TEST(ChunkCompression, IncompressibleChunksAreLeftRaw)
{
	ChunkCompressor c(1);
	auto src = randomChunk(65536, 7);
	std::vector<uint8_t> out(ChunkCompressor::bound(src.size()));
	EXPECT_FALSE(c.compress(src, out).has_value());
	// A chunk that saves less than 1/32 is not worth a frame either: random bytes with a
	// short run of zeros (~1% of the chunk) compress by about that much at most.
	std::memset(src.data(), 0, 600);
	EXPECT_FALSE(c.compress(src, out).has_value());
	// The compressor is still usable after declining.
	auto text = textChunk(65536, 1);
	EXPECT_TRUE(c.compress(text, out).has_value());
}

TEST(ChunkCompression, DecompressorRejectsFramesThatDoNotFillTheChunkExactly)
{
	ChunkDecompressor d;
	auto src = textChunk(16384, 3);
	auto frame = frameOf(src);
	ASSERT_FALSE(frame.empty());

	// Bigger chunk than the frame holds, and smaller: neither may pass, and the smaller
	// destination is never written past its end.
	std::vector<uint8_t> big(32768);
	EXPECT_TRUE(failsWith(d.decompress(frame, big), EPROTO, "holds 16384 bytes, the chunk has 32768"));
	std::vector<uint8_t> guarded(8192 + 64, 0x5A);
	EXPECT_FALSE(d.decompress(frame, std::span(guarded).first(8192)).ok());
	for (size_t i = 8192; i < guarded.size(); i++)
		ASSERT_EQ(guarded[i], 0x5A) << "wrote past the chunk at " << i;

	// Trailing bytes after a whole frame.
	auto trailing = frame;
	trailing.push_back(0);
	std::vector<uint8_t> out(16384);
	EXPECT_TRUE(failsWith(d.decompress(trailing, out), EPROTO, "trailing"));

	// A frame cut short.
	auto cut = frame;
	cut.resize(cut.size() / 2);
	EXPECT_TRUE(failsWith(d.decompress(cut, out), EPROTO, "zstd"));

	// Not zstd at all.
	std::vector<uint8_t> junk(100, 0x42);
	EXPECT_TRUE(failsWith(d.decompress(junk, out), EPROTO, "zstd"));

	// The decompressor is still usable after all of that.
	ASSERT_TRUE(d.decompress(frame, out).ok());
	EXPECT_EQ(out, src);
}

TEST(ChunkCompression, CorruptedFramesNeverCrashOrOverrun)
{
	ChunkDecompressor d;
	auto src = textChunk(65536, 9);
	auto frame = frameOf(src);
	ASSERT_FALSE(frame.empty());
	std::mt19937 rng(12345);
	std::vector<uint8_t> out(65536 + 64);
	int accepted = 0;
	for (int i = 0; i < 2000; i++) {
		auto f = frame;
		int flips = 1 + int(rng() % 4);
		for (int k = 0; k < flips; k++)
			f[rng() % f.size()] ^= uint8_t(1u << (rng() % 8));
		std::fill(out.begin() + 65536, out.end(), 0x77);
		Status st = d.decompress(f, std::span(out).first(65536));
		if (st.ok())
			accepted++;
		else
			EXPECT_EQ(st.error().code(), EPROTO);
		for (size_t j = 65536; j < out.size(); j++)
			ASSERT_EQ(out[j], 0x77) << "wrote past the chunk";
	}
	// Every frame carries a checksum of its content: no flipped frame may decode.
	EXPECT_EQ(accepted, 0);
}
