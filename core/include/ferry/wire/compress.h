// SPDX-License-Identifier: GPL-2.0-or-later
// Chunk compression for the wire (zstd). A seeder compresses the chunks of a GetRange reply
// when the connection negotiated it (HelloMsg::kFeatureZstd) and sends a ChunkZstd frame only
// when that saves bytes; a leecher decompresses straight into the chunk's final place and
// accepts exactly the chunk's length, nothing more or less.
//
// One compressor or decompressor per connection thread: the contexts are not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "ferry/base/result.h"

namespace ferry {

// What an operator asks for: "none", "zstd" (level 1), "zstd:N" (N in 1..19), or "auto":
// level 1 while it pays, decided per connection (the seeder measures; see ChunkServer).
struct CompressionSpec {
	int level = 1; // 0: off
	bool adaptive = false;
	static CompressionSpec automatic() { return {1, true}; }
	bool enabled() const { return level > 0; }
	std::string toString() const;
};
Result<CompressionSpec> parseCompressionSpec(std::string_view spec);

class ChunkCompressor {
public:
	explicit ChunkCompressor(int level);
	~ChunkCompressor();
	ChunkCompressor(ChunkCompressor &&) noexcept;
	ChunkCompressor &operator=(ChunkCompressor &&) noexcept;

	// Room compress() may need for an input of `len` bytes.
	static size_t bound(size_t len);
	// Compresses src into dst (dst.size() >= bound(src.size())). Returns the frame's size, or
	// nullopt when the frame would not be at least 1/32 smaller than src (not worth a frame
	// the receiver must decode) or zstd failed (never fatal: the caller sends the raw chunk).
	std::optional<size_t> compress(std::span<const uint8_t> src, std::span<uint8_t> dst);

private:
	struct Ctx;
	std::unique_ptr<Ctx> ctx_;
	int level_;
};

class ChunkDecompressor {
public:
	ChunkDecompressor();
	~ChunkDecompressor();
	ChunkDecompressor(ChunkDecompressor &&) noexcept;
	ChunkDecompressor &operator=(ChunkDecompressor &&) noexcept;

	// Decompresses one zstd frame into dst, which it must fill exactly: a frame that is
	// corrupt, truncated, followed by trailing bytes, or that decodes to more or fewer than
	// dst.size() bytes is an EPROTO error. Never writes outside dst.
	Status decompress(std::span<const uint8_t> frame, std::span<uint8_t> dst);

private:
	struct Ctx;
	std::unique_ptr<Ctx> ctx_;
};

} // namespace ferry
