// SPDX-License-Identifier: GPL-2.0-or-later
// ferry's one error type. Errors are values: they carry errno (0 when there is none) and a
// message that gains context at every layer ("pull chunk 812: recv: connection reset").
// No exceptions cross module boundaries.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace ferry {

class Error {
public:
	Error() = default;
	Error(int err, std::string message) : errno_(err), message_(std::move(message)) {}

	// An error from a failed syscall: "what: strerror(errno)".
	static Error fromErrno(std::string_view what, int err = errno)
	{
		return Error(err, fmt::format("{}: {}", what, std::strerror(err)));
	}

	template<typename... Args>
	static Error format(int err, fmt::format_string<Args...> f, Args &&...args)
	{
		return Error(err, fmt::format(f, std::forward<Args>(args)...));
	}

	// Returns a copy with "context: " prepended; errno is kept.
	Error context(std::string_view ctx) const
	{
		return Error(errno_, fmt::format("{}: {}", ctx, message_));
	}

	int code() const { return errno_; }
	const std::string &message() const { return message_; }

private:
	int errno_ = 0;
	std::string message_;
};

template<typename T>
class [[nodiscard]] Result {
public:
	Result(T value) : v_(std::move(value)) {}
	Result(Error error) : v_(std::move(error)) {}

	bool ok() const { return v_.index() == 0; }
	explicit operator bool() const { return ok(); }

	T &value() & { return std::get<0>(v_); }
	const T &value() const & { return std::get<0>(v_); }
	T &&value() && { return std::get<0>(std::move(v_)); }
	T *operator->() { return &value(); }
	const T *operator->() const { return &value(); }
	T &operator*() { return value(); }

	const Error &error() const { return std::get<1>(v_); }

	Result context(std::string_view ctx) const &
	{
		return ok() ? *this : Result(error().context(ctx));
	}
	Result context(std::string_view ctx) &&
	{
		return ok() ? std::move(*this) : Result(error().context(ctx));
	}

private:
	std::variant<T, Error> v_;
};

template<>
class [[nodiscard]] Result<void> {
public:
	Result() = default;
	Result(Error error) : err_(std::move(error)), ok_(false) {}

	bool ok() const { return ok_; }
	explicit operator bool() const { return ok_; }
	const Error &error() const { return err_; }

	Result context(std::string_view ctx) const
	{
		return ok_ ? Result() : Result(err_.context(ctx));
	}

private:
	Error err_;
	bool ok_ = true;
};

using Status = Result<void>;

inline Status okStatus() { return {}; }

} // namespace ferry

// Propagate an error: FERRY_TRY(status_expr) for Result<void>, and
// FERRY_ASSIGN(var, result_expr) to bind the value of a Result<T>.
#define FERRY_TRY(expr)                                          \
	do {                                                     \
		auto ferry_try_r_ = (expr);                      \
		if (!ferry_try_r_.ok())                          \
			return ferry_try_r_.error();             \
	} while (0)

#define FERRY_TRY_CTX(expr, ...)                                          \
	do {                                                              \
		auto ferry_try_r_ = (expr);                               \
		if (!ferry_try_r_.ok())                                   \
			return ferry_try_r_.error().context(              \
				fmt::format(__VA_ARGS__));                \
	} while (0)

#define FERRY_CONCAT_INNER(a, b) a##b
#define FERRY_CONCAT(a, b) FERRY_CONCAT_INNER(a, b)
#define FERRY_ASSIGN(lhs, expr) FERRY_ASSIGN_IMPL(FERRY_CONCAT(ferry_r_, __LINE__), lhs, expr)
#define FERRY_ASSIGN_IMPL(tmp, lhs, expr)      \
	auto tmp = (expr);                     \
	if (!tmp.ok())                         \
		return tmp.error();            \
	lhs = std::move(tmp).value()
