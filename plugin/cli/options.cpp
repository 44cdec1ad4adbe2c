// SPDX-License-Identifier: GPL-2.0-or-later
#include "cli/options.h"

#include <cstdio>

#include <fmt/format.h>

#include "cli/progress.h"

#include "ferry/base/log.h"
#include "ferry/wire/compress.h"

namespace ferry {

namespace {

// --help text of every --finalize option (the policies are in core/finalize/policy.h).
constexpr const char *kSwitchOverHelp =
	"Hybrid mode: at-finalize hands over in the Finalize round trip (the shortest downtime; a "
	"destination lost before it resumes leaves the source suspended, as after any switch-over), "
	"acked waits for a second round trip (SwitchOver) so that such a loss resumes the source";
constexpr const char *kFinalizeHelp =
	"Finalize policy: immediate | threshold | local-minimum | cycle, optionally with "
	"':key=value,...' (deadline, budget, chunks, rounds, max-rounds, patience, margin, "
	"warmup, interval; cycle: hold=off|hot|all, default hot: hold every chunk while the "
	"analyser warms up, then the recently written ones outside low windows)";

constexpr const char *kCompressHelp =
	"Compression of the pre-copy pull: auto (zstd level 1 on a connection only while that moves "
	"the region faster, i.e. the link and not the CPU is the bottleneck), zstd (level 1), "
	"zstd:LEVEL (1..19) or none. Chunks that do not shrink by 1/32 go raw; fault replies are "
	"never compressed";

std::chrono::milliseconds msFromSec(double s) { return std::chrono::milliseconds(int64_t(s * 1000)); }

} // namespace

void printSummary(const JsonValue &summary)
{
	fmt::print("{}\n", summary.toString());
	std::fflush(stdout);
}

int finishLeecher(const LeecherReport &rep)
{
	printSummary(rep.toJson());
	return rep.verified.value_or(true) ? 0 : 3;
}

int reportError(std::string_view cmd, const Error &e)
{
	fmt::print(stderr, "ferry {}: error: {}\n", cmd, e.message());
	return 1;
}

namespace {

// A CLI11 check that accepts exactly what `parse` accepts, with its error message.
template <typename Parse>
CLI::Validator parsedBy(Parse parse, const char *shape)
{
	return CLI::Validator(
		[parse](std::string &v) -> std::string {
			auto r = parse(v);
			return r.ok() ? std::string() : r.error().message();
		},
		shape);
}

} // namespace

CLI::Validator compressionValidator() { return parsedBy(parseCompressionSpec, "none|zstd|zstd:LEVEL"); }

CLI::Validator endpointValidator()
{
	return parsedBy([](const std::string &v) { return parseEndpoint(v); }, "tcp:HOST:PORT|unix:PATH");
}

void TlsArgs::addTo(CLI::App *c)
{
	c->add_option("--tls", spec,
		      "Peer authentication and encryption: x509 (certificates in /etc/pki/ferry: ca-cert.pem, "
		      "server-cert.pem, server-key.pem, client-cert.pem, client-key.pem), x509:DIR, psk:FILE "
		      "(identity:hexkey lines) or insecure (plaintext, anyone may connect)")
		->capture_default_str()
		->check(parsedBy(parseTlsConfig, "x509[:DIR]|psk:FILE|insecure"));
}

Result<std::shared_ptr<const TlsCredentials>> TlsArgs::build(TlsRole role) const
{
	FERRY_ASSIGN(TlsConfig config, parseTlsConfig(spec).context("--tls"));
	if (config.mode == TlsMode::Insecure) {
		FERRY_LOG(Warn, "tls", "--tls insecure: the link is plaintext and any peer is trusted");
		return std::shared_ptr<const TlsCredentials>();
	}
	FERRY_ASSIGN(TlsCredentials creds, TlsCredentials::load(config, role).context("--tls"));
	return std::make_shared<const TlsCredentials>(std::move(creds));
}

void LeecherArgs::addTo(CLI::App *c, const char *verifyHelp, bool linkOptions)
{
	c->add_option("--mode", mode, "hybrid (post-copy faults) or precopy")->capture_default_str()->check(CLI::IsMember({"hybrid", "precopy"}));
	c->add_option("--connections", connections, "Data connections")->capture_default_str()->check(CLI::Range(1, 64));
	c->add_option("--depth", depth, "Chunks in flight per connection")->capture_default_str()->check(CLI::Range(1, 4096));
	c->add_option("--finalize", finalize, kFinalizeHelp)->capture_default_str();
	c->add_option("--deadline-s", deadlineS, "Finalize anyway this long after the first pass over the region ended (no policy finalizes before it)")->capture_default_str()->check(CLI::Range(0.0, 86400.0));
	c->add_option("--sample-ms", sampleMs, "Dirty-rate sampling interval")->capture_default_str()->check(CLI::Range(10.0, 1000.0));
	c->add_option("--reconnect-timeout-s", reconnectTimeoutS, "How long a lost seeder is retried before the migration fails")->capture_default_str()->check(CLI::Range(0.1, 3600.0));
	c->add_option("--switch-over", switchOver, kSwitchOverHelp)->capture_default_str()->check(CLI::IsMember({"at-finalize", "acked"}));
	if (verifyHelp)
		c->add_flag("--verify", verify, verifyHelp);
	c->add_flag("--quiet", quiet, "No progress lines");
	if (linkOptions)
		tls.addTo(c);
	if (linkOptions)
		c->add_option("--compress", compress, "Let the seeder compress the pre-copy pull: auto, zstd (any level) or none (the seeder's --compress decides how)")->capture_default_str()->check(compressionValidator());
}

Result<LeecherOptions> LeecherArgs::build(std::string_view connect) const
{
	LeecherOptions lo;
	FERRY_ASSIGN(lo.seeder, parseEndpoint(connect).context("--connect"));
	if (!quiet) {
		auto printer = std::make_shared<ProgressPrinter>();
		lo.onProgress = [printer](const LeecherProgress &p) { (*printer)(p); };
	}
	if (!parseMigrationMode(mode, &lo.mode))
		return Error::format(EINVAL, "--mode must be hybrid or precopy, not '{}'", mode);
	lo.connections = connections;
	lo.depth = depth;
	lo.finalizePolicy = finalize;
	lo.policy.deadlineSec = deadlineS;
	lo.policy.sampleIntervalSec = sampleMs / 1000;
	lo.sampleInterval = std::chrono::milliseconds(int64_t(sampleMs));
	lo.reconnectTimeout = msFromSec(reconnectTimeoutS);
	lo.verify = verify;
	lo.switchOverAtFinalize = switchOver != "acked";
	FERRY_ASSIGN(CompressionSpec spec, parseCompressionSpec(compress).context("--compress"));
	lo.compression = spec.enabled();
	FERRY_ASSIGN(lo.tls, tls.build(TlsRole::Client));
	return lo;
}

std::vector<std::string> LeecherArgs::toArgs() const
{
	std::vector<std::string> a = {"--mode", mode, "--connections", std::to_string(connections),
				      "--depth", std::to_string(depth), "--finalize", finalize,
				      "--deadline-s", fmt::format("{}", deadlineS), "--sample-ms",
				      fmt::format("{}", sampleMs), "--reconnect-timeout-s",
				      fmt::format("{}", reconnectTimeoutS), "--compress", compress, "--tls", tls.spec,
				      "--switch-over", switchOver};
	if (verify)
		a.push_back("--verify");
	if (quiet)
		a.push_back("--quiet");
	return a;
}

void SeederArgs::addTo(CLI::App *c, bool linkOptions)
{
	if (linkOptions)
		tls.addTo(c);
	c->add_option("--chunk-kib", chunkKib, "Chunk size (a power of two >= 4)")->capture_default_str()->check(CLI::Range(4u, 65536u));
	if (linkOptions)
		c->add_option("--reconnect-timeout-s", reconnectTimeoutS, "Pre-copy: stop tracking and leave the source as it was when its leecher is gone this long (after the switch-over the source is kept, whatever this says)")->capture_default_str()->check(CLI::Range(0.1, 3600.0));
	c->add_option("--rollback-timeout-s", rollbackTimeoutS, "Resume the source if the destination vanishes after finalize but before the switch-over")->capture_default_str()->check(CLI::Range(0.1, 3600.0));
	c->add_option("--compress", compress, kCompressHelp)->capture_default_str()->check(compressionValidator());
}

Result<SeederOptions> SeederArgs::build() const
{
	if (chunkKib < 4 || (chunkKib & (chunkKib - 1)))
		return Error(EINVAL, "--chunk-kib must be a power of two >= 4");
	SeederOptions so;
	so.chunkSize = chunkKib * 1024;
	so.rollbackTimeout = msFromSec(rollbackTimeoutS);
	so.reconnectTimeout = msFromSec(reconnectTimeoutS);
	FERRY_ASSIGN(so.compression, parseCompressionSpec(compress).context("--compress"));
	FERRY_ASSIGN(so.tls, tls.build(TlsRole::Server));
	return so;
}

std::vector<std::string> SeederArgs::toArgs() const
{
	return {"--chunk-kib", std::to_string(chunkKib), "--rollback-timeout-s", fmt::format("{}", rollbackTimeoutS),
		"--reconnect-timeout-s", fmt::format("{}", reconnectTimeoutS),
		"--compress", compress, "--tls", tls.spec};
}

void SourceAppArgs::addTo(CLI::App *c)
{
	c->add_option("--size-mib", sizeMib, "Region size")->capture_default_str()->check(CLI::Range(0.004, 1048576.0));
	c->add_option("--write-mbps", writeMbps, "Application write rate, MB/s of 4 KiB pages")->capture_default_str()->check(CLI::Range(0.0, 100000.0));
	c->add_option("--pattern", pattern, "random or seq")->capture_default_str()->check(CLI::IsMember({"random", "seq"}));
	c->add_option("--fill", fill, "Fraction of the region holding data at start (rest zero)")->capture_default_str()->check(CLI::Range(0.0, 1.0));
	c->add_option("--fill-kind", fillKind, "That data: random (incompressible) or text (compresses like logs)")->capture_default_str()->check(CLI::IsMember({"random", "text"}));
	c->add_option("--seed", seed, "Random seed of the application")->capture_default_str();
	c->add_option("--period-s", periodS, "Cyclic writes: period in seconds (0 = constant rate)")->capture_default_str()->check(CLI::Range(0.0, 3600.0));
	c->add_option("--duty", duty, "Cyclic writes: fraction of the period at --write-mbps")->capture_default_str()->check(CLI::Range(0.0, 1.0));
	c->add_option("--low-mbps", lowMbps, "Cyclic writes: rate in the low phase")->capture_default_str()->check(CLI::Range(0.0, 100000.0));
	c->add_option("--phase", phase, "Cyclic writes: starting phase, 0..1")->capture_default_str()->check(CLI::Range(0.0, 1.0));
}

SourceAppOptions SourceAppArgs::build() const
{
	SourceAppOptions o;
	o.size = (uint64_t(sizeMib * 1024 * 1024) + 4095) & ~uint64_t(4095);
	o.writeMBps = writeMbps;
	o.sequential = pattern == "seq";
	o.fill = fill;
	o.textFill = fillKind == "text";
	o.seed = seed;
	o.periodSec = periodS;
	o.duty = duty;
	o.lowMBps = lowMbps;
	o.phase = phase;
	return o;
}

std::vector<std::string> SourceAppArgs::toArgs() const
{
	return {"--size-mib", fmt::format("{}", sizeMib), "--write-mbps", fmt::format("{}", writeMbps),
		"--pattern", pattern, "--fill", fmt::format("{}", fill), "--fill-kind", fillKind,
		"--seed", std::to_string(seed), "--period-s", fmt::format("{}", periodS),
		"--duty", fmt::format("{}", duty), "--low-mbps", fmt::format("{}", lowMbps),
		"--phase", fmt::format("{}", phase)};
}

} // namespace ferry
