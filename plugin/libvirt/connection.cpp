// SPDX-License-Identifier: GPL-2.0-or-later
#include "libvirt/connection.h"

#include <cerrno>
#include <cstdlib>
#include <mutex>

#include <libvirt/virterror.h>

#include "libvirt/virt_init.h"

namespace ferry::virt {

namespace {

void ignoreError(void *, virErrorPtr) {}

// libvirt's error codes, classified once here so callers switch over errno.
int classify(const virError &e)
{
	switch (e.code) {
	case VIR_ERR_SYSTEM_ERROR:
		// virReportSystemError keeps the failed call's errno in int1.
		return e.int1 > 0 ? e.int1 : EIO;
	case VIR_ERR_NO_DOMAIN:
	case VIR_ERR_NO_DOMAIN_SNAPSHOT:
	case VIR_ERR_NO_DOMAIN_CHECKPOINT:
		return ENOENT;
	case VIR_ERR_XML_ERROR:
	case VIR_ERR_XML_DETAIL:
	case VIR_ERR_XML_INVALID_SCHEMA:
	case VIR_ERR_INVALID_ARG:
	case VIR_ERR_CONFIG_UNSUPPORTED:
	case VIR_ERR_OPERATION_INVALID:
		return EINVAL;
	case VIR_ERR_OPERATION_DENIED:
	case VIR_ERR_AUTH_FAILED:
	case VIR_ERR_AUTH_CANCELLED:
	case VIR_ERR_ACCESS_DENIED:
		return EACCES;
	case VIR_ERR_NO_SUPPORT:
		return ENOTSUP;
	case VIR_ERR_OPERATION_TIMEOUT:
	case VIR_ERR_AGENT_UNRESPONSIVE:
		return ETIMEDOUT;
	case VIR_ERR_NO_CONNECT:
	case VIR_ERR_INVALID_CONN:
		return ENOTCONN;
	case VIR_ERR_OPERATION_ABORTED:
		return ECANCELED;
	case VIR_ERR_DOM_EXIST:
		return EEXIST;
	default:
		return EIO;
	}
}

} // namespace

Status initLibvirt()
{
	static Status result;
	static std::once_flag once;
	std::call_once(once, [] {
		if (virInitialize() < 0) {
			result = Error(EIO, "virInitialize failed");
			return;
		}
		virSetErrorFunc(nullptr, ignoreError);
	});
	return result;
}

Error lastError(std::string_view what)
{
	const virError *e = virGetLastError();
	if (!e || e->code == VIR_ERR_OK)
		return Error(EIO, fmt::format("{}: failed (libvirt gave no reason)", what));
	return Error(classify(*e), fmt::format("{}: {}", what, e->message ? e->message : "unknown libvirt error"));
}

// --- Domain ----------------------------------------------------------------------------

Domain &Domain::operator=(Domain &&o) noexcept
{
	if (this != &o) {
		if (dom_)
			virDomainFree(dom_);
		dom_ = std::exchange(o.dom_, nullptr);
	}
	return *this;
}

Domain::~Domain()
{
	if (dom_)
		virDomainFree(dom_);
}

std::string Domain::name() const
{
	const char *n = virDomainGetName(dom_);
	return n ? n : "";
}

std::string Domain::uuid() const
{
	char buf[VIR_UUID_STRING_BUFLEN];
	if (virDomainGetUUIDString(dom_, buf) < 0)
		return "";
	return buf;
}

Result<bool> Domain::isActive() const
{
	int r = virDomainIsActive(dom_);
	if (r < 0)
		return lastError(fmt::format("domain {}: is active", name()));
	return r == 1;
}

Result<bool> Domain::isPersistent() const
{
	int r = virDomainIsPersistent(dom_);
	if (r < 0)
		return lastError(fmt::format("domain {}: is persistent", name()));
	return r == 1;
}

Result<std::string> Domain::xml(unsigned flags) const
{
	char *x = virDomainGetXMLDesc(dom_, flags);
	if (!x)
		return lastError(fmt::format("domain {}: get XML", name()));
	std::string s(x);
	std::free(x);
	return s;
}

Status Domain::suspend()
{
	if (virDomainSuspend(dom_) < 0)
		return lastError(fmt::format("domain {}: suspend", name()));
	return okStatus();
}

Status Domain::resume()
{
	if (virDomainResume(dom_) < 0)
		return lastError(fmt::format("domain {}: resume", name()));
	return okStatus();
}

// --- Connection ------------------------------------------------------------------------

Connection &Connection::operator=(Connection &&o) noexcept
{
	if (this != &o) {
		if (conn_)
			virConnectClose(conn_);
		conn_ = std::exchange(o.conn_, nullptr);
		uri_ = std::move(o.uri_);
		lifecycle_ = std::move(o.lifecycle_);
	}
	return *this;
}

Connection::~Connection()
{
	// Drops our reference only: Domains and the lifecycle hub hold their own.
	if (conn_)
		virConnectClose(conn_);
}

Result<Connection> Connection::open(const std::string &uri)
{
	FERRY_TRY(initLibvirt());
	std::string u = uri.empty() ? "qemu:///system" : uri;
	virConnectPtr c = virConnectOpen(u.c_str());
	if (!c)
		return lastError(fmt::format("connect to {}", u));
	return Connection(c, std::move(u));
}

bool Connection::isAlive() const
{
	return conn_ && virConnectIsAlive(conn_) == 1;
}

Result<std::vector<DomainInfo>> Connection::activeDomains() const
{
	virDomainPtr *doms = nullptr;
	int n = virConnectListAllDomains(conn_, &doms, VIR_CONNECT_LIST_DOMAINS_ACTIVE);
	if (n < 0)
		return lastError(fmt::format("{}: list domains", uri_));
	std::vector<DomainInfo> out;
	out.reserve(n);
	for (int i = 0; i < n; i++) {
		Domain d(doms[i]); // owns each returned reference, also on the way out
		out.push_back(DomainInfo{d.name(), d.uuid(), virDomainGetID(d.get())});
	}
	std::free(doms);
	return out;
}

Result<Domain> Connection::lookup(const std::string &name) const
{
	virDomainPtr d = virDomainLookupByName(conn_, name.c_str());
	if (!d)
		return lastError(fmt::format("domain '{}' on {}", name, uri_));
	return Domain(d);
}

Result<Domain> Connection::lookupUuid(const std::string &uuid) const
{
	virDomainPtr d = virDomainLookupByUUIDString(conn_, uuid.c_str());
	if (!d)
		return lastError(fmt::format("domain {} on {}", uuid, uri_));
	return Domain(d);
}

Result<Domain> Connection::define(const std::string &xml) const
{
	virDomainPtr d = virDomainDefineXML(conn_, xml.c_str());
	if (!d)
		return lastError(fmt::format("{}: define domain", uri_));
	return Domain(d);
}

} // namespace ferry::virt
