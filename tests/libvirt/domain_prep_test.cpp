// SPDX-License-Identifier: GPL-2.0-or-later
// Domain preparation: the XML transform and inspectDomain on sample domains (results parsed
// back with libxml2 and queried with XPath, never matched as text), and prepareDomain through
// libvirt's test driver.
#include <gtest/gtest.h>

#include <libxml/xpath.h>
#include <libxml/xpathInternals.h>

#include "libvirt/domain_prep.h"
#include "libvirt/xml_doc.h"

using namespace ferry;
using virt::PrepareOptions;

namespace {

constexpr const char *kAgent = "/opt/ferry/lib/libferry-agent.so";

PrepareOptions options()
{
	PrepareOptions o;
	o.socketDir = "/run/ferry";
	o.agentLib = kAgent;
	return o;
}

// The string values of an XPath query ("qemu:" bound to libvirt's QEMU namespace).
std::vector<std::string> query(const std::string &xml, const char *expr)
{
	auto doc = virt::XmlDoc::parse(xml);
	EXPECT_TRUE(doc.ok()) << doc.error().message();
	if (!doc.ok())
		return {};
	std::vector<std::string> out;
	xmlXPathContextPtr ctx = xmlXPathNewContext(doc->get());
	xmlXPathRegisterNs(ctx, virt::xc("qemu"), virt::xc(virt::kQemuNamespace));
	xmlXPathObjectPtr r = xmlXPathEvalExpression(virt::xc(expr), ctx);
	EXPECT_NE(r, nullptr) << expr;
	if (r && r->type == XPATH_NODESET && r->nodesetval) {
		for (int i = 0; i < r->nodesetval->nodeNr; i++) {
			xmlChar *v = xmlNodeGetContent(r->nodesetval->nodeTab[i]);
			out.emplace_back(reinterpret_cast<const char *>(v));
			xmlFree(v);
		}
	} else if (r && r->type == XPATH_STRING) {
		out.emplace_back(reinterpret_cast<const char *>(r->stringval));
	}
	xmlXPathFreeObject(r);
	xmlXPathFreeContext(ctx);
	return out;
}

std::string one(const std::string &xml, const char *expr)
{
	auto v = query(xml, expr);
	EXPECT_EQ(v.size(), 1u) << expr << " in\n" << xml;
	return v.empty() ? "" : v[0];
}

using Strings = std::vector<std::string>;

// A domain as libvirt writes one, with nothing of ferry's.
const char *kPlain = R"(<domain type='kvm'>
  <name>vm1</name>
  <uuid>0b8c2a39-5a0c-4f5e-9f3b-2d6a3c1f7e01</uuid>
  <memory unit='KiB'>262144</memory>
  <currentMemory unit='KiB'>262144</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <boot dev='hd'/>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <memballoon model='none'/>
  </devices>
</domain>
)";

// Prepared the way prepare-domain does it, written by hand in libvirt's style.
const char *kPrepared = R"(<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>vm1</name>
  <memory unit='KiB'>262144</memory>
  <memoryBacking>
    <source type='memfd'/>
    <access mode='shared'/>
  </memoryBacking>
  <os><type>hvm</type></os>
  <qemu:commandline>
    <qemu:arg value='-qmp'/>
    <qemu:arg value='unix:/run/ferry/vm1.qmp,server=on,wait=off'/>
    <qemu:env name='LD_PRELOAD' value='/opt/ferry/lib/libferry-agent.so'/>
    <qemu:env name='FERRY_AGENT_SOCKET' value='/run/ferry/vm1-agent.sock'/>
  </qemu:commandline>
</domain>
)";

// File-backed huge pages, private: the source and access change, the rest stays.
const char *kFileBacked = R"(<domain type='kvm'>
  <name>vm1</name>
  <memory unit='KiB'>262144</memory>
  <memoryBacking>
    <hugepages>
      <page size='2048' unit='KiB'/>
    </hugepages>
    <source type='file'/>
    <access mode='private'/>
    <discard/>
  </memoryBacking>
  <os><type>hvm</type></os>
</domain>
)";

// An operator's own preloaded library, under a qemu: prefix of another name.
const char *kOwnPreload = R"(<domain type='kvm' xmlns:q='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>vm1</name>
  <memory unit='KiB'>262144</memory>
  <os><type>hvm</type></os>
  <q:commandline>
    <q:env name='LD_PRELOAD' value='/usr/lib/libtrace.so'/>
  </q:commandline>
