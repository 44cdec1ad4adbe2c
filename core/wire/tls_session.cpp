// SPDX-License-Identifier: GPL-2.0-or-later
#include "wire/tls_session.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <climits>
#include <cstring>

#include <gnutls/x509.h>

#include "ferry/wire/protocol.h"
#include "wire/deadline.h"
#include "wire/gnutls_owners.h"
#include "wire/tls_credentials.h"

namespace ferry {

using wire::GnutlsDatum;
using wire::X509Crt;

namespace {

// Alerts by which the peer says it does not accept our certificate, key or identity.
bool isRefusal(gnutls_alert_description_t a)
{
	switch (a) {
	case GNUTLS_A_BAD_CERTIFICATE:
	case GNUTLS_A_UNSUPPORTED_CERTIFICATE:
	case GNUTLS_A_CERTIFICATE_REVOKED:
	case GNUTLS_A_CERTIFICATE_EXPIRED:
	case GNUTLS_A_CERTIFICATE_UNKNOWN:
	case GNUTLS_A_UNKNOWN_CA:
	case GNUTLS_A_ACCESS_DENIED:
	case GNUTLS_A_DECRYPT_ERROR:
	case GNUTLS_A_CERTIFICATE_REQUIRED:
	case GNUTLS_A_UNKNOWN_PSK_IDENTITY:
		return true;
	default:
		return false;
	}
}

// A fatal TLS error outside the transport (which the callers report with errno).
Error tlsFailure(gnutls_session_t session, int code)
{
	if (code == GNUTLS_E_FATAL_ALERT_RECEIVED) {
		gnutls_alert_description_t a = gnutls_alert_get(session);
		const char *name = gnutls_alert_get_name(a);
		if (isRefusal(a))
			return Error::format(EACCES, "the peer refused this side's credentials (TLS alert: {})",
					     name ? name : "unknown");
		return Error::format(EPROTO, "the peer sent TLS alert: {}", name ? name : "unknown");
	}
	return Error::format(EPROTO, "TLS: {}", gnutls_strerror(code));
}

} // namespace

TlsSession::TlsSession(int fd, std::shared_ptr<const TlsCredentials::State> creds)
	: fd_(fd), creds_(std::move(creds))
{
}

TlsSession::~TlsSession()
{
	if (session_)
		gnutls_deinit(session_);
}

int TlsSession::pskKey(gnutls_session_t session, const gnutls_datum_t *identity, gnutls_datum_t *key)
{
	auto *t = static_cast<TlsSession *>(gnutls_session_get_ptr(session));
	t->pskLookedUp_ = true;
	auto it = t->creds_->pskKeys.find(
		std::string_view(reinterpret_cast<const char *>(identity->data), identity->size));
	// 1: unknown identity. GnuTLS then checks the binder against a random key, so an unknown
	// identity fails exactly like a wrong key and the peer cannot probe for identities.
	if (it == t->creds_->pskKeys.end())
		return 1;
	// GnuTLS takes ownership of the copy and frees it with gnutls_free.
	key->data = static_cast<unsigned char *>(gnutls_malloc(it->second.size()));
	if (!key->data)
		return -1;
	std::memcpy(key->data, it->second.data(), it->second.size());
	key->size = unsigned(it->second.size());
	return 0;
}

ssize_t TlsSession::push(gnutls_transport_ptr_t self, const giovec_t *iov, int iovcnt)
{
	auto *t = static_cast<TlsSession *>(self);
	// giovec_t has iovec's layout but is another type: copy. GnuTLS passes a few at a time,
	// and a short write is fine (it keeps the rest and pushes again).
	iovec v[16];
	size_t n = std::min<size_t>(size_t(std::max(iovcnt, 0)), std::size(v));
	for (size_t i = 0; i < n; i++)
		v[i] = {iov[i].iov_base, iov[i].iov_len};
	msghdr msg{};
	msg.msg_iov = v;
	msg.msg_iovlen = n;
	for (;;) {
		// MSG_NOSIGNAL: a vanished peer is an EPIPE we report, not a SIGPIPE.
		ssize_t r = ::sendmsg(t->fd_, &msg, MSG_NOSIGNAL);
		if (r >= 0)
			return r;
		if (errno == EINTR)
			continue;
		// GnuTLS reads errno (its default errno function): EAGAIN, from SO_SNDTIMEO, becomes
		// GNUTLS_E_AGAIN, anything else a push error we report from sendErrno_.
		t->sendErrno_ = errno;
		return -1;
	}
}

ssize_t TlsSession::pull(gnutls_transport_ptr_t self, void *dst, size_t len)
{
	auto *t = static_cast<TlsSession *>(self);
	for (;;) {
		if (t->recvDeadline_ >= 0) {
			pollfd p{t->fd_, POLLIN, 0};
			int r = ::poll(&p, 1, wire::pollTimeoutUntil(t->recvDeadline_));
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0) {
				t->recvErrno_ = errno;
				return -1;
			}
			if (r == 0) {
				// EAGAIN is resumable for GnuTLS: the part of a record already read
				// stays buffered in the session for the next receive.
				t->recvErrno_ = ETIMEDOUT;
				errno = EAGAIN;
				return -1;
			}
		}
		ssize_t n = ::recv(t->fd_, dst, len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			t->recvErrno_ = errno; // EAGAIN here is SO_RCVTIMEO expiring
			return -1;
		}
		if (n == 0)
			t->recvEof_ = true; // inside a record GnuTLS reports it as a short read (AGAIN)
		if (t->firstLen_ < sizeof(t->firstBytes_)) {
			size_t take = std::min(size_t(n), sizeof(t->firstBytes_) - t->firstLen_);
			std::memcpy(t->firstBytes_ + t->firstLen_, dst, take);
			t->firstLen_ += take;
		}
		return n;
	}
}

