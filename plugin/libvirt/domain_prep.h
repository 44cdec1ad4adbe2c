// SPDX-License-Identifier: GPL-2.0-or-later
// Domain preparation for ferry mode, and the check ferryd uses to choose a mode.
//
// A domain is ferry-ready when its definition has
//   <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
//     (guest RAM in a shared memfd that ferry's agent can hand over, and that QEMU's
//     x-ignore-shared leaves out of its own stream; no NUMA cell may override it with
//     memAccess='private'),
//   <qemu:env name='LD_PRELOAD'> holding ferry's agent shim (libferry-agent.so) and
//   <qemu:env name='FERRY_AGENT_SOCKET'> saying where it listens,
//   <qemu:arg value='-qmp'/><qemu:arg value='unix:PATH,server=on,wait=off'/>, a QMP socket of
//     ferry's own (one client per QMP socket; libvirt holds the other).
// The qemu: elements live in libvirt's QEMU namespace (http://libvirt.org/schemas/domain/qemu/1.0),
// which only the QEMU driver keeps; they travel with a migration. Every XML edit goes through
// libxml2 (xml_doc.h), never through string edits.
//
// ferry's sockets for domain NAME live in one directory (default /run/ferry, which QEMU's
// user must be able to write): NAME.qmp and NAME-agent.sock. A `-qmp unix:` socket named
// NAME.qmp is recognised as ferry's in any directory; other -qmp sockets belong to someone else
// and are kept.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "ferry/base/result.h"
#include "libvirt/connection.h"

namespace ferry::virt {

inline constexpr const char *kQemuNamespace = "http://libvirt.org/schemas/domain/qemu/1.0";
// ferryd's socket_dir + "/qemu" (daemon::DaemonConfig::domainSocketDir), which ferryd makes
// QEMU's user's.
inline constexpr const char *kDefaultDomainSocketDir = "/run/ferry/qemu";

struct PrepareOptions {
	std::string socketDir = kDefaultDomainSocketDir;
	std::string agentLib; // "": agentLibraryPath() (plugin/vm)
};

std::string ferryQmpSocket(const std::string &socketDir, const std::string &domain);   // DIR/NAME.qmp
std::string ferryAgentSocket(const std::string &socketDir, const std::string &domain); // DIR/NAME-agent.sock

struct Preparation {
	std::string domain;               // <name>
	std::string before;               // the input as libxml2 writes it: diff it against xml
	std::string xml;                  // the prepared domain; the input itself when no change
	std::vector<std::string> changes; // one readable line per change; empty: already prepared

	bool changed() const { return !changes.empty(); }
};

// A pure function of its input: the domain XML made ferry-ready. Idempotent:
// prepareDomainXml(p.xml) of its result p changes nothing. EINVAL for XML that is not a
// <domain> with a <name>, or that binds the prefix "qemu" to another namespace.
Result<Preparation> prepareDomainXml(std::string_view xml, const PrepareOptions &opts);

// What a domain XML has of ferry's needs, and the paths it names. Pure; EINVAL only for XML
// that is not a <domain>.
struct FerryReadiness {
	std::string domain;
	bool memfd = false;          // <memoryBacking><source type='memfd'/>
	bool shared = false;         // <access mode='shared'/>, no NUMA cell memAccess='private'
	bool agentPreload = false;   // LD_PRELOAD has a libferry-agent*.so entry
	bool agentSocketSet = false; // FERRY_AGENT_SOCKET set
	bool privateQmp = false;     // a -qmp unix: socket
	std::string agentLibrary;    // the LD_PRELOAD entry that is ferry's agent
	std::string agentSocket;     // FERRY_AGENT_SOCKET's value
	std::string qmpSocket;       // NAME.qmp if present, else the first -qmp unix: path

	bool ready() const { return memfd && shared && agentPreload && agentSocketSet && privateQmp; }
	// Readable, one per missing piece: "no memfd memory backing", "memory not shared", ...
	std::vector<std::string> missing() const;
};
Result<FerryReadiness> inspectDomain(std::string_view xml);

// What prepareDomain did to a defined domain.
struct DomainPreparation {
	Preparation prep;
	bool active = false;     // running: the change takes effect after shutdown and start
	bool persistent = false; // before: a transient domain becomes persistent when defined
	bool defined = false;    // the new XML was defined (false: dry run or already prepared)
};

// Prepares domain `name` of `conn`: reads its persistent definition (with secrets, so that
// defining it again loses none), prepares it and, unless dryRun, defines the result and reads
// it back. A driver that dropped part of it (only the QEMU driver keeps <qemu:commandline>)
// is ENOTSUP naming what is missing; the definition it did keep stays defined. A dry run reads
// the XML without secrets: it is for showing.
Result<DomainPreparation> prepareDomain(const Connection &conn, const std::string &name,
					const PrepareOptions &opts, bool dryRun);

} // namespace ferry::virt
