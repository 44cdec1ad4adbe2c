// SPDX-License-Identifier: GPL-2.0-or-later
// Test helper for the tests that boot real guests: skip, with the reason, when no guest image
// is available (vm-images builds it; meson test passes FERRY_VM_IMAGE_DIR). A macro because
// GTEST_SKIP() returns from the test body it stands in; it declares `img`.
#pragma once

#include <gtest/gtest.h>

#include "harness/qemu_launcher.h"

#define REQUIRE_GUEST_IMAGE(img)                                                              \
	auto img##_r = ::ferry::GuestImage::fromEnv();                                        \
	if (!img##_r.ok())                                                                    \
		GTEST_SKIP() << "no guest image: " << img##_r.error().message();              \
	::ferry::GuestImage img = img##_r.value()