</domain>
)";

// Other arguments, another QMP socket and another environment variable: all are kept.
const char *kOtherArgs = R"(<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>vm1</name>
  <memory unit='KiB'>262144</memory>
  <os><type>hvm</type></os>
  <qemu:commandline>
    <qemu:arg value='-qmp'/>
    <qemu:arg value='unix:/var/lib/monitor/vm1-ops.sock,server=on,wait=off'/>
    <qemu:arg value='-global'/>
    <qemu:arg value='kvm-pit.lost_tick_policy=discard'/>
    <qemu:env name='TZ' value='UTC'/>
  </qemu:commandline>
</domain>
)";

Result<virt::Preparation> prepare(const std::string &xml, const PrepareOptions &o = options())
{
	return virt::prepareDomainXml(xml, o);
}

virt::Preparation prepared(const std::string &xml)
{
	auto p = prepare(xml);
	EXPECT_TRUE(p.ok()) << p.error().message();
	return p.ok() ? std::move(p).value() : virt::Preparation{};
}

virt::FerryReadiness inspected(const std::string &xml)
{
	auto r = virt::inspectDomain(xml);
	EXPECT_TRUE(r.ok()) << r.error().message();
	return r.ok() ? std::move(r).value() : virt::FerryReadiness{};
}

// Every sample becomes ready with ferry's own paths, and a second preparation changes nothing.
void expectFerryReady(const std::string &xml)
{
	virt::FerryReadiness r = inspected(xml);
	EXPECT_TRUE(r.ready()) << fmt::format("{}", fmt::join(r.missing(), ", "));
	EXPECT_EQ(r.qmpSocket, "/run/ferry/vm1.qmp");
	EXPECT_EQ(r.agentSocket, "/run/ferry/vm1-agent.sock");
	EXPECT_EQ(r.agentLibrary, kAgent);
	virt::Preparation again = prepared(xml);
	EXPECT_FALSE(again.changed()) << fmt::format("{}", fmt::join(again.changes, "; "));
	EXPECT_EQ(again.xml, xml);
}

} // namespace

TEST(PrepareDomainXml, PlainDomainGetsMemfdSharedAgentAndPrivateQmp)
{
	virt::Preparation p = prepared(kPlain);
	EXPECT_EQ(p.domain, "vm1");
	ASSERT_TRUE(p.changed());
	EXPECT_EQ(p.changes.size(), 4u) << fmt::format("{}", fmt::join(p.changes, "; "));

	EXPECT_EQ(one(p.xml, "/domain/memoryBacking/source/@type"), "memfd");
	EXPECT_EQ(one(p.xml, "/domain/memoryBacking/access/@mode"), "shared");
	// Where libvirt itself writes it: after currentMemory, before vcpu.
	EXPECT_EQ(one(p.xml, "name(/domain/memoryBacking/preceding-sibling::*[1])"), "currentMemory");
	EXPECT_EQ(query(p.xml, "/domain/qemu:commandline/qemu:arg/@value"),
		  (Strings{"-qmp", "unix:/run/ferry/vm1.qmp,server=on,wait=off"}));
	EXPECT_EQ(one(p.xml, "/domain/qemu:commandline/qemu:env[@name='LD_PRELOAD']/@value"), kAgent);
	EXPECT_EQ(one(p.xml, "/domain/qemu:commandline/qemu:env[@name='FERRY_AGENT_SOCKET']/@value"),
		  "/run/ferry/vm1-agent.sock");
	// Nothing else moved: the rest of the domain is as it was.
	EXPECT_EQ(one(p.xml, "/domain/uuid"), "0b8c2a39-5a0c-4f5e-9f3b-2d6a3c1f7e01");
	EXPECT_EQ(one(p.xml, "/domain/devices/emulator"), "/usr/bin/qemu-system-x86_64");
	EXPECT_EQ(one(p.xml, "/domain/os/type/@machine"), "pc-i440fx-7.2");
	EXPECT_EQ(one(p.xml, "/domain/@type"), "kvm");
	expectFerryReady(p.xml);
}