int TlsSession::pullTimeout(gnutls_transport_ptr_t self, unsigned int ms)
{
	auto *t = static_cast<TlsSession *>(self);
	pollfd p{t->fd_, POLLIN, 0};
	int timeout = ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : int(std::min<unsigned>(ms, INT_MAX));
	for (;;) {
		int r = ::poll(&p, 1, timeout);
		if (r < 0 && errno == EINTR)
			continue;
		return r;
	}
}

Status TlsSession::setUp()
{
	const TlsCredentials::State &c = *creds_;
	bool server = c.role == TlsRole::Server;
	// No session tickets: ferry never resumes, and tickets would be one more post-handshake
	// message for the receiving thread.
	int r = gnutls_init(&session_, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NO_TICKETS);
	if (r < 0)
		return Error::format(ENOMEM, "TLS session: {}", gnutls_strerror(r));
	if ((r = gnutls_priority_set(session_, c.priority)) < 0)
		return Error::format(EINVAL, "TLS priority: {}", gnutls_strerror(r));
	gnutls_session_set_ptr(session_, this); // for pskKey()
	switch (c.mode) {
	case TlsMode::X509:
		r = gnutls_credentials_set(session_, GNUTLS_CRD_CERTIFICATE, c.x509);
		if (server)
			gnutls_certificate_server_set_request(session_, GNUTLS_CERT_REQUIRE);
		// Chain against ca-cert.pem and the purpose of the peer's role; a failure fails
		// the handshake (GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR), on both sides.
		purpose_.type = GNUTLS_DT_KEY_PURPOSE_OID;
		purpose_.data = reinterpret_cast<unsigned char *>(
			const_cast<char *>(server ? GNUTLS_KP_TLS_WWW_CLIENT : GNUTLS_KP_TLS_WWW_SERVER));
		purpose_.size = 0;
		gnutls_session_set_verify_cert2(session_, &purpose_, 1, 0);
		break;
	case TlsMode::Psk:
		r = server ? gnutls_credentials_set(session_, GNUTLS_CRD_PSK, c.pskServer)
			   : gnutls_credentials_set(session_, GNUTLS_CRD_PSK, c.pskClient);
		break;
	case TlsMode::Insecure:
		return Error(EINVAL, "TLS session with insecure credentials");
	}
	if (r < 0)
		return Error::format(EINVAL, "TLS credentials: {}", gnutls_strerror(r));
	gnutls_transport_set_ptr(session_, this);
	gnutls_transport_set_vec_push_function(session_, push);
	gnutls_transport_set_pull_function(session_, pull);
	gnutls_transport_set_pull_timeout_function(session_, pullTimeout);
	return {};
}

// A ferry that does not use TLS opens (or answers) with a frame header, not a TLS record.
bool TlsSession::peerSentPlaintextFerry() const
{
	uint8_t magic[sizeof(kFrameMagic)];
	std::memcpy(magic, &kFrameMagic, sizeof(magic)); // the wire order, as the peer sent it
	static_assert(sizeof(firstBytes_) == sizeof(magic));
	return firstLen_ == sizeof(magic) && std::memcmp(firstBytes_, magic, sizeof(magic)) == 0;
}

