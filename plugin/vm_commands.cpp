// SPDX-License-Identifier: GPL-2.0-or-later
// `ferry migrate` (source host) and `ferry receive` (destination host): ferry's VM migration
// between two running QEMUs prepared for it (shared memfd RAM, agent shim preloaded; see
// docs/vm-migration.md).
#include <csignal>
#include <memory>

#include "commands.h"
#include "ferry/wire/compress.h"
#include "ferry/base/log.h"
#include "progress.h"
#include "vm_migration.h"

namespace ferry {

namespace {

int fail(std::string_view cmd, const Error &e)
{
	fmt::print(stderr, "ferry {}: error: {}\n", cmd, e.message());
	return 1;
}

struct MigrateArgs {
	std::string qmp, agent, listen = "tcp:0.0.0.0:7070", deviceUri, ramMatch = "memory-backend-memfd";
	unsigned chunkKib = 16; // guests write 4 KiB pages at random: small chunks re-send less
	double rollbackTimeoutS = 10;
	bool keepSource = false;
	std::string compress = "zstd";
};

int runMigrate(const MigrateArgs &a)
{
	auto ep = parseEndpoint(a.listen);
	if (!ep.ok())
		return fail("migrate", ep.error().context("--listen"));
	auto qmp = QmpClient::connect(a.qmp, std::chrono::seconds(10));
	if (!qmp.ok())
		return fail("migrate", qmp.error().context("source QMP"));
	pid_t pid;
	{
		auto agent = AgentClient::connect(a.agent, std::chrono::seconds(10));
		if (!agent.ok())
			return fail("migrate", agent.error().context("source agent"));
		auto p = agent->ping();
		if (!p.ok())
			return fail("migrate", p.error().context("source agent"));
		pid = *p;
	}
	SeederOptions so;
	so.chunkSize = a.chunkKib * 1024;
	so.rollbackTimeout = std::chrono::milliseconds(int64_t(a.rollbackTimeoutS * 1000));
	so.compression = parseCompressionSpec(a.compress).value(); // checked by the CLI
	auto seeder = VmSeeder::create({&*qmp, a.agent, a.ramMatch}, pid, a.deviceUri, so, !a.keepSource);
	if (!seeder.ok())
		return fail("migrate", seeder.error());
	auto listener = Listener::listen(*ep);
	if (!listener.ok())
		return fail("migrate", listener.error().context("listen"));
	fmt::print("listening on {}\n", listener->boundEndpoint().str());
	std::fflush(stdout);
	Status st = (*seeder)->serve(*listener);
	SeederStats s = (*seeder)->seeder().stats();
	fmt::print("{{\"role\":\"source\",\"state\":\"{}\",\"ram_bytes\":{},\"chunks_served\":{},\"zero_chunks_served\":{},"
		   "\"bytes_sent\":{},\"final_dirty_chunks\":{},\"compressed_chunks\":{},\"compressed_raw_bytes\":{},"
		   "\"compressed_wire_bytes\":{}}}\n",
		   seederStateName((*seeder)->seeder().state()), (*seeder)->ramSize(), s.chunksServed,
		   s.zeroChunksServed, s.bytesSent, s.finalDirtyChunks, s.compressedChunks, s.compressedRawBytes,
		   s.compressedWireBytes);
	if (!st.ok())
		return fail("migrate", st.error());
	return 0;
}

struct ReceiveArgs {
	std::string qmp, agent, connect, incoming, ramMatch = "memory-backend-memfd";
	std::string mode = "hybrid", finalize = "immediate";
	unsigned connections = 2, depth = 256;
	double deadlineS = 60;
	bool verify = false, quiet = false;
	std::string compress = "zstd";
};

int runReceive(const ReceiveArgs &a)
{
	auto ep = parseEndpoint(a.connect);
	if (!ep.ok())
		return fail("receive", ep.error().context("--connect"));
	auto qmp = QmpClient::connect(a.qmp, std::chrono::seconds(10));
	if (!qmp.ok())
		return fail("receive", qmp.error().context("destination QMP"));
	if (auto st = configureFerryCapabilities(*qmp); !st.ok())
		return fail("receive", st.error().context("destination QMP"));
	if (auto st = qmp->migrateIncoming(a.incoming); !st.ok())
		return fail("receive", st.error().context("migrate-incoming"));
	LeecherOptions lo;
	lo.seeder = *ep;
	if (!parseMigrationMode(a.mode, &lo.mode))
		return fail("receive", Error(EINVAL, "--mode must be hybrid or precopy"));
	lo.connections = a.connections;
	lo.depth = a.depth;
	lo.finalizePolicy = a.finalize;
	lo.policy.deadlineSec = a.deadlineS;
	lo.verify = a.verify;
	lo.compression = parseCompressionSpec(a.compress).value().enabled(); // checked by the CLI
	auto printer = std::make_shared<ProgressPrinter>(a.quiet);
	lo.onProgress = [printer](const LeecherProgress &p) { (*printer)(p); };
	VmReceiveOptions ro;
	ro.verify = a.verify;
	ro.configure = false;
	auto rep = receiveVm({&*qmp, a.agent, a.ramMatch}, lo, ro);
	if (!rep.ok())
		return fail("receive", rep.error());
	fmt::print("{}\n", rep->toJson());
	return rep->verified.value_or(true) ? 0 : 3;
}

} // namespace

CommandRunner addMigrateCommand(CLI::App &app)
{
	auto a = std::make_shared<MigrateArgs>();
	auto *c = app.add_subcommand("migrate", "Source host: serve a running QEMU's RAM to `ferry receive`, stop it at finalize, "
						"send device state at the switch-over");
	c->add_option("--qmp", a->qmp, "Source QEMU's QMP socket")->required();
	c->add_option("--agent", a->agent, "Source QEMU's agent socket (FERRY_AGENT_SOCKET)")->required();
	c->add_option("--listen", a->listen, "Where `ferry receive` connects")->capture_default_str();
	c->add_option("--device-uri", a->deviceUri, "Destination QEMU's incoming URI for device state (e.g. tcp:dest:4444)")->required();
	c->add_option("--ram-match", a->ramMatch, "Substring of guest RAM's mapping path")->capture_default_str();
	c->add_option("--chunk-kib", a->chunkKib, "Chunk size")->capture_default_str();
	c->add_option("--rollback-timeout-s", a->rollbackTimeoutS, "Resume the source if the destination vanishes before the switch-over")->capture_default_str();
	c->add_flag("--keep-source", a->keepSource, "Leave the source QEMU paused at the end instead of quitting it");
	c->add_option("--compress", a->compress, kCompressHelp)->capture_default_str()->check(compressionValidator());
	return [a] { return runMigrate(*a); };
}

CommandRunner addReceiveCommand(CLI::App &app)
{
	auto a = std::make_shared<ReceiveArgs>();
	auto *c = app.add_subcommand("receive", "Destination host: pull a running VM's RAM into a waiting QEMU (-incoming defer -S)");
	c->add_option("--qmp", a->qmp, "Destination QEMU's QMP socket")->required();
	c->add_option("--agent", a->agent, "Destination QEMU's agent socket (FERRY_AGENT_SOCKET)")->required();
	c->add_option("--connect", a->connect, "`ferry migrate` endpoint")->required();
	c->add_option("--incoming", a->incoming, "URI the destination QEMU listens on for device state")->required();
	c->add_option("--ram-match", a->ramMatch, "Substring of guest RAM's mapping path")->capture_default_str();
	c->add_option("--mode", a->mode, "hybrid or precopy")->capture_default_str()->check(CLI::IsMember({"hybrid", "precopy"}));
	c->add_option("--finalize", a->finalize, kFinalizeHelp)->capture_default_str();
	c->add_option("--deadline-s", a->deadlineS, "Finalize anyway after this long")->capture_default_str();
	c->add_option("--connections", a->connections, "Data connections")->capture_default_str();
	c->add_option("--depth", a->depth, "Chunks in flight per connection")->capture_default_str();
	c->add_flag("--verify", a->verify, "Keep the guest paused until its RAM was compared byte for byte with the source");
	c->add_option("--compress", a->compress, "Ask `ferry migrate` to compress the pre-copy pull: zstd (any level) or none")->capture_default_str()->check(compressionValidator());
	c->add_flag("--quiet", a->quiet, "No progress lines");
	return [a] { return runReceive(*a); };
}

} // namespace ferry
