// SPDX-License-Identifier: GPL-2.0-or-later
// `ferry prepare-domain DOM`: makes a libvirt domain's persistent definition ferry-ready
// (memfd shared memory, the agent shim preloaded, a private QMP socket; libvirt/domain_prep.h)
// and defines it. --dry-run shows the change as a unified diff and defines nothing.
#include <sys/mman.h>
#include <unistd.h>

#include "cli/commands.h"
#include "ferry/sys/fd.h"
#include "ferry/sys/process.h"
#include "libvirt/domain_prep.h"
#include "vm/vm_migration.h"

namespace ferry {

namespace {

struct PrepareArgs {
	std::string domain;
	std::string uri;
	bool dryRun = false;
	virt::PrepareOptions opts;
};

Result<UniqueFd> memfdHolding(const char *name, std::string_view content)
{
	UniqueFd fd(::memfd_create(name, MFD_CLOEXEC));
	if (!fd)
		return Error::fromErrno("memfd_create");
	for (size_t done = 0; done < content.size();) {
		ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return Error::fromErrno("write memfd");
		done += n;
	}
	return fd;
}

Result<std::string> readAllFrom(int fd)
{
	std::string out;
	char buf[8192];
	for (off_t off = 0;;) {
		ssize_t n = ::pread(fd, buf, sizeof buf, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return Error::fromErrno("read diff output");
		if (n == 0)
			return out;
		out.append(buf, n);
		off += n;
	}
}

// `diff -u` of the two documents, which reach diff as /dev/fd/N of memfds (no temp files).
// ENOENT when there is no diff program.
Result<std::string> unifiedDiff(const virt::Preparation &p)
{
	FERRY_ASSIGN(UniqueFd before, memfdHolding("before.xml", p.before));
	FERRY_ASSIGN(UniqueFd after, memfdHolding("after.xml", p.xml));
	FERRY_ASSIGN(UniqueFd out, memfdHolding("diff", ""));
	FERRY_ASSIGN(UniqueFd err, memfdHolding("diff-errors", ""));
	SpawnSpec spec;
	spec.exe = "diff";
	spec.searchPath = true;
	spec.args = {"-u", "--label", p.domain + " (now)", "--label", p.domain + " (prepared)",
		     fmt::format("/dev/fd/{}", before.get()), fmt::format("/dev/fd/{}", after.get())};
	spec.inherit = {before.get(), after.get()};
	spec.stdoutFd = out.get();
	spec.stderrFd = err.get();
	FERRY_ASSIGN(ChildProcess child, spawn(spec));
	FERRY_ASSIGN(int status, child.wait());
	// diff: 0 same, 1 different, 2 trouble; 127 from spawn when exec failed.
	if (status == 127)
		return Error(ENOENT, "no diff program");
	if (status != 0 && status != 1) {
		FERRY_ASSIGN(std::string msg, readAllFrom(err.get()));
		return Error::format(EIO, "diff exited with {}: {}", status, msg);
	}
	return readAllFrom(out.get());
}

void printChanges(const virt::Preparation &p)
{
	for (const std::string &c : p.changes)
		fmt::print("  - {}\n", c);
}

int run(const PrepareArgs &a)
{
	const char *cmd = "prepare-domain";
	auto conn = virt::Connection::open(a.uri);
	if (!conn.ok())
		return reportError(cmd, conn.error());
	if (!a.opts.agentLib.empty() && ::access(a.opts.agentLib.c_str(), R_OK) < 0)
		fmt::print(stderr, "ferry {}: warning: {} is not readable on this host; QEMU on the libvirt host must be able to load it\n",
			   cmd, a.opts.agentLib);

	auto r = virt::prepareDomain(*conn, a.domain, a.opts, a.dryRun);
	if (!r.ok())
		return reportError(cmd, r.error());
	const virt::Preparation &p = r->prep;
	if (!p.changed()) {
		fmt::print("domain {} is already prepared for ferry: nothing to change\n", p.domain);
		return 0;
	}

	if (a.dryRun) {
		auto diff = unifiedDiff(p);
		if (diff.ok()) {
			fmt::print("{}", *diff);
		} else {
			fmt::print(stderr, "ferry {}: cannot show a diff ({}); the changes and the new definition:\n", cmd,
				   diff.error().message());
			printChanges(p);
			fmt::print("{}", p.xml);
		}
		fmt::print("dry run: {} change(s) to domain {}, nothing defined\n", p.changes.size(), p.domain);
		return 0;
	}

	fmt::print("domain {} prepared for ferry on {}:\n", p.domain, conn->uri());
	printChanges(p);
	if (!r->persistent)
		fmt::print("{} was transient and is now persistent (defined)\n", p.domain);
	if (r->active)
		fmt::print("{0} is running with its old definition: shut it down and start it again for the change to take "
			   "effect (virsh shutdown {0}; virsh start {0}; a reboot inside the guest keeps the same QEMU)\n",
			   p.domain);
	else
		fmt::print("the change takes effect when {} next starts\n", p.domain);
	if (a.opts.socketDir == virt::kDefaultDomainSocketDir)
		fmt::print("its QEMU creates its sockets in {}, which ferryd makes QEMU's user's (\"qemu_user\" in "
			   "ferryd.conf; `ferry doctor {}` checks)\n",
			   a.opts.socketDir, p.domain);
	else
		fmt::print("QEMU's user must be able to create its sockets in {} (`ferry doctor {}` checks)\n",
			   a.opts.socketDir, p.domain);
	return 0;
}

} // namespace

CommandRunner addPrepareDomainCommand(CLI::App &app)
{
	auto options = [](CLI::App *c, PrepareArgs &a) {
		c->add_option("domain", a.domain, "Name of the libvirt domain")->required();
		c->add_option("--connect,-c", a.uri, "libvirt URI (default qemu:///system)");
		c->add_flag("--dry-run", a.dryRun, "Show the change as a unified diff; define nothing");
		c->add_option("--socket-dir", a.opts.socketDir, "Directory of the domain's QMP and agent sockets")
			->capture_default_str();
		c->add_option("--agent-lib", a.opts.agentLib,
			      fmt::format("The agent shim QEMU preloads (default {})", agentLibraryPath()));
		c->footer("A running domain keeps its old definition until it is shut down and started again.");
	};
	return addCommand<PrepareArgs>(app, "prepare-domain",
				       "Make a libvirt domain's definition ferry-ready: shared memfd RAM, the agent "
				       "shim, a private QMP socket",
				       run, options);
}

} // namespace ferry
