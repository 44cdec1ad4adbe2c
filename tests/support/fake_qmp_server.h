// SPDX-License-Identifier: GPL-2.0-or-later
// A scripted QMP peer on one end of a socketpair, run on its own thread. The script reads the
// client's commands line by line and writes whatever bytes the test wants (valid, malformed,
// oversized or truncated), so each failure mode of the client can be produced on demand.
#pragma once

#include <sys/socket.h>

#include <functional>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "ferry/base/json.h"
#include "ferry/sys/fd.h"
#include "support/lines.h"

namespace ferry::test {

class FakeQmpPeer {
public:
	explicit FakeQmpPeer(int fd) : fd_(fd) {}

	// Next line from the client without its '\n'; empty string on EOF.
	std::string readLine()
	{
		for (;;) {
			if (auto line = takeLine(buf_))
				return *line;
			char tmp[4096];
			ssize_t r = ::recv(fd_, tmp, sizeof(tmp), 0);
			if (r <= 0)
				return {};
			buf_.append(tmp, static_cast<size_t>(r));
		}
	}

	// Reads a command, checks its name, returns its id (-1 on any mismatch, which fails the test).
	int64_t expectCommand(std::string_view name)
	{
		std::string line = readLine();
		auto cmd = JsonValue::parse(line);
		EXPECT_TRUE(cmd.ok()) << "client sent malformed JSON: " << line;
		if (!cmd.ok())
			return -1;
		auto exec = cmd->getString("execute");
		EXPECT_TRUE(exec.ok() && exec.value() == name) << "expected " << name << ", got " << line;
		auto id = cmd->getInt("id");
		return id.ok() ? id.value() : -1;
	}

	void send(std::string_view bytes)
	{
		size_t off = 0;
		while (off < bytes.size()) {
			ssize_t w = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
			if (w <= 0)
				return; // the client went away: the test checks the client side
			off += static_cast<size_t>(w);
		}
	}

	void sendLine(std::string_view json) { send(std::string(json) + "\r\n"); }

	void greet()
	{
		sendLine(R"({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}})");
		int64_t id = expectCommand("qmp_capabilities");
		reply(id, "{}");
	}

	void reply(int64_t id, std::string_view returnJson)
	{
		sendLine(fmt::format(R"({{"return": {}, "id": {}}})", returnJson, id));
	}

	void event(std::string_view name, std::string_view dataJson = "{}", int64_t sec = 1700000000,
		   int64_t usec = 123456)
	{
		sendLine(fmt::format(R"({{"timestamp": {{"seconds": {}, "microseconds": {}}}, "event": "{}", "data": {}}})",
				     sec, usec, name, dataJson));
	}

	void close() { ::shutdown(fd_, SHUT_RDWR); }

private:
	int fd_;
	std::string buf_;
};

// Owns the socketpair and the server thread; joins on destruction.
class FakeQmpServer {
public:
	explicit FakeQmpServer(std::function<void(FakeQmpPeer &)> script)
	{
		int sv[2];
		if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
			ADD_FAILURE() << "socketpair failed";
		client_ = UniqueFd(sv[0]);
		server_ = UniqueFd(sv[1]);
		thread_ = std::thread([this, script = std::move(script)] {
			FakeQmpPeer peer(server_.get());
			script(peer);
		});
	}
	~FakeQmpServer()
	{
		// Unblock a script still reading if the client side is gone already.
		if (client_)
			::shutdown(client_.get(), SHUT_RDWR);
		thread_.join();
	}
	// The client end, handed to QmpClient::fromConnectedFd.
	UniqueFd takeClientFd() { return std::move(client_); }
	// Ends the script's blocking reads (for scripts that wait for the client to hang up).
	void hangUpServer() { ::shutdown(server_.get(), SHUT_RDWR); }

private:
	UniqueFd client_;
	UniqueFd server_;
	std::thread thread_;
};

} // namespace ferry::test
