// SPDX-License-Identifier: GPL-2.0-or-later
// Mutual TLS 1.3 for framed connections (GnuTLS): what an operator configures, the credentials
// loaded from it, and a throwaway PKI for demos and tests. Connection::startTls() applies them.
//
// x509 uses the directory layout of libvirt's and QEMU's migration TLS (tls-creds-x509):
//   ca-cert.pem                      the CA that signs the peers' certificates
//   server-cert.pem, server-key.pem  presented by the side that accepted the connection
//   client-cert.pem, client-key.pem  presented by the side that connected
// Both sides present their certificate and both verify the peer's chain against ca-cert.pem
// and its key purpose (a server needs TLS WWW Server, a client TLS WWW Client, so a stolen
// client certificate cannot pose as a server). A peer without a valid certificate is refused
// during the handshake. There is no hostname check: the CA is the trust boundary, as with a
// dedicated migration CA.
//
// psk uses a key file in the format of QEMU's tls-creds-psk keys.psk: one `identity:hexkey`
// line per key (16 to 64 key bytes), blank lines and lines starting with '#' ignored. A server
// accepts any identity in its file; a client presents the first one. Key exchange is PSK with
// (EC)DHE, so a leaked key does not decrypt recorded sessions.
//
// Only TLS 1.3 is negotiated. Credentials are read-only once loaded (GnuTLS allows sharing them
// between threads and sessions); a Connection that started TLS keeps them alive.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "ferry/base/result.h"

namespace ferry {

enum class TlsMode {
	Insecure, // no TLS: plaintext, any peer trusted. Never a default; asked for by name.
	X509,
	Psk,
};

// The client connected; the server accepted. Each side loads the credentials of its role.
enum class TlsRole { Client, Server };

const char *tlsModeName(TlsMode mode);
const char *tlsRoleName(TlsRole role);

inline constexpr std::string_view kDefaultTlsDir = "/etc/pki/ferry";

struct TlsConfig {
	TlsMode mode = TlsMode::X509;
	std::string path; // X509: the directory ("" = kDefaultTlsDir); Psk: the key file

	// "x509:/etc/pki/ferry", "psk:/path/keys.psk" or "insecure"; parseTlsConfig() accepts it.
	std::string str() const;
};

// "x509" (kDefaultTlsDir), "x509:DIR", "psk:FILE" or "insecure"; EINVAL with the reason otherwise.
Result<TlsConfig> parseTlsConfig(std::string_view spec);

class TlsSession;

// Move-only owner of the GnuTLS credentials (certificate or PSK) and the TLS 1.3 priority
// cache for one role. Load once, use for every connection of that role; any thread may use it.
class TlsCredentials {
public:
	// Holds nothing: startTls() refuses it. Use load().
	TlsCredentials();
	TlsCredentials(TlsCredentials &&) noexcept;
	TlsCredentials &operator=(TlsCredentials &&) noexcept;
	TlsCredentials(const TlsCredentials &) = delete;
	TlsCredentials &operator=(const TlsCredentials &) = delete;
	~TlsCredentials();

	// Reads and checks the files the role needs. Errors name the file, what is wrong with it
	// and the fix (ENOENT/EACCES from the file system, EINVAL for content). TlsMode::Insecure
	// reads nothing and gives credentials with which startTls() keeps the plaintext.
	static Result<TlsCredentials> load(const TlsConfig &config, TlsRole role);

	bool valid() const;
	TlsMode mode() const;
	TlsRole role() const;
	// For logs: "x509 /etc/pki/ferry (server)", "psk /etc/ferry/keys.psk (client)", "insecure".
	std::string describe() const;

private:
	struct State;
	friend class TlsSession; // core/wire/tls_session.h
	std::shared_ptr<const State> s_;
};

// Writes a fresh CA and a server and a client certificate signed by it into dir (created 0700
// if missing), in the x509 layout above; keys are ECDSA P-256 and their files 0600. The CA key
// is not kept, so nothing more can be signed later. For demos and tests: the certificates are
// valid for 30 days and name CN=ferry throwaway {CA,server,client}.
Status writeThrowawayPki(const std::string &dir);

// Writes a PSK key file (0600) holding one line `identity:` + 32 random bytes in hex.
Status writeThrowawayPsk(const std::string &path, std::string_view identity = "ferry");

} // namespace ferry
