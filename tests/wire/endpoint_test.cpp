// SPDX-License-Identifier: GPL-2.0-or-later
#include <gtest/gtest.h>

#include "ferry/wire/endpoint.h"

using namespace ferry;

TEST(Endpoint, ParsesEveryAcceptedForm)
{
	struct Case {
		const char *in;
		Endpoint::Kind kind;
		const char *host;
		uint16_t port;
		const char *path;
		const char *str;
	};
	const Case cases[] = {
		{"tcp:10.0.0.1:4000", Endpoint::Kind::Tcp, "10.0.0.1", 4000, "", "tcp:10.0.0.1:4000"},
		{"tcp://host.example:1", Endpoint::Kind::Tcp, "host.example", 1, "", "tcp:host.example:1"},
		{"localhost:65535", Endpoint::Kind::Tcp, "localhost", 65535, "", "tcp:localhost:65535"},
		{":0", Endpoint::Kind::Tcp, "", 0, "", "tcp::0"},
		{"[::1]:80", Endpoint::Kind::Tcp, "::1", 80, "", "tcp:[::1]:80"},
		{"tcp:[fe80::1]:80", Endpoint::Kind::Tcp, "fe80::1", 80, "", "tcp:[fe80::1]:80"},
		{"unix:/run/ferry.sock", Endpoint::Kind::Unix, "", 0, "/run/ferry.sock",
		 "unix:/run/ferry.sock"},
		{"unix:///run/ferry.sock", Endpoint::Kind::Unix, "", 0, "/run/ferry.sock",
		 "unix:/run/ferry.sock"},
		{"unix:rel/x.sock", Endpoint::Kind::Unix, "", 0, "rel/x.sock", "unix:rel/x.sock"},
		{"unix:////run/x.sock", Endpoint::Kind::Unix, "", 0, "//run/x.sock", "unix:////run/x.sock"},
		{"[fe80::1%eth0]:22", Endpoint::Kind::Tcp, "fe80::1%eth0", 22, "", "tcp:[fe80::1%eth0]:22"},
		{"[::ffff:10.0.0.1]:9", Endpoint::Kind::Tcp, "::ffff:10.0.0.1", 9, "", "tcp:[::ffff:10.0.0.1]:9"},
		{"tcp:vm_1-a.example:7", Endpoint::Kind::Tcp, "vm_1-a.example", 7, "", "tcp:vm_1-a.example:7"},
	};
	for (const Case &c : cases) {
		SCOPED_TRACE(c.in);
		auto e = parseEndpoint(c.in);
		ASSERT_TRUE(e.ok()) << e.error().message();
		EXPECT_EQ(e->kind, c.kind);
		EXPECT_EQ(e->host, c.host);
		EXPECT_EQ(e->port, c.port);
		EXPECT_EQ(e->path, c.path);
		EXPECT_EQ(e->str(), c.str);
		// str() is itself parseable into the same endpoint.
		auto again = parseEndpoint(e->str());
		ASSERT_TRUE(again.ok());
		EXPECT_EQ(again->str(), e->str());
	}
}

TEST(Endpoint, RejectsMalformedInputWithAReason)
{
	const char *bad[] = {"", "nohost", "host:", "host:65536", "host:12x", "host:-1", "::1:80",
			     "[::1", "[::1]80", "unix:", "unix://relative", "tcp:"};
	for (const char *s : bad) {
		SCOPED_TRACE(s);
		auto e = parseEndpoint(s);
		ASSERT_FALSE(e.ok()) << "accepted as " << e->str();
		EXPECT_EQ(e.error().code(), EINVAL);
		EXPECT_NE(e.error().message().find("endpoint"), std::string::npos);
	}
	auto longPath = parseEndpoint("unix:/" + std::string(200, 'p'));
	ASSERT_FALSE(longPath.ok());
	EXPECT_NE(longPath.error().message().find("longer than"), std::string::npos);
}

TEST(Endpoint, RejectsHostsThatWouldNotPrintBackTheSame)
{
	// Each of these used to be accepted, and its str() parsed to another endpoint or not at
	// all (tests/fuzz/endpoint_fuzz.cpp checks that round trip on every input it makes).
	const std::string bad[] = {
		"[[[[2]:707", "tcp:a b:80", "tcp:[]:80", "[localhost]:80", "[1.2.3.4]:80",
		"[::1%]:80", "[::1%a b]:80", "[::1]]:80", "tcp:a]:80", "tcp:a[:80", "tcp:a/b:80",
		"tcp:a\tb:80", "tcp:a%b:80", "tcp:h\xc3\xa9:80", std::string("[::1\0x]:80", 10),
		std::string("tcp:a\0b:80", 10), "tcp:" + std::string(254, 'h') + ":80",
	};
	for (const std::string &s : bad) {
		SCOPED_TRACE(s);
		auto e = parseEndpoint(s);
		ASSERT_FALSE(e.ok()) << "accepted as " << e->str();
		EXPECT_EQ(e.error().code(), EINVAL);
	}
	auto longest = parseEndpoint("tcp:" + std::string(253, 'h') + ":80");
	ASSERT_TRUE(longest.ok()) << longest.error().message();
}

TEST(Endpoint, PrintsAUnixPathWithLeadingSlashesSoItParsesBack)
{
	Endpoint e = Endpoint::unixPath("//run/x.sock");
	auto again = parseEndpoint(e.str());
	ASSERT_TRUE(again.ok()) << again.error().message();
	EXPECT_EQ(again->path, e.path);
}
