// SPDX-License-Identifier: GPL-2.0-or-later
// Test harness: a seeder serving a real source application process (the ferry binary's
// `__app-source`) in a background thread, and helpers to run a leecher against it with a real
// destination application process.
#pragma once

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <future>
#include <optional>
#include <thread>

#include <gtest/gtest.h>

#include "demo/demo_app.h"
#include "ferry/dirty/tracker.h"
#include "ferry/roles/leecher.h"
#include "ferry/roles/seeder.h"
#include "ferry/sys/mapping.h"
#include "ferry/wire/endpoint.h"

namespace ferry::test {

inline std::string ferryBinary()
{
	const char *p = std::getenv("FERRY_BIN");
	return p ? p : "";
}

// True while `pid` runs (exists and is not a zombie): /proc/PID/stat's state field.
inline bool processAlive(pid_t pid)
{
	std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
	std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
	auto paren = stat.rfind(')');
	return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] != 'Z';
}

struct SeederRig {
	std::optional<SourceAppHandle> app;
	std::unique_ptr<Seeder> seeder;
	std::optional<Listener> listener;
	std::future<Status> done;
	Status result;
	CompressionSpec compression; // set before start()
	std::atomic<int> switchOvers{0}; // calls of the seeder's switch-over hook

	~SeederRig() { stop(); }

	Status start(const SourceAppOptions &opts, uint32_t chunkSize, std::chrono::milliseconds rollback = std::chrono::seconds(10))
	{
		SourceAppOptions o = opts;
		o.exe = ferryBinary();
		FERRY_ASSIGN(SourceAppHandle a, SourceAppHandle::spawn(o));
		app.emplace(std::move(a));
		FERRY_ASSIGN(Userfaultfd u, app->takeUffd());
		TrackedRegion r{app->pid(), app->base(), app->size(), chunkSize};
		FERRY_ASSIGN(auto tracker, makeUffdWpTracker(r, std::move(u)));
		SourceAppHandle *s = &*app;
		SeederHooks hooks{[s] { return s->suspend(); }, [s] { return s->resume(); }, [s] { s->quit(); },
				  [this] {
					  switchOvers++;
					  return Status();
				  }};
		SeederOptions so;
		so.chunkSize = chunkSize;
		so.rollbackTimeout = rollback;
		so.compression = compression;
		so.regionFd = app->memfd(); // as `ferry seed` does
		seeder = std::make_unique<Seeder>(app->mapping().data(), app->size(), std::move(tracker), hooks, so);
		FERRY_ASSIGN(Listener l, Listener::listen(Endpoint::tcp("127.0.0.1", 0)));
		listener.emplace(std::move(l));
		done = std::async(std::launch::async, [this] { return seeder->serve(*listener); });
		return {};
	}
	Endpoint endpoint() const { return listener->boundEndpoint(); }
	// Waits for serve() to end by itself (after Done, or a rollback); false on timeout.
	bool waitFinished(std::chrono::milliseconds timeout)
	{
		if (!done.valid())
			return true;
		if (done.wait_for(timeout) != std::future_status::ready)
			return false;
		result = done.get();
		return true;
	}
	void stop()
	{
		if (done.valid()) {
			seeder->stop();
			result = done.get();
		}
	}
};

// A leecher writing into its own memfd and running a real destination application.
struct LeecherRig {
	DestAppOptions appOpts; // set before hooks()
	std::optional<DemoDestination> dest;

	LeecherHooks hooks(MigrationMode mode)
	{
		appOpts.exe = ferryBinary();
		appOpts.faults = mode == MigrationMode::Hybrid;
		dest.emplace(appOpts);
		return dest->hooks();
	}
};

} // namespace ferry::test
