// SPDX-License-Identifier: GPL-2.0-or-later
// Throwaway credentials for demos and tests: a CA with a server and a client certificate in
// the x509 layout of ferry/wire/tls.h, and a PSK key file.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "ferry/sys/fd.h"
#include "ferry/wire/tls.h"
#include "wire/gnutls_owners.h"

namespace ferry {

using wire::GnutlsDatum;
using wire::X509Crt;
using wire::X509Privkey;

namespace {

constexpr time_t kValidity = 30 * 24 * 3600;
// Two demo hosts' clocks may disagree a little.
constexpr time_t kBackdate = 3600;

Status check(int r, std::string_view what)
{
	if (r < 0)
		return Error::format(EIO, "{}: {}", what, gnutls_strerror(r));
	return {};
}

// Writes data to path with exactly `mode`. An existing file is truncated first and gets the
// mode before any byte is written, so a key never sits in a file others may read.
Status writeFile(const std::string &path, std::string_view data, mode_t mode)
{
	UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode));
	if (!fd)
		return Error::fromErrno(path);
	if (::fchmod(fd.get(), mode) < 0)
		return Error::fromErrno(path);
	while (!data.empty()) {
		ssize_t n = ::write(fd.get(), data.data(), data.size());
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return Error::fromErrno(path);
		data.remove_prefix(size_t(n));
	}
	return {};
}

Result<X509Privkey> newKey()
{
	X509Privkey k;
	FERRY_TRY(check(gnutls_x509_privkey_init(k.out()), "private key"));
	FERRY_TRY(check(gnutls_x509_privkey_generate(k.get(), GNUTLS_PK_ECDSA,
						     GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0),
			"generate an ECDSA P-256 key"));
	return k;
}

enum class CertKind { Ca, Server, Client };

// A certificate for `key`, signed by the issuer (self-signed when issuer is null).
Result<X509Crt> newCert(gnutls_x509_privkey_t key, CertKind kind, gnutls_x509_crt_t issuer,
			gnutls_x509_privkey_t issuerKey)
{
	static constexpr const char *kDn[] = {"CN=ferry throwaway CA,O=ferry",
					      "CN=ferry throwaway server,O=ferry",
					      "CN=ferry throwaway client,O=ferry"};
	X509Crt c;
	FERRY_TRY(check(gnutls_x509_crt_init(c.out()), "certificate"));
	gnutls_x509_crt_t crt = c.get();
	FERRY_TRY(check(gnutls_x509_crt_set_version(crt, 3), "certificate version"));
	uint8_t serial[16];
	FERRY_TRY(check(gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof(serial)), "serial number"));
	serial[0] &= 0x7f; // a positive INTEGER
	FERRY_TRY(check(gnutls_x509_crt_set_serial(crt, serial, sizeof(serial)), "serial number"));
	time_t now = ::time(nullptr);
	FERRY_TRY(check(gnutls_x509_crt_set_activation_time(crt, now - kBackdate), "validity"));
	FERRY_TRY(check(gnutls_x509_crt_set_expiration_time(crt, now + kValidity), "validity"));
	const char *bad = nullptr;
	FERRY_TRY(check(gnutls_x509_crt_set_dn(crt, kDn[int(kind)], &bad), "subject DN"));
	FERRY_TRY(check(gnutls_x509_crt_set_key(crt, key), "public key"));

	bool ca = kind == CertKind::Ca;
	FERRY_TRY(check(gnutls_x509_crt_set_basic_constraints(crt, ca, -1), "basic constraints"));
	FERRY_TRY(check(gnutls_x509_crt_set_key_usage(crt, ca ? GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN
							      : GNUTLS_KEY_DIGITAL_SIGNATURE),
			"key usage"));
	if (!ca)
		FERRY_TRY(check(gnutls_x509_crt_set_key_purpose_oid(
					crt, kind == CertKind::Server ? GNUTLS_KP_TLS_WWW_SERVER
								      : GNUTLS_KP_TLS_WWW_CLIENT, 0),
				"key purpose"));
	uint8_t id[64];
	size_t idLen = sizeof(id);
	FERRY_TRY(check(gnutls_x509_crt_get_key_id(crt, 0, id, &idLen), "key id"));
	FERRY_TRY(check(gnutls_x509_crt_set_subject_key_id(crt, id, idLen), "subject key id"));
	if (issuer) {
		idLen = sizeof(id);
		unsigned critical = 0;
		FERRY_TRY(check(gnutls_x509_crt_get_subject_key_id(issuer, id, &idLen, &critical),
				"issuer key id"));
		FERRY_TRY(check(gnutls_x509_crt_set_authority_key_id(crt, id, idLen), "authority key id"));
	}
	FERRY_TRY(check(gnutls_x509_crt_sign2(crt, issuer ? issuer : crt, issuer ? issuerKey : key,
					      GNUTLS_DIG_SHA256, 0),
			"sign the certificate"));
	return c;
}

Status writeCert(const std::string &path, gnutls_x509_crt_t crt)
{
	GnutlsDatum pem;
	FERRY_TRY(check(gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, pem.out()), path));
	return writeFile(path, pem.view(), 0644);
}

Status writeKey(const std::string &path, gnutls_x509_privkey_t key)
{
	GnutlsDatum pem;
	FERRY_TRY(check(gnutls_x509_privkey_export2_pkcs8(key, GNUTLS_X509_FMT_PEM, nullptr,
							  GNUTLS_PKCS_PLAIN, pem.out()),
			path));
	return writeFile(path, pem.view(), 0600);
}

} // namespace

Status writeThrowawayPki(const std::string &dir)
{
	if (::mkdir(dir.c_str(), 0700) < 0 && errno != EEXIST)
		return Error::fromErrno(fmt::format("throwaway PKI: mkdir {}", dir));
	FERRY_ASSIGN(X509Privkey caKey, newKey());
	FERRY_ASSIGN(X509Crt ca, newCert(caKey.get(), CertKind::Ca, nullptr, nullptr));
	FERRY_TRY_CTX(writeCert(dir + "/ca-cert.pem", ca.get()), "throwaway PKI");
	for (CertKind kind : {CertKind::Server, CertKind::Client}) {
		const char *who = kind == CertKind::Server ? "server" : "client";
		FERRY_ASSIGN(X509Privkey key, newKey());
		FERRY_ASSIGN(X509Crt crt, newCert(key.get(), kind, ca.get(), caKey.get()));
		FERRY_TRY_CTX(writeKey(fmt::format("{}/{}-key.pem", dir, who), key.get()), "throwaway PKI");
		FERRY_TRY_CTX(writeCert(fmt::format("{}/{}-cert.pem", dir, who), crt.get()), "throwaway PKI");
	}
	return {};
}

Status writeThrowawayPsk(const std::string &path, std::string_view identity)
{
	if (identity.empty() || identity.size() > 128 || identity.front() == '#' ||
	    identity.find_first_of(":\n\r") != std::string_view::npos)
		return Error::format(EINVAL, "PSK identity '{}': 1 to 128 bytes, no ':' or newline, "
				     "not starting with '#'", identity);
	uint8_t key[32];
	FERRY_TRY(check(gnutls_rnd(GNUTLS_RND_KEY, key, sizeof(key)), "random PSK"));
	std::string line(identity);
	line += ':';
	for (uint8_t b : key)
		line += fmt::format("{:02x}", b);
	line += '\n';
	Status st = writeFile(path, line, 0600);
	::explicit_bzero(key, sizeof(key));
	::explicit_bzero(line.data(), line.size());
	return st.context("throwaway PSK");
}

} // namespace ferry
