// SPDX-License-Identifier: GPL-2.0-or-later
// Writes the seed corpus of every harness: small valid inputs made with ferry's own encoders
// (so they track the format), each followed by near-valid ones that break one rule.
//
//   build/tests/fuzz/fuzz-gen-corpus tests/fuzz/corpus
//
// writes tests/fuzz/corpus/<harness>/<name>. Deterministic: running it again rewrites the same
// files (zstd frames may differ between zstd versions; the harnesses do not depend on their
// exact bytes). Inputs found by fuzzing that must stay in the corpus are named crash-* and are
// not written here.
#include <zstd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "ferry/wire/compress.h"
#include "ferry/wire/protocol.h"

using namespace ferry;

namespace {

using Bytes = std::vector<uint8_t>;

class CorpusWriter {
public:
	explicit CorpusWriter(std::filesystem::path root) : root_(std::move(root)) {}

	void put(const std::string &harness, const std::string &name, const Bytes &b)
	{
		auto dir = root_ / harness;
		std::filesystem::create_directories(dir);
		std::ofstream f(dir / name, std::ios::binary | std::ios::trunc);
		f.write(reinterpret_cast<const char *>(b.data()), std::streamsize(b.size()));
		if (!f) {
			fmt::print(stderr, "cannot write {}\n", (dir / name).string());
			std::exit(1);
		}
		written_++;
	}
	void put(const std::string &harness, const std::string &name, std::string_view text)
	{
		put(harness, name, Bytes(text.begin(), text.end()));
	}
	size_t written() const { return written_; }

private:
	std::filesystem::path root_;
	size_t written_ = 0;
};

Bytes cat(std::initializer_list<Bytes> parts)
{
	Bytes out;
	for (const Bytes &p : parts)
		out.insert(out.end(), p.begin(), p.end());
	return out;
}

// --- protocol ---------------------------------------------------------------------------------

// The geometry of the stream seeds, the same as the harness's default: 65 chunks of 16 KiB,
// the last one 5000 bytes.
constexpr uint64_t kRegion = 64 * 16384 + 5000;
constexpr uint32_t kChunk = 16384;

Bytes header(MsgType t, uint32_t payloadLen, uint64_t requestId = 1)
{
	FrameHeader h;
	h.type = t;
	h.requestId = requestId;
	h.payloadLen = payloadLen;
	Bytes out(kHeaderSize);
	encodeHeader(h, out.data());
	return out;
}

Bytes frame(MsgType t, const Bytes &payload = {}, uint64_t requestId = 1)
{
	return cat({header(t, uint32_t(payload.size()), requestId), payload});
}

Bytes u32(uint32_t v)
{
	Bytes out;
	PayloadWriter(out).u32(v);
	return out;
}

// Compressible, not trivial: a guest page with some structure.
Bytes chunkData(uint32_t index, uint32_t len)
{
	Bytes d(len);
	for (uint32_t i = 0; i < len; i++)
		d[i] = uint8_t((i % 64 < 48) ? 0 : (index * 31 + i / 64));
	return d;
}

Bytes zstdFrame(const Bytes &src)
{
	ChunkCompressor c(1);
	Bytes out(ChunkCompressor::bound(src.size()));
	auto n = c.compress(src, out);
	if (!n) {
		fmt::print(stderr, "seed chunk did not compress\n");
		std::exit(1);
	}
	out.resize(*n);
	return out;
}

void protocolCorpus(CorpusWriter &w)
{
	const std::string p = "protocol";
	HelloMsg hello;
	hello.clientName = "leecher vm1";
	w.put(p, "hello", frame(MsgType::Hello, encode(hello)));
	hello.features = HelloMsg::kFeatureZstd;
	hello.resumeSessionId = 0x1122334455667788;
	w.put(p, "hello-zstd-resume", frame(MsgType::Hello, encode(hello)));
	hello.clientName.assign(kMaxClientNameLen, 'n');
	w.put(p, "hello-longest-name", frame(MsgType::Hello, encode(hello)));
	HelloMsg future;
	future.minVersion = 2;
	future.maxVersion = 7;
	w.put(p, "hello-future-versions", frame(MsgType::Hello, encode(future)));
	Bytes zeroFeatures = cat({encode(HelloMsg{}), u32(0)});
	w.put(p, "hello-zero-features", frame(MsgType::Hello, zeroFeatures));

	HelloReplyMsg reply;
	reply.sessionId = 42;
	reply.regionSize = kRegion;
	reply.chunkSize = kChunk;
	reply.flags = HelloReplyMsg::kFlagTracking | HelloReplyMsg::kFlagZstd;
	const Bytes replyFrame = frame(MsgType::HelloReply, encode(reply));
	w.put(p, "helloreply", replyFrame);
	HelloReplyMsg widest = reply;
	widest.regionSize = 0xffffffffull;
	widest.chunkSize = 1;
	w.put(p, "helloreply-most-chunks", frame(MsgType::HelloReply, encode(widest)));
	HelloReplyMsg pages64 = reply;
	pages64.regionSize = 3 * 64 * kWirePageSize;
	pages64.chunkSize = 64 * kWirePageSize;
	w.put(p, "helloreply-64-pages",
	    cat({frame(MsgType::HelloReply, encode(pages64)),
		 frame(MsgType::GetPages, encode(GetPagesMsg{2, kAllPages}))}));

	const ChunkGeometry g{kRegion, kChunk};
	const Bytes data3 = chunkData(3, kChunk);
	const Bytes packed5 = zstdFrame(chunkData(5, kChunk));
	const Bytes last = chunkData(64, g.chunkLength(64));
	DirtyListMsg dirty{{1, 3, 64}, {0x1, 0xf, kAllPages}};
	FinalizedMsg fin{1700000000000000000ull, {0, 2}, {0x2, 0x8}};
	Bytes pagesPayload = cat({encode(GetPagesMsg{7, 0x5}), Bytes(2 * kWirePageSize, 0x33)});

	// A leecher's view of a session, and a seeder's.
	w.put(p, "session-from-seeder",
	    cat({replyFrame, frame(MsgType::TrackStarted, encode(TrackStartedMsg{{{6, 2}, {10, 4}}})),
		 frame(MsgType::Chunk, cat({u32(3), data3}), 2),
		 frame(MsgType::ChunkZero, u32(4), 3),
		 frame(MsgType::ChunkZstd, cat({u32(5), packed5}), 4),
		 frame(MsgType::Chunk, cat({u32(64), last}), 5),
		 frame(MsgType::DirtyList, encode(dirty), 6),
		 frame(MsgType::Pages, pagesPayload, 7),
		 frame(MsgType::Finalized, encode(fin), 8),
		 frame(MsgType::SwitchOverAck, {}, 9),
		 frame(MsgType::Pong, encode(PingMsg{123456789}), 10),
		 frame(MsgType::DoneAck, {}, 11)}));
	w.put(p, "session-from-leecher",
	    cat({frame(MsgType::Hello, encode(HelloMsg{1, 1, 0, "vm1", HelloMsg::kFeatureZstd})),
		 frame(MsgType::TrackStart, {}, 2), frame(MsgType::GetChunk, encode(GetChunkMsg{9}), 3),
		 frame(MsgType::GetRange, encode(GetRangeMsg{10, 20}), 4),
		 frame(MsgType::GetDirty, {}, 5),
		 frame(MsgType::GetPages, encode(GetPagesMsg{3, 0x9}), 6),
		 frame(MsgType::Finalize, {}, 7), frame(MsgType::SwitchOver, {}, 8),
		 frame(MsgType::Finalize, encode(FinalizeMsg{FinalizeMsg::kFlagSwitchOver}), 10),
		 frame(MsgType::Ping, encode(PingMsg{987654321}), 9), frame(MsgType::Done, {}, 10)}));
	w.put(p, "error", frame(MsgType::Error, encode(ErrorMsg{EIO, "seeder: read chunk 3: Input/output error"})));
	w.put(p, "error-control-chars", frame(MsgType::Error, encode(ErrorMsg{-5, "line\nbreak\x1b[31m"})));
	w.put(p, "dirtylist-empty", frame(MsgType::DirtyList, encode(DirtyListMsg{})));
	w.put(p, "chunkzstd-alone", frame(MsgType::ChunkZstd, cat({u32(5), packed5})));

	// Near-valid: one rule broken each.
	Bytes badMagic = frame(MsgType::Ping, encode(PingMsg{1}));
	badMagic[0] = 'X';
	w.put(p, "bad-magic", badMagic);
	Bytes v2 = frame(MsgType::Ping, encode(PingMsg{1}));
	v2[4] = 2;
	w.put(p, "bad-version", v2);
	Bytes reserved = frame(MsgType::Done);
	reserved[20] = 1;
	w.put(p, "bad-reserved", reserved);
	Bytes unknown = frame(MsgType::Done);
	unknown[6] = 23;
	w.put(p, "bad-type", unknown);
	w.put(p, "truncated-header", Bytes(replyFrame.begin(), replyFrame.begin() + 20));
	w.put(p, "ping-too-long", frame(MsgType::Ping, Bytes(9, 0)));
	w.put(p, "dirtylist-not-increasing",
	    frame(MsgType::DirtyList, encode(DirtyListMsg{{5, 5}, {1, 1}})));
	w.put(p, "dirtylist-zero-mask", frame(MsgType::DirtyList, encode(DirtyListMsg{{5}, {0}})));
	w.put(p, "dirtylist-count-lies", frame(MsgType::DirtyList, cat({u32(1000), u32(1)})));
	w.put(p, "getchunk-out-of-range", frame(MsgType::GetChunk, encode(GetChunkMsg{65})));
	w.put(p, "getrange-too-many", frame(MsgType::GetRange, encode(GetRangeMsg{0, kMaxRangeChunks + 1})));
	w.put(p, "getrange-past-end", frame(MsgType::GetRange, encode(GetRangeMsg{60, 6})));
	w.put(p, "getpages-beyond-chunk", frame(MsgType::GetPages, encode(GetPagesMsg{1, 0x10})));
	w.put(p, "getpages-last-chunk", frame(MsgType::GetPages, encode(GetPagesMsg{64, 0x1})));
	w.put(p, "chunk-wrong-length", frame(MsgType::Chunk, cat({u32(64), data3})));
	w.put(p, "chunkzstd-not-smaller", frame(MsgType::ChunkZstd, cat({u32(64), last})));
	w.put(p, "pages-wrong-length", frame(MsgType::Pages, cat({encode(GetPagesMsg{7, 0x7}), Bytes(kWirePageSize, 0)})));
	w.put(p, "helloreply-zero-chunk", frame(MsgType::HelloReply, encode(HelloReplyMsg{1, 1, kRegion, 0, 0})));
	w.put(p, "helloreply-too-many-chunks",
	    frame(MsgType::HelloReply, encode(HelloReplyMsg{1, 1, 0x100000000ull, 1, 0})));
	Bytes corrupt = packed5;
	corrupt[corrupt.size() / 2] ^= 0xff;
	w.put(p, "chunkzstd-corrupt", frame(MsgType::ChunkZstd, cat({u32(5), corrupt})));
	w.put(p, "payload-beyond-limit", header(MsgType::DirtyList, (64u << 20) + 1));
}

// --- compress ---------------------------------------------------------------------------------

Bytes selector(size_t chunkLen)
{
	size_t v = chunkLen - 1;
	return {uint8_t(v), uint8_t(v >> 8), uint8_t(v >> 16)};
}

Bytes zstdWith(const Bytes &src, bool contentSize, bool checksum, int level)
{
	ZSTD_CCtx *c = ZSTD_createCCtx();
	ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level);
	ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, contentSize);
	ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, checksum);
	Bytes out(ZSTD_compressBound(src.size()));
	size_t n = ZSTD_compress2(c, out.data(), out.size(), src.data(), src.size());
	ZSTD_freeCCtx(c);
	if (ZSTD_isError(n)) {
		fmt::print(stderr, "zstd: {}\n", ZSTD_getErrorName(n));
		std::exit(1);
	}
	out.resize(n);
	return out;
}

