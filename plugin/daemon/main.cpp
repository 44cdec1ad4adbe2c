// SPDX-License-Identifier: GPL-2.0-or-later
// ferryd: the per-host daemon that carries `virsh migrate --migrateuri unix://...` streams
// between hosts (docs/libvirt.md). Runs in the foreground (systemd: plugin/daemon/ferryd.service);
// SIGTERM or SIGINT stop it.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <csignal>
#include <optional>
#include <thread>

#include <CLI/CLI.hpp>
#include <fmt/ranges.h>

#include "daemon/config.h"
#include "daemon/daemon.h"
#include "ferry/base/log.h"
#include "libvirt/connection.h"
#include "libvirt/domain_prep.h"

using namespace ferry;

namespace {

// The running domains, from libvirt; reconnects when libvirtd went away, and asks the daemon
// for a resync on every lifecycle event. Used on the daemon's loop thread only.
class LibvirtDomains {
public:
	explicit LibvirtDomains(std::string uri) : uri_(std::move(uri)) {}
	void notify(daemon::Daemon *d) { daemon_ = d; }

	Result<std::vector<daemon::LocalDomain>> list()
	{
		if (!conn_ || !conn_->isAlive()) {
			events_.reset();
			conn_.reset();
			FERRY_ASSIGN(virt::Connection c, virt::Connection::open(uri_));
			conn_.emplace(std::move(c));
			std::atomic<daemon::Daemon *> *d = &daemon_;
			FERRY_ASSIGN(events_, conn_->onLifecycle([d](const virt::LifecycleEvent &ev) {
				FERRY_LOG(Debug, "ferryd", "domain {}: {}", ev.domain, ev.what);
				if (daemon::Daemon *p = d->load())
					p->domainsChanged();
			}));
			FERRY_LOG(Info, "ferryd", "connected to libvirt at {}", uri_);
		}
		FERRY_ASSIGN(auto running, conn_->activeDomains());
		std::vector<daemon::LocalDomain> out;
		for (virt::DomainInfo &info : running) {
			daemon::LocalDomain d;
			d.name = info.name;
			d.uuid = info.uuid;
			if (auto dom = conn_->lookupUuid(info.uuid); dom.ok()) {
				if (auto xml = dom->xml(); xml.ok()) {
					if (auto r = virt::inspectDomain(*xml); r.ok()) {
						d.preparedForFerry = r->ready();
						d.qmpSocket = r->qmpSocket;
						d.agentSocket = r->agentSocket;
						d.notPrepared = fmt::format("{}", fmt::join(r->missing(), ", "));
					}
				}
			}
			out.push_back(std::move(d));
		}
		return out;
	}

private:
	std::string uri_;
	std::atomic<daemon::Daemon *> daemon_{nullptr};
	virt::EventRegistration events_; // before conn_: dropped first
	std::optional<virt::Connection> conn_;
};

} // namespace

int main(int argc, char **argv)
{
	CLI::App app{"ferryd: carries `virsh migrate --migrateuri unix://SOCKET_DIR/migrate/PEER/DOMAIN.sock` "
		     "streams to the ferryd of host PEER over mutual TLS (docs/libvirt.md)"};
	std::string configPath{daemon::kDefaultConfigPath};
	std::string level = "info";
	bool check = false;
	app.add_option("--config", configPath, "Configuration file (JSON)")->capture_default_str();
	app.add_option("--log-level", level, "debug, info, warn, error or off")->capture_default_str();
	app.add_flag("--check", check, "Check the configuration and TLS material, then exit");
	CLI11_PARSE(app, argc, argv);
	LogLevel l;
	if (!parseLogLevel(level, &l)) {
		fmt::print(stderr, "ferryd: unknown log level '{}'\n", level);
		return 2;
	}
	setLogLevel(l);

	auto config = daemon::loadDaemonConfig(configPath);
	if (!config.ok()) {
		fmt::print(stderr, "ferryd: {}\n", config.error().message());
		return 2;
	}
	auto creds = daemon::PeerCredentials::load(config->tls);
	if (!creds.ok()) {
		fmt::print(stderr, "ferryd: TLS material: {}\n", creds.error().message());
		return 2;
	}
	if (check) {
		fmt::print("ferryd: {} is valid: host '{}', {} peer(s), TLS {}\n", configPath, config->name,
			   config->peers.size(), config->tls.str());
		return 0;
	}

	// Signals: blocked in every thread (threads inherit the mask), taken by sigwait below.
	std::signal(SIGPIPE, SIG_IGN);
	sigset_t stopSignals;
	sigemptyset(&stopSignals);
	sigaddset(&stopSignals, SIGINT);
	sigaddset(&stopSignals, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &stopSignals, nullptr);

	if (auto st = virt::startEventLoop(); !st.ok()) {
		fmt::print(stderr, "ferryd: libvirt event loop: {}\n", st.error().message());
		return 1;
	}
	auto domains = std::make_shared<LibvirtDomains>(config->libvirtUri);
	auto d = daemon::Daemon::create(*std::move(config), *std::move(creds), [domains] { return domains->list(); });
	if (!d.ok()) {
		fmt::print(stderr, "ferryd: {}\n", d.error().message());
		return 1;
	}
	domains->notify(d->get());
	std::thread signals([&] {
		int signo = 0;
		sigwait(&stopSignals, &signo);
		FERRY_LOG(Info, "ferryd", "{}: stopping", strsignal(signo));
		(*d)->stop();
	});
	Status st = (*d)->run();
	if (signals.joinable()) {
		// run() ended by itself (an error): wake the signal thread.
		pthread_kill(signals.native_handle(), SIGTERM);
		signals.join();
	}
	domains->notify(nullptr);
	int rc = 0;
	if (!st.ok()) {
		fmt::print(stderr, "ferryd: {}\n", st.error().message());
		rc = 1;
	}
	if ((*d)->runningWorkers() > 0) {
		// Threads of migrations that could not be interrupted still use the daemon: leave
		// without running destructors.
		std::fflush(nullptr);
		std::_Exit(rc);
	}
	return rc;
}
