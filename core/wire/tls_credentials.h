// SPDX-License-Identifier: GPL-2.0-or-later
// What a TlsCredentials holds (internal to core/wire): filled by TlsCredentials::load()
// (tls.cpp), read by TlsSession (tls_session.cpp). Immutable once loaded: GnuTLS allows its
// credentials and priority caches to be shared read-only between threads and sessions.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <gnutls/gnutls.h>

#include "ferry/wire/tls.h"

namespace ferry {

struct TlsCredentials::State {
	TlsMode mode = TlsMode::Insecure;
	TlsRole role = TlsRole::Client;
	std::string path;
	gnutls_priority_t priority = nullptr;
	gnutls_certificate_credentials_t x509 = nullptr;
	gnutls_psk_client_credentials_t pskClient = nullptr;
	gnutls_psk_server_credentials_t pskServer = nullptr;
	// Server: every identity it accepts and its key. Client: the identity it presents.
	std::map<std::string, std::vector<uint8_t>, std::less<>> pskKeys;
	std::string pskIdentity;

	State() = default;
	State(const State &) = delete;
	State &operator=(const State &) = delete;
	~State();

	Status loadX509();
	Status loadPsk();
	Status initPriority(const char *spec);
};

} // namespace ferry
