// SPDX-License-Identifier: GPL-2.0-or-later
// The README's main command, end to end: `ferry demo` runs a seeder and a leecher as separate
// processes (each with its own application process) and prints one JSON object last.
#include <array>
#include <cstdio>
#include <gtest/gtest.h>
#include <json-c/json.h>
#include <string>

#include "ferry/sys/userfaultfd.h"

namespace {

struct DemoRun {
	int exitCode = -1;
	std::string lastLine;
};

DemoRun runDemo(const std::string &args)
{
	const char *bin = std::getenv("FERRY_BIN");
	DemoRun r;
	std::string cmd = std::string(bin) + " --log-level warn demo --quiet " + args + " 2>/dev/null";
	FILE *p = ::popen(cmd.c_str(), "r");
	if (!p)
		return r;
	std::array<char, 4096> buf;
	std::string line;
	while (std::fgets(buf.data(), buf.size(), p)) {
		line = buf.data();
		if (!line.empty() && line.back() == '\n')
			line.pop_back();
		if (!line.empty())
			r.lastLine = line;
	}
	int st = ::pclose(p);
	r.exitCode = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	return r;
}

int64_t field(json_object *o, const char *name)
{
	json_object *v;
	return json_object_object_get_ex(o, name, &v) ? json_object_get_int64(v) : -1;
}

bool boolField(json_object *o, const char *name)
{
	json_object *v;
	return json_object_object_get_ex(o, name, &v) && json_object_get_boolean(v);
}

void skipWithoutKernelSupport()
{
	if (!std::getenv("FERRY_BIN"))
		GTEST_SKIP() << "FERRY_BIN not set (run through meson test)";
	auto f = ferry::Userfaultfd::probeFeatures();
	if (!f.ok() || (*f & UFFD_FEATURE_WP_ASYNC) == 0)
		GTEST_SKIP() << "kernel lacks userfaultfd WP_ASYNC";
}

} // namespace

class Demo : public ::testing::TestWithParam<const char *> {};

TEST_P(Demo, PrintsVerifiedJsonSummaryLast)
{
	skipWithoutKernelSupport();
	DemoRun r = runDemo(GetParam());
	ASSERT_EQ(r.exitCode, 0) << r.lastLine;
	json_object *o = json_tokener_parse(r.lastLine.c_str());
	ASSERT_NE(o, nullptr) << "last line is not JSON: " << r.lastLine;
	for (const char *k : {"mode", "bytes_total", "bytes_transferred", "precopy_ms", "downtime_ms",
			      "postcopy_ms", "faults", "stale_chunks_at_finalize", "verified"})
		EXPECT_TRUE(json_object_object_get_ex(o, k, nullptr)) << "missing " << k;
	EXPECT_TRUE(boolField(o, "verified"));
	EXPECT_EQ(field(o, "bytes_total"), 64ll << 20);
	EXPECT_GT(field(o, "bytes_transferred"), 0);
	json_object_put(o);
}

INSTANTIATE_TEST_SUITE_P(, Demo,
			 ::testing::Values("--size-mib 64 --write-mbps 50 --mode hybrid",
					   "--size-mib 64 --write-mbps 50 --mode precopy",
					   "--size-mib 64 --write-mbps 50 --mode hybrid --rtt-ms 20"),
			 [](const auto &info) {
				 std::string s = info.param;
				 if (s.find("rtt") != std::string::npos)
					 return std::string("HybridAt20msRtt");
				 return std::string(s.find("precopy") != std::string::npos ? "Precopy" : "Hybrid");
			 });
