// SPDX-License-Identifier: GPL-2.0-or-later
// virt::Connection, Domain and lifecycle events against libvirt's test driver. test:///default
// is one in-process state shared by every open connection to it, and lives until the last one
// closes (which may happen a moment after a test ends, on the event loop thread). So tests
// only read the driver's own running domain "test", and change only scratch domains of their
// own, named after the test.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <vector>

#include <gtest/gtest.h>

#include "libvirt/connection.h"

using namespace ferry;
using namespace std::chrono_literals;

namespace {

constexpr const char *kTestUri = "test:///default";

// The event loop must be registered before any connection that wants events is opened.
class EventLoopEnvironment : public testing::Environment {
public:
	void SetUp() override { ASSERT_TRUE(virt::startEventLoop().ok()); }
};
[[maybe_unused]] const auto *kEnv = testing::AddGlobalTestEnvironment(new EventLoopEnvironment);

virt::Connection openTest()
{
	auto c = virt::Connection::open(kTestUri);
	EXPECT_TRUE(c.ok()) << c.error().message();
	return std::move(c).value();
}

// Collects lifecycle events from the event loop thread; the test thread waits on it.
class EventLog {
public:
	void push(const virt::LifecycleEvent &ev)
	{
		std::lock_guard lock(m_);
		events_.push_back(ev);
		cv_.notify_all();
	}
	// Waits until an event of `type` for `domain` arrived; false after the timeout.
	bool waitFor(const std::string &domain, int type, virt::LifecycleEvent *out = nullptr)
	{
		std::unique_lock lock(m_);
		return cv_.wait_for(lock, 5s, [&] {
			for (const auto &ev : events_)
				if (ev.domain == domain && ev.type == type) {
					if (out)
						*out = ev;
					return true;
				}
			return false;
		});
	}
	size_t size()
	{
		std::lock_guard lock(m_);
		return events_.size();
	}

private:
	std::mutex m_;
	std::condition_variable cv_;
	std::vector<virt::LifecycleEvent> events_;
};

std::string scratchXml(const std::string &name)
{
	return fmt::format(R"(<domain type='test'>
  <name>{}</name>
  <memory unit='MiB'>64</memory>
  <os><type>hvm</type></os>
</domain>)", name);
}

std::string testName()
{
	return testing::UnitTest::GetInstance()->current_test_info()->name();
}

// A running domain of the test's own, destroyed and undefined at the end.
class ScratchDomain {
public:
	explicit ScratchDomain(virt::Connection &c)
	{
		auto d = c.define(scratchXml(testName()));
		EXPECT_TRUE(d.ok()) << d.error().message();
		if (d.ok())
			dom_ = std::move(d).value();
		EXPECT_EQ(virDomainCreate(dom_.get()), 0) << virt::lastError("start").message();
	}
	~ScratchDomain()
	{
		virDomainDestroy(dom_.get());
		virDomainUndefine(dom_.get());
	}
	virt::Domain &operator*() { return dom_; }
	virt::Domain *operator->() { return &dom_; }

private:
	virt::Domain dom_;
};

} // namespace

TEST(VirtConnection, ListsTheTestDriversRunningDomain)
{
	virt::Connection c = openTest();
	EXPECT_EQ(c.uri(), kTestUri);
	EXPECT_TRUE(c.isAlive());
	auto doms = c.activeDomains();
	ASSERT_TRUE(doms.ok()) << doms.error().message();
	auto it = std::find_if(doms->begin(), doms->end(), [](const auto &i) { return i.name == "test"; });
	ASSERT_NE(it, doms->end());
	EXPECT_EQ(it->uuid.size(), 36u);
	EXPECT_GT(it->id, 0u);
}

TEST(VirtConnection, OpenFailureIsAValueWithLibvirtsMessageAndNothingOnStderr)
{
	testing::internal::CaptureStderr();
	auto c = virt::Connection::open("nosuchdriver:///system");
	std::string err = testing::internal::GetCapturedStderr();
	ASSERT_FALSE(c.ok());
	EXPECT_NE(c.error().message().find("connect to nosuchdriver:///system: "), std::string::npos)
		<< c.error().message();
	EXPECT_GT(c.error().message().size(), std::string("connect to nosuchdriver:///system: ").size());
	EXPECT_EQ(err, "");
}

TEST(VirtConnection, LookupFindsTheDomainByNameAndUuid)
{
	virt::Connection c = openTest();
	auto d = c.lookup("test");
	ASSERT_TRUE(d.ok()) << d.error().message();
	EXPECT_EQ(d->name(), "test");
	auto active = d->isActive();
	ASSERT_TRUE(active.ok());
	EXPECT_TRUE(*active);
	auto byUuid = c.lookupUuid(d->uuid());
	ASSERT_TRUE(byUuid.ok()) << byUuid.error().message();
	EXPECT_EQ(byUuid->name(), "test");
}

