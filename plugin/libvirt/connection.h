// SPDX-License-Identifier: GPL-2.0-or-later
// A thin, move-only C++ layer over libvirt's C API: a connection to a hypervisor and the
// domains it knows. Errors are values carrying libvirt's own message, with errno set from
// libvirt's error code (ENOENT: no such domain; EINVAL: bad XML or operation; EACCES; the
// errno of a failed system call, e.g. ENOENT for a daemon socket that is not there; else EIO).
// libvirt's default error printing to stderr is turned off by the first open().
//
// Threads: a Connection and its Domains may be used from any thread (libvirt locks inside),
// but each object by one thread at a time. libvirt reports its last error per thread, which
// is why every call here turns it into an Error at once.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <libvirt/libvirt.h>

#include "ferry/base/result.h"
#include "libvirt/events.h"

namespace ferry::virt {

// The calling thread's last libvirt error as "what: libvirt's message", errno classified as
// described above. For callers that make a raw libvirt call on Connection::get().
Error lastError(std::string_view what);

// One domain (owns a virDomainPtr). libvirt's domain object holds a reference on its
// connection, so a Domain stays usable after the Connection it came from is dropped.
class Domain {
public:
	Domain() = default;
	explicit Domain(virDomainPtr dom) : dom_(dom) {} // takes ownership
	Domain(Domain &&o) noexcept : dom_(std::exchange(o.dom_, nullptr)) {}
	Domain &operator=(Domain &&o) noexcept;
	Domain(const Domain &) = delete;
	Domain &operator=(const Domain &) = delete;
	~Domain();

	virDomainPtr get() const { return dom_; }
	explicit operator bool() const { return dom_ != nullptr; }

	// Both are read from libvirt's local copy; they cannot fail on a valid domain.
	std::string name() const;
	std::string uuid() const;

	Result<bool> isActive() const;
	Result<bool> isPersistent() const;
	// virDomainGetXMLDesc with virDomainXMLFlags: VIR_DOMAIN_XML_INACTIVE for the persistent
	// definition (what the next start uses), VIR_DOMAIN_XML_SECURE to include secrets (needed
	// to define the XML again without losing them; read-write connections only).
	Result<std::string> xml(unsigned flags = 0) const;
	Result<std::string> inactiveXml() const { return xml(VIR_DOMAIN_XML_INACTIVE); }

	Status suspend();
	Status resume();

private:
	virDomainPtr dom_ = nullptr;
};

// A running domain as listed by Connection::activeDomains().
struct DomainInfo {
	std::string name;
	std::string uuid;
	unsigned id = 0; // the hypervisor's id, valid while the domain runs
};

// A connection to one hypervisor (owns a virConnectPtr).
class Connection {
public:
	Connection() = default;
	Connection(Connection &&o) noexcept
		: conn_(std::exchange(o.conn_, nullptr)), uri_(std::move(o.uri_)),
		  lifecycle_(std::move(o.lifecycle_)) {}
	Connection &operator=(Connection &&o) noexcept;
	Connection(const Connection &) = delete;
	Connection &operator=(const Connection &) = delete;
	~Connection();

	// Opens a read-write connection; "" means "qemu:///system". To receive events, call
	// startEventLoop() first.
	static Result<Connection> open(const std::string &uri);

	virConnectPtr get() const { return conn_; }
	// The URI as the caller gave it ("" resolved): for messages.
	const std::string &uri() const { return uri_; }
	// False once the connection to the daemon is lost (libvirtd restarted, socket closed).
	bool isAlive() const;

	Result<std::vector<DomainInfo>> activeDomains() const;
	// ENOENT when there is no such domain.
	Result<Domain> lookup(const std::string &name) const;
	Result<Domain> lookupUuid(const std::string &uuid) const;
	// virDomainDefineXML: a new persistent domain, or the next-start definition of an
	// existing one (a running domain keeps its live definition until it is restarted).
	Result<Domain> define(const std::string &xml) const;

	// Calls `cb` on the event loop thread for every lifecycle event of every domain of this
	// connection (see events.h for what it may do there). Needs startEventLoop() before open().
	Result<EventRegistration> onLifecycle(LifecycleCallback cb) const;

private:
	explicit Connection(virConnectPtr conn, std::string uri) : conn_(conn), uri_(std::move(uri)) {}

	virConnectPtr conn_ = nullptr;
	std::string uri_;
	// Registered with libvirt on the first onLifecycle(); shared with the registrations.
	mutable std::shared_ptr<LifecycleHub> lifecycle_;
};

} // namespace ferry::virt
