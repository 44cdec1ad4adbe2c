// SPDX-License-Identifier: GPL-2.0-or-later
// The option groups the `ferry` commands share, each registered on a CLI11 subcommand and
// turned into the engine's options in one place: the leecher's (leech, receive, demo), the
// seeder's (seed, migrate, demo) and the demo source application's (seed, demo). A command
// that runs another one as a child process (demo) passes a group on with toArgs().
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "demo/demo_app.h"
#include "ferry/base/result.h"
#include "ferry/roles/leecher.h"
#include "ferry/roles/seeder.h"
#include "ferry/wire/endpoint.h"

namespace ferry {

// What a command's run step returns: the process exit code.
using CommandRunner = std::function<int()>;

// Prints "ferry CMD: error: ..." on stderr; returns exit code 1.
int reportError(std::string_view cmd, const Error &e);

// Adds subcommand `name`: `options(c, args)` registers its options on it, and the runner
// returned calls run(args). CLI11 fills args while parsing, after this returns, so the runner
// shares them.
template <typename Args, typename Run, typename Options>
CommandRunner addCommand(CLI::App &app, std::string name, std::string description, Run run, Options options)
{
	auto args = std::make_shared<Args>();
	options(app.add_subcommand(std::move(name), std::move(description)), *args);
	return [args, run] { return run(*args); };
}

// The last stdout line of a command that ran a role: its JSON summary.
void printSummary(const JsonValue &summary);
// A leecher's report as the summary; exit code 3 when verification found differences.
int finishLeecher(const LeecherReport &rep);

// --compress: accepts exactly what parseCompressionSpec accepts.
CLI::Validator compressionValidator();
// An endpoint option (tcp:HOST:PORT, unix:PATH): accepts exactly what parseEndpoint accepts.
CLI::Validator endpointValidator();

// --tls: how a role authenticates its peer and encrypts the link. x509 (default, the
// directory /etc/pki/ferry in the layout libvirt and QEMU use), x509:DIR, psk:FILE (QEMU's
// keys.psk format) or insecure (plaintext, any peer: loopback demos and benchmarks only).
struct TlsArgs {
	std::string spec = "x509";

	void addTo(CLI::App *c);
	// The credentials of `role`; null for insecure (which is logged as a warning).
	Result<std::shared_ptr<const TlsCredentials>> build(TlsRole role) const;
};

struct LeecherArgs {
	std::string mode = "hybrid";
	unsigned connections = 2;
	unsigned depth = 64;
	std::string finalize = "immediate";
	double deadlineS = 60;
	double sampleMs = 100;
	double reconnectTimeoutS = 15;
	bool verify = false;
	std::string compress = "auto";
	std::string switchOver = "at-finalize"; // hybrid: "at-finalize" (one round trip) or "acked"
	bool quiet = false; // no progress lines on stderr
	TlsArgs tls;

	// `verifyHelp` differs between a region (leech) and a VM (receive); null: no --verify.
	// linkOptions false: the command registers --compress and --tls itself (demo).
	void addTo(CLI::App *c, const char *verifyHelp, bool linkOptions = true);
	// The seeder is `connect` (an endpoint); progress lines go to stderr unless quiet.
	Result<LeecherOptions> build(std::string_view connect) const;
	std::vector<std::string> toArgs() const;
};

struct SeederArgs {
	unsigned chunkKib = 64;
	double rollbackTimeoutS = 10;
	double reconnectTimeoutS = 15;
	std::string compress = "auto";
	TlsArgs tls;

	// linkOptions false: the command registers --tls and --reconnect-timeout-s itself (demo).
	void addTo(CLI::App *c, bool linkOptions = true);
	Result<SeederOptions> build() const;
	std::vector<std::string> toArgs() const;
};

// The demo source application (plugin/demo): size, write rate and pattern, cycles.
struct SourceAppArgs {
	double sizeMib = 256;
	double writeMbps = 50;
	std::string pattern = "random";
	double fill = 1.0;
	std::string fillKind = "random";
	uint64_t seed = 1;
	double periodS = 0, duty = 0.5, lowMbps = 0, phase = 0;

	void addTo(CLI::App *c);
	SourceAppOptions build() const;
	std::vector<std::string> toArgs() const;
};

} // namespace ferry