TEST(PrepareDomainXml, PreparedDomainIsAlreadyPreparedAndReturnedUntouched)
{
	virt::Preparation p = prepared(kPrepared);
	EXPECT_FALSE(p.changed()) << fmt::format("{}", fmt::join(p.changes, "; "));
	EXPECT_EQ(p.xml, kPrepared);
	expectFerryReady(kPrepared);
}

TEST(PrepareDomainXml, FileBackingBecomesMemfdKeepingHugepagesAndDiscard)
{
	virt::Preparation p = prepared(kFileBacked);
	std::string all = fmt::format("{}", fmt::join(p.changes, "; "));
	EXPECT_NE(all.find("memfd (replaces 'file')"), std::string::npos) << all;
	EXPECT_NE(all.find("shared (replaces 'private')"), std::string::npos) << all;
	EXPECT_EQ(one(p.xml, "/domain/memoryBacking/source/@type"), "memfd");
	EXPECT_EQ(one(p.xml, "/domain/memoryBacking/access/@mode"), "shared");
	EXPECT_EQ(one(p.xml, "/domain/memoryBacking/hugepages/page/@size"), "2048");
	EXPECT_EQ(query(p.xml, "/domain/memoryBacking/discard").size(), 1u);
	EXPECT_EQ(query(p.xml, "/domain/memoryBacking/source").size(), 1u);
	expectFerryReady(p.xml);
}

TEST(PrepareDomainXml, DefaultBackingGainsSourceAndAccessBesideItsOtherChildren)
{
	virt::Preparation p = prepared(R"(<domain type='kvm'><name>vm1</name>
	  <memoryBacking><locked/><allocation mode='immediate'/></memoryBacking></domain>)");
	EXPECT_EQ(query(p.xml, "/domain/memoryBacking/*").size(), 4u);
	EXPECT_EQ(query(p.xml, "name(/domain/memoryBacking/*[3])"), Strings{"access"});
	EXPECT_EQ(one(p.xml, "/domain/memoryBacking/allocation/@mode"), "immediate");
	expectFerryReady(p.xml);
}

TEST(PrepareDomainXml, ExistingPreloadIsKeptAndJoinedWithTheAgent)
{
	virt::Preparation p = prepared(kOwnPreload);
	EXPECT_EQ(one(p.xml, "/domain/qemu:commandline/qemu:env[@name='LD_PRELOAD']/@value"),
		  std::string("/usr/lib/libtrace.so:") + kAgent);
	// The document's own prefix for the namespace is used; no second declaration.
	EXPECT_EQ(query(p.xml, "/domain/qemu:commandline").size(), 1u);
	EXPECT_EQ(p.xml.find("xmlns:qemu"), std::string::npos) << p.xml;
	expectFerryReady(p.xml);
}

TEST(PrepareDomainXml, PreloadThatHoldsTheAgentAmongOthersIsLeftAlone)
{
	std::string xml = std::string(kPrepared);
	xml.replace(xml.find("value='/opt/ferry"), 7, "value='/usr/lib/libtrace.so ");
	virt::Preparation p = prepared(xml);
	EXPECT_FALSE(p.changed()) << fmt::format("{}", fmt::join(p.changes, "; "));
	EXPECT_EQ(inspected(xml).agentLibrary, kAgent);
}

TEST(PrepareDomainXml, StaleAgentPathInPreloadIsReplacedNotDuplicated)
{
	std::string xml = std::string(kPrepared);
	xml.replace(xml.find("/opt/ferry/lib/libferry-agent.so"), 32, "/usr/lib/libc-extra.so:/old/build/libferry-agent.so");
	virt::Preparation p = prepared(xml);
	ASSERT_EQ(p.changes.size(), 1u);
	EXPECT_NE(p.changes[0].find("replaces /old/build/libferry-agent.so"), std::string::npos) << p.changes[0];
	EXPECT_EQ(one(p.xml, "/domain/qemu:commandline/qemu:env[@name='LD_PRELOAD']/@value"),
		  std::string("/usr/lib/libc-extra.so:") + kAgent);
	expectFerryReady(p.xml);
}

