// SPDX-License-Identifier: GPL-2.0-or-later
#include "harness/process_usage.h"

#include <dirent.h>
#include <pthread.h>
#include <sys/resource.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace ferry {

namespace {

double cpuSecondsOfSelf()
{
	rusage ru{};
	::getrusage(RUSAGE_SELF, &ru);
	auto s = [](const timeval &t) { return double(t.tv_sec) + double(t.tv_usec) / 1e6; };
	return s(ru.ru_utime) + s(ru.ru_stime);
}

std::string readFirstLine(const std::string &path)
{
	std::ifstream f(path);
	std::string line;
	std::getline(f, line);
	return line;
}

struct StatusFigures {
	uint64_t rssAnonKib = 0, rssShmemKib = 0, vmPteKib = 0;
};

StatusFigures readStatus()
{
	StatusFigures s;
	std::ifstream f("/proc/self/status");
	std::string key;
	uint64_t value;
	while (f >> key) {
		if (key == "RssAnon:" && f >> value)
			s.rssAnonKib = value;
		else if (key == "RssShmem:" && f >> value)
			s.rssShmemKib = value;
		else if (key == "VmPTE:" && f >> value)
			s.vmPteKib = value;
		f.ignore(1 << 16, '\n');
	}
	return s;
}

double rounded(double v, double unit) { return std::round(v / unit) * unit; }

} // namespace

ScopedThreadName::ScopedThreadName(const char *name)
{
	::pthread_getname_np(::pthread_self(), previous_, sizeof previous_);
	::pthread_setname_np(::pthread_self(), name);
}

ScopedThreadName::~ScopedThreadName() { ::pthread_setname_np(::pthread_self(), previous_); }

JsonValue ProcessUsage::toJson() const
{
	JsonValue cpu = JsonValue::object();
	for (const auto &[name, s] : cpuByThreadS)
		cpu.set(name, rounded(s, 0.001));
	JsonValue o = JsonValue::object();
	o.set("period_ms", periodMs)
		.set("samples", samples)
		.set("cpu_by_thread_s", std::move(cpu))
		.set("cpu_total_s", rounded(cpuTotalS, 0.001))
		.set("cpu_unattributed_s", rounded(cpuUnattributedS, 0.001))
		.set("rss_anon_before_kib", rssAnonBeforeKib)
		.set("rss_anon_peak_kib", rssAnonPeakKib)
		.set("rss_shmem_before_kib", rssShmemBeforeKib)
		.set("rss_shmem_peak_kib", rssShmemPeakKib)
		.set("vm_pte_before_kib", vmPteBeforeKib)
		.set("vm_pte_peak_kib", vmPtePeakKib);
	return o;
}

ProcessUsageSampler::ProcessUsageSampler(std::chrono::milliseconds period) : period_(period)
{
	usage_.periodMs = double(period.count());
	cpuStartS_ = cpuSecondsOfSelf();
	StatusFigures s = readStatus();
	usage_.rssAnonBeforeKib = usage_.rssAnonPeakKib = s.rssAnonKib;
	usage_.rssShmemBeforeKib = usage_.rssShmemPeakKib = s.rssShmemKib;
	usage_.vmPteBeforeKib = usage_.vmPtePeakKib = s.vmPteKib;
	// What the threads alive now ran before the window is not counted: a first pass only
	// records it.
	sample();
	usage_.cpuByThreadS.clear();
	usage_.samples = 0;
	thread_ = std::thread([this] { loop(); });
}

ProcessUsageSampler::~ProcessUsageSampler()
{
	if (thread_.joinable())
		(void)stop();
}

void ProcessUsageSampler::loop()
{
	::pthread_setname_np(::pthread_self(), "bench-sampler");
	std::unique_lock lock(mutex_);
	while (!wake_.wait_for(lock, period_, [this] { return stopping_; }))
		sample();
}

void ProcessUsageSampler::sample()
{
	std::map<int, ThreadSeen> seen;
	if (DIR *d = ::opendir("/proc/self/task")) {
		while (dirent *e = ::readdir(d)) {
			int tid = std::atoi(e->d_name);
			if (tid <= 0)
				continue;
			std::string dir = "/proc/self/task/" + std::string(e->d_name);
			std::istringstream sched(readFirstLine(dir + "/schedstat"));
			uint64_t runNs = 0;
			if (!(sched >> runNs))
				continue; // exited meanwhile
			std::string name = readFirstLine(dir + "/comm");
			if (name.empty())
				continue; // exited between the two reads
			auto before = threads_.find(tid);
			uint64_t from = before == threads_.end() ? 0 : before->second.runNs;
			usage_.cpuByThreadS[name] += double(runNs - std::min(runNs, from)) / 1e9;
			seen[tid] = ThreadSeen{runNs};
		}
		::closedir(d);
	}
	threads_ = std::move(seen);
	StatusFigures s = readStatus();
	usage_.rssAnonPeakKib = std::max(usage_.rssAnonPeakKib, s.rssAnonKib);
	usage_.rssShmemPeakKib = std::max(usage_.rssShmemPeakKib, s.rssShmemKib);
	usage_.vmPtePeakKib = std::max(usage_.vmPtePeakKib, s.vmPteKib);
	usage_.samples++;
}

ProcessUsage ProcessUsageSampler::stop()
{
	{
		std::lock_guard lock(mutex_);
		stopping_ = true;
	}
	wake_.notify_one();
	thread_.join();
	sample();
	usage_.cpuTotalS = cpuSecondsOfSelf() - cpuStartS_;
	double attributed = 0;
	for (const auto &[name, s] : usage_.cpuByThreadS)
		attributed += s;
	usage_.cpuUnattributedS = usage_.cpuTotalS - attributed;
	return usage_;
}

} // namespace ferry
