// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/wire/compress.h"

#include <charconv>
#include <fmt/format.h>
#include <zstd.h>

namespace ferry {

std::string CompressionSpec::toString() const
{
	if (!enabled())
		return "none";
	if (adaptive)
		return "auto";
	return level == 1 ? "zstd" : fmt::format("zstd:{}", level);
}

Result<CompressionSpec> parseCompressionSpec(std::string_view spec)
{
	if (spec == "none" || spec == "off")
		return CompressionSpec{0};
	if (spec == "zstd")
		return CompressionSpec{1};
	if (spec == "auto")
		return CompressionSpec::automatic();
	if (spec.starts_with("zstd:")) {
		std::string_view n = spec.substr(5);
		int level = 0;
		auto [end, ec] = std::from_chars(n.data(), n.data() + n.size(), level);
		if (ec == std::errc() && end == n.data() + n.size() && level >= 1 && level <= 19)
			return CompressionSpec{level};
	}
	return Error::format(EINVAL, "bad compression '{}' (expected auto, none, zstd or zstd:LEVEL with LEVEL 1..19)",
			     spec);
}

struct ChunkCompressor::Ctx {
	ZSTD_CCtx *cctx = ZSTD_createCCtx();
	~Ctx() { ZSTD_freeCCtx(cctx); }
};

ChunkCompressor::ChunkCompressor(int level) : ctx_(std::make_unique<Ctx>()), level_(level)
{
	// Each chunk is an independent frame with its content size (1-4 bytes: lets the receiver
	// reject a frame for a chunk of another size before decoding) and a checksum (4 bytes of
	// XXH64: a decoder bug or corrupted frame fails loudly instead of landing in guest RAM).
	ZSTD_CCtx_setParameter(ctx_->cctx, ZSTD_c_compressionLevel, level_);
	ZSTD_CCtx_setParameter(ctx_->cctx, ZSTD_c_checksumFlag, 1);
	ZSTD_CCtx_setParameter(ctx_->cctx, ZSTD_c_contentSizeFlag, 1);
}

ChunkCompressor::~ChunkCompressor() = default;
ChunkCompressor::ChunkCompressor(ChunkCompressor &&) noexcept = default;
ChunkCompressor &ChunkCompressor::operator=(ChunkCompressor &&) noexcept = default;

size_t ChunkCompressor::bound(size_t len) { return ZSTD_compressBound(len); }

std::optional<size_t> ChunkCompressor::compress(std::span<const uint8_t> src, std::span<uint8_t> dst)
{
	if (!ctx_->cctx || src.empty())
		return std::nullopt;
	// Asking zstd to fit the frame into the size that is still worth sending lets it give up
	// early on incompressible data (dstSize_tooSmall) instead of producing a useless frame.
	size_t worth = src.size() - src.size() / 32;
	size_t n = ZSTD_compress2(ctx_->cctx, dst.data(), std::min(dst.size(), worth), src.data(), src.size());
	if (ZSTD_isError(n) || n >= worth)
		return std::nullopt;
	return n;
}

struct ChunkDecompressor::Ctx {
	ZSTD_DCtx *dctx = ZSTD_createDCtx();
	~Ctx() { ZSTD_freeDCtx(dctx); }
};

ChunkDecompressor::ChunkDecompressor() : ctx_(std::make_unique<Ctx>()) {}
ChunkDecompressor::~ChunkDecompressor() = default;
ChunkDecompressor::ChunkDecompressor(ChunkDecompressor &&) noexcept = default;
ChunkDecompressor &ChunkDecompressor::operator=(ChunkDecompressor &&) noexcept = default;

Status ChunkDecompressor::decompress(std::span<const uint8_t> frame, std::span<uint8_t> dst)
{
	if (!ctx_->dctx)
		return Error(ENOMEM, "zstd: cannot allocate a decompression context");
	// One whole frame and nothing after it.
	size_t frameSize = ZSTD_findFrameCompressedSize(frame.data(), frame.size());
	if (ZSTD_isError(frameSize))
		return Error::format(EPROTO, "zstd frame: {}", ZSTD_getErrorName(frameSize));
	if (frameSize != frame.size())
		return Error::format(EPROTO, "zstd frame of {} bytes followed by {} trailing bytes", frameSize,
				     frame.size() - frameSize);
	unsigned long long content = ZSTD_getFrameContentSize(frame.data(), frame.size());
	if (content != ZSTD_CONTENTSIZE_UNKNOWN && content != dst.size())
		return Error::format(EPROTO, "zstd frame holds {} bytes, the chunk has {}", content, dst.size());
	size_t n = ZSTD_decompressDCtx(ctx_->dctx, dst.data(), dst.size(), frame.data(), frame.size());
	if (ZSTD_isError(n))
		return Error::format(EPROTO, "zstd: {}", ZSTD_getErrorName(n));
	if (n != dst.size())
		return Error::format(EPROTO, "zstd frame decoded to {} bytes, the chunk has {}", n, dst.size());
	return {};
}

} // namespace ferry
