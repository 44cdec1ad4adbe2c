// SPDX-License-Identifier: GPL-2.0-or-later
// JsonValue: one move-only owner of a json-c reference (json_object_put on destruction).
// json-c objects are reference counted; a JsonValue obtained from getObject()/at() holds its
// own reference to a child, so it stays valid after the parent JsonValue is gone.
// Not thread-safe: json-c reference counts are not atomic unless json-c was built so; keep a
// JsonValue (and the values derived from it) on one thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "ferry/base/result.h"

struct json_object;

namespace ferry {

class JsonValue {
public:
	// Upper bound on the text parse() accepts: the QMP client bounds a single message too.
	static constexpr size_t kMaxParseBytes = 16u << 20;

	JsonValue() = default; // JSON null
	JsonValue(JsonValue &&o) noexcept;
	JsonValue &operator=(JsonValue &&o) noexcept;
	JsonValue(const JsonValue &) = delete;
	JsonValue &operator=(const JsonValue &) = delete;
	~JsonValue();

	// Takes over the caller's reference (no json_object_get).
	static JsonValue adopt(json_object *obj);
	// Takes a new reference (json_object_get); the caller keeps its own.
	static JsonValue share(json_object *obj);
	// Parses exactly one JSON value; trailing non-whitespace and texts larger than
	// kMaxParseBytes are errors (EBADMSG / EMSGSIZE).
	static Result<JsonValue> parse(std::string_view text);

	// Builders.
	static JsonValue object();
	static JsonValue array();
	static JsonValue string(std::string_view s);
	static JsonValue integer(int64_t v);
	static JsonValue number(double v);
	static JsonValue boolean(bool v);
	JsonValue clone() const; // another reference to the same object (shared, not a deep copy)

	// Object/array mutation (no-ops returning *this on the wrong type are a programming error:
	// they assert).
	JsonValue &set(std::string_view key, JsonValue value);
	JsonValue &set(std::string_view key, std::string_view value) { return set(key, string(value)); }
	JsonValue &set(std::string_view key, const char *value) { return set(key, string(value)); }
	JsonValue &set(std::string_view key, int64_t value) { return set(key, integer(value)); }
	JsonValue &set(std::string_view key, int value) { return set(key, integer(value)); }
	JsonValue &set(std::string_view key, uint64_t value) { return set(key, integer(static_cast<int64_t>(value))); }
	JsonValue &set(std::string_view key, double value) { return set(key, number(value)); }
	JsonValue &set(std::string_view key, bool value) { return set(key, boolean(value)); }
	JsonValue &append(JsonValue value);

	bool isNull() const;
	bool isObject() const;
	bool isArray() const;
	bool isString() const;
	bool isInt() const;
	bool isBool() const;
	bool has(std::string_view key) const;
	size_t size() const; // array length or number of object members, 0 otherwise

	// Typed access to this value. Wrong type -> EINVAL error naming the expected type.
	Result<std::string> asString() const;
	Result<int64_t> asInt() const;
	Result<double> asDouble() const; // accepts int or double
	Result<bool> asBool() const;

	// Typed access to an object member. Missing member -> ENOENT; wrong type -> EINVAL.
	Result<std::string> getString(std::string_view key) const;
	Result<int64_t> getInt(std::string_view key) const;
	Result<double> getDouble(std::string_view key) const;
	Result<bool> getBool(std::string_view key) const;
	Result<JsonValue> getObject(std::string_view key) const; // must be a JSON object
	Result<JsonValue> get(std::string_view key) const;       // any type
	Result<JsonValue> at(size_t index) const;                 // array element

	// Compact JSON text ("null" for a null value).
	std::string toString() const;

	json_object *raw() const { return obj_; }
	json_object *release();

private:
	explicit JsonValue(json_object *obj) : obj_(obj) {}
	json_object *obj_ = nullptr;
};

} // namespace ferry