void compressCorpus(CorpusWriter &w)
{
	const std::string c = "compress";
	const Bytes page = chunkData(1, 4096);
	const Bytes zeros(16384, 0);
	Bytes text;
	for (int i = 0; text.size() < 65536; i++) {
		std::string line = fmt::format("line {} of a guest's page cache, some repetition\n", i);
		text.insert(text.end(), line.begin(), line.end());
	}
	text.resize(65536);
	Bytes mixed = chunkData(7, 32768);
	for (size_t i = 0; i < mixed.size(); i += 7)
		mixed[i] = uint8_t(i * 2654435761u >> 24);

	w.put(c, "page", cat({selector(page.size()), zstdFrame(page)}));
	w.put(c, "zeros-16k", cat({selector(zeros.size()), zstdFrame(zeros)}));
	w.put(c, "text-64k", cat({selector(text.size()), zstdFrame(text)}));
	w.put(c, "mixed-32k-level19", cat({selector(mixed.size()), zstdWith(mixed, true, true, 19)}));
	w.put(c, "no-content-size", cat({selector(page.size()), zstdWith(page, false, true, 1)}));
	w.put(c, "no-checksum", cat({selector(page.size()), zstdWith(page, true, false, 1)}));

	// Near-valid.
	const Bytes good = zstdFrame(page);
	w.put(c, "wrong-length", cat({selector(page.size() - 1), good}));
	w.put(c, "truncated", cat({selector(page.size()), Bytes(good.begin(), good.end() - 5)}));
	w.put(c, "trailing-bytes", cat({selector(page.size()), good, Bytes{0, 1, 2}}));
	Bytes badSum = good;
	badSum.back() ^= 1;
	w.put(c, "bad-checksum", cat({selector(page.size()), badSum}));
	w.put(c, "two-frames", cat({selector(2 * page.size()), good, good}));
	// A skippable frame (magic 0x184D2A50, 4-byte length, content) instead of data.
	w.put(c, "skippable", cat({selector(page.size()), Bytes{0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4}}));
	w.put(c, "empty-frame", selector(page.size()));
}

