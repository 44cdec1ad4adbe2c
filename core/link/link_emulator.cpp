// SPDX-License-Identifier: GPL-2.0-or-later
// The link emulator's owner: the listener, its acceptor thread and the relayed connections.
// The link model is in direction.h (one direction of one connection), the per-connection
// thread in relay.h; this file only accepts, starts, counts, cuts and reaps relays.
#include "ferry/link/link_emulator.h"

#include <poll.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <list>
#include <mutex>
#include <system_error>
#include <thread>

#include "ferry/base/log.h"
#include "link/relay.h"

namespace ferry {

using link::Relay;
using link::resetAndClose;
using link::setNonBlocking;

struct LinkEmulator::Impl {
	Listener listener;
	Endpoint upstream;
	LinkParams params;
	UniqueFd stopFd; // eventfd: destructor -> acceptor thread
	std::thread acceptor;
	std::atomic<bool> blocked{false};
	std::atomic<uint64_t> relayed{0};
	std::atomic<int64_t> upLine{0}, downLine{0}; // shared transmission schedule per direction
	std::atomic<uint64_t> accepted{0};

	mutable std::mutex lock;
	std::list<std::unique_ptr<Relay>> relays; // guarded by lock

	void acceptLoop();
	void startRelay(Connection client);
	void reapFinished();
	void cutAll();
};

void LinkEmulator::Impl::reapFinished()
{
	std::list<std::unique_ptr<Relay>> done;
	{
		std::lock_guard g(lock);
		for (auto it = relays.begin(); it != relays.end();) {
			auto next = std::next(it);
			if ((*it)->finished.load())
				done.splice(done.end(), relays, it);
			it = next;
		}
	}
	for (auto &r : done)
		r->thread.join();
}

void LinkEmulator::Impl::startRelay(Connection clientConn)
{
	UniqueFd client = clientConn.releaseFd();
	if (blocked.load()) {
		resetAndClose(client);
		return;
	}
	auto up = connectTo(upstream, 5000);
	if (!up.ok()) {
		FERRY_LOG(Warn, "link", "upstream {}: {}", upstream.str(), up.error().message());
		resetAndClose(client);
		return;
	}
	UniqueFd server = up->releaseFd();
	auto relay = std::make_unique<Relay>(std::move(client), std::move(server), params, relayed,
						   upLine, downLine);
	relay->wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	Status st;
	if (!relay->wake)
		st = Error::fromErrno("eventfd");
	if (st.ok())
		st = setNonBlocking(relay->client.get());
	if (st.ok())
		st = setNonBlocking(relay->server.get());
	if (!st.ok()) {
		FERRY_LOG(Warn, "link", "relay setup: {}", st.error().message());
		resetAndClose(relay->client);
		resetAndClose(relay->server);
		return;
	}
	Relay *r = relay.get();
	std::lock_guard g(lock);
	try {
		r->thread = std::thread([r] { r->run(); });
	} catch (const std::system_error &e) {
		FERRY_LOG(Warn, "link", "relay thread: {}", e.what());
		resetAndClose(r->client);
		resetAndClose(r->server);
		return;
	}
	relays.push_back(std::move(relay));
}

void LinkEmulator::Impl::acceptLoop()
{
	for (;;) {
		pollfd fds[2] = {{listener.fd(), POLLIN, 0}, {stopFd.get(), POLLIN, 0}};
		if (::poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			FERRY_LOG(Error, "link", "poll: {}", std::strerror(errno));
			return;
		}
		if (fds[1].revents)
			return;
		reapFinished();
		if (!fds[0].revents)
			continue;
		auto c = listener.accept(0);
		if (!c.ok()) {
			if (c.error().code() == ETIMEDOUT)
				continue;
			FERRY_LOG(Warn, "link", "accept: {}", c.error().message());
			if (c.error().code() == ECANCELED)
				return;
			continue;
		}
		accepted.fetch_add(1);
		startRelay(std::move(c).value());
	}
}

void LinkEmulator::Impl::cutAll()
{
	std::list<std::unique_ptr<Relay>> all;
	{
		std::lock_guard g(lock);
		all.swap(relays);
	}
	for (auto &r : all)
		r->cut();
	for (auto &r : all)
		r->thread.join();
}

LinkParams LinkParams::symmetric(std::chrono::microseconds rtt, double mbitPerSec)
{
	LinkDirection d;
	d.delay = rtt / 2;
	d.bytesPerSec = mbitPerSec > 0 ? uint64_t(mbitPerSec * 1e6 / 8) : 0;
	return {d, d};
}

LinkEmulator::LinkEmulator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<LinkEmulator>> LinkEmulator::start(const Endpoint &listenAt,
							   const Endpoint &upstream,
							   LinkParams params)
{
	auto impl = std::make_unique<Impl>();
	FERRY_ASSIGN(impl->listener, Listener::listen(listenAt));
	impl->upstream = upstream;
	impl->params = params;
	impl->stopFd.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	if (!impl->stopFd)
		return Error::fromErrno("eventfd");
	Impl *p = impl.get();
	try {
		impl->acceptor = std::thread([p] { p->acceptLoop(); });
	} catch (const std::system_error &e) {
		return Error(e.code().value(), fmt::format("link acceptor thread: {}", e.what()));
	}
	return std::unique_ptr<LinkEmulator>(new LinkEmulator(std::move(impl)));
}

LinkEmulator::~LinkEmulator()
{
	uint64_t one = 1;
	(void)!::write(impl_->stopFd.get(), &one, sizeof(one));
	impl_->acceptor.join();
	impl_->cutAll();
	impl_->listener.close();
}

Endpoint LinkEmulator::endpoint() const { return impl_->listener.boundEndpoint(); }

void LinkEmulator::cutAll() { impl_->cutAll(); }

void LinkEmulator::setBlocked(bool blocked) { impl_->blocked.store(blocked); }

uint64_t LinkEmulator::bytesRelayed() const { return impl_->relayed.load(); }

size_t LinkEmulator::activeConnections() const
{
	std::lock_guard g(impl_->lock);
	return size_t(std::count_if(impl_->relays.begin(), impl_->relays.end(),
				    [](const auto &r) { return !r->finished.load(); }));
}

uint64_t LinkEmulator::acceptedConnections() const { return impl_->accepted.load(); }

} // namespace ferry
