// SPDX-License-Identifier: GPL-2.0-or-later
// QmpClient against a real QEMU (-machine none: no guest, starts in well under a second).
#include <cerrno>
#include <chrono>

#include <gtest/gtest.h>

#include "harness/qemu_launcher.h"
#include "ferry/qmp/qmp_client.h"

using namespace std::chrono_literals;
using namespace ferry;

namespace {

class RealQemu : public ::testing::Test {
protected:
	void SetUp() override
	{
		auto dir = makeRunDir("ferry-qmp-test");
		ASSERT_TRUE(dir.ok()) << dir.error().message();
		dir_ = dir.value();
		std::string qmp = dir_ + "/qmp.sock";
		auto p = QemuProcess::spawn("none",
					    {"qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display",
					     "none", "-qmp", fmt::format("unix:{},server=on,wait=off", qmp)},
					    {}, dir_ + "/stderr.log", qmp);
		ASSERT_TRUE(p.ok()) << p.error().message();
		qemu_.emplace(std::move(p).value());
	}
	void TearDown() override
	{
		qemu_.reset();
		if (!dir_.empty())
			removeRunDir(dir_);
	}

	std::string dir_;
	std::optional<QemuProcess> qemu_;
};

} // namespace

TEST_F(RealQemu, StopAndContEmitStopAndResumeEvents)
{
	auto c = qemu_->connectQmp(10s);
	ASSERT_TRUE(c.ok()) << c.error().message();
	auto st = c->queryStatus();
	ASSERT_TRUE(st.ok()) << st.error().message();
	EXPECT_EQ(st.value(), "running");

	ASSERT_TRUE(c->stop().ok());
	auto stop = c->waitEvent("STOP", 5s);
	ASSERT_TRUE(stop.ok()) << stop.error().message();
	EXPECT_GT(stop->seconds, 1600000000); // a wall-clock timestamp
	EXPECT_EQ(c->queryStatus().value(), "paused");

	ASSERT_TRUE(c->cont().ok());
	auto resume = c->waitEvent("RESUME", 5s);
	ASSERT_TRUE(resume.ok()) << resume.error().message();
	EXPECT_GE(resume->timestampUs(), stop->timestampUs());
	EXPECT_EQ(c->queryStatus().value(), "running");
}

TEST_F(RealQemu, UnknownCommandIsACommandNotFoundError)
{
	auto c = qemu_->connectQmp(10s);
	ASSERT_TRUE(c.ok()) << c.error().message();
	auto r = c->execute("no-such-command");
	ASSERT_FALSE(r.ok());
	EXPECT_EQ(r.error().code(), EREMOTEIO);
	EXPECT_NE(r.error().message().find("CommandNotFound"), std::string::npos) << r.error().message();
	// The connection stays usable after a QMP error.
	EXPECT_TRUE(c->queryStatus().ok());
}

TEST_F(RealQemu, QuitEmitsShutdownThenCommandsFailCleanly)
{
	auto c = qemu_->connectQmp(10s);
	ASSERT_TRUE(c.ok()) << c.error().message();
	ASSERT_TRUE(c->quit().ok());
	auto ev = c->waitEvent("SHUTDOWN", 5s);
	ASSERT_TRUE(ev.ok()) << ev.error().message();
	EXPECT_EQ(ev->dataString("reason").value(), "host-qmp-quit");
	auto status = qemu_->waitExit(10s);
	ASSERT_TRUE(status.ok()) << status.error().message();
	EXPECT_EQ(qemu_->describeExit(), "exited with status 0");

	auto st = c->queryStatus();
	ASSERT_FALSE(st.ok());
	EXPECT_TRUE(st.error().code() == ECONNRESET || st.error().code() == EPIPE) << st.error().message();
}

TEST_F(RealQemu, KilledQemuIsAClearErrorNotAHang)
{
	auto c = qemu_->connectQmp(10s);
	ASSERT_TRUE(c.ok()) << c.error().message();
	ASSERT_TRUE(qemu_->kill().ok());
	ASSERT_TRUE(qemu_->waitExit(10s).ok());
	auto ev = c->waitEvent("RESUME", 5s);
	ASSERT_FALSE(ev.ok());
	EXPECT_EQ(ev.error().code(), ECONNRESET) << ev.error().message();
}

TEST(QemuProcess, ConnectQmpReportsEarlyExitWithStderr)
{
	auto dir = makeRunDir("ferry-qmp-test");
	ASSERT_TRUE(dir.ok());
	std::string qmp = dir.value() + "/qmp.sock";
	auto p = QemuProcess::spawn("bad",
				    {"qemu-system-x86_64", "-machine", "no-such-machine", "-qmp",
				     fmt::format("unix:{},server=on,wait=off", qmp)},
				    {}, dir.value() + "/stderr.log", qmp);
	ASSERT_TRUE(p.ok()) << p.error().message();
	auto c = p->connectQmp(10s);
	ASSERT_FALSE(c.ok());
	EXPECT_EQ(c.error().code(), ECHILD);
	EXPECT_NE(c.error().message().find("unsupported machine type"), std::string::npos) << c.error().message();
	removeRunDir(dir.value());
}
