// SPDX-License-Identifier: GPL-2.0-or-later
// Stand-in for libFuzzer in builds without it (gcc, -Dfuzz=disabled). A harness linked with
// this main() runs as a unit test, so every CI run pushes the seed corpus and a few thousand
// mutations of it through the decoders and the harness's invariants.
//
//   fuzz-NAME [--mutations N] [--seed S] PATH...
//
// A PATH is a corpus directory (its regular files, in name order) or one file (e.g. a crash
// input to replay). The mutations are deterministic: the same corpus, N and S make the same
// inputs on every machine (splitmix64 and integer arithmetic only, no <random>
// distributions, whose output is implementation-defined). When an input crashes the harness
// (a failed FUZZ_CHECK aborts), the driver names it and saves it to ./crash-fuzz-NAME, which
// both this driver and the libFuzzer binary replay.
#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "fuzz_check.h"

namespace {

struct Input {
	std::string name;
	std::vector<uint8_t> bytes;
};

// What the crash handler reports and saves. A signal handler can reach nothing but globals;
// they are written only by the main loop, before each run.
struct Current {
	const uint8_t *data = nullptr;
	size_t size = 0;
	char what[512] = {};
	char savePath[512] = {};
};
Current gCurrent;

void writeStr(int fd, const char *s)
{
	size_t n = std::strlen(s);
	while (n > 0) {
		ssize_t w = ::write(fd, s, n);
		if (w <= 0)
			return;
		s += w;
		n -= size_t(w);
	}
}

// Async-signal-safe: write(2), open(2), close(2) and re-raising under the default action.
void onCrash(int sig)
{
	writeStr(STDERR_FILENO, "fuzz driver: crashed on ");
	writeStr(STDERR_FILENO, gCurrent.what);
	writeStr(STDERR_FILENO, "\n");
	int fd = ::open(gCurrent.savePath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd >= 0) {
		size_t off = 0;
		while (off < gCurrent.size) {
			ssize_t w = ::write(fd, gCurrent.data + off, gCurrent.size - off);
			if (w <= 0)
				break;
			off += size_t(w);
		}
		::close(fd);
		writeStr(STDERR_FILENO, "fuzz driver: input saved to ");
		writeStr(STDERR_FILENO, gCurrent.savePath);
		writeStr(STDERR_FILENO, "\n");
	}
	::signal(sig, SIG_DFL);
	::raise(sig);
}

class Rng {
public:
	explicit Rng(uint64_t seed) : s_(seed) {}
	uint64_t next()
	{
		uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
		return z ^ (z >> 31);
	}
	// Uniform enough in [0, n) for n > 0.
	size_t below(size_t n) { return size_t(next() % n); }

private:
	uint64_t s_;
};

// Bytes that mean something to one of the decoders: length and count boundaries for the
// binary protocol, separators and brackets for the text ones.
constexpr uint8_t kInterestingBytes[] = {0,   1,   2,   0x7f, 0x80, 0xff, ' ', ':', '[', ']', '/',
					 '%', '"', '{', '}', ',', '\n', '\r', '\\', '0', '9', 'x'};
constexpr uint64_t kInterestingInts[] = {0,          1,          2,          3,
					 4,          12,         24,         255,
					 256,        4095,       4096,       4097,
					 0x7fff,     0xffff,     0x10000,    1024,
					 1025,       0x7fffffff, 0x80000000, 0xffffffff,
					 1ull << 30, 64u << 20,  ~0ull,      0x8000000000000000ull};

void mutateOnce(Rng &rng, std::vector<uint8_t> &b, const std::vector<Input> &corpus, size_t maxLen)
{
	auto pos = [&](size_t extra = 0) { return rng.below(b.size() + extra); };
	switch (rng.below(11)) {
	case 0: // flip one bit
		if (!b.empty())
			b[pos()] ^= uint8_t(1u << rng.below(8));
		break;
	case 1: // random byte
		if (!b.empty())
			b[pos()] = uint8_t(rng.next());
		break;
	case 2: // interesting byte
		if (!b.empty())
			b[pos()] = kInterestingBytes[rng.below(std::size(kInterestingBytes))];
		break;
	case 3: { // interesting little-endian integer of 2, 4 or 8 bytes
		size_t width = size_t(2) << rng.below(3);
		if (b.size() < width)
			break;
		size_t at = rng.below(b.size() - width + 1);
		uint64_t v = kInterestingInts[rng.below(std::size(kInterestingInts))];
		for (size_t i = 0; i < width; i++)
			b[at + i] = uint8_t(v >> (8 * i));
		break;
	}
	case 4: // small delta on a byte (lengths and counts off by a little)
		if (!b.empty())
			b[pos()] += uint8_t(int(rng.below(9)) - 4);
		break;
	case 5: { // insert random bytes
		size_t n = 1 + rng.below(8), at = pos(1);
		std::vector<uint8_t> ins(n);
		for (auto &c : ins)
			c = uint8_t(rng.next());
		b.insert(b.begin() + ptrdiff_t(at), ins.begin(), ins.end());
		break;
	}
	case 6: // insert an interesting byte
		b.insert(b.begin() + ptrdiff_t(pos(1)), kInterestingBytes[rng.below(std::size(kInterestingBytes))]);
		break;
	case 7: { // erase a range
		if (b.empty())
			break;
		size_t at = pos(), n = 1 + rng.below(std::min<size_t>(16, b.size() - at));
		b.erase(b.begin() + ptrdiff_t(at), b.begin() + ptrdiff_t(at + n));
		break;
	}
	case 8: { // copy a range to another place (repeated fields, list entries)
		if (b.empty())
			break;
		size_t from = pos(), n = 1 + rng.below(std::min<size_t>(32, b.size() - from));
		std::vector<uint8_t> piece(b.begin() + ptrdiff_t(from), b.begin() + ptrdiff_t(from + n));
		b.insert(b.begin() + ptrdiff_t(pos(1)), piece.begin(), piece.end());
		break;
	}
	case 9: // truncate
		b.resize(pos(1));
		break;
	case 10: { // splice: our head, another input's tail
		const auto &other = corpus[rng.below(corpus.size())].bytes;
		size_t at = pos(1);
		size_t from = rng.below(other.size() + 1);
		b.resize(at);
		b.insert(b.end(), other.begin() + ptrdiff_t(from), other.end());
		break;
	}
	}
	if (b.size() > maxLen)
		b.resize(maxLen);
}

bool readFile(const std::filesystem::path &p, std::vector<uint8_t> &out)
{
	std::ifstream f(p, std::ios::binary);
	if (!f)
		return false;
	out.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
	return !f.bad();
}

// Runs one input from an exactly sized heap copy, so that a read past its end is a read past
// an allocation (which ASan, when the build has it, reports).
void runOne(const std::vector<uint8_t> &bytes, const std::string &what)
{
	std::unique_ptr<uint8_t[]> copy(new uint8_t[std::max<size_t>(bytes.size(), 1)]);
	std::copy(bytes.begin(), bytes.end(), copy.get());
	gCurrent.data = copy.get();
	gCurrent.size = bytes.size();
	fmt::format_to_n(gCurrent.what, sizeof(gCurrent.what) - 1, "{}", what);
	gCurrent.what[std::min(what.size(), sizeof(gCurrent.what) - 1)] = '\0';
	LLVMFuzzerTestOneInput(copy.get(), bytes.size());
}

int usage(const char *argv0)
{
	fmt::print(stderr, "usage: {} [--mutations N] [--seed S] CORPUS_DIR_OR_FILE...\n", argv0);
	return 2;
}

} // namespace

