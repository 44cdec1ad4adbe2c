// SPDX-License-Identifier: GPL-2.0-or-later
#include "libvirt/domain_prep.h"

#include <initializer_list>

#include "libvirt/xml_doc.h"
#include "vm/vm_migration.h"

namespace ferry::virt {

namespace {

std::string_view baseName(std::string_view path)
{
	size_t slash = path.rfind('/');
	return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

bool isFerryAgent(std::string_view entry)
{
	std::string_view b = baseName(entry);
	return b.starts_with("libferry-agent") && b.find(".so") != std::string_view::npos;
}

// ld.so separates LD_PRELOAD entries by ':' or spaces. Each entry as {offset, length}.
std::vector<std::pair<size_t, size_t>> preloadEntries(std::string_view v)
{
	std::vector<std::pair<size_t, size_t>> out;
	size_t i = 0;
	while (i < v.size()) {
		size_t end = v.find_first_of(": ", i);
		if (end == std::string_view::npos)
			end = v.size();
		if (end > i)
			out.emplace_back(i, end - i);
		i = end + 1;
	}
	return out;
}

// QEMU's option syntax: a ',' inside a value is written ",,".
std::string escapeCommas(std::string_view s)
{
	std::string out;
	for (char c : s) {
		out += c;
		if (c == ',')
			out += ',';
	}
	return out;
}

// "unix:PATH,server=on,..." -> PATH; "" for anything but a unix socket.
std::string qmpUnixPath(std::string_view v)
{
	if (!v.starts_with("unix:"))
		return "";
	std::string path;
	for (size_t i = 5; i < v.size(); i++) {
		if (v[i] == ',') {
			if (i + 1 < v.size() && v[i + 1] == ',') {
				path += ',';
				i++;
				continue;
			}
			break;
		}
		path += v[i];
	}
	return path;
}

// The qemu: elements of a domain, read the way libvirt reads them: every <qemu:commandline>
// in document order.
struct QemuCommandline {
	std::vector<xmlNodePtr> lines;
	std::vector<xmlNodePtr> args;
	std::vector<xmlNodePtr> envs;

	explicit QemuCommandline(xmlNodePtr root)
	{
		lines = childElements(root, "commandline", kQemuNamespace);
		for (xmlNodePtr l : lines) {
			for (xmlNodePtr a : childElements(l, "arg", kQemuNamespace))
				args.push_back(a);
			for (xmlNodePtr e : childElements(l, "env", kQemuNamespace))
				envs.push_back(e);
		}
	}

	xmlNodePtr env(const char *name) const
	{
		for (xmlNodePtr e : envs)
			if (attribute(e, "name") == name)
				return e;
		return nullptr;
	}

	// The value elements of every `-qmp unix:PATH` pair, with PATH.
	std::vector<std::pair<xmlNodePtr, std::string>> qmpSockets() const
	{
		std::vector<std::pair<xmlNodePtr, std::string>> out;
		for (size_t i = 0; i + 1 < args.size(); i++) {
			std::string flag = attribute(args[i], "value");
			if (flag != "-qmp" && flag != "--qmp")
				continue;
			std::string path = qmpUnixPath(attribute(args[i + 1], "value"));
			if (!path.empty())
				out.emplace_back(args[i + 1], path);
			i++;
		}
		return out;
	}
};

bool isFerryQmp(const std::string &path, const std::string &domain)
{
	return baseName(path) == domain + ".qmp";
}

// The NUMA cells' memory is shared when each cell says so, or inherits a shared domain.
bool memoryShared(xmlNodePtr root, bool domainShared)
{
	xmlNodePtr numa = firstChildElement(firstChildElement(root, "cpu"), "numa");
	std::vector<xmlNodePtr> cells = childElements(numa, "cell");
	if (cells.empty())
		return domainShared;
	for (xmlNodePtr cell : cells) {
		std::string a = attribute(cell, "memAccess");
		if (a.empty() ? !domainShared : a != "shared")
			return false;
	}
	return true;
}

Status checkDomain(const XmlDoc &doc)
{
	xmlNodePtr root = doc.root();
	if (!xmlStrEqual(root->name, xc("domain")) || root->ns)
		return Error::format(EINVAL, "not a domain XML (root element <{}>)",
				     reinterpret_cast<const char *>(root->name));
	return okStatus();
}

xmlNodePtr newElement(xmlDocPtr doc, xmlNsPtr ns, const char *name)
{
	return xmlNewDocNode(doc, ns, xc(name), nullptr);
}

// Inserts `node` into `parent` before its first child named one of `before`, else last.
void insertBefore(xmlNodePtr parent, xmlNodePtr node, std::initializer_list<const char *> before)
{
	for (xmlNodePtr n = parent->children; n; n = n->next)
		for (const char *b : before)
			if (n->type == XML_ELEMENT_NODE && !n->ns && xmlStrEqual(n->name, xc(b))) {
				xmlAddPrevSibling(n, node);
				return;
			}
	xmlAddChild(parent, node);
}

// Inserts `node` after the last of `siblings`, else as `parent`'s first (atStart) or last child.
void insertAfterLast(xmlNodePtr parent, const std::vector<xmlNodePtr> &siblings, xmlNodePtr node, bool atStart)
{
	if (!siblings.empty())
		xmlAddNextSibling(siblings.back(), node);
	else if (atStart && parent->children)
		xmlAddPrevSibling(parent->children, node);
	else
		xmlAddChild(parent, node);
}

// <memoryBacking> with a memfd source and shared access; other children (hugepages, locked,
// discard...) stay.
void prepareMemory(xmlDocPtr doc, xmlNodePtr root, std::vector<std::string> &changes)
{
	xmlNodePtr mb = firstChildElement(root, "memoryBacking");
	bool created = false;
	if (!mb) {
		// libvirt's own order: ...memory, currentMemory, blkiotune, memtune, memoryBacking, vcpu...
		mb = newElement(doc, nullptr, "memoryBacking");
		xmlNodePtr after = nullptr;
		for (xmlNodePtr n = root->children; n; n = n->next)
			for (const char *name : {"name", "uuid", "maxMemory", "memory", "currentMemory", "blkiotune", "memtune"})
				if (n->type == XML_ELEMENT_NODE && !n->ns && xmlStrEqual(n->name, xc(name)))
					after = n;
		if (after)
			xmlAddNextSibling(after, mb);
		else
			insertAfterLast(root, {}, mb, true);
		created = true;
		changes.push_back("memory backing added: memfd source, shared access");
	}

	xmlNodePtr source = firstChildElement(mb, "source");
	if (!source) {
		source = newElement(doc, nullptr, "source");
		xmlNewProp(source, xc("type"), xc("memfd"));
		insertBefore(mb, source, {"access", "allocation", "discard"});
		if (!created)
			changes.push_back("memory backing source: memfd (was the default, anonymous memory)");
	} else if (std::string type = attribute(source, "type"); type != "memfd") {
		xmlSetProp(source, xc("type"), xc("memfd"));
		changes.push_back(fmt::format("memory backing source: memfd (replaces '{}')", type));
	}

	xmlNodePtr access = firstChildElement(mb, "access");
	if (!access) {
		access = newElement(doc, nullptr, "access");
		xmlNewProp(access, xc("mode"), xc("shared"));
		insertBefore(mb, access, {"allocation", "discard"});
		if (!created)
			changes.push_back("memory access: shared (was the default, private)");
	} else if (std::string mode = attribute(access, "mode"); mode != "shared") {
		xmlSetProp(access, xc("mode"), xc("shared"));
		changes.push_back(fmt::format("memory access: shared (replaces '{}')", mode));
	}

	// A NUMA cell's memAccess overrides the domain's.
	xmlNodePtr numa = firstChildElement(firstChildElement(root, "cpu"), "numa");
	for (xmlNodePtr cell : childElements(numa, "cell"))
		if (std::string a = attribute(cell, "memAccess"); !a.empty() && a != "shared") {
			xmlSetProp(cell, xc("memAccess"), xc("shared"));
			changes.push_back(fmt::format("NUMA cell {}: memAccess shared (replaces '{}')",
						      attribute(cell, "id"), a));
		}
}

Result<xmlNsPtr> qemuNamespace(xmlDocPtr doc, xmlNodePtr root, const QemuCommandline &cl)
{
	if (!cl.lines.empty())
		return cl.lines.front()->ns;
	if (xmlNsPtr ns = xmlSearchNsByHref(doc, root, xc(kQemuNamespace)))
		return ns;
	if (xmlNsPtr other = xmlSearchNs(doc, root, xc("qemu")))
		return Error::format(EINVAL, "the prefix 'qemu' is bound to '{}', not to {}",
				     reinterpret_cast<const char *>(other->href), kQemuNamespace);
	xmlNsPtr ns = xmlNewNs(root, xc(kQemuNamespace), xc("qemu"));
	if (!ns)
		return Error(ENOMEM, "libxml2: cannot declare the qemu namespace");
	return ns;
}

Status prepareCommandline(xmlDocPtr doc, xmlNodePtr root, const std::string &domain, const PrepareOptions &opts,
			  const std::string &agentLib, std::vector<std::string> &changes)
{
	QemuCommandline cl(root);
	FERRY_ASSIGN(xmlNsPtr ns, qemuNamespace(doc, root, cl));
	xmlNodePtr line = cl.lines.empty() ? nullptr : cl.lines.front();
	if (!line) {
		line = newElement(doc, ns, "commandline");
		xmlAddChild(root, line);
	}
	auto newArg = [&](const std::string &value) {
		xmlNodePtr a = newElement(doc, ns, "arg");
		xmlNewProp(a, xc("value"), xc(value));
		return a;
	};
	auto newEnv = [&](const char *name, const std::string &value) {
		xmlNodePtr e = newElement(doc, ns, "env");
		xmlNewProp(e, xc("name"), xc(name));
		xmlNewProp(e, xc("value"), xc(value));
		return e;
	};
	// New elements go after the commandline's own args (or first) and envs (or last).
	std::vector<xmlNodePtr> lineArgs = childElements(line, "arg", kQemuNamespace);
	std::vector<xmlNodePtr> lineEnvs = childElements(line, "env", kQemuNamespace);

	// The private QMP socket.
	std::string qmpValue = "unix:" + escapeCommas(ferryQmpSocket(opts.socketDir, domain)) + ",server=on,wait=off";
	std::string others;
	xmlNodePtr ours = nullptr;
	for (const auto &[node, path] : cl.qmpSockets()) {
		if (isFerryQmp(path, domain) && !ours)
			ours = node;
		else
			others += (others.empty() ? "" : ", ") + path;
	}
	if (ours) {
		if (std::string old = attribute(ours, "value"); old != qmpValue) {
			xmlSetProp(ours, xc("value"), xc(qmpValue));
			changes.push_back(fmt::format("private QMP socket: -qmp {} (replaces {})", qmpValue, old));
		}
	} else {
		xmlNodePtr flag = newArg("-qmp");
		insertAfterLast(line, lineArgs, flag, true);
		xmlAddNextSibling(flag, newArg(qmpValue));
		changes.push_back(fmt::format("private QMP socket: -qmp {}{}", qmpValue,
					      others.empty() ? "" : fmt::format(" (the other QMP sockets stay: {})", others)));
	}

	// The agent shim, preloaded.
	if (xmlNodePtr env = cl.env("LD_PRELOAD")) {
		std::string v = attribute(env, "value");
		bool present = false;
		std::pair<size_t, size_t> stale{std::string::npos, 0};
		for (auto [off, len] : preloadEntries(v)) {
			std::string_view entry = std::string_view(v).substr(off, len);
			if (entry == agentLib)
				present = true;
			else if (isFerryAgent(entry) && stale.first == std::string::npos)
				stale = {off, len};
		}
		if (!present) {
			std::string nv = v;
			if (stale.first != std::string::npos) {
				nv.replace(stale.first, stale.second, agentLib);
				changes.push_back(fmt::format("agent shim: LD_PRELOAD {} (replaces {})", agentLib,
							      v.substr(stale.first, stale.second)));
			} else if (preloadEntries(v).empty()) {
				nv = agentLib;
				changes.push_back(fmt::format("agent shim: LD_PRELOAD={}", agentLib));
			} else {
				nv = v + ":" + agentLib;
				changes.push_back(fmt::format("agent shim: LD_PRELOAD {} (after the existing {})", agentLib, v));
			}
			xmlSetProp(env, xc("value"), xc(nv));
		}
	} else {
		xmlNodePtr e = newEnv("LD_PRELOAD", agentLib);
		insertAfterLast(line, lineEnvs, e, false);
		lineEnvs.push_back(e);
		changes.push_back(fmt::format("agent shim: LD_PRELOAD={}", agentLib));
	}

	// Where the agent listens.
	std::string agentSocket = ferryAgentSocket(opts.socketDir, domain);
	if (xmlNodePtr env = cl.env("FERRY_AGENT_SOCKET")) {
		if (std::string old = attribute(env, "value"); old != agentSocket) {
			xmlSetProp(env, xc("value"), xc(agentSocket));
			changes.push_back(fmt::format("agent socket: FERRY_AGENT_SOCKET={} (replaces {})", agentSocket, old));
		}
	} else {
		insertAfterLast(line, lineEnvs, newEnv("FERRY_AGENT_SOCKET", agentSocket), false);
		changes.push_back(fmt::format("agent socket: FERRY_AGENT_SOCKET={}", agentSocket));
	}
	return okStatus();
}

std::string withoutTrailingSlash(std::string dir)
{
	while (dir.size() > 1 && dir.back() == '/')
		dir.pop_back();
	return dir;
}

} // namespace

std::string ferryQmpSocket(const std::string &socketDir, const std::string &domain)
{
	return fmt::format("{}/{}.qmp", withoutTrailingSlash(socketDir), domain);
}

std::string ferryAgentSocket(const std::string &socketDir, const std::string &domain)
{
	return fmt::format("{}/{}-agent.sock", withoutTrailingSlash(socketDir), domain);
}

Result<Preparation> prepareDomainXml(std::string_view xml, const PrepareOptions &opts)
{
	if (!opts.socketDir.starts_with("/"))
		return Error::format(EINVAL, "socket directory '{}' is not an absolute path", opts.socketDir);
	std::string agentLib = opts.agentLib.empty() ? agentLibraryPath() : opts.agentLib;
	if (!agentLib.starts_with("/"))
		return Error::format(EINVAL, "agent library '{}' is not an absolute path", agentLib);

	FERRY_ASSIGN(XmlDoc doc, XmlDoc::parse(xml));
	FERRY_TRY(checkDomain(doc));
	xmlNodePtr root = doc.root();
	Preparation p;
	p.domain = textContent(firstChildElement(root, "name"));
	if (p.domain.empty())
		return Error(EINVAL, "domain XML has no <name>");
	FERRY_ASSIGN(p.before, doc.serialize());

	prepareMemory(doc.get(), root, p.changes);
	FERRY_TRY(prepareCommandline(doc.get(), root, p.domain, opts, agentLib, p.changes));
	if (p.changes.empty()) {
		p.xml = std::string(xml);
	} else {
		FERRY_ASSIGN(p.xml, doc.serialize());
	}
	return p;
}

std::vector<std::string> FerryReadiness::missing() const
{
	std::vector<std::string> out;
	if (!memfd)
		out.push_back("no memfd memory backing");
	if (!shared)
		out.push_back("memory not shared");
	if (!agentPreload)
		out.push_back("no agent preload (LD_PRELOAD)");
	if (!agentSocketSet)
		out.push_back("no agent socket (FERRY_AGENT_SOCKET)");
	if (!privateQmp)
		out.push_back("no private QMP socket (-qmp unix:)");
	return out;
}

Result<FerryReadiness> inspectDomain(std::string_view xml)
{
	FERRY_ASSIGN(XmlDoc doc, XmlDoc::parse(xml));
	FERRY_TRY(checkDomain(doc));
	xmlNodePtr root = doc.root();
	FerryReadiness r;
	r.domain = textContent(firstChildElement(root, "name"));

	xmlNodePtr mb = firstChildElement(root, "memoryBacking");
	r.memfd = attribute(firstChildElement(mb, "source"), "type") == "memfd";
	r.shared = memoryShared(root, attribute(firstChildElement(mb, "access"), "mode") == "shared");

	QemuCommandline cl(root);
	if (xmlNodePtr env = cl.env("LD_PRELOAD")) {
		std::string v = attribute(env, "value");
		for (auto [off, len] : preloadEntries(v))
			if (isFerryAgent(std::string_view(v).substr(off, len))) {
				r.agentPreload = true;
				r.agentLibrary = v.substr(off, len);
				break;
			}
	}
	if (xmlNodePtr env = cl.env("FERRY_AGENT_SOCKET")) {
		r.agentSocket = attribute(env, "value");
		r.agentSocketSet = !r.agentSocket.empty();
	}
	for (const auto &[node, path] : cl.qmpSockets())
		if (!r.privateQmp || isFerryQmp(path, r.domain)) {
			bool ferrys = isFerryQmp(path, r.domain);
			r.privateQmp = true;
			r.qmpSocket = path;
			if (ferrys)
				break;
		}
	return r;
}

Result<DomainPreparation> prepareDomain(const Connection &conn, const std::string &name, const PrepareOptions &opts,
					bool dryRun)
{
	FERRY_ASSIGN(Domain dom, conn.lookup(name));
	DomainPreparation out;
	FERRY_ASSIGN(out.active, dom.isActive());
	FERRY_ASSIGN(out.persistent, dom.isPersistent());
	unsigned flags = VIR_DOMAIN_XML_INACTIVE | (dryRun ? 0 : VIR_DOMAIN_XML_SECURE);
	FERRY_ASSIGN(std::string xml, dom.xml(flags));
	FERRY_ASSIGN(out.prep, prepareDomainXml(xml, opts).context(fmt::format("domain {}", name)));
	if (dryRun || !out.prep.changed())
		return out;

	FERRY_ASSIGN(Domain defined, conn.define(out.prep.xml).context(fmt::format("domain {}", name)));
	out.defined = true;
	FERRY_ASSIGN(std::string back, defined.inactiveXml());
	FERRY_ASSIGN(FerryReadiness r, inspectDomain(back).context(fmt::format("domain {}: read back", name)));
	if (!r.ready()) {
		std::string missing;
		for (const std::string &m : r.missing())
			missing += (missing.empty() ? "" : ", ") + m;
		return Error::format(ENOTSUP,
				     "domain {} on {}: defined, but libvirt dropped part of it ({}); only the "
				     "QEMU driver keeps <qemu:commandline>",
				     name, conn.uri(), missing);
	}
	return out;
}

} // namespace ferry::virt
