// SPDX-License-Identifier: GPL-2.0-or-later
// The ChunkZstd frame decoder (ChunkDecompressor, core/wire/compress.cpp) on a frame a seeder
// might send. Input: 3 bytes little-endian selecting the chunk's length (1 + v % 256 KiB),
// then the zstd frame.
//
// Invariants checked beyond "no crash": the decoder writes inside the chunk only (guard bytes
// around it stay intact, which catches an overrun even without ASan); a success means zstd
// itself decodes the frame to exactly those bytes; compressing the result with ChunkCompressor
// and decoding that gives it back; a failure is EPROTO.
//
// zstd is Debian's build, not instrumented: libFuzzer sees no coverage inside it, and byte
// mutations of a frame almost only exercise its checksum and header checks. Under libFuzzer
// a custom mutator therefore mostly mutates the decompressed chunk and compresses it again
// with random parameters, sometimes with a wrong length selector or a damaged frame: inputs
// stay near-valid and reach zstd's block decoders.
#include <zstd.h>

#include <algorithm>
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

// The first 3 bytes, little-endian, select 1..kMaxChunk.
size_t chunkLength(const uint8_t *data)
{
	return 1 + (size_t(data[0]) | size_t(data[1]) << 8 | size_t(data[2]) << 16) % kMaxChunk;
}

} // namespace

#ifdef FERRY_LIBFUZZER
// libFuzzer's own mutator, for the bytes of the chunk (or of the input, one time in four).
extern "C" size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t maxSize);

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t maxSize, unsigned seed)
{
	uint64_t r = seed * 0x9e3779b97f4a7c15ull;
	auto next = [&r](uint64_t n) {
		r = r * 6364136223846793005ull + 1442695040888963407ull;
		return (r >> 33) % n;
	};
	if (size < kSelectorSize || maxSize <= kSelectorSize || next(4) == 0)
		return LLVMFuzzerMutate(data, size, maxSize);

	// The chunk this input stands for: its frame decoded, or else the frame's bytes.
	std::vector<uint8_t> chunk(chunkLength(data));
	size_t n = ZSTD_decompress(chunk.data(), chunk.size(), data + kSelectorSize, size - kSelectorSize);
	if (ZSTD_isError(n))
		chunk.assign(data + kSelectorSize, data + size);
	else
		chunk.resize(n);
	size_t len = std::min(chunk.size(), kMaxChunk);
	chunk.resize(kMaxChunk);
	len = LLVMFuzzerMutate(chunk.data(), len, chunk.size());
	if (len == 0)
		return LLVMFuzzerMutate(data, size, maxSize);
	chunk.resize(len);

	ZSTD_CCtx *cctx = ZSTD_createCCtx();
	if (!cctx)
		return LLVMFuzzerMutate(data, size, maxSize);
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, int(next(14)) - 4); // -4..9
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, int(next(2)));
	ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, int(next(4)) != 0);
	std::vector<uint8_t> frame(ZSTD_compressBound(len));
	size_t m = ZSTD_compress2(cctx, frame.data(), frame.size(), chunk.data(), len);
	ZSTD_freeCCtx(cctx);
	if (ZSTD_isError(m) || kSelectorSize + m > maxSize)
		return LLVMFuzzerMutate(data, size, maxSize);
	frame.resize(m);
	// Mostly the right length; sometimes one off, or a damaged frame.
	size_t sel = len - 1;
	if (next(8) == 0)
		sel = next(2) ? sel + 1 : (sel + kMaxChunk - 1) % kMaxChunk;
	if (next(8) == 0)
		frame[next(m)] ^= uint8_t(1u << next(8));
	data[0] = uint8_t(sel);
	data[1] = uint8_t(sel >> 8);
	data[2] = uint8_t(sel >> 16);
	std::memcpy(data + kSelectorSize, frame.data(), m);
	return kSelectorSize + m;
}
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < kSelectorSize)
		return 0;
	static Codec codec;
	const size_t len = chunkLength(data);
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
