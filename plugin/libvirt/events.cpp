// SPDX-License-Identifier: GPL-2.0-or-later
#include "libvirt/events.h"

#include <array>
#include <atomic>
#include <list>
#include <mutex>
#include <pthread.h>
#include <thread>

#include "ferry/base/log.h"
#include "libvirt/connection.h"
#include "libvirt/virt_init.h"

namespace ferry::virt {

Status startEventLoop()
{
	static Status result;
	static std::once_flag once;
	std::call_once(once, [] {
		if (Status st = initLibvirt(); !st.ok()) {
			result = st;
			return;
		}
		if (virEventRegisterDefaultImpl() < 0) {
			result = lastError("register libvirt's event loop");
			return;
		}
		// Runs for the life of the process: libvirt has no way to unregister its loop, and
		// connections opened after this keep timers and watches in it.
		std::thread([] {
			pthread_setname_np(pthread_self(), "virt-events");
			for (;;)
				if (virEventRunDefaultImpl() < 0)
					FERRY_LOG_RATELIMITED(Error, "virt", "{}",
							      lastError("libvirt event loop").message());
		}).detach();
	});
	return result;
}

std::string lifecycleEventName(int type, int detail)
{
	using Names = std::initializer_list<const char *>;
	struct Type {
		const char *name;
		Names details;
	};
	// Indexed by virDomainEventType, then by that type's detail enum (libvirt 9.0).
	static const std::array<Type, 9> kTypes = {{
		{"defined", Names{"added", "updated", "renamed", "from-snapshot"}},
		{"undefined", Names{"removed", "renamed"}},
		{"started", Names{"booted", "migrated", "restored", "from-snapshot", "wakeup"}},
		{"suspended", Names{"paused", "migrated", "ioerror", "watchdog", "restored", "from-snapshot",
				    "api-error", "postcopy", "postcopy-failed"}},
		{"resumed", Names{"unpaused", "migrated", "from-snapshot", "postcopy", "postcopy-failed"}},
		{"stopped", Names{"shutdown", "destroyed", "crashed", "migrated", "saved", "failed",
				  "from-snapshot"}},
		{"shutdown", Names{"finished", "guest", "host"}},
		{"pmsuspended", Names{"memory", "disk"}},
		{"crashed", Names{"panicked", "crashloaded"}},
	}};
	if (type < 0 || static_cast<size_t>(type) >= kTypes.size())
		return fmt::format("event {}/detail {}", type, detail);
	const Type &t = kTypes[type];
	if (detail < 0 || static_cast<size_t>(detail) >= t.details.size())
		return fmt::format("{}/detail {}", t.name, detail);
	return fmt::format("{}/{}", t.name, t.details.begin()[detail]);
}

// One per connection with lifecycle callbacks. libvirt holds a weak_ptr to it as the C
// callback's opaque (freed by libvirt through freeHubRef once deregistered and no longer
// dispatching); the Connection and every EventRegistration hold shared_ptrs. The last owner
// to go deregisters from libvirt. `m` is held while callbacks run, so removing one from
// another thread waits for a running dispatch to finish.
struct LifecycleHub {
	struct Entry {
		uint64_t id;
		LifecycleCallback cb;
		bool active = true;
	};

	~LifecycleHub()
	{
		if (!conn)
			return;
		// Fails when the daemon is gone, which is no reason to keep anything.
		if (virConnectDomainEventDeregisterAny(conn, callbackId) < 0)
			FERRY_LOG(Debug, "virt", "{}", lastError("deregister lifecycle events").message());
		virConnectClose(conn);
	}

	// Runs fn with m held: takes it, unless this thread already holds it because it is
	// inside a callback (adding or removing a registration from a callback).
	template<typename F>
	void locked(F fn)
	{
		if (runner.load() == std::this_thread::get_id()) {
			fn();
		} else {
			std::lock_guard lock(m);
			fn();
		}
	}