TEST(VirtConnection, LookupOfAnUnknownDomainIsEnoentNamingDomainAndUri)
{
	virt::Connection c = openTest();
	testing::internal::CaptureStderr();
	auto d = c.lookup("no-such-domain");
	EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
	ASSERT_FALSE(d.ok());
	EXPECT_EQ(d.error().code(), ENOENT);
	EXPECT_NE(d.error().message().find("domain 'no-such-domain' on test:///default"), std::string::npos)
		<< d.error().message();
}

TEST(VirtDomain, XmlDescribesTheDomain)
{
	virt::Connection c = openTest();
	auto d = c.lookup("test");
	ASSERT_TRUE(d.ok());
	auto live = d->xml();
	ASSERT_TRUE(live.ok()) << live.error().message();
	EXPECT_NE(live->find("<name>test</name>"), std::string::npos);
	EXPECT_NE(live->find("<uuid>" + d->uuid() + "</uuid>"), std::string::npos);
	auto inactive = d->inactiveXml();
	ASSERT_TRUE(inactive.ok()) << inactive.error().message();
	EXPECT_NE(inactive->find("<name>test</name>"), std::string::npos);
	// The live definition carries the running id; the persistent one does not.
	EXPECT_NE(live->find("id="), std::string::npos);
	EXPECT_EQ(inactive->find(" id="), std::string::npos);
}

TEST(VirtConnection, DefineCreatesAPersistentInactiveDomain)
{
	virt::Connection c = openTest();
	auto d = c.define(scratchXml(testName()));
	ASSERT_TRUE(d.ok()) << d.error().message();
	EXPECT_EQ(d->name(), testName());
	EXPECT_TRUE(d->isPersistent().value());
	EXPECT_FALSE(d->isActive().value());
	auto back = c.lookup(testName());
	ASSERT_TRUE(back.ok()) << back.error().message();
	auto xml = back->inactiveXml();
	ASSERT_TRUE(xml.ok());
	EXPECT_NE(xml->find("<memory unit='KiB'>65536</memory>"), std::string::npos) << *xml;
	EXPECT_EQ(virDomainUndefine(d->get()), 0);
}

TEST(VirtConnection, DefineOfInvalidXmlIsEinval)
{
	virt::Connection c = openTest();
	auto d = c.define("<domain type='test'><name>broken</name>");
	ASSERT_FALSE(d.ok());
	EXPECT_EQ(d.error().code(), EINVAL) << d.error().message();
}

TEST(VirtEvents, NamesLifecycleEvents)
{
	EXPECT_EQ(virt::lifecycleEventName(VIR_DOMAIN_EVENT_STARTED, VIR_DOMAIN_EVENT_STARTED_MIGRATED),
		  "started/migrated");
	EXPECT_EQ(virt::lifecycleEventName(VIR_DOMAIN_EVENT_STOPPED, VIR_DOMAIN_EVENT_STOPPED_DESTROYED),
		  "stopped/destroyed");
	EXPECT_EQ(virt::lifecycleEventName(VIR_DOMAIN_EVENT_RESUMED, VIR_DOMAIN_EVENT_RESUMED_POSTCOPY_FAILED),
		  "resumed/postcopy-failed");
	EXPECT_EQ(virt::lifecycleEventName(VIR_DOMAIN_EVENT_CRASHED, 7), "crashed/detail 7");
	EXPECT_EQ(virt::lifecycleEventName(42, 3), "event 42/detail 3");
	EXPECT_EQ(virt::lifecycleEventName(-1, 0), "event -1/detail 0");
}

TEST(VirtEvents, SuspendAndResumeArriveThroughOnLifecycle)
{
	virt::Connection c = openTest();
	EventLog log;
	auto reg = c.onLifecycle([&](const virt::LifecycleEvent &ev) { log.push(ev); });
	ASSERT_TRUE(reg.ok()) << reg.error().message();
	ScratchDomain d(c);
	ASSERT_TRUE(log.waitFor(testName(), VIR_DOMAIN_EVENT_STARTED));

	ASSERT_TRUE(d->suspend().ok());
	virt::LifecycleEvent ev;
	ASSERT_TRUE(log.waitFor(testName(), VIR_DOMAIN_EVENT_SUSPENDED, &ev)) << "no suspended event";
	EXPECT_EQ(ev.detail, VIR_DOMAIN_EVENT_SUSPENDED_PAUSED);
	EXPECT_EQ(ev.what, "suspended/paused");
	EXPECT_EQ(ev.uuid, d->uuid());

	ASSERT_TRUE(d->resume().ok());
	ASSERT_TRUE(log.waitFor(testName(), VIR_DOMAIN_EVENT_RESUMED, &ev)) << "no resumed event";
	EXPECT_EQ(ev.what, "resumed/unpaused");
}