TEST(PrepareDomainXml, OtherCommandlineArgumentsAndQmpSocketsAreKeptInOrder)
{
	virt::Preparation p = prepared(kOtherArgs);
	EXPECT_EQ(query(p.xml, "/domain/qemu:commandline/qemu:arg/@value"),
		  (Strings{"-qmp", "unix:/var/lib/monitor/vm1-ops.sock,server=on,wait=off", "-global",
			   "kvm-pit.lost_tick_policy=discard", "-qmp", "unix:/run/ferry/vm1.qmp,server=on,wait=off"}));
	EXPECT_EQ(query(p.xml, "/domain/qemu:commandline/qemu:env/@name"),
		  (Strings{"TZ", "LD_PRELOAD", "FERRY_AGENT_SOCKET"}));
	std::string all = fmt::format("{}", fmt::join(p.changes, "; "));
	EXPECT_NE(all.find("the other QMP sockets stay: /var/lib/monitor/vm1-ops.sock"), std::string::npos) << all;
	expectFerryReady(p.xml);
}

TEST(PrepareDomainXml, AnotherSocketDirMovesFerrysSocketsAndIsThenStable)
{
	PrepareOptions o = options();
	o.socketDir = "/var/run/ferry-b/";
	auto p = prepare(kPrepared, o);
	ASSERT_TRUE(p.ok());
	EXPECT_EQ(p->changes.size(), 2u) << fmt::format("{}", fmt::join(p->changes, "; "));
	EXPECT_EQ(query(p->xml, "/domain/qemu:commandline/qemu:arg/@value"),
		  (Strings{"-qmp", "unix:/var/run/ferry-b/vm1.qmp,server=on,wait=off"}));
	EXPECT_EQ(inspected(p->xml).agentSocket, "/var/run/ferry-b/vm1-agent.sock");
	auto again = prepare(p->xml, o);
	ASSERT_TRUE(again.ok());
	EXPECT_FALSE(again->changed());
}

TEST(PrepareDomainXml, CommaInADomainNameIsEscapedForQemuAndReadBack)
{
	virt::Preparation p = prepared("<domain type='kvm'><name>a,b</name></domain>");
	EXPECT_EQ(query(p.xml, "/domain/qemu:commandline/qemu:arg/@value"),
		  (Strings{"-qmp", "unix:/run/ferry/a,,b.qmp,server=on,wait=off"}));
	EXPECT_EQ(inspected(p.xml).qmpSocket, "/run/ferry/a,b.qmp");
	EXPECT_FALSE(prepared(p.xml).changed());
}

TEST(PrepareDomainXml, PrivateNumaCellsBecomeShared)
{
	virt::Preparation p = prepared(R"(<domain type='kvm'><name>vm1</name>
	  <cpu><numa><cell id='0' cpus='0' memory='131072' unit='KiB' memAccess='private'/>
	  <cell id='1' cpus='1' memory='131072' unit='KiB'/></numa></cpu></domain>)");
	EXPECT_EQ(query(p.xml, "/domain/cpu/numa/cell/@memAccess"), Strings{"shared"});
	EXPECT_TRUE(inspected(p.xml).shared);
	expectFerryReady(p.xml);
}

TEST(PrepareDomainXml, PreparationIsIdempotentOnEverySample)
{
	for (const char *xml : {kPlain, kPrepared, kFileBacked, kOwnPreload, kOtherArgs}) {
		virt::Preparation once = prepared(xml);
		virt::Preparation twice = prepared(once.xml);
		EXPECT_FALSE(twice.changed()) << xml;
		EXPECT_EQ(twice.xml, once.xml);
	}
}

TEST(PrepareDomainXml, BeforeDiffersFromTheResultOnlyByTheChanges)
{
	virt::Preparation p = prepared(kOtherArgs);
	// Both sides written by libxml2: a diff shows the preparation, not a change of quoting.
	EXPECT_NE(p.before.find("<qemu:env name=\"TZ\" value=\"UTC\"/>"), std::string::npos) << p.before;
	EXPECT_NE(p.xml.find("<qemu:env name=\"TZ\" value=\"UTC\"/>"), std::string::npos);
	EXPECT_EQ(query(p.before, "/domain/qemu:commandline/qemu:arg").size(), 4u);
}