Error TlsSession::handshakeError(int code) const
{
	if (peerSentPlaintextFerry())
		return Error(EPROTO, "the peer sent a plaintext ferry frame: it does not use TLS "
				     "(both sides need the same TLS mode)");
	switch (code) {
	case GNUTLS_E_TIMEDOUT:
	case GNUTLS_E_AGAIN:
		if (recvErrno_ == ETIMEDOUT || code == GNUTLS_E_TIMEDOUT)
			return Error(ETIMEDOUT, "timed out (the peer sent nothing, or not enough)");
		if (recvEof_)
			return Error(ECONNRESET, "the peer closed the connection");
		return Error::fromErrno(sendErrno_ == EAGAIN ? "send" : "recv", ETIMEDOUT);
	case GNUTLS_E_PULL_ERROR:
		return Error::fromErrno("recv", recvErrno_ ? recvErrno_ : EIO);
	case GNUTLS_E_PUSH_ERROR:
		return Error::fromErrno("send", sendErrno_ ? sendErrno_ : EIO);
	case GNUTLS_E_PREMATURE_TERMINATION:
		return Error(ECONNRESET, "the peer closed the connection");
	case GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR: {
		GnutlsDatum why;
		unsigned status = gnutls_session_get_verify_cert_status(session_);
		if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, why.out(), 0) < 0)
			return Error(EACCES, "refused the peer's certificate");
		std::string_view text = why.view();
		while (!text.empty() && text.back() == ' ')
			text.remove_suffix(1);
		return Error::format(EACCES, "refused the peer's certificate: {}", text);
	}
	case GNUTLS_E_NO_CERTIFICATE_FOUND:
	case GNUTLS_E_CERTIFICATE_REQUIRED:
		return Error(EACCES, "refused the peer: it presented no certificate");
	case GNUTLS_E_CERTIFICATE_ERROR:
		return Error(EACCES, "refused the peer's certificate: it could not be verified");
	default:
		if (pskBinderFailed(code))
			return Error::format(EACCES, "refused the peer: it did not prove the key of an "
						     "identity in {} (wrong key, or unknown identity)",
					     creds_->path);
		return tlsFailure(session_, code);
	}
}

// The server looked the client's identity up, then the binder (the proof that the client
// holds that identity's key) did not match: GnuTLS reports this as an illegal parameter.
bool TlsSession::pskBinderFailed(int code) const
{
	return creds_->mode == TlsMode::Psk && pskLookedUp_ && code == GNUTLS_E_RECEIVED_ILLEGAL_PARAMETER;
}

Result<std::unique_ptr<TlsSession>> TlsSession::handshake(int fd, const TlsCredentials &creds,
							  int timeoutMs, bool *plaintextPeer)
{
	*plaintextPeer = false;
	if (!creds.s_)
		return Error(EINVAL, "TLS handshake: no credentials");
	std::unique_ptr<TlsSession> t(new TlsSession(fd, creds.s_));
	std::string what = fmt::format("TLS handshake as {} ({})", tlsRoleName(creds.role()),
				       tlsModeName(creds.mode()));
	FERRY_TRY_CTX(t->setUp(), "{}", what);

	// GnuTLS' own handshake timeout (it polls through pullTimeout), and the same deadline
	// in pull() so that no single read outlives it either.
	if (timeoutMs >= 0) {
		t->recvDeadline_ = wire::monotonicMs() + timeoutMs;
		gnutls_handshake_set_timeout(t->session_, unsigned(std::max(timeoutMs, 1)));
	} else {
		gnutls_handshake_set_timeout(t->session_, 0);
	}
	int r;
	do {
		r = gnutls_handshake(t->session_);
		// Not GNUTLS_E_AGAIN: on this blocking socket it only means a timeout expired.
	} while (r < 0 && r != GNUTLS_E_AGAIN && !gnutls_error_is_fatal(r));
	if (r < 0) {
		Error e = t->handshakeError(r).context(what);
		*plaintextPeer = t->peerSentPlaintextFerry();
		if (*plaintextPeer)
			return e;
		switch (r) {
		case GNUTLS_E_TIMEDOUT:
		case GNUTLS_E_AGAIN:
		case GNUTLS_E_PULL_ERROR:
		case GNUTLS_E_PUSH_ERROR:
		case GNUTLS_E_PREMATURE_TERMINATION:
		case GNUTLS_E_FATAL_ALERT_RECEIVED:
			break; // nobody to tell, or the peer already knows
		default:
			// Tell the peer why (bad_certificate, certificate_required, ...), best
			// effort: it makes the error on its side name the cause. A failed PSK
			// binder is decrypt_error (RFC 8446, 6.2), not GnuTLS' illegal_parameter.
			if (t->pskBinderFailed(r))
				(void)gnutls_alert_send(t->session_, GNUTLS_AL_FATAL, GNUTLS_A_DECRYPT_ERROR);
			else
				(void)gnutls_alert_send_appropriate(t->session_, r);
		}
		return e;
	}
	t->recvDeadline_ = -1;
	t->maxRecord_ = gnutls_record_get_max_size(t->session_);
	t->gather_.reset(new uint8_t[t->maxRecord_]);
	t->peer_ = t->describePeer();
	return t;
}

