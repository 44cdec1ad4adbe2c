// SPDX-License-Identifier: GPL-2.0-or-later
// Fixed-layout payloads, described once (internal to core/wire): a message whose payload is a
// sequence of integers and bounded strings lists its fields in wire order, and that one list
// drives both its encoder and its decoder, so the two directions cannot drift apart.
//
//   template <> struct Layout<PingMsg> {
//           static constexpr auto fields = std::tuple{Field{&PingMsg::sendTimeNs}};
//   };
//
// encodeLayout(m) writes the fields; decodePayload<M>(in, "Ping", read, check) reads them,
// requires that nothing is left over, runs the message's own checks and prefixes any error
// with the frame's name ("Ping: truncated: ..."). Pure, like the rest of the codec.
#pragma once
#ifndef FERRY_CORE_INTERNAL
#error "an internal header of ferry-core: include the public ones (ferry/...) instead"
#endif

#include <cstdint>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "ferry/wire/protocol.h"

namespace ferry {

enum class FieldRule {
	Plain,
	// A string longer than maxLen is cut to it when encoding, instead of sending a frame the
	// peer rejects (for strings only we produce and only a log reads, like Hello's client
	// name; a name the peer acts on is checked by its owner before it is encoded).
	CutToMax,
	// The last field, added to version 1 later: written only when non-zero, read only when
	// bytes remain, 0 when absent.
	OptionalTail,
};

// One field of a payload: the member it fills (u16, u32, u64, i32 or std::string) and, for
// strings, the longest one a decoder accepts.
template <typename Msg, typename T>
struct Field {
	T Msg::*member;
	size_t maxLen = 0;
	FieldRule rule = FieldRule::Plain;
};
// Spelled out: Debian 12's clang (14, the fuzzing build) does not deduce an aggregate's
// template arguments from its initializer (C++20 P1816) by itself.
template <typename Msg, typename T>
Field(T Msg::*) -> Field<Msg, T>;
template <typename Msg, typename T>
Field(T Msg::*, size_t) -> Field<Msg, T>;
template <typename Msg, typename T>
Field(T Msg::*, size_t, FieldRule) -> Field<Msg, T>;

// Specialised per message, beside its codec: `static constexpr auto fields = std::tuple{...}`.
template <typename Msg>
struct Layout;

namespace layout_detail {

inline void put(PayloadWriter &w, uint16_t v, const auto &) { w.u16(v); }
inline void put(PayloadWriter &w, uint32_t v, const auto &f)
{
	if (f.rule != FieldRule::OptionalTail || v != 0)
		w.u32(v);
}
inline void put(PayloadWriter &w, uint64_t v, const auto &) { w.u64(v); }
inline void put(PayloadWriter &w, int32_t v, const auto &) { w.i32(v); }
inline void put(PayloadWriter &w, const std::string &s, const auto &f)
{
	w.string(f.rule == FieldRule::CutToMax ? std::string_view(s).substr(0, f.maxLen) : std::string_view(s));
}

inline Result<uint16_t> get(PayloadReader &r, uint16_t *, const auto &) { return r.u16(); }
inline Result<uint32_t> get(PayloadReader &r, uint32_t *, const auto &f)
{
	if (f.rule == FieldRule::OptionalTail && r.remaining() == 0)
		return uint32_t(0);
	return r.u32();
}
inline Result<uint64_t> get(PayloadReader &r, uint64_t *, const auto &) { return r.u64(); }
inline Result<int32_t> get(PayloadReader &r, int32_t *, const auto &) { return r.i32(); }
inline Result<std::string> get(PayloadReader &r, std::string *, const auto &f) { return r.string(f.maxLen); }

template <typename Msg, typename T>
Status read(PayloadReader &r, Msg &m, const Field<Msg, T> &f)
{
	auto v = get(r, static_cast<T *>(nullptr), f);
	if (!v.ok())
		return v.error();
	m.*f.member = std::move(*v);
	return {};
}

} // namespace layout_detail

template <typename Msg>
std::vector<uint8_t> encodeLayout(const Msg &m)
{
	std::vector<uint8_t> out;
	PayloadWriter w(out);
	std::apply([&](const auto &...f) { (layout_detail::put(w, m.*f.member, f), ...); }, Layout<Msg>::fields);
	return out;
}

// Reads the fields of Layout<Msg> in order; stops at the first error.
template <typename Msg>
Status readLayout(PayloadReader &r, Msg &m)
{
	Status st;
	std::apply([&](const auto &...f) { (void)((st = layout_detail::read(r, m, f)).ok() && ...); },
		   Layout<Msg>::fields);
	return st;
}

// The frame of every payload decoder: `read(r, m)` fills the message, no byte may be left over,
// then `check(m)` applies the message's own rules. Errors name the frame (`what`).
template <typename Msg, typename Read, typename Check>
Result<Msg> decodePayload(std::span<const uint8_t> in, const char *what, Read read, Check check)
{
	auto body = [&]() -> Result<Msg> {
		PayloadReader r(in);
		Msg m;
		FERRY_TRY(read(r, m));
		FERRY_TRY(r.expectEnd());
		FERRY_TRY(check(std::as_const(m)));
		return m;
	};
	return body().context(what);
}

// decodePayload for a fixed-layout message.
template <typename Msg, typename Check>
Result<Msg> decodeLayout(std::span<const uint8_t> in, const char *what, Check check)
{
	return decodePayload<Msg>(in, what, readLayout<Msg>, check);
}

// For messages with no rules beyond their layout.
inline constexpr auto noCheck = [](const auto &) -> Status { return {}; };

} // namespace ferry
