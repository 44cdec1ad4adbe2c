// SPDX-License-Identifier: GPL-2.0-or-later
// The payload reader and writer every message codec uses, and the chunk geometry.
#include "ferry/wire/protocol.h"

#include <algorithm>
#include <limits>

#include <fmt/format.h>

#include "wire/little_endian.h"

namespace ferry {

namespace {

ferry::Error protoError(std::string msg) { return ferry::Error(EPROTO, std::move(msg)); }

constexpr uint32_t kUnbounded = std::numeric_limits<uint32_t>::max();

} // namespace

// --- PayloadReader / PayloadWriter ----------------------------------------------------------

Result<std::span<const uint8_t>> PayloadReader::take(size_t n)
{
	if (n > remaining())
		return protoError(fmt::format("truncated: need {} bytes at offset {}, have {}", n, pos_,
					      remaining()));
	auto s = in_.subspan(pos_, n);
	pos_ += n;
	return s;
}

Result<uint16_t> PayloadReader::u16()
{
	FERRY_ASSIGN(auto s, take(2));
	return load16(s.data());
}

Result<uint32_t> PayloadReader::u32()
{
	FERRY_ASSIGN(auto s, take(4));
	return load32(s.data());
}

Result<uint64_t> PayloadReader::u64()
{
	FERRY_ASSIGN(auto s, take(8));
	return load64(s.data());
}

Result<int32_t> PayloadReader::i32()
{
	FERRY_ASSIGN(uint32_t v, u32());
	return int32_t(v);
}

Result<std::string> PayloadReader::string(size_t maxLen)
{
	FERRY_ASSIGN(uint16_t len, u16());
	if (len > maxLen)
		return protoError(fmt::format("string of {} bytes at offset {} exceeds {}", len,
					      pos_ - 2, maxLen));
	FERRY_ASSIGN(auto s, take(len));
	return std::string(reinterpret_cast<const char *>(s.data()), s.size());
}

Result<std::span<const uint8_t>> PayloadReader::bytes(size_t n) { return take(n); }

Status PayloadReader::expectEnd() const
{
	if (remaining() != 0)
		return protoError(fmt::format("{} trailing bytes after offset {}", remaining(), pos_));
	return {};
}

void PayloadWriter::u16(uint16_t v)
{
	uint8_t b[2];
	store16(b, v);
	out_.insert(out_.end(), b, b + 2);
}

void PayloadWriter::u32(uint32_t v)
{
	uint8_t b[4];
	store32(b, v);
	out_.insert(out_.end(), b, b + 4);
}

void PayloadWriter::u64(uint64_t v)
{
	uint8_t b[8];
	store64(b, v);
	out_.insert(out_.end(), b, b + 8);
}

void PayloadWriter::i32(int32_t v) { u32(uint32_t(v)); }

void PayloadWriter::string(std::string_view s)
{
	size_t len = std::min<size_t>(s.size(), 65535);
	u16(uint16_t(len));
	out_.insert(out_.end(), s.begin(), s.begin() + len);
}

void PayloadWriter::bytes(std::span<const uint8_t> b) { out_.insert(out_.end(), b.begin(), b.end()); }

// --- ChunkGeometry --------------------------------------------------------------------------

uint32_t ChunkGeometry::chunkCount() const
{
	if (chunkSize == 0)
		return 0;
	uint64_t n = regionSize / chunkSize + (regionSize % chunkSize != 0);
	return uint32_t(std::min<uint64_t>(n, kUnbounded));
}

uint32_t ChunkGeometry::chunkLength(uint32_t index) const
{
	uint64_t off = chunkOffset(index);
	if (off >= regionSize)
		return 0;
	return uint32_t(std::min<uint64_t>(chunkSize, regionSize - off));
}

} // namespace ferry
