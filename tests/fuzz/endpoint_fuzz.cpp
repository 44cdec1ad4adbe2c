// SPDX-License-Identifier: GPL-2.0-or-later
// The endpoint parser (parseEndpoint, core/wire/endpoint.cpp) on any string an operator or a
// script might pass as --listen/--connect. The input is the string, NULs included.
//
// Invariants checked beyond "no crash": what it accepts prints (str()) to a string that parses
// back to the same endpoint; hosts and paths stay within their documented forms and bounds;
// a rejection is EINVAL and names the endpoint.
#include <sys/un.h>

#include "ferry/wire/endpoint.h"

#include "fuzz_check.h"

using namespace ferry;

namespace {

bool sameEndpoint(const Endpoint &a, const Endpoint &b)
{
	return a.kind == b.kind && a.host == b.host && a.port == b.port && a.path == b.path;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	std::string_view s = ferry::fuzz::asText({data, size});
	auto e = parseEndpoint(s);
	if (!e.ok()) {
		FUZZ_CHECK(e.error().code() == EINVAL);
		FUZZ_CHECK(e.error().message().starts_with("endpoint \""));
		return 0;
	}
	if (e->kind == Endpoint::Kind::Unix) {
		FUZZ_CHECK(e->host.empty() && e->port == 0);
		FUZZ_CHECK(!e->path.empty() && e->path.size() < sizeof(sockaddr_un::sun_path));
		FUZZ_CHECK(e->path.find('\0') == std::string::npos);
	} else {
		FUZZ_CHECK(e->path.empty());
		FUZZ_CHECK(e->host.size() <= 253);
		for (char c : e->host)
			FUZZ_CHECK(c > ' ' && c < 0x7f && c != '[' && c != ']' && c != '/');
	}
	const std::string printed = e->str();
	auto again = parseEndpoint(printed);
	FUZZ_CHECK(again.ok());
	FUZZ_CHECK(sameEndpoint(*e, *again));
	FUZZ_CHECK(again->str() == printed);
	return 0;
}
