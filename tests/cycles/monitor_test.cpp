// SPDX-License-Identifier: GPL-2.0-or-later
// `ferry monitor` end to end: a real cyclic writer, the exact tracker, the analyser's verdict.
// The ferry binary's path comes from the FERRY environment variable (set by meson).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <sys/wait.h>
#include <vector>

#include <json-c/json.h>

namespace {

struct Sample {
	double t = 0;
	uint64_t dirtyChunks = 0, dirtyBytes = 0;
	bool periodic = false;
	double periodSec = 0, duty = 0;
};

// Runs the command; returns its exit status and stdout lines.
int run(const std::string &cmd, std::vector<std::string> *lines)
{
	FILE *f = ::popen(cmd.c_str(), "r");
	if (!f)
		return -1;
	char buf[4096];
	while (std::fgets(buf, sizeof buf, f)) {
		std::string l(buf);
		if (!l.empty() && l.back() == '\n')
			l.pop_back();
		lines->push_back(l);
	}
	int st = ::pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

bool parse(const std::string &line, Sample *s)
{
	json_object *o = json_tokener_parse(line.c_str());
	if (!o)
		return false;
	auto get = [&](const char *k) -> json_object * {
		json_object *v = nullptr;
		json_object_object_get_ex(o, k, &v);
		return v;
	};
	bool ok = get("t_s") && get("dirty_chunks") && get("dirty_bytes") && get("periodic") &&
		  get("period_s") && get("duty") && get("verdict");
	if (ok) {
		s->t = json_object_get_double(get("t_s"));
		s->dirtyChunks = uint64_t(json_object_get_int64(get("dirty_chunks")));
		s->dirtyBytes = uint64_t(json_object_get_int64(get("dirty_bytes")));
		s->periodic = json_object_get_boolean(get("periodic"));
		s->periodSec = json_object_get_double(get("period_s"));
		s->duty = json_object_get_double(get("duty"));
	}
	json_object_put(o);
	return ok;
}

} // namespace

TEST(Monitor, FindsTheWritersPeriodFromExactDirtySamples)
{
	const char *ferry = std::getenv("FERRY");
	ASSERT_NE(ferry, nullptr) << "FERRY must name the ferry binary";
	// Period 1 s, 0.4 s at 300 MB/s then 5 MB/s; 4.5 s is 4.5 periods (2.5 needed).
	std::string cmd = std::string(ferry) +
			  " --log-level error monitor --size-mib 64 --write-mbps 300 --period-s 1 --duty 0.4"
			  " --low-mbps 5 --interval-ms 100 --duration-s 4.5 --chunk-kib 64 --json 2>&1";
	std::vector<std::string> lines;
	int rc = run(cmd, &lines);
	std::string all;
	for (auto &l : lines)
		all += l + "\n";
	if (rc != 0 && all.find("userfaultfd") != std::string::npos)
		GTEST_SKIP() << "exact tracker unavailable: " << all;
	ASSERT_EQ(rc, 0) << all;

	std::vector<Sample> samples;
	for (auto &l : lines) {
		Sample s;
		ASSERT_TRUE(parse(l, &s)) << "not a sample: " << l;
		samples.push_back(s);
	}
	ASSERT_GE(samples.size(), 40u) << all;
	EXPECT_LE(samples.size(), 45u) << all;

	uint64_t lo = UINT64_MAX, hi = 0;
	for (const Sample &s : samples) {
		EXPECT_EQ(s.dirtyBytes, s.dirtyChunks * 64 * 1024) << "64 MiB is a whole number of chunks";
		lo = std::min(lo, s.dirtyBytes);
		hi = std::max(hi, s.dirtyBytes);
	}
	// 300 MB/s of random 4 KiB pages dirties most of the 1024 chunks in 0.1 s; 5 MB/s
	// about 120 pages.
	EXPECT_GT(hi, 800u * 64 * 1024);
	EXPECT_LT(lo, 200u * 64 * 1024);

	const Sample &last = samples.back();
	EXPECT_TRUE(last.periodic) << all;
	EXPECT_NEAR(last.periodSec, 1.0, 0.1) << all;
	EXPECT_NEAR(last.duty, 0.4, 0.15) << all;
	EXPECT_FALSE(samples.front().periodic) << "a period cannot be known from one sample";
}