	virConnectPtr conn = nullptr; // a reference of our own (virConnectRef)
	int callbackId = -1;
	std::mutex m;
	std::atomic<std::thread::id> runner{}; // the event loop thread while it dispatches
	std::list<Entry> entries;               // guarded by m; a list: stable while callbacks add
	uint64_t nextId = 1;                    // guarded by m
};

namespace {

using HubRef = std::weak_ptr<LifecycleHub>;

// Runs on the event loop thread (virConnectDomainEventCallback).
int lifecycleThunk(virConnectPtr, virDomainPtr dom, int type, int detail, void *opaque)
{
	std::shared_ptr<LifecycleHub> hub = static_cast<HubRef *>(opaque)->lock();
	if (!hub)
		return 0;
	LifecycleEvent ev;
	if (const char *n = virDomainGetName(dom))
		ev.domain = n;
	char uuid[VIR_UUID_STRING_BUFLEN];
	if (virDomainGetUUIDString(dom, uuid) == 0)
		ev.uuid = uuid;
	ev.type = type;
	ev.detail = detail;
	ev.what = lifecycleEventName(type, detail);

	std::lock_guard lock(hub->m);
	hub->runner = std::this_thread::get_id();
	// Callbacks added during this dispatch start with the next event; removed ones are
	// marked inactive and erased once no callback runs.
	size_t n = hub->entries.size();
	auto it = hub->entries.begin();
	for (size_t i = 0; i < n; i++, ++it)
		if (it->active)
			it->cb(ev);
	hub->entries.remove_if([](const LifecycleHub::Entry &e) { return !e.active; });
	hub->runner = std::thread::id();
	return 0;
}

void freeHubRef(void *opaque)
{
	delete static_cast<HubRef *>(opaque);
}

} // namespace

EventRegistration::EventRegistration(EventRegistration &&o) noexcept
	: hub_(std::move(o.hub_)), id_(std::exchange(o.id_, 0))
{
}

EventRegistration &EventRegistration::operator=(EventRegistration &&o) noexcept
{
	if (this != &o) {
		reset();
		hub_ = std::move(o.hub_);
		id_ = std::exchange(o.id_, 0);
	}
	return *this;
}

void EventRegistration::reset()
{
	if (!hub_)
		return;
	LifecycleHub &hub = *hub_;
	hub.locked([&] {
		for (auto &e : hub.entries)
			if (e.id == id_)
				e.active = false;
		if (hub.runner.load() != std::this_thread::get_id())
			hub.entries.remove_if([](const LifecycleHub::Entry &e) { return !e.active; });
	});
	// May be the hub's last owner: then it deregisters from libvirt (also fine from inside a
	// callback, where the dispatching thunk still holds the hub until it returns).
	hub_.reset();
	id_ = 0;
}

Result<EventRegistration> Connection::onLifecycle(LifecycleCallback cb) const
{
	if (!lifecycle_) {
		auto hub = std::make_shared<LifecycleHub>();
		auto *opaque = new HubRef(hub);
		int id = virConnectDomainEventRegisterAny(conn_, nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
							  VIR_DOMAIN_EVENT_CALLBACK(lifecycleThunk), opaque,
							  freeHubRef);
		if (id < 0) {
			// libvirt calls freecb only for a callback it registered; the hub, holding no
			// connection yet, has nothing to deregister.
			delete opaque;
			return lastError(fmt::format("{}: register lifecycle events", uri_));
		}
		virConnectRef(conn_);
		hub->conn = conn_;
		hub->callbackId = id;
		lifecycle_ = std::move(hub);
	}
	uint64_t id = 0;
	lifecycle_->locked([&] {
		id = lifecycle_->nextId++;
		lifecycle_->entries.push_back(LifecycleHub::Entry{id, std::move(cb)});
	});
	return EventRegistration(lifecycle_, id);
}

} // namespace ferry::virt