TEST(PrepareDomainXml, RejectsWhatIsNotADomainWithAReason)
{
	auto notDomain = prepare("<network><name>n</name></network>");
	ASSERT_FALSE(notDomain.ok());
	EXPECT_EQ(notDomain.error().code(), EINVAL);
	EXPECT_NE(notDomain.error().message().find("<network>"), std::string::npos);

	testing::internal::CaptureStderr();
	auto malformed = prepare("<domain><name>vm1</name>");
	EXPECT_EQ(testing::internal::GetCapturedStderr(), ""); // libxml2 printed nothing
	ASSERT_FALSE(malformed.ok());
	EXPECT_EQ(malformed.error().code(), EINVAL);
	EXPECT_NE(malformed.error().message().find("malformed XML (line 1)"), std::string::npos)
		<< malformed.error().message();

	auto nameless = prepare("<domain type='kvm'/>");
	ASSERT_FALSE(nameless.ok());
	EXPECT_NE(nameless.error().message().find("no <name>"), std::string::npos);

	auto clash = prepare("<domain xmlns:qemu='urn:other'><name>vm1</name></domain>");
	ASSERT_FALSE(clash.ok());
	EXPECT_NE(clash.error().message().find("'urn:other'"), std::string::npos) << clash.error().message();

	PrepareOptions rel = options();
	rel.socketDir = "run/ferry";
	auto relative = prepare(kPlain, rel);
	ASSERT_FALSE(relative.ok());
	EXPECT_NE(relative.error().message().find("not an absolute path"), std::string::npos);
}

TEST(PrepareDomainXml, ExternalEntitiesAreNeverRead)
{
	auto p = prepare(R"(<?xml version="1.0"?>
<!DOCTYPE domain [<!ENTITY secret SYSTEM "file:///etc/hostname">]>
<domain type='kvm'><name>vm1</name><description>&secret;</description></domain>)");
	ASSERT_TRUE(p.ok()) << p.error().message();
	EXPECT_EQ(one(p->xml, "/domain/description"), "");
}

TEST(InspectDomain, PlainDomainMissesEverything)
{
	virt::FerryReadiness r = inspected(kPlain);
	EXPECT_EQ(r.domain, "vm1");
	EXPECT_FALSE(r.ready());
	EXPECT_FALSE(r.memfd || r.shared || r.agentPreload || r.agentSocketSet || r.privateQmp);
	EXPECT_EQ(r.missing(), (Strings{"no memfd memory backing", "memory not shared", "no agent preload (LD_PRELOAD)",
					"no agent socket (FERRY_AGENT_SOCKET)", "no private QMP socket (-qmp unix:)"}));
	EXPECT_EQ(r.qmpSocket, "");
}

TEST(InspectDomain, PreparedDomainIsReadyWithItsPaths)
{
	virt::FerryReadiness r = inspected(kPrepared);
	EXPECT_TRUE(r.ready());
	EXPECT_TRUE(r.missing().empty());
	EXPECT_EQ(r.qmpSocket, "/run/ferry/vm1.qmp");
	EXPECT_EQ(r.agentSocket, "/run/ferry/vm1-agent.sock");
	EXPECT_EQ(r.agentLibrary, kAgent);
}

TEST(InspectDomain, FileBackedDomainIsNeitherMemfdNorShared)
{
	virt::FerryReadiness r = inspected(kFileBacked);
	EXPECT_FALSE(r.memfd);
	EXPECT_FALSE(r.shared);
	EXPECT_EQ(r.missing().size(), 5u);
}

TEST(InspectDomain, ForeignPreloadIsNotTheAgent)
{
	virt::FerryReadiness r = inspected(kOwnPreload);
	EXPECT_FALSE(r.agentPreload);
	EXPECT_EQ(r.agentLibrary, "");
}

TEST(InspectDomain, SomeoneElsesQmpSocketCountsButFerrysIsPreferred)
{
	virt::FerryReadiness other = inspected(kOtherArgs);
	EXPECT_TRUE(other.privateQmp);
	EXPECT_EQ(other.qmpSocket, "/var/lib/monitor/vm1-ops.sock");
	virt::FerryReadiness both = inspected(prepared(kOtherArgs).xml);
	EXPECT_EQ(both.qmpSocket, "/run/ferry/vm1.qmp");
}

TEST(InspectDomain, SharedMemoryNeedsEveryNumaCellShared)
{
	std::string xml = R"(<domain type='kvm'><name>vm1</name>
	  <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
	  <cpu><numa><cell id='0' cpus='0' memory='131072' memAccess='private'/>
	  <cell id='1' cpus='1' memory='131072'/></numa></cpu></domain>)";
	EXPECT_FALSE(inspected(xml).shared);
	xml.replace(xml.find("'private'"), 9, "'shared'");
	EXPECT_TRUE(inspected(xml).shared);
	// Cells that all say shared make the memory shared without a domain-wide access.
	EXPECT_TRUE(inspected(R"(<domain><name>v</name><cpu><numa><cell id='0' memAccess='shared'/></numa></cpu></domain>)").shared);
}

