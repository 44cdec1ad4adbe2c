// SPDX-License-Identifier: GPL-2.0-or-later
// Test helpers for ferry's Result and Status: ASSERT_OK for a call that must succeed (the
// failure quotes the error), failsWith for the check every error-path test makes.
#pragma once

#include <string_view>

#include <gtest/gtest.h>

#include "ferry/base/result.h"

// Fatal unless `expr` (a Status or Result) succeeded; the failure message is the error's.
#define ASSERT_OK(expr)                                                           \
	do {                                                                      \
		const auto &assert_ok_r_ = (expr);                                \
		ASSERT_TRUE(assert_ok_r_.ok()) << assert_ok_r_.error().message(); \
	} while (0)

namespace ferry::test {

// A Status or Result that must have failed with errno `code` and, when `needle` is given, with
// a message that contains it. As an AssertionResult, a failure says which part was off and
// quotes the message: EXPECT_TRUE(failsWith(c->queryStatus(), EBADMSG)).
template<typename T>
::testing::AssertionResult failsWith(const Result<T> &r, int code, std::string_view needle = {})
{
	if (r.ok())
		return ::testing::AssertionFailure() << "succeeded, expected errno " << code
						     << (needle.empty() ? "" : " and an error containing \"")
						     << needle << (needle.empty() ? "" : "\"");
	if (r.error().code() != code)
		return ::testing::AssertionFailure() << "errno " << r.error().code() << " ("
						     << r.error().message() << "), expected " << code;
	if (r.error().message().find(needle) == std::string::npos)
		return ::testing::AssertionFailure()
		       << "message \"" << r.error().message() << "\" lacks \"" << needle << "\"";
	return ::testing::AssertionSuccess();
}

} // namespace ferry::test
