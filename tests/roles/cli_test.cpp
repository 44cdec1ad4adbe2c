// SPDX-License-Identifier: GPL-2.0-or-later
// The `ferry` command line as an operator meets it: errors that name the problem, signals
// honoured, and the TLS link refusing a peer from another CA before any chunk moves.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "ferry/base/clock.h"
#include "ferry/base/json.h"
#include "ferry/sys/process.h"
#include "ferry/wire/connection.h"
#include "ferry/wire/endpoint.h"
#include "ferry/wire/protocol.h"

using namespace ferry;

namespace {

std::string ferryBin()
{
	const char *p = std::getenv("FERRY_BIN");
	return p ? p : "";
}

struct CommandResult {
	int exitCode = -1;
	std::string output; // stdout and stderr
};

// Runs `ferry ARGS` to completion (bounded by coreutils' timeout).
CommandResult runFerry(const std::string &args)
{
	CommandResult r;
	std::string cmd = "timeout 120 " + ferryBin() + " " + args + " 2>&1";
	FILE *p = ::popen(cmd.c_str(), "r");
	if (!p)
		return r;
	std::array<char, 4096> buf;
	size_t n;
	while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0)
		r.output.append(buf.data(), n);
	int st = ::pclose(p);
	r.exitCode = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	return r;
}

// A long-running `ferry` command whose stdout is read line by line.
struct Background {
	ChildProcess process;
	UniqueFd out;

	static Result<Background> start(std::vector<std::string> args)
	{
		int p[2];
		if (::pipe2(p, O_CLOEXEC) < 0)
			return Error::fromErrno("pipe");
		UniqueFd rd(p[0]), wr(p[1]);
		SpawnSpec spec;
		spec.exe = ferryBin();
		spec.args = std::move(args);
		spec.stdoutFd = wr.get();
		FERRY_ASSIGN(ChildProcess c, spawn(spec));
		return Background{std::move(c), std::move(rd)};
	}
	// The next stdout line, or ETIMEDOUT.
	Result<std::string> line(int timeoutMs)
	{
		std::string s;
		char c;
		const int64_t deadline = monotonicNs() + int64_t(timeoutMs) * 1000000;
		for (;;) {
			pollfd pf{out.get(), POLLIN, 0};
			int left = int(std::max<int64_t>(0, (deadline - monotonicNs()) / 1000000));
			if (::poll(&pf, 1, left) <= 0)
				return Error(ETIMEDOUT, "no line");
			if (::read(out.get(), &c, 1) != 1)
				return Error(EPIPE, "closed");
			if (c == '\n')
				return s;
			s += c;
		}
	}
};

Result<Endpoint> listeningOn(Background &b)
{
	FERRY_ASSIGN(std::string l, b.line(30000));
	const std::string prefix = "listening on ";
	if (l.rfind(prefix, 0) != 0)
		return Error::format(EPROTO, "unexpected line '{}'", l);
	return parseEndpoint(l.substr(prefix.size()));
}

std::string tempDir()
{
	char dir[] = "/tmp/ferry-cli-test.XXXXXX";
	return ::mkdtemp(dir) ? dir : "";
}

#define REQUIRE_FERRY()                                                        \
	do {                                                                   \
		if (ferryBin().empty())                                        \
			GTEST_SKIP() << "FERRY_BIN not set (run through meson test)"; \
	} while (0)

// Serves `path` with `ferry seed --file` to a verifying `ferry leech`: the copy verifies and
// the seeder ends by itself, with status 0, once the leecher has everything. The seeder is
// handed back (its stdout holds its summary).
void seedFileToVerifyingLeech(const std::string &path, std::optional<Background> &out)
{
	auto seed = Background::start({"--log-level", "warn", "seed", "--tls", "insecure", "--listen",
				       "tcp:127.0.0.1:0", "--file", path});
	ASSERT_TRUE(seed.ok()) << seed.error().message();
	auto ep = listeningOn(*seed);
	ASSERT_TRUE(ep.ok()) << ep.error().message();
	CommandResult leech = runFerry("--log-level warn leech --quiet --mode precopy --verify --tls insecure --connect " +
				       ep->str());
	EXPECT_EQ(leech.exitCode, 0) << leech.output;
	EXPECT_NE(leech.output.find("\"verified\":true"), std::string::npos) << leech.output;
	auto rc = seed->process.waitFor(20000);
	ASSERT_TRUE(rc.ok()) << rc.error().message();
	EXPECT_EQ(*rc, 0) << "the seeder ends once the leecher has everything";
	out.emplace(std::move(*seed));
}

} // namespace

