// SPDX-License-Identifier: GPL-2.0-or-later
// ferryd's stream relay at its capacity: a migration stream written into the source daemon's
// migrate socket (as libvirtd's QEMU does) comes out of the destination daemon into a stand-in
// for the incoming QEMU, through two in-process daemons over loopback TCP, with mutual TLS
// (BM_StreamRelay/1) and as the plain relay (BM_StreamRelay/0, "tls": "insecure"). The floor is
// the same bytes over one loopback TCP connection with no relay (BM_StreamDirect), which is
// what QEMU's own stream is. On the test bed a guest's stream runs at QEMU's pace, a fraction
// of these figures, so there the relays cannot be told apart (docs/benchmarks.md section 16).
#include <benchmark/benchmark.h>

#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <thread>

#include "daemon/config.h"
#include "daemon/daemon.h"
#include "ferry/base/log.h"
#include "ferry/wire/endpoint.h"
#include "ferry/wire/tls.h"

using namespace ferry;
using namespace ferry::daemon;
namespace fs = std::filesystem;

namespace {

constexpr size_t kStreamBytes = size_t(512) << 20;
constexpr size_t kWriteBytes = size_t(1) << 20; // QEMU's migration thread writes ~1 MiB at a time

// Writes kStreamBytes of a fixed pattern, then half-closes and waits for the far end to close.
void writeStream(int fd, const std::vector<uint8_t> &block)
{
	for (size_t done = 0; done < kStreamBytes;) {
		size_t n = std::min(block.size(), kStreamBytes - done);
		ssize_t w = ::send(fd, block.data(), n, MSG_NOSIGNAL);
		if (w <= 0)
			return;
		done += size_t(w);
	}
	::shutdown(fd, SHUT_WR);
	char c;
	while (::read(fd, &c, 1) > 0) {
	}
}

// Reads to EOF; returns the byte count and whether each block began as the pattern does (a spot check).
size_t readStream(int fd, const std::vector<uint8_t> &block, bool *spotOk)
{
	std::vector<uint8_t> buf(kWriteBytes);
	size_t total = 0, inBlock = 0;
	bool ok = true;
	for (;;) {
		ssize_t n = ::read(fd, buf.data(), buf.size());
		if (n <= 0)
			break;
		// Spot check: the bytes at each block's start (cheap enough not to slow the sink).
		for (ssize_t i = 0; i < n;) {
			if (inBlock == 0 && buf[size_t(i)] != block[0])
				ok = false;
			size_t step = std::min(size_t(n - i), block.size() - inBlock);
			inBlock = (inBlock + step) % block.size();
			i += ssize_t(step);
		}
		total += size_t(n);
	}
	*spotOk = ok;
	return total;
}

std::vector<uint8_t> patternBlock()
{
	std::vector<uint8_t> block(kWriteBytes);
	for (size_t i = 0; i < block.size(); i++)
		block[i] = uint8_t(i * 131 + 7);
	return block;
}

// Streams kStreamBytes from a connection to `to` into one `sink` accepts, once per iteration
// of `state`; then reports the bytes moved (or an error, if any stream arrived short or
// altered).
void streamEachIteration(benchmark::State &state, const Endpoint &to, Listener &sink)
{
	const auto block = patternBlock();
	size_t moved = 0;
	bool intact = true;
	for (auto _ : state) {
		size_t got = 0;
		bool ok = false;
		std::thread qemu([&] {
			auto c = sink.accept(20000);
			if (!c.ok())
				return;
			UniqueFd fd = c->releaseFd();
			got = readStream(fd.get(), block, &ok);
		});
		auto conn = connectTo(to, 5000);
		if (!conn.ok()) {
			qemu.detach();
			state.SkipWithError("connect to the stream's destination");
			return;
		}
		UniqueFd fd = conn->releaseFd();
		writeStream(fd.get(), block);
		qemu.join();
		if (got != kStreamBytes || !ok)
			intact = false;
		moved += got;
	}
	if (!intact)
		state.SkipWithError("the stream did not arrive whole");
	state.SetBytesProcessed(int64_t(moved));
}

struct RunningDaemon {
	std::unique_ptr<Daemon> daemon;
	std::thread thread;
	~RunningDaemon()
	{
		if (thread.joinable()) {
			daemon->stop();
			thread.join();
		}
	}
};

std::unique_ptr<RunningDaemon> startDaemon(DaemonConfig c, std::vector<LocalDomain> domains)
{
	auto creds = PeerCredentials::load(c.tls);
	if (!creds.ok())
		return nullptr;
	auto d = Daemon::create(std::move(c), std::move(*creds),
				[domains]() -> Result<std::vector<LocalDomain>> { return domains; });
	if (!d.ok())
		return nullptr;
	auto r = std::make_unique<RunningDaemon>();
	r->daemon = std::move(*d);
	r->thread = std::thread([p = r.get()] { (void)p->daemon->run(); });
	return r;
}

void BM_StreamRelay(benchmark::State &state)
{
	const bool tls = state.range(0) != 0;
	setLogLevel(LogLevel::Warn);
	char tmpl[] = "/tmp/ferry-relay-bench-XXXXXX";
	if (!::mkdtemp(tmpl)) {
		state.SkipWithError("mkdtemp");
		return;
	}
	const std::string dir = tmpl;
	std::string spec = "insecure";
	if (tls) {
		if (!writeThrowawayPki(dir + "/pki").ok()) {
			state.SkipWithError("writeThrowawayPki");
			return;
		}
		spec = "x509:" + dir + "/pki";
	}
	auto config = [&](const std::string &name, const std::string &peer, uint16_t port) {
		DaemonConfig c;
		c.name = name;
		c.listen = Endpoint::tcp("127.0.0.1", 0);
		c.socketDir = dir + "/" + name;
		c.tls = *parseTlsConfig(spec);
		c.peers.push_back({peer, Endpoint::tcp("127.0.0.1", port)});
		return c;
	};
	auto b = startDaemon(config("b", "a", 1), {});
	if (!b) {
		state.SkipWithError("daemon b");
		return;
	}
	LocalDomain vm;
	vm.name = "vm1";
	auto a = startDaemon(config("a", "b", b->daemon->peerEndpoint().port), {vm});
	if (!a) {
		state.SkipWithError("daemon a");
		return;
	}
	const std::string source = a->daemon->config().migrateSocketPath("b", "vm1");
	const std::string incoming = b->daemon->config().migrateSocketPath("b", "vm1");
	for (int i = 0; i < 500 && !fs::exists(source); i++)
		std::this_thread::sleep_for(std::chrono::milliseconds(10));
	auto sink = Listener::listen(Endpoint::unixPath(incoming), 1);
	if (!sink.ok()) {
		state.SkipWithError("incoming listener");
		return;
	}
	streamEachIteration(state, Endpoint::unixPath(source), *sink);
	state.SetLabel(tls ? "mutual TLS" : "plain relay");
	a.reset();
	b.reset();
	fs::remove_all(dir);
}
BENCHMARK(BM_StreamRelay)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3);

void BM_StreamDirect(benchmark::State &state)
{
	auto l = Listener::listen(Endpoint::tcp("127.0.0.1", 0));
	if (!l.ok()) {
		state.SkipWithError("listen");
		return;
	}
	streamEachIteration(state, l->boundEndpoint(), *l);
}
BENCHMARK(BM_StreamDirect)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3);

} // namespace

BENCHMARK_MAIN();