// --- endpoint ---------------------------------------------------------------------------------

void endpointCorpus(CorpusWriter &w)
{
	const char *valid[] = {
		"tcp:10.0.0.1:4000", "tcp://host.example:1", "localhost:65535", ":0", "[::1]:80",
		"tcp:[fe80::1%eth0]:22", "[::ffff:10.0.0.1]:9", "unix:/run/ferry.sock",
		"unix:///run/ferry.sock", "unix:rel/x.sock", "unix:////run/x.sock",
	};
	const char *nearValid[] = {
		"[[[[2]:707", "tcp:a b:80", "host:65536", "host:", "::1:80", "[::1", "[::1]80",
		"tcp:[]:80", "[1.2.3.4]:80", "[::1%]:80", "unix:", "unix://relative", "tcp:a/b:80",
	};
	int i = 0;
	for (const char *s : valid)
		w.put("endpoint", fmt::format("valid-{:02}", i++), std::string_view(s));
	i = 0;
	for (const char *s : nearValid)
		w.put("endpoint", fmt::format("bad-{:02}", i++), std::string_view(s));
	w.put("endpoint", "nul-in-host", std::string_view("tcp:a\0b:80", 10));
}

// --- qmp --------------------------------------------------------------------------------------

void qmpCorpus(CorpusWriter &w)
{
	const std::string q = "qmp";
	// What QEMU 7.2 sends, line for line (CRLF, as the spec says).
	const std::string greeting =
		R"({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}})"
		"\r\n";
	w.put(q, "greeting-capabilities", greeting + R"({"return": {}, "id": 1})" "\r\n");
	w.put(q, "events",
	    R"({"timestamp": {"seconds": 1700000000, "microseconds": 123456}, "event": "STOP"})" "\r\n"
	    R"({"timestamp": {"seconds": 1700000001, "microseconds": 5}, "event": "RESUME"})" "\r\n"
	    R"({"timestamp": {"seconds": 1700000001, "microseconds": 6}, "event": "MIGRATION", "data": {"status": "completed"}})" "\r\n"
	    R"({"timestamp": {"seconds": 1700000001, "microseconds": 7}, "event": "MIGRATION_PASS", "data": {"pass": 3}})" "\r\n");
	w.put(q, "query-migrate",
	    R"({"return": {"expected-downtime": 300, "status": "active", "setup-time": 2, "total-time": 1234, "ram": {"total": 1073741824, "postcopy-requests": 0, "dirty-sync-count": 2, "multifd-bytes": 0, "pages-per-second": 32000, "downtime-bytes": 0, "page-size": 4096, "remaining": 2048000, "postcopy-bytes": 0, "mbps": 943.5, "transferred": 52428800, "dirty-sync-missed-zero-copy": 0, "precopy-bytes": 52428800, "duplicate": 1000, "dirty-pages-rate": 120, "skipped": 0, "normal-bytes": 52000000, "normal": 12695}}, "id": 7})" "\r\n");
	w.put(q, "query-migrate-none", R"({"return": {}, "id": 3})" "\n");
	w.put(q, "query-migrate-failed",
	    R"({"return": {"status": "failed", "error-desc": "Unable to write to socket: Broken pipe"}, "id": 4})" "\n");
	w.put(q, "query-dirty-rate",
	    R"({"return": {"status": "measured", "sample-pages": 512, "dirty-rate": 108, "mode": "page-sampling", "start-time": 1700000000, "calc-time": 1}, "id": 9})" "\n");
	w.put(q, "error-reply",
	    R"({"id": 2, "error": {"class": "GenericError", "desc": "There's a migration process in progress"}})" "\n");
	w.put(q, "event-then-reply",
	    R"({"event": "MIGRATION", "data": {"status": "setup"}, "timestamp": {"seconds": 1, "microseconds": 2}})" "\n"
	    R"({"return": {"status": "running", "singlestep": false, "running": true}, "id": 5})" "\n");
	// Near-valid.
	w.put(q, "not-an-object", "[1, 2, 3]\n");
	w.put(q, "truncated", R"({"return": {"status": "act)");
	w.put(q, "trailing-garbage", R"({"return": {}} x)" "\n");
	w.put(q, "event-name-not-string", R"({"event": 5, "timestamp": {"seconds": "x"}})" "\n");
	w.put(q, "timestamp-extremes",
	    R"({"event": "STOP", "timestamp": {"seconds": 9223372036854775807, "microseconds": -9223372036854775808}})" "\n");
	w.put(q, "error-without-class", R"({"error": "nope", "id": 1})" "\n");
	w.put(q, "deep-nesting", std::string(40, '[') + std::string(40, ']') + "\n");
	w.put(q, "escapes", R"({"return": {"s": "\u0000\ud83d\ude00\"\\\/\b\f\n\r\t", "n": -0.0e-5, "big": 18446744073709551615}})" "\n");
}

