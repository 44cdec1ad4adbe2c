// SPDX-License-Identifier: GPL-2.0-or-later
// `ferry doctor [DOMAIN...]`: what this host still lacks for `virsh migrate` through ferry.
// Each check prints one line, "ok", "warn" or "FAIL", and a failed one names its fix. Exit
// status 1 when anything failed.
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "cli/commands.h"
#include "daemon/config.h"
#include "daemon/control.h"
#include "daemon/peer_link.h"
#include "libvirt/connection.h"
#include "libvirt/domain_prep.h"

namespace ferry {

namespace {

struct DoctorArgs {
	std::vector<std::string> domains;
	std::string config{daemon::kDefaultConfigPath};
	std::string qemuConf = "/etc/libvirt/qemu.conf";
	bool skipPeers = false;
};

class Report {
public:
	void ok(std::string_view what) { fmt::print("ok    {}\n", what); }
	void warn(std::string_view what, std::string_view fix)
	{
		fmt::print("warn  {}\n      {}\n", what, fix);
	}
	void fail(std::string_view what, std::string_view fix)
	{
		failed_ = true;
		fmt::print("FAIL  {}\n      fix: {}\n", what, fix);
	}
	bool failed() const { return failed_; }

private:
	bool failed_ = false;
};

// The `user = "..."` of qemu.conf (the user QEMU runs as); Debian's default when not set.
std::string qemuUser(const std::string &qemuConf)
{
	std::ifstream in(qemuConf);
	std::string line, user = "libvirt-qemu";
	std::regex re(R"(^\s*user\s*=\s*"([^"]*)\")");
	std::smatch m;
	while (std::getline(in, line))
		if (std::regex_search(line, m, re))
			user = m[1];
	return user;
}

// Whether uid/gid may write (and search) a directory, by its mode bits (no ACLs).
bool mayWrite(const struct stat &st, uid_t uid, gid_t gid)
{
	if (uid == 0)
		return true;
	if (st.st_uid == uid)
		return (st.st_mode & S_IWUSR) && (st.st_mode & S_IXUSR);
	if (st.st_gid == gid)
		return (st.st_mode & S_IWGRP) && (st.st_mode & S_IXGRP);
	return (st.st_mode & S_IWOTH) && (st.st_mode & S_IXOTH);
}

void checkUserfaultfd(Report &r, const std::string &user, uid_t uid, gid_t gid)
{
	if (uid == 0) {
		r.ok(fmt::format("QEMU runs as root: its userfaultfds work (ferry mode's agent, post-copy)"));
		return;
	}
	std::ifstream sysctl("/proc/sys/vm/unprivileged_userfaultfd");
	int unprivileged = 0;
	sysctl >> unprivileged;
	if (unprivileged == 1) {
		r.ok(fmt::format("vm.unprivileged_userfaultfd=1: QEMU's user {} may create userfaultfds", user));
		return;
	}
	struct stat st;
	if (::stat("/dev/userfaultfd", &st) == 0) {
		// Opened O_RDWR: read and write permission both.
		bool open = (st.st_uid == uid && (st.st_mode & S_IRUSR) && (st.st_mode & S_IWUSR)) ||
			    (st.st_gid == gid && (st.st_mode & S_IRGRP) && (st.st_mode & S_IWGRP)) ||
			    ((st.st_mode & S_IROTH) && (st.st_mode & S_IWOTH));
		if (open) {
			r.ok(fmt::format("/dev/userfaultfd is open to QEMU's user {}", user));
			return;
		}
		r.fail(fmt::format("QEMU's user {} may not create userfaultfds (vm.unprivileged_userfaultfd=0, "
				   "/dev/userfaultfd mode {:o} owner {}:{})",
				   user, st.st_mode & 07777, st.st_uid, st.st_gid),
		       fmt::format("one of: `chgrp kvm /dev/userfaultfd && chmod 0660 /dev/userfaultfd` (with {} in "
				   "group kvm; a udev rule keeps it); `sysctl vm.unprivileged_userfaultfd=1`; or "
				   "user = \"root\" in qemu.conf",
				   user));
		return;
	}
	r.fail(fmt::format("QEMU's user {} may not create userfaultfds and there is no /dev/userfaultfd", user),
	       "`sysctl vm.unprivileged_userfaultfd=1`, or user = \"root\" in qemu.conf (kernels >= 6.1 have /dev/userfaultfd)");
}

int runDoctor(const DoctorArgs &a)
{
	Report r;
	auto config = daemon::loadDaemonConfig(a.config);
	if (!config.ok()) {
		r.fail(fmt::format("ferryd configuration: {}", config.error().message()),
		       fmt::format("write {} (docs/libvirt.md has an example); `ferryd --check` validates it", a.config));
		return 1;
	}
	r.ok(fmt::format("configuration {}: host '{}', {} peer(s)", a.config, config->name, config->peers.size()));

	auto creds = daemon::PeerCredentials::load(config->tls);
	if (!creds.ok())
		r.fail(fmt::format("TLS material: {}", creds.error().message()),
		       "install the CA and this host's certificates (docs/libvirt.md, \"TLS\"), or `ferry make-pki DIR` to try");
	else if (config->tls.mode == TlsMode::Insecure)
		r.warn("peer links are plaintext (\"tls\": \"insecure\")", "anyone who reaches ferryd's port can inject a migration stream; use x509 or psk");
	else
		r.ok(fmt::format("TLS material: {}", creds->client->describe()));

	JsonValue ping = JsonValue::object();
	ping.set("cmd", "ping");
	if (auto reply = daemon::askDaemon(config->controlSocketPath(), ping, 2000); reply.ok())
		r.ok(fmt::format("ferryd is running ({})", config->controlSocketPath()));
	else
		r.fail(reply.error().message(), "start it: `ferryd` (systemd: plugin/daemon/ferryd.service)");

	std::string user = qemuUser(a.qemuConf);
	struct passwd *pw = ::getpwnam(user.c_str());
	if (!pw) {
		r.fail(fmt::format("QEMU's user '{}' (from {}) does not exist", user, a.qemuConf), "fix user = in qemu.conf");
	} else {
		std::string incoming = config->migrateDir(config->name);
		struct stat st;
		if (::stat(incoming.c_str(), &st) != 0)
			r.fail(fmt::format("{} does not exist: incoming QEMUs cannot listen there", incoming),
			       "start ferryd (it creates it)");
		else if (!mayWrite(st, pw->pw_uid, pw->pw_gid))
			r.fail(fmt::format("{} is not writable by QEMU's user {}", incoming, user),
			       fmt::format("\"qemu_user\": \"{}\" in {} (ferryd then owns it to that user)", user, a.config));
		else
			r.ok(fmt::format("incoming migrations can listen in {} (QEMU user {})", incoming, user));
		checkUserfaultfd(r, user, pw->pw_uid, pw->pw_gid);
	}

	if (!a.skipPeers && creds.ok()) {
		for (const daemon::PeerConfig &p : config->peers) {
			auto conn = daemon::callPeer(*config, p, *creds);
			if (conn.ok())
				r.ok(fmt::format("peer '{}' at {} answers over {}", p.name, p.address.str(),
						 conn->encrypted() ? "TLS (" + conn->peerIdentity() + ")" : "plaintext"));
			else
				r.fail(conn.error().message(), "check the peer's ferryd, its address and port, the firewall, "
							       "and that both hosts' certificates share a CA");
		}
	}

	auto lv = virt::Connection::open(config->libvirtUri);
	if (!lv.ok()) {
		r.fail(fmt::format("libvirt at {}: {}", config->libvirtUri, lv.error().message()), "start libvirtd");
		return 1;
	}
	r.ok(fmt::format("libvirt at {} answers", config->libvirtUri));
	for (const std::string &name : a.domains) {
		auto dom = lv->lookup(name);
		if (!dom.ok()) {
			r.fail(dom.error().message(), "name a domain `virsh list --all` shows");
			continue;
		}
		auto xml = dom->xml();
		auto ready = xml.ok() ? virt::inspectDomain(*xml) : Result<virt::FerryReadiness>(xml.error());
		if (!ready.ok())
			r.fail(fmt::format("domain {}: {}", name, ready.error().message()), "-");
		else if (ready->ready())
			r.ok(fmt::format("domain {}: prepared for ferry (agent {}, qmp {})", name, ready->agentSocket,
					 ready->qmpSocket));
		else
			r.warn(fmt::format("domain {}: not prepared for ferry ({}): it migrates in stream mode", name,
					   fmt::join(ready->missing(), ", ")),
			       fmt::format("`ferry prepare-domain {}`, then shut it down and start it", name));
	}
	return r.failed() ? 1 : 0;
}

} // namespace

CommandRunner addDoctorCommand(CLI::App &app)
{
	auto options = [](CLI::App *c, DoctorArgs &a) {
		c->add_option("domains", a.domains, "Domains to check for ferry mode");
		c->add_option("--config", a.config, "ferryd's configuration")->capture_default_str();
		c->add_option("--qemu-conf", a.qemuConf, "libvirt's qemu.conf (for QEMU's user)")->capture_default_str();
		c->add_flag("--skip-peers", a.skipPeers, "Do not call the peers");
	};
	return addCommand<DoctorArgs>(app, "doctor",
				      "What this host still lacks for `virsh migrate` through ferry "
				      "(ferryd, TLS, sockets, userfaultfd, peers, domains)",
				      runDoctor, options);
}

} // namespace ferry