TEST(Cli, NamesAnUnknownCommand)
{
	REQUIRE_FERRY();
	CommandResult r = runFerry("bogus");
	EXPECT_EQ(r.exitCode, 2);
	EXPECT_NE(r.output.find("unknown command 'bogus'"), std::string::npos) << r.output;
	EXPECT_NE(r.output.find("demo"), std::string::npos) << "the commands are listed: " << r.output;
}

TEST(Cli, RangeErrorsNameTheRangeNotTheLargestDouble)
{
	REQUIRE_FERRY();
	CommandResult r = runFerry("seed --size-mib -1");
	EXPECT_NE(r.exitCode, 0);
	EXPECT_NE(r.output.find("--size-mib"), std::string::npos) << r.output;
	EXPECT_EQ(r.output.find("17976931348623157"), std::string::npos) << r.output;
	r = runFerry("demo --connections 0");
	EXPECT_NE(r.exitCode, 0) << "a demo whose leecher cannot run is refused up front";
	EXPECT_NE(r.output.find("--connections"), std::string::npos) << r.output;
}

TEST(Cli, RefusesAMalformedEndpoint)
{
	REQUIRE_FERRY();
	CommandResult r = runFerry("leech --connect 'tcp:a b:80' --tls insecure");
	EXPECT_NE(r.exitCode, 0);
	EXPECT_NE(r.output.find("--connect"), std::string::npos) << r.output;
}

TEST(Cli, SeedWithoutCertificatesSaysWhichFileIsMissing)
{
	REQUIRE_FERRY();
	std::string dir = tempDir();
	ASSERT_FALSE(dir.empty());
	CommandResult r = runFerry("seed --size-mib 1 --listen tcp:127.0.0.1:0 --tls x509:" + dir);
	EXPECT_EQ(r.exitCode, 1);
	EXPECT_NE(r.output.find("ca-cert.pem"), std::string::npos) << r.output;
	::rmdir(dir.c_str());
}

// SIGTERM while a peer holds a half-sent frame: the seeder stops and exits (1: stopped)
// instead of waiting for the frame.
TEST(Seed, HonoursSigtermWhileAPeerHoldsAHalfSentFrame)
{
	REQUIRE_FERRY();
	auto seed = Background::start({"--log-level", "warn", "seed", "--tls", "insecure", "--listen",
				       "tcp:127.0.0.1:0", "--size-mib", "4", "--write-mbps", "10"});
	ASSERT_TRUE(seed.ok()) << seed.error().message();
	auto ep = listeningOn(*seed);
	ASSERT_TRUE(ep.ok()) << ep.error().message();
	auto conn = connectTo(*ep, 5000);
	ASSERT_TRUE(conn.ok()) << conn.error().message();
	uint8_t header[kHeaderSize];
	FrameHeader h;
	h.type = MsgType::Hello;
	h.payloadLen = 100;
	encodeHeader(h, header);
	ASSERT_EQ(::send(conn->fd(), header, 10, MSG_NOSIGNAL), 10); // 10 of 24 header bytes
	seed->process.kill(SIGTERM);
	auto rc = seed->process.waitFor(20000);
	ASSERT_TRUE(rc.ok()) << "seed ignored SIGTERM: " << rc.error().message();
	EXPECT_EQ(*rc, 1) << "stopped before any migration: an error exit, not a crash";
}