TEST(InspectDomain, NotADomainIsEinval)
{
	auto r = virt::inspectDomain("<pool/>");
	ASSERT_FALSE(r.ok());
	EXPECT_EQ(r.error().code(), EINVAL);
}

// --- prepareDomain through libvirt's test driver --------------------------------------------
// The test driver keeps <memoryBacking> but, like every driver but QEMU's, drops the qemu:
// namespace: a real define and read back, ending in the error that says so.

namespace {

virt::Connection openTest()
{
	auto c = virt::Connection::open("test:///default");
	EXPECT_TRUE(c.ok()) << c.error().message();
	return std::move(c).value();
}

std::string testName()
{
	return testing::UnitTest::GetInstance()->current_test_info()->name();
}

// An inactive domain of the test's own, undefined at the end.
class ScratchDomain {
public:
	explicit ScratchDomain(virt::Connection &c)
	{
		auto d = c.define(fmt::format("<domain type='test'><name>{}</name><memory unit='MiB'>64</memory>"
					      "<os><type>hvm</type></os></domain>", testName()));
		EXPECT_TRUE(d.ok()) << d.error().message();
		if (d.ok())
			dom_ = std::move(d).value();
	}
	~ScratchDomain() { virDomainUndefine(dom_.get()); }
	virt::Domain *operator->() { return &dom_; }

private:
	virt::Domain dom_;
};

} // namespace

TEST(PrepareDomain, DryRunDefinesNothing)
{
	virt::Connection c = openTest();
	ScratchDomain d(c);
	auto r = virt::prepareDomain(c, testName(), options(), true);
	ASSERT_TRUE(r.ok()) << r.error().message();
	EXPECT_TRUE(r->prep.changed());
	EXPECT_FALSE(r->defined);
	EXPECT_FALSE(r->active);
	EXPECT_TRUE(r->persistent);
	auto back = d->inactiveXml();
	ASSERT_TRUE(back.ok());
	EXPECT_TRUE(query(*back, "/domain/memoryBacking").empty()) << *back;
}

TEST(PrepareDomain, DefinesAndReadsBackNamingWhatTheDriverDropped)
{
	virt::Connection c = openTest();
	ScratchDomain d(c);
	auto r = virt::prepareDomain(c, testName(), options(), false);
	ASSERT_FALSE(r.ok());
	EXPECT_EQ(r.error().code(), ENOTSUP);
	const std::string &m = r.error().message();
	EXPECT_NE(m.find("on test:///default: defined, but libvirt dropped part of it"), std::string::npos) << m;
	EXPECT_NE(m.find("no private QMP socket"), std::string::npos) << m;
	EXPECT_EQ(m.find("memfd"), std::string::npos) << m; // that part it kept

	auto back = c.lookup(testName());
	ASSERT_TRUE(back.ok());
	auto xml = back->inactiveXml();
	ASSERT_TRUE(xml.ok());
	EXPECT_EQ(one(*xml, "/domain/memoryBacking/source/@type"), "memfd");
	EXPECT_EQ(one(*xml, "/domain/memoryBacking/access/@mode"), "shared");
	virt::FerryReadiness ready = inspected(*xml);
	EXPECT_TRUE(ready.memfd && ready.shared);
	EXPECT_FALSE(ready.privateQmp);
}

TEST(PrepareDomain, RunningDomainIsReportedActive)
{
	virt::Connection c = openTest();
	auto r = virt::prepareDomain(c, "test", options(), true); // the driver's running domain
	ASSERT_TRUE(r.ok()) << r.error().message();
	EXPECT_TRUE(r->active);
}

TEST(PrepareDomain, UnknownDomainIsEnoentNamingDomainAndUri)
{
	virt::Connection c = openTest();
	auto r = virt::prepareDomain(c, "no-such-vm", options(), false);
	ASSERT_FALSE(r.ok());
	EXPECT_EQ(r.error().code(), ENOENT);
	EXPECT_NE(r.error().message().find("domain 'no-such-vm' on test:///default"), std::string::npos);
}
