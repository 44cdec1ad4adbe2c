// SPDX-License-Identifier: GPL-2.0-or-later
// One GnuTLS session on a connected stream socket (internal to core/wire; Connection owns it).
//
// Concurrency: GnuTLS lets one thread send while another receives on the same session
// (manual, "Thread safety"), except for TLS 1.2 renegotiation, GNUTLS_AUTO_REAUTH and a
// GNUTLS_SHUT_WR close, none of which is used here (TLS 1.3 only, no re-authentication, no
// gnutls_bye). A TLS 1.3 KeyUpdate that asks for ours is answered by the next send, not by the
// receiving thread (lib/tls13/key_update.c), and we never cork, so each direction of the session
// is touched by one thread. Callers serialise sends among themselves and receives among
// themselves; the push callback and the send-side fields below belong to the sender, the pull
// callback and the receive-side fields to the receiver.
//
// The transport is our own push (sendmsg, MSG_NOSIGNAL) and pull (poll against a deadline,
// then recv) on the borrowed fd: that is what gives recvHeader() its timeout over TLS,
// keeps errno for the caller and lets shutdown() wake a blocked receiver (recv returns 0).
// GnuTLS keeps a partly received record across a pull that timed out, so a timeout never
// loses stream bytes. It also means GnuTLS never enables kTLS (it only does so with its own
// transport; Debian's 3.7.9 is built without kTLS anyway).
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include <gnutls/gnutls.h>

#include "ferry/base/result.h"
#include "ferry/wire/tls.h"

namespace ferry {

class TlsSession {
public:
	// Handshakes on fd (borrowed: it must outlive the session) as creds.role(). timeoutMs < 0
	// waits forever. On failure the peer is sent the matching alert where TLS has one, and
	// *plaintextPeer says whether it sent a plaintext ferry frame instead of TLS (it could
	// not read an alert; the caller may answer in its own language).
	static Result<std::unique_ptr<TlsSession>> handshake(int fd, const TlsCredentials &creds,
							     int timeoutMs, bool *plaintextPeer);
	TlsSession(const TlsSession &) = delete;
	TlsSession &operator=(const TlsSession &) = delete;
	~TlsSession();

	// Sender side. Writes the iovecs in order as full-size records: pieces smaller than a
	// record are gathered into one (a 24-byte header does not get a record of its own), whole
	// records go from the caller's memory. `sent` counts plaintext bytes as they go.
	Status sendAll(const iovec *iov, size_t iovcnt, std::atomic<uint64_t> &sent);
	// Receiver side. At most len plaintext bytes (one record's worth at most); 0 when the peer
	// closed, with or without close_notify. deadlineMs: absolute monotonic ms, -1 none.
	Result<size_t> recv(void *dst, size_t len, int64_t deadlineMs);
	// Decrypted bytes waiting in the session: a recv() returns them without touching the socket.
	size_t pending() const;

	const std::string &peerIdentity() const { return peer_; }

	// The PSK server's key lookup (gnutls_psk_server_credentials_function2), in the handshake;
	// the session's pointer (gnutls_session_get_ptr) is the TlsSession.
	static int pskKey(gnutls_session_t session, const gnutls_datum_t *identity, gnutls_datum_t *key);

private:
	TlsSession(int fd, std::shared_ptr<const TlsCredentials::State> creds);

	static ssize_t push(gnutls_transport_ptr_t self, const giovec_t *iov, int iovcnt);
	static ssize_t pull(gnutls_transport_ptr_t self, void *dst, size_t len);
	static int pullTimeout(gnutls_transport_ptr_t self, unsigned int ms);

	Status setUp();
	bool peerSentPlaintextFerry() const;
	bool pskBinderFailed(int code) const;
	Error handshakeError(int code) const;
	Status sendRecord(const uint8_t *p, size_t len, std::atomic<uint64_t> &sent);
	std::string describePeer() const;

	int fd_;
	// gnutls_credentials_set() keeps a pointer, not a copy: the session holds the credentials
	// and is deinitialised (destructor body) before they are released.
	std::shared_ptr<const TlsCredentials::State> creds_;
	gnutls_session_t session_ = nullptr;
	// The key purpose the peer's certificate must carry; GnuTLS keeps a pointer to it.
	gnutls_typed_vdata_st purpose_{};
	std::string peer_;

	// Sender side.
	int sendErrno_ = 0;
	size_t maxRecord_ = 0;
	std::unique_ptr<uint8_t[]> gather_;
	size_t gatherLen_ = 0;

	// Receiver side (and the handshake, which runs alone).
	int64_t recvDeadline_ = -1;
	int recvErrno_ = 0;
	bool recvEof_ = false;
	// The first bytes the peer sent during the handshake, to recognise a plaintext ferry.
	uint8_t firstBytes_[4] = {};
	size_t firstLen_ = 0;
	bool pskLookedUp_ = false; // the PSK server found (or not) the client's identity
};

} // namespace ferry