// Two hosts whose certificates come from different CAs: the leecher is refused during the
// handshake, and the seeder served nothing.
TEST(Tls, MigrationWithTheWrongCaFailsBeforeAnyChunkIsSent)
{
	REQUIRE_FERRY();
	std::string a = tempDir(), b = tempDir();
	ASSERT_EQ(runFerry("make-pki " + a + "/pki").exitCode, 0);
	ASSERT_EQ(runFerry("make-pki " + b + "/pki").exitCode, 0);
	auto seed = Background::start({"--log-level", "warn", "seed", "--tls", "x509:" + a + "/pki", "--listen",
				       "tcp:127.0.0.1:0", "--size-mib", "4", "--write-mbps", "10"});
	ASSERT_TRUE(seed.ok()) << seed.error().message();
	auto ep = listeningOn(*seed);
	ASSERT_TRUE(ep.ok()) << ep.error().message();
	CommandResult leech = runFerry("--log-level warn leech --quiet --reconnect-timeout-s 1 --tls x509:" + b +
			     "/pki --connect " + ep->str());
	EXPECT_NE(leech.exitCode, 0) << leech.output;
	EXPECT_NE(leech.output.find("TLS"), std::string::npos) << leech.output;
	seed->process.kill(SIGTERM);
	auto rc = seed->process.waitFor(20000);
	ASSERT_TRUE(rc.ok()) << rc.error().message();
	auto summary = seed->line(5000);
	ASSERT_TRUE(summary.ok()) << summary.error().message();
	auto j = JsonValue::parse(*summary);
	ASSERT_TRUE(j.ok()) << *summary;
	auto served = j->getInt("chunks_served");
	ASSERT_TRUE(served.ok()) << *summary;
	EXPECT_EQ(*served, 0) << *summary;
	auto state = j->getString("state");
	ASSERT_TRUE(state.ok()) << *summary;
	EXPECT_EQ(*state, "serving") << "tracking never started: " << *summary;
	std::system(("rm -rf " + a + " " + b).c_str());
}

// `ferry seed --file`: a file on disk (an odd size, so the last chunk is partial) is served
// through a shared mapping; a pre-copy leecher verifies the region byte for byte against it.
TEST(SeedFile, ServesTheFileByteForByte)
{
	REQUIRE_FERRY();
	std::string dir = tempDir();
	ASSERT_FALSE(dir.empty());
	const std::string path = dir + "/region.bin";
	{
		FILE *f = std::fopen(path.c_str(), "wb");
		ASSERT_NE(f, nullptr);
		uint64_t x = 0x9e3779b97f4a7c15ull;
		for (size_t i = 0; i < (3u << 20) + 123; i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			std::fputc(int(x & 0xff), f);
		}
		ASSERT_EQ(std::fclose(f), 0);
	}
	std::optional<Background> seed;
	ASSERT_NO_FATAL_FAILURE(seedFileToVerifyingLeech(path, seed));
	std::system(("rm -rf " + dir).c_str());
}

// A sparse file: its holes are sent as zero chunks (found with SEEK_DATA, never read), its
// data as data; the leecher still verifies it byte for byte.
TEST(SeedFile, ServesASparseFileByteForByte)
{
	REQUIRE_FERRY();
	std::string dir = tempDir();
	ASSERT_FALSE(dir.empty());
	const std::string path = dir + "/sparse.bin";
	{
		FILE *f = std::fopen(path.c_str(), "wb");
		ASSERT_NE(f, nullptr);
		ASSERT_EQ(std::fseek(f, 1 << 20, SEEK_SET), 0); // 1 MiB hole, then 256 KiB of data
		for (size_t i = 0; i < (256u << 10); i++)
			std::fputc(int((i * 2654435761u) >> 13) & 0xff, f);
		ASSERT_EQ(std::fclose(f), 0);
		ASSERT_EQ(::truncate(path.c_str(), 4 << 20), 0); // and a hole to 4 MiB
	}
	std::optional<Background> seed;
	ASSERT_NO_FATAL_FAILURE(seedFileToVerifyingLeech(path, seed));
	auto summary = seed->line(5000);
	ASSERT_TRUE(summary.ok()) << summary.error().message();
	auto j = JsonValue::parse(*summary);
	ASSERT_TRUE(j.ok()) << *summary;
	auto zeros = j->getInt("zero_chunks_served");
	ASSERT_TRUE(zeros.ok()) << *summary;
	EXPECT_GT(*zeros, 0) << "the holes went as zero chunks: " << *summary;
	std::system(("rm -rf " + dir).c_str());
}

TEST(SeedFile, RefusesTheExactTrackerAndAMissingFile)
{
	REQUIRE_FERRY();
	CommandResult uffd = runFerry("seed --tls insecure --listen tcp:127.0.0.1:0 --tracker uffd --file /etc/hostname");
	EXPECT_NE(uffd.exitCode, 0);
	EXPECT_NE(uffd.output.find("regular files"), std::string::npos) << uffd.output;
	CommandResult missing = runFerry("seed --tls insecure --listen tcp:127.0.0.1:0 --file /nonexistent/region.bin");
	EXPECT_NE(missing.exitCode, 0);
	EXPECT_NE(missing.output.find("/nonexistent/region.bin"), std::string::npos) << missing.output;
}