std::string TlsSession::describePeer() const
{
	if (creds_->mode == TlsMode::Psk) {
		gnutls_datum_t user;
		if (creds_->role == TlsRole::Server && gnutls_psk_server_get_username2(session_, &user) == 0)
			return fmt::format("psk {}",
					   std::string_view(reinterpret_cast<const char *>(user.data), user.size));
		// The server proved it holds the key of the identity we presented.
		return fmt::format("psk {}", creds_->pskIdentity);
	}
	unsigned count = 0;
	const gnutls_datum_t *chain = gnutls_certificate_get_peers(session_, &count);
	X509Crt crt;
	GnutlsDatum dn;
	if (!chain || count == 0 || gnutls_x509_crt_init(crt.out()) < 0 ||
	    gnutls_x509_crt_import(crt.get(), &chain[0], GNUTLS_X509_FMT_DER) < 0 ||
	    gnutls_x509_crt_get_dn3(crt.get(), dn.out(), 0) < 0)
		return "x509 (unreadable DN)";
	return fmt::format("x509 {}", dn.view());
}

Status TlsSession::sendRecord(const uint8_t *p, size_t len, std::atomic<uint64_t> &sent)
{
	while (len > 0) {
		sendErrno_ = 0;
		ssize_t n = gnutls_record_send(session_, p, len);
		if (n == GNUTLS_E_INTERRUPTED)
			continue; // same arguments again, as GnuTLS requires
		if (n < 0) {
			// The record may be half written: the connection cannot carry another frame.
			if (n == GNUTLS_E_AGAIN)
				return Error::fromErrno("send", ETIMEDOUT);
			if (sendErrno_ != 0)
				return Error::fromErrno("send", sendErrno_);
			// The receiving thread saw the session end (EOF, an alert) first.
			if (n == GNUTLS_E_INVALID_SESSION)
				return Error(EPIPE, "send: the TLS session has ended");
			return tlsFailure(session_, int(n)).context("send");
		}
		sent.fetch_add(size_t(n), std::memory_order_relaxed);
		p += n;
		len -= size_t(n);
	}
	return {};
}

Status TlsSession::sendAll(const iovec *iov, size_t iovcnt, std::atomic<uint64_t> &sent)
{
	gatherLen_ = 0;
	for (size_t i = 0; i < iovcnt; i++) {
		const auto *p = static_cast<const uint8_t *>(iov[i].iov_base);
		size_t left = iov[i].iov_len;
		while (left > 0) {
			if (gatherLen_ == 0 && left >= maxRecord_) {
				FERRY_TRY(sendRecord(p, maxRecord_, sent));
				p += maxRecord_;
				left -= maxRecord_;
				continue;
			}
			size_t take = std::min(left, maxRecord_ - gatherLen_);
			std::memcpy(gather_.get() + gatherLen_, p, take);
			gatherLen_ += take;
			p += take;
			left -= take;
			if (gatherLen_ == maxRecord_) {
				FERRY_TRY(sendRecord(gather_.get(), gatherLen_, sent));
				gatherLen_ = 0;
			}
		}
	}
	if (gatherLen_ > 0) {
		FERRY_TRY(sendRecord(gather_.get(), gatherLen_, sent));
		gatherLen_ = 0;
	}
	return {};
}

Result<size_t> TlsSession::recv(void *dst, size_t len, int64_t deadlineMs)
{
	recvDeadline_ = deadlineMs;
	recvErrno_ = 0;
	recvEof_ = false;
	for (;;) {
		ssize_t n = gnutls_record_recv(session_, dst, len);
		if (n >= 0)
			return size_t(n); // 0: close_notify
		if (n == GNUTLS_E_INTERRUPTED || n == GNUTLS_E_WARNING_ALERT_RECEIVED)
			continue;
		if (n == GNUTLS_E_AGAIN) {
			if (recvErrno_ == ETIMEDOUT)
				return Error(ETIMEDOUT, "timed out waiting for data");
			if (recvErrno_ == EAGAIN || recvErrno_ == EWOULDBLOCK)
				return Error::fromErrno("recv", ETIMEDOUT); // SO_RCVTIMEO
			if (recvEof_)
				return size_t(0); // the peer closed inside a record
			return Error(EIO, "TLS recv: the session wants a retry it cannot get");
		}
		if (recvErrno_ != 0)
			return Error::fromErrno("recv", recvErrno_);
		// EOF without close_notify: the caller tells a close between frames from a truncation.
		if (n == GNUTLS_E_PREMATURE_TERMINATION)
			return size_t(0);
		if (n == GNUTLS_E_INVALID_SESSION)
			return Error(ECONNRESET, "recv: the TLS session has ended");
		return tlsFailure(session_, int(n)).context("recv");
	}
}

size_t TlsSession::pending() const { return gnutls_record_check_pending(session_); }

} // namespace ferry