int main(int argc, char **argv)
{
	const std::string self = std::filesystem::path(argv[0]).filename().string();
	uint64_t mutations = 4000;
	uint64_t seed = 1;
	std::vector<std::filesystem::path> paths;
	for (int i = 1; i < argc; i++) {
		std::string_view a = argv[i];
		if (a == "--mutations" && i + 1 < argc) {
			mutations = std::strtoull(argv[++i], nullptr, 0);
		} else if (a == "--seed" && i + 1 < argc) {
			seed = std::strtoull(argv[++i], nullptr, 0);
		} else if (a.starts_with("-")) {
			return usage(argv[0]);
		} else {
			paths.emplace_back(a);
		}
	}
	if (paths.empty())
		return usage(argv[0]);

	std::vector<Input> corpus;
	for (const auto &p : paths) {
		std::vector<std::filesystem::path> files;
		std::error_code ec;
		if (std::filesystem::is_directory(p, ec)) {
			for (const auto &e : std::filesystem::directory_iterator(p, ec))
				if (e.is_regular_file())
					files.push_back(e.path());
			std::sort(files.begin(), files.end());
		} else {
			files.push_back(p);
		}
		for (const auto &f : files) {
			Input in{f.string(), {}};
			if (!readFile(f, in.bytes)) {
				fmt::print(stderr, "{}: cannot read {}\n", self, f.string());
				return 1;
			}
			corpus.push_back(std::move(in));
		}
	}
	// A corpus that went missing must not turn this test into a silent pass.
	if (corpus.empty()) {
		fmt::print(stderr, "{}: no inputs found\n", self);
		return 1;
	}

	fmt::format_to_n(gCurrent.savePath, sizeof(gCurrent.savePath) - 1, "crash-{}", self);
	struct sigaction sa {};
	sa.sa_handler = onCrash;
	sigemptyset(&sa.sa_mask);
	for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL})
		::sigaction(sig, &sa, nullptr);

	timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	size_t largest = 0;
	for (const Input &in : corpus) {
		runOne(in.bytes, in.name);
		largest = std::max(largest, in.bytes.size());
	}
	const size_t maxLen = std::max<size_t>(4096, 2 * largest);
	Rng rng(seed);
	std::vector<uint8_t> b;
	for (uint64_t m = 0; m < mutations; m++) {
		const Input &base = corpus[rng.below(corpus.size())];
		b = base.bytes;
		for (size_t k = 1 + rng.below(4); k > 0; k--)
			mutateOnce(rng, b, corpus, maxLen);
		runOne(b, fmt::format("mutation {} (seed {}) of {}", m, seed, base.name));
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = double(t1.tv_sec - t0.tv_sec) + double(t1.tv_nsec - t0.tv_nsec) / 1e9;
	fmt::print("{}: {} corpus inputs and {} mutations (seed {}) in {:.2f} s, no failure\n", self,
		   corpus.size(), mutations, seed, secs);
	return 0;
}