// --- agent ------------------------------------------------------------------------------------

void agentCorpus(CorpusWriter &w)
{
	const std::string a = "agent";
	w.put(a, "ping", "PING");
	w.put(a, "probe", "PROBE");
	w.put(a, "find", "FIND memory-backend-memfd");
	w.put(a, "track", "TRACK 7f3a2c000000 1073741824");
	w.put(a, "guard-0x", "GUARD 0x7f3a2c000000 4096");
	w.put(a, "reply-ping", "OK pid=4242");
	w.put(a, "reply-find", "OK 7f3a2c000000 1073741824 0");
	w.put(a, "reply-find-2-fields", "OK 7f3a2c000000 1073741824");
	w.put(a, "reply-ok", "OK");
	w.put(a, "reply-err", "ERR 22 TRACK: range 0x1000 +0 is empty, not page-aligned or wraps");
	// Near-valid.
	w.put(a, "ping-args", "PING now");
	w.put(a, "probe-args", "PROBE x");
	w.put(a, "track-unaligned", "TRACK 7f3a2c000001 4096");
	w.put(a, "track-wraps", "TRACK fffffffffffff000 8192");
	w.put(a, "track-huge-length", "GUARD 1000 99999999999999999999999");
	w.put(a, "find-empty", "FIND ");
	w.put(a, "reply-err-bad-errno", "ERR 99999 oops");
	w.put(a, "reply-err-no-message", "ERR 5");
	w.put(a, "reply-ping-zero", "OK pid=0");
	w.put(a, "reply-find-double-space", "OK 7f3a2c000000  1073741824");
	w.put(a, "reply-ko", "KO 1");
}

} // namespace

int main(int argc, char **argv)
{
	if (argc != 2) {
		fmt::print(stderr, "usage: {} CORPUS_DIR\n", argv[0]);
		return 2;
	}
	CorpusWriter w(argv[1]);
	protocolCorpus(w);
	compressCorpus(w);
	endpointCorpus(w);
	qmpCorpus(w);
	agentCorpus(w);
	fmt::print("wrote {} seed inputs under {}\n", w.written(), argv[1]);
	return 0;
}
