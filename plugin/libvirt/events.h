// SPDX-License-Identifier: GPL-2.0-or-later
// libvirt's events: the process-wide event loop and lifecycle callbacks.
//
// libvirt delivers events (and keepalives) only through an event loop the application runs.
// ferry uses libvirt's default implementation: startEventLoop() registers it and runs it on
// one thread for the rest of the process. It must be called before opening a connection that
// wants events; a connection opened earlier never delivers any.
//
// Every callback registered through Connection::onLifecycle() runs on that event loop thread.
// It may copy the event, signal a condition variable or queue work; it must never block (no
// libvirt call that waits on the daemon, no waiting for another thread that itself waits on
// an event): while it runs no other event, keepalive or timer of any connection is handled.
#pragma once

#include <functional>
#include <cstdint>
#include <memory>
#include <string>

#include <libvirt/libvirt.h>

#include "ferry/base/result.h"

namespace ferry::virt {

// Registers libvirt's default event loop implementation (once per process) and starts the
// thread that runs it. Safe to call from any thread, any number of times; later calls return
// the first call's result. The thread is detached: libvirt cannot unregister an event loop.
Status startEventLoop();

// A domain's lifecycle change (VIR_DOMAIN_EVENT_ID_LIFECYCLE). type and detail are libvirt's
// virDomainEventType and its per-type detail enum (VIR_DOMAIN_EVENT_STARTED_MIGRATED...).
struct LifecycleEvent {
	std::string domain; // the domain's name
	std::string uuid;
	int type = 0;
	int detail = 0;
	std::string what;   // readable: "started/migrated", "stopped/destroyed"
};

// "started/migrated" for (VIR_DOMAIN_EVENT_STARTED, VIR_DOMAIN_EVENT_STARTED_MIGRATED);
// numbers for values this libvirt did not know ("event 12/detail 3").
std::string lifecycleEventName(int type, int detail);

using LifecycleCallback = std::function<void(const LifecycleEvent &)>;

// The per-connection fan-out behind onLifecycle (events.cpp). libvirt refuses a second
// registration of the same C callback on one connection ("event callback already tracked"),
// so each Connection registers one, and its hub calls every registered LifecycleCallback.
struct LifecycleHub;

// Owns one registered lifecycle callback. Dropping it (or reset()) removes the callback; once
// reset() returns the callback is not running and is never called again, so whatever it
// captured may go. reset() may be called from inside a callback, its own included. The
// registration keeps its connection's hub, and with it a libvirt reference on the
// connection, so it may outlive the Connection object it came from.
class EventRegistration {
public:
	EventRegistration() = default;
	EventRegistration(EventRegistration &&o) noexcept;
	EventRegistration &operator=(EventRegistration &&o) noexcept;
	EventRegistration(const EventRegistration &) = delete;
	EventRegistration &operator=(const EventRegistration &) = delete;
	~EventRegistration() { reset(); }

	bool active() const { return hub_ != nullptr; }
	void reset();

private:
	friend class Connection;
	EventRegistration(std::shared_ptr<LifecycleHub> hub, uint64_t id) : hub_(std::move(hub)), id_(id) {}

	std::shared_ptr<LifecycleHub> hub_;
	uint64_t id_ = 0;
};

} // namespace ferry::virt