TEST(VirtEvents, DefineArrivesAsDefinedAdded)
{
	virt::Connection c = openTest();
	EventLog log;
	auto reg = c.onLifecycle([&](const virt::LifecycleEvent &ev) { log.push(ev); });
	ASSERT_TRUE(reg.ok());
	auto d = c.define(scratchXml(testName()));
	ASSERT_TRUE(d.ok());
	virt::LifecycleEvent ev;
	ASSERT_TRUE(log.waitFor(testName(), VIR_DOMAIN_EVENT_DEFINED, &ev));
	EXPECT_EQ(ev.what, "defined/added");
	EXPECT_EQ(virDomainUndefine(d->get()), 0);
}

TEST(VirtEvents, NoCallbackAfterTheRegistrationIsDropped)
{
	virt::Connection c = openTest();
	EventLog dropped, kept;
	// Only this test's domain: an earlier test's scratch domain may still send its last events.
	const std::string name = testName();
	auto a = c.onLifecycle([&](const virt::LifecycleEvent &ev) {
		if (ev.domain == name)
			dropped.push(ev);
	});
	auto b = c.onLifecycle([&](const virt::LifecycleEvent &ev) { kept.push(ev); });
	ASSERT_TRUE(a.ok()) << a.error().message();
	ASSERT_TRUE(b.ok()) << b.error().message();
	a->reset();
	EXPECT_FALSE(a->active());
	ScratchDomain d(c);
	ASSERT_TRUE(d->suspend().ok());
	// Both callbacks are dispatched from one queue flush: once the kept one has seen the
	// event, the dropped one would have too.
	ASSERT_TRUE(kept.waitFor(testName(), VIR_DOMAIN_EVENT_SUSPENDED));
	EXPECT_EQ(dropped.size(), 0u);
}

TEST(VirtEvents, RegistrationMayBeDroppedFromInsideItsCallback)
{
	virt::Connection c = openTest();
	EventLog log;
	virt::EventRegistration reg;
	std::mutex m; // guards reg against the test thread's assignment below
	const std::string name = testName();
	auto r = c.onLifecycle([&](const virt::LifecycleEvent &ev) {
		// The driver's state is shared: the earlier tests' scratch domains may still send
		// their last events (stopped, undefined). Only this test's own counts.
		if (ev.domain != name)
			return;
		{
			std::lock_guard lock(m);
			reg.reset();
		}
		log.push(ev); // after the reset: the test thread checks it once woken
	});
	ASSERT_TRUE(r.ok());
	{
		std::lock_guard lock(m);
		reg = std::move(r).value();
	}
	EventLog witness;
	auto w = c.onLifecycle([&](const virt::LifecycleEvent &ev) { witness.push(ev); });
	ASSERT_TRUE(w.ok());
	ScratchDomain d(c); // defined, then started
	ASSERT_TRUE(log.waitFor(testName(), VIR_DOMAIN_EVENT_DEFINED));
	{
		std::lock_guard lock(m);
		EXPECT_FALSE(reg.active());
	}
	ASSERT_TRUE(d->suspend().ok());
	ASSERT_TRUE(witness.waitFor(testName(), VIR_DOMAIN_EVENT_SUSPENDED));
	EXPECT_EQ(log.size(), 1u); // only the event it dropped itself in
}

TEST(VirtEvents, RegistrationOutlivesItsConnectionObject)
{
	EventLog log;
	virt::EventRegistration reg;
	std::optional<ScratchDomain> d;
	{
		virt::Connection c = openTest();
		auto r = c.onLifecycle([&](const virt::LifecycleEvent &ev) { log.push(ev); });
		ASSERT_TRUE(r.ok());
		reg = std::move(r).value();
		d.emplace(c);
	}
	ASSERT_TRUE((*d)->suspend().ok());
	EXPECT_TRUE(log.waitFor(testName(), VIR_DOMAIN_EVENT_SUSPENDED));
	reg.reset();
}

// libvirt refuses the same C callback twice on one connection; the hub fans out instead.
TEST(VirtEvents, EveryRegistrationOnOneConnectionReceivesTheEvent)
{
	virt::Connection c = openTest();
	EventLog first, second;
	auto a = c.onLifecycle([&](const virt::LifecycleEvent &ev) { first.push(ev); });
	auto b = c.onLifecycle([&](const virt::LifecycleEvent &ev) { second.push(ev); });
	ASSERT_TRUE(a.ok()) << a.error().message();
	ASSERT_TRUE(b.ok()) << b.error().message();
	ScratchDomain d(c);
	ASSERT_TRUE(d->suspend().ok());
	EXPECT_TRUE(first.waitFor(testName(), VIR_DOMAIN_EVENT_SUSPENDED));
	EXPECT_TRUE(second.waitFor(testName(), VIR_DOMAIN_EVENT_SUSPENDED));
}
