// SPDX-License-Identifier: GPL-2.0-or-later
// `ferry doctor [DOMAIN...]`: what this host still lacks for `virsh migrate` through ferry.
// Each check prints one line, "ok", "warn" or "FAIL", and a failed one names its fix. Exit
// status 1 when anything failed.
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <set>

#include "cli/commands.h"
#include "daemon/config.h"
#include "daemon/control.h"
#include "daemon/peer_link.h"
#include "libvirt/connection.h"
#include "libvirt/domain_prep.h"

namespace ferry {

namespace fs = std::filesystem;

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

// qemu.conf without its comments (a path there never holds '#').
std::string qemuConfSettings(const std::string &qemuConf)
{
	std::ifstream in(qemuConf);
	std::string line, text;
	while (std::getline(in, line))
		text += line.substr(0, line.find('#')) + "\n";
	return text;
}

// The `user = "..."` of qemu.conf (the user QEMU runs as); Debian's default when not set.
std::string qemuUser(const std::string &settings)
{
	std::string user = "libvirt-qemu";
	std::regex re(R"((^|\n)\s*user\s*=\s*"([^"]*)\")");
	for (std::sregex_iterator it(settings.begin(), settings.end(), re), end; it != end; ++it)
		user = (*it)[2];
	return user;
}

// The strings of a list setting of qemu.conf (`KEY = [ "a", "b" ]`); nullopt when not set.
std::optional<std::vector<std::string>> qemuConfList(const std::string &settings, const std::string &key)
{
	std::regex re("(^|\n)\\s*" + key + R"(\s*=\s*\[([^\]]*)\])");
	std::smatch m;
	if (!std::regex_search(settings, m, re))
		return std::nullopt;
	std::vector<std::string> items;
	std::string body = m[2];
	std::regex item("\"([^\"]*)\"");
	for (std::sregex_iterator it(body.begin(), body.end(), item), end; it != end; ++it)
		items.push_back((*it)[1]);
	return items;
}

// Whether uid/gid (not root) has every permission of `want` (R_OK, W_OK, X_OK) on what `st`
// describes, by its mode bits as the kernel picks them: the owner's, else the group's (primary
// group only), else the others'. No ACLs.
bool permits(const struct stat &st, uid_t uid, gid_t gid, int want)
{
	const int shift = st.st_uid == uid ? 6 : st.st_gid == gid ? 3 : 0;
	return ((int(st.st_mode) >> shift) & want) == want;
}

// Whether uid/gid may create entries in a directory.
bool mayWrite(const struct stat &st, uid_t uid, gid_t gid)
{
	return uid == 0 || permits(st, uid, gid, W_OK | X_OK);
}

// Whether uid/gid may read the file `path`: every directory on the way searchable and the
// file readable, by their mode bits (no ACLs). Otherwise what stops it.
std::optional<std::string> cannotRead(const fs::path &path, uid_t uid, gid_t gid)
{
	if (uid == 0)
		return std::nullopt;
	struct stat st;
	fs::path dir;
	for (const fs::path &part : path.parent_path()) {
		dir /= part;
		if (::stat(dir.c_str(), &st) != 0)
			return fmt::format("{}: {}", dir.string(), std::strerror(errno));
		if (!permits(st, uid, gid, X_OK))
			return fmt::format("directory {} is not searchable by it (mode {:o})", dir.string(), st.st_mode & 07777);
	}
	if (::stat(path.c_str(), &st) != 0)
		return fmt::format("{}: {}", path.string(), std::strerror(errno));
	if (!permits(st, uid, gid, R_OK))
		return fmt::format("the file is not readable by it (mode {:o})", st.st_mode & 07777);
	return std::nullopt;
}

void checkUserfaultfd(Report &r, const std::string &settings, const std::string &user, uid_t uid, gid_t gid)
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
		if (!permits(st, uid, gid, R_OK | W_OK)) { // it is opened O_RDWR
			r.fail(fmt::format("QEMU's user {} may not create userfaultfds (vm.unprivileged_userfaultfd=0, "
					   "/dev/userfaultfd mode {:o} owner {}:{})",
					   user, st.st_mode & 07777, st.st_uid, st.st_gid),
			       fmt::format("one of: `chgrp kvm /dev/userfaultfd && chmod 0660 /dev/userfaultfd` (with {} "
					   "in group kvm; a udev rule keeps it); `sysctl vm.unprivileged_userfaultfd=1`; "
					   "or user = \"root\" in qemu.conf",
					   user));
			return;
		}
		// libvirt gives each QEMU a private /dev (namespaces = [ "mount" ], the default)
		// holding only the devices of cgroup_device_acl, which by default lacks this one.
		auto namespaces = qemuConfList(settings, "namespaces");
		auto acl = qemuConfList(settings, "cgroup_device_acl");
		bool privateDev = !namespaces || !namespaces->empty();
		if (privateDev && !(acl && std::find(acl->begin(), acl->end(), "/dev/userfaultfd") != acl->end())) {
			r.fail("/dev/userfaultfd is open to QEMU's user " + user +
				       ", but QEMU's private /dev will not hold it (qemu.conf: cgroup_device_acl lacks it)",
			       "in qemu.conf, cgroup_device_acl = [ \"/dev/null\", \"/dev/full\", \"/dev/zero\", "
			       "\"/dev/random\", \"/dev/urandom\", \"/dev/ptmx\", \"/dev/kvm\", \"/dev/userfaultfd\" ] "
			       "(libvirt's defaults and this one), then restart libvirtd");
			return;
		}
		r.ok(fmt::format("/dev/userfaultfd is open to QEMU's user {}{}", user,
				 privateDev ? " and in its private /dev (cgroup_device_acl)" : ""));
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

	const std::string settings = qemuConfSettings(a.qemuConf);
	const std::string user = qemuUser(settings);
	struct passwd *pw = ::getpwnam(user.c_str());
	// Whether QEMU's user may create sockets in `dir`; `fix`: "" for one of ferryd's own.
	auto checkQemuMayCreate = [&](const std::string &dir, std::string_view what, std::string fix = "") {
		if (fix.empty())
			fix = fmt::format("\"qemu_user\": \"{}\" in {} (ferryd then makes it that user's)", user, a.config);
		struct stat st;
		if (::stat(dir.c_str(), &st) != 0)
			r.fail(fmt::format("{} does not exist: {}", dir, what), "start ferryd (it creates it)");
		else if (!mayWrite(st, pw->pw_uid, pw->pw_gid))
			r.fail(fmt::format("{} is not writable by QEMU's user {}: {}", dir, user, what), fix);
		else
			r.ok(fmt::format("QEMU's user {} may create sockets in {}", user, dir));
	};
	if (!pw) {
		r.fail(fmt::format("QEMU's user '{}' (from {}) does not exist", user, a.qemuConf), "fix user = in qemu.conf");
	} else {
		checkQemuMayCreate(config->migrateDir(config->name), "incoming QEMUs cannot listen there");
		checkQemuMayCreate(config->domainSocketDir(), "prepared domains' QEMUs cannot create their sockets there");
		checkUserfaultfd(r, settings, user, pw->pw_uid, pw->pw_gid);
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
		else if (ready->ready()) {
			r.ok(fmt::format("domain {}: prepared for ferry (agent {}, qmp {})", name, ready->agentSocket,
					 ready->qmpSocket));
			std::set<std::string> dirs{fs::path(ready->agentSocket).parent_path(),
						   fs::path(ready->qmpSocket).parent_path()};
			// QEMU's dynamic loader skips a preload it cannot read and starts without the
			// agent: ferry mode would then be declined at every migration.
			if (pw && fs::path(ready->agentLibrary).is_absolute()) {
				if (auto why = cannotRead(ready->agentLibrary, pw->pw_uid, pw->pw_gid))
					r.fail(fmt::format("domain {}: QEMU's user {} cannot load the agent {}: {}", name, user,
							   ready->agentLibrary, *why),
					       fmt::format("install the agent where {} can read it, then `ferry prepare-domain {} "
							   "--agent-lib PATH`",
							   user, name));
				else
					r.ok(fmt::format("domain {}: QEMU's user {} can load the agent {}", name, user,
							 ready->agentLibrary));
			}
			for (const std::string &dir : dirs)
				if (pw && dir != config->domainSocketDir())
					checkQemuMayCreate(dir, fmt::format("domain {} cannot start", name),
							   fmt::format("`ferry prepare-domain {}` (its sockets then go to {}), "
								       "or make {} that user's",
								       name, config->domainSocketDir(), dir));
		} else
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
