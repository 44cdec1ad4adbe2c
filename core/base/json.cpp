// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/base/json.h"

#include <cassert>
#include <cmath>
#include <cerrno>

#include <fmt/format.h>
#include <json-c/json.h>

namespace ferry {

namespace {

const char *typeName(json_object *o)
{
	return json_type_to_name(json_object_get_type(o));
}

Error wrongType(std::string_view what, std::string_view expected, json_object *o)
{
	return Error::format(EINVAL, "{}: expected {}, got {}", what, expected, typeName(o));
}

} // namespace

JsonValue::JsonValue(JsonValue &&o) noexcept : obj_(o.release()) {}

JsonValue &JsonValue::operator=(JsonValue &&o) noexcept
{
	if (this != &o) {
		json_object_put(obj_);
		obj_ = o.release();
	}
	return *this;
}

JsonValue::~JsonValue()
{
	json_object_put(obj_);
}

JsonValue JsonValue::adopt(json_object *obj)
{
	return JsonValue(obj);
}

JsonValue JsonValue::share(json_object *obj)
{
	return JsonValue(json_object_get(obj));
}

Result<JsonValue> JsonValue::parse(std::string_view text)
{
	if (text.size() > kMaxParseBytes)
		return Error::format(EMSGSIZE, "JSON text of {} bytes exceeds the {} byte limit",
				     text.size(), kMaxParseBytes);

	json_tokener *tok = json_tokener_new();
	if (!tok)
		return Error(ENOMEM, "json_tokener_new failed");
	// Without it json-c takes "07" or "1e" as numbers and keeps their text, which toString()
	// then prints as something else again ("07e" -> "07" -> "7"): what we record from QEMU
	// must be what QEMU sent, in JSON.
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	json_object *obj = json_tokener_parse_ex(tok, text.data(), static_cast<int>(text.size()));
	json_tokener_error err = json_tokener_get_error(tok);
	size_t end = json_tokener_get_parse_end(tok);
	bool truncated = false;
	if (err == json_tokener_continue) {
		// Either the text ends inside a value, or it ends right after a number or literal
		// ("3", "true"), which the tokener completes only when it sees what follows: give
		// it the terminating NUL json_tokener_parse() would pass.
		obj = json_tokener_parse_ex(tok, "", 1);
		err = json_tokener_get_error(tok);
		end = text.size();
		truncated = err != json_tokener_success;
	}
	json_tokener_free(tok);

	if (truncated)
		return Error::format(EBADMSG, "malformed JSON: truncated after {} bytes", text.size());
	if (err != json_tokener_success)
		return Error::format(EBADMSG, "malformed JSON at byte {}: {}", end,
				     json_tokener_error_desc(err));
	JsonValue value = adopt(obj);
	// json-c stops after the first complete value; anything but whitespace after it means the
	// text was not one JSON value.
	for (size_t i = end; i < text.size(); i++) {
		char c = text[i];
		if (c != ' ' && c != '\t' && c != '\r' && c != '\n')
			return Error::format(EBADMSG, "malformed JSON: trailing data at byte {}", i);
	}
	return value;
}

JsonValue JsonValue::object()
{
	return adopt(json_object_new_object());
}

JsonValue JsonValue::array()
{
	return adopt(json_object_new_array());
}

JsonValue JsonValue::string(std::string_view s)
{
	return adopt(json_object_new_string_len(s.empty() ? "" : s.data(), static_cast<int>(s.size())));
}

JsonValue JsonValue::integer(int64_t v)
{
	return adopt(json_object_new_int64(v));
}

JsonValue JsonValue::number(double v)
{
	// json-c prints doubles with 17 significant digits (5.2709919999999997); the shortest
	// text that reads back as the same double is what a reader wants. Not finite: JSON has
	// no spelling for it, so null.
	if (!std::isfinite(v))
		return JsonValue();
	return adopt(json_object_new_double_s(v, fmt::format("{}", v).c_str()));
}

JsonValue JsonValue::boolean(bool v)
{
	return adopt(json_object_new_boolean(v));
}

JsonValue JsonValue::clone() const
{
	return share(obj_);
}

JsonValue &JsonValue::set(std::string_view key, JsonValue value)
{
	assert(isObject());
	// json_object_object_add takes over the value's reference.
	json_object_object_add(obj_, std::string(key).c_str(), value.release());
	return *this;
}

JsonValue &JsonValue::append(JsonValue value)
{
	assert(isArray());
	json_object_array_add(obj_, value.release());
	return *this;
}

bool JsonValue::isNull() const
{
	return obj_ == nullptr;
}

bool JsonValue::isObject() const
{
	return json_object_is_type(obj_, json_type_object);
}

bool JsonValue::isArray() const
{
	return json_object_is_type(obj_, json_type_array);
}

bool JsonValue::isString() const
{
	return json_object_is_type(obj_, json_type_string);
}

bool JsonValue::isInt() const
{
	return json_object_is_type(obj_, json_type_int);
}

bool JsonValue::isBool() const
{
	return json_object_is_type(obj_, json_type_boolean);
}

bool JsonValue::has(std::string_view key) const
{
	return isObject() && json_object_object_get_ex(obj_, std::string(key).c_str(), nullptr);
}

size_t JsonValue::size() const
{
	if (isArray())
		return json_object_array_length(obj_);
	if (isObject())
		return static_cast<size_t>(json_object_object_length(obj_));
	return 0;
}

Result<std::string> JsonValue::asString() const
{
	if (!isString())
		return wrongType("value", "string", obj_);
	return std::string(json_object_get_string(obj_),
			   static_cast<size_t>(json_object_get_string_len(obj_)));
}

Result<int64_t> JsonValue::asInt() const
{
	if (!isInt())
		return wrongType("value", "int", obj_);
	// json-c keeps unsigned values above INT64_MAX as uint64; QMP never sends them for the
	// fields we read, and get_int64 saturates rather than wrapping.
	return static_cast<int64_t>(json_object_get_int64(obj_));
}

Result<double> JsonValue::asDouble() const
{
	if (!isInt() && !json_object_is_type(obj_, json_type_double))
		return wrongType("value", "number", obj_);
	return json_object_get_double(obj_);
}

Result<bool> JsonValue::asBool() const
{
	if (!isBool())
		return wrongType("value", "bool", obj_);
	return static_cast<bool>(json_object_get_boolean(obj_));
}

Result<JsonValue> JsonValue::get(std::string_view key) const
{
	if (!isObject())
		return wrongType(fmt::format("member '{}'", key), "object", obj_);
	json_object *child = nullptr;
	if (!json_object_object_get_ex(obj_, std::string(key).c_str(), &child))
		return Error::format(ENOENT, "member '{}' missing", key);
	return share(child);
}

Result<JsonValue> JsonValue::at(size_t index) const
{
	if (!isArray())
		return wrongType(fmt::format("element {}", index), "array", obj_);
	if (index >= json_object_array_length(obj_))
		return Error::format(ERANGE, "element {} out of range (length {})", index,
				     json_object_array_length(obj_));
	return share(json_object_array_get_idx(obj_, index));
}

Result<JsonValue> JsonValue::getObject(std::string_view key) const
{
	FERRY_ASSIGN(JsonValue v, get(key));
	if (!v.isObject())
		return wrongType(fmt::format("member '{}'", key), "object", v.raw());
	return v;
}

Result<std::string> JsonValue::getString(std::string_view key) const
{
	FERRY_ASSIGN(JsonValue v, get(key));
	return v.asString().context(fmt::format("member '{}'", key));
}

Result<int64_t> JsonValue::getInt(std::string_view key) const
{
	FERRY_ASSIGN(JsonValue v, get(key));
	return v.asInt().context(fmt::format("member '{}'", key));
}

Result<double> JsonValue::getDouble(std::string_view key) const
{
	FERRY_ASSIGN(JsonValue v, get(key));
	return v.asDouble().context(fmt::format("member '{}'", key));
}

Result<bool> JsonValue::getBool(std::string_view key) const
{
	FERRY_ASSIGN(JsonValue v, get(key));
	return v.asBool().context(fmt::format("member '{}'", key));
}

std::string JsonValue::toString() const
{
	if (!obj_)
		return "null";
	return json_object_to_json_string_ext(obj_, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
}

json_object *JsonValue::release()
{
	json_object *o = obj_;
	obj_ = nullptr;
	return o;
}

} // namespace ferry
