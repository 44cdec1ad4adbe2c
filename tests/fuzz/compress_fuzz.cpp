// SPDX-License-Identifier: GPL-2.0-or-later
// The ChunkZstd frame decoder (ChunkDecompressor, core/wire/compress.cpp) on a frame a seeder
// might send. Input: 3 bytes little-endian selecting the chunk's length (1 + v % 256 KiB),
// then the zstd frame.
//
// Invariants checked beyond "no crash": the decoder writes inside the chunk only (guard bytes
// around it stay intact, which catches an overrun even without ASan); a success means zstd
// itself decodes the frame to exactly those bytes; compressing the result with ChunkCompressor
// and decoding that gives it back; a failure is EPROTO.
#include <zstd.h>

#include <cstring>
#include <vector>

#include "ferry/wire/compress.h"

#include "fuzz_check.h"

using namespace ferry;
using ferry::fuzz::sameBytes;

namespace {

constexpr size_t kSelectorSize = 3;
constexpr size_t kMaxChunk = 256u << 10;
constexpr size_t kGuard = 64;
constexpr uint8_t kGuardByte = 0xa5;

struct Codec {
	ChunkDecompressor decompressor;
	ChunkCompressor compressor{1};
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < kSelectorSize)
		return 0;
	static Codec codec;
	const size_t len = 1 + (size_t(data[0]) | size_t(data[1]) << 8 | size_t(data[2]) << 16) % kMaxChunk;
	std::span<const uint8_t> frame(data + kSelectorSize, size - kSelectorSize);

	std::vector<uint8_t> buf(kGuard + len + kGuard, kGuardByte);
	std::span<uint8_t> dst(buf.data() + kGuard, len);
	auto st = codec.decompressor.decompress(frame, dst);
	for (size_t i = 0; i < kGuard; i++)
		FUZZ_CHECK(buf[i] == kGuardByte && buf[kGuard + len + i] == kGuardByte);
	if (!st.ok()) {
		FUZZ_CHECK(st.error().code() == EPROTO);
		return 0;
	}

	// zstd's own one-shot decoder, given room for more, agrees on length and bytes.
	std::vector<uint8_t> ref(len + 1);
	size_t n = ZSTD_decompress(ref.data(), ref.size(), frame.data(), frame.size());
	FUZZ_CHECK(!ZSTD_isError(n) && n == len);
	FUZZ_CHECK(std::memcmp(ref.data(), dst.data(), len) == 0);

	// What a seeder would send for these bytes decodes back to them.
	std::vector<uint8_t> packed(ChunkCompressor::bound(len));
	if (auto m = codec.compressor.compress(dst, packed)) {
		FUZZ_CHECK(*m < len);
		std::vector<uint8_t> back(len);
		auto st2 = codec.decompressor.decompress(std::span(packed).first(*m), back);
		FUZZ_CHECK(st2.ok() && sameBytes(back, dst));
	}
	return 0;
}
