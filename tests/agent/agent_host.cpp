// SPDX-License-Identifier: GPL-2.0-or-later
// Stand-in for QEMU in the agent tests: maps two shared memfds ("ferry-agent-host-ram",
// 4 MiB, and "ferry-agent-host-rom", 64 KiB), fills them with hostPattern() and obeys
// commands on stdin, one per line:
//   W <page> <byte>  writes <byte> at offset 123 of RAM page <page>   -> "OK\n"
//   R <page>         copies RAM page <page> out (a read of the page)  -> "DATA\n" + the page
//   Q                exits 0
// With --close-fds the memfds are closed once mapped (only the mappings keep them alive).
// At start it prints "READY <pid> <ram-hex> <ram-size> <rom-hex> <rom-size>\n".
// It never links ferry: whatever the agent does happens through LD_PRELOAD only.
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "host_pattern.h"

namespace {

constexpr size_t kRamSize = 4u << 20;
constexpr size_t kRomSize = 64u << 10;

bool writeAll(const void *data, size_t len)
{
	const auto *p = static_cast<const char *>(data);
	while (len > 0) {
		ssize_t n = ::write(STDOUT_FILENO, p, len);
		if (n <= 0)
			return false;
		p += n;
		len -= static_cast<size_t>(n);
	}
	return true;
}

bool say(const std::string &s)
{
	return writeAll(s.data(), s.size());
}

bool gCloseFds = false;

uint8_t *mapMemfd(const char *name, size_t size, unsigned region)
{
	int fd = ::memfd_create(name, MFD_CLOEXEC);
	if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(size)) != 0)
		return nullptr;
	void *p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	// By default the fd stays open, as QEMU keeps its memfd open (the agent may use it).
	if (gCloseFds)
		::close(fd);
	if (p == MAP_FAILED)
		return nullptr;
	auto *bytes = static_cast<uint8_t *>(p);
	for (size_t i = 0; i < size; i++)
		bytes[i] = ferry::test::hostPattern(region, i);
	return bytes;
}

} // namespace

int main(int argc, char **argv)
{
	gCloseFds = argc > 1 && std::strcmp(argv[1], "--close-fds") == 0;
	::alarm(120); // never outlive a broken test
	const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
	uint8_t *ram = mapMemfd("ferry-agent-host-ram", kRamSize, 0);
	uint8_t *rom = mapMemfd("ferry-agent-host-rom", kRomSize, 1);
	if (!ram || !rom) {
		std::perror("agent_host: memfd");
		return 1;
	}
	char ready[160];
	std::snprintf(ready, sizeof(ready), "READY %d %lx %zu %lx %zu\n", ::getpid(),
		      reinterpret_cast<unsigned long>(ram), kRamSize,
		      reinterpret_cast<unsigned long>(rom), kRomSize);
	if (!say(ready))
		return 1;

	std::vector<uint8_t> buf(page);
	char line[128];
	while (std::fgets(line, sizeof(line), stdin)) {
		size_t pg = 0;
		unsigned value = 0;
		if (line[0] == 'Q')
			return 0;
		if (std::sscanf(line, "W %zu %u", &pg, &value) == 2 && pg < kRamSize / page) {
			ram[pg * page + 123] = static_cast<uint8_t>(value);
			if (!say("OK\n"))
				return 1;
		} else if (std::sscanf(line, "R %zu", &pg) == 1 && pg < kRamSize / page) {
			std::memcpy(buf.data(), ram + pg * page, page);
			if (!say("DATA\n") || !writeAll(buf.data(), page))
				return 1;
		} else if (!say("ERR\n")) {
			return 1;
		}
	}
	return 0;
}
