// SPDX-License-Identifier: GPL-2.0-or-later
#include "ferry/wire/tls.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <optional>
#include <vector>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "ferry/sys/fd.h"
#include "wire/gnutls_owners.h"
#include "wire/tls_credentials.h"
#include "wire/tls_session.h"

namespace ferry {

using wire::X509Privkey;

namespace {

// TLS 1.3 only. NORMAL enables no PSK key exchange, so the PSK mode names them; only the
// (EC)DHE ones (psk_dhe_ke), so a key that leaks later does not decrypt recorded sessions.
// An external PSK is bound to SHA-256, which rules AES-256-GCM (SHA-384) out; NORMAL would then
// pick ChaCha20-Poly1305, a quarter of AES-128-GCM's speed on a CPU with AES-NI (BM_TlsStream).
constexpr const char *kX509Priority = "NORMAL:-VERS-ALL:+VERS-TLS1.3";
constexpr const char *kPskPriority = "NORMAL:-VERS-ALL:+VERS-TLS1.3:+ECDHE-PSK:+DHE-PSK:"
				     "-CIPHER-ALL:+AES-128-GCM:+CHACHA20-POLY1305";

// Credential files are a few KiB; anything much larger is the wrong file.
constexpr off_t kMaxCredentialFile = 1 << 20;
// 128 bits at least: a TLS 1.3 PSK binder lets an eavesdropper test guesses offline.
constexpr size_t kMinPskKey = 16;
constexpr size_t kMaxPskKey = 64;
constexpr size_t kMaxPskIdentity = 128;

Result<std::string> readCredentialFile(const std::string &path)
{
	UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
	if (!fd)
		return Error::fromErrno(path);
	struct stat st;
	if (::fstat(fd.get(), &st) < 0)
		return Error::fromErrno(path);
	if (!S_ISREG(st.st_mode))
		return Error::format(EINVAL, "{}: not a regular file", path);
	if (st.st_size > kMaxCredentialFile)
		return Error::format(EFBIG, "{}: {} bytes is too large for a credentials file", path,
				     st.st_size);
	std::string out(size_t(st.st_size), '\0');
	size_t got = 0;
	while (got < out.size()) {
		ssize_t n = ::read(fd.get(), out.data() + got, out.size() - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return Error::fromErrno(path);
		if (n == 0)
			break;
		got += size_t(n);
	}
	out.resize(got);
	return out;
}

// Key material does not outlive its use in our own buffers.
void wipe(std::string &s)
{
	::explicit_bzero(s.data(), s.size());
	s.clear();
}

gnutls_datum_t datumOf(const std::string &s)
{
	return {reinterpret_cast<unsigned char *>(const_cast<char *>(s.data())), unsigned(s.size())};
}

std::string utcDate(time_t t)
{
	tm parts;
	char buf[32];
	if (!::gmtime_r(&t, &parts) || !std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M UTC", &parts))
		return fmt::format("{} (unix time)", int64_t(t));
	return buf;
}

int hexDigit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

std::optional<std::vector<uint8_t>> hexDecode(std::string_view hex)
{
	if (hex.size() % 2 != 0)
		return std::nullopt;
	std::vector<uint8_t> out(hex.size() / 2);
	for (size_t i = 0; i < out.size(); i++) {
		int hi = hexDigit(hex[2 * i]), lo = hexDigit(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return std::nullopt;
		out[i] = uint8_t(hi << 4 | lo);
	}
	return out;
}

// Our own certificate, checked when it is loaded: a wrong purpose or an expired certificate
// would otherwise surface only as the peer refusing every handshake.
Status checkOwnCertificate(gnutls_x509_crt_t crt, const std::string &path, TlsRole role)
{
	bool server = role == TlsRole::Server;
	if (!gnutls_x509_crt_check_key_purpose(crt, server ? GNUTLS_KP_TLS_WWW_SERVER
							   : GNUTLS_KP_TLS_WWW_CLIENT, 0))
		return Error::format(EINVAL,
				     "{}: not a TLS {} certificate (its extended key usage lacks "
				     "TLS WWW {}); issue one for that purpose",
				     path, tlsRoleName(role), server ? "Server" : "Client");
	time_t now = ::time(nullptr);
	time_t notBefore = gnutls_x509_crt_get_activation_time(crt);
	time_t notAfter = gnutls_x509_crt_get_expiration_time(crt);
	if (notAfter != time_t(-1) && notAfter < now)
		return Error::format(EINVAL, "{}: the certificate expired on {}; issue a new one", path,
				     utcDate(notAfter));
	if (notBefore != time_t(-1) && notBefore > now)
		return Error::format(EINVAL, "{}: the certificate is not valid before {} (check the clock)",
				     path, utcDate(notBefore));
	return {};
}

// The list gnutls_x509_crt_list_import2() allocates.
struct CrtList {
	gnutls_x509_crt_t *certs = nullptr;
	unsigned count = 0;
	CrtList() = default;
	CrtList(const CrtList &) = delete;
	CrtList &operator=(const CrtList &) = delete;
	~CrtList()
	{
		for (unsigned i = 0; i < count; i++)
			gnutls_x509_crt_deinit(certs[i]);
		gnutls_free(certs);
	}
};

} // namespace

const char *tlsModeName(TlsMode mode)
{
	switch (mode) {
	case TlsMode::Insecure:
		return "insecure";
	case TlsMode::X509:
		return "x509";
	case TlsMode::Psk:
		return "psk";
	}
	return "unknown";
}

const char *tlsRoleName(TlsRole role) { return role == TlsRole::Server ? "server" : "client"; }

std::string TlsConfig::str() const
{
	switch (mode) {
	case TlsMode::Insecure:
		return "insecure";
	case TlsMode::X509:
		return fmt::format("x509:{}", path.empty() ? kDefaultTlsDir : std::string_view(path));
	case TlsMode::Psk:
		return fmt::format("psk:{}", path);
	}
	return "unknown";
}

Result<TlsConfig> parseTlsConfig(std::string_view spec)
{
	if (spec == "insecure")
		return TlsConfig{TlsMode::Insecure, ""};
	if (spec == "x509")
		return TlsConfig{TlsMode::X509, std::string(kDefaultTlsDir)};
	if (spec.starts_with("x509:") && spec.size() > 5)
		return TlsConfig{TlsMode::X509, std::string(spec.substr(5))};
	if (spec.starts_with("psk:") && spec.size() > 4)
		return TlsConfig{TlsMode::Psk, std::string(spec.substr(4))};
	if (spec == "psk" || spec == "psk:")
		return Error(EINVAL, "TLS mode psk needs its key file: psk:FILE");
	return Error::format(EINVAL, "unknown TLS mode '{}': use x509, x509:DIR, psk:FILE or insecure",
			     spec);
}

TlsCredentials::State::~State()
{
	for (auto &[identity, key] : pskKeys)
		::explicit_bzero(key.data(), key.size());
	if (pskServer)
		gnutls_psk_free_server_credentials(pskServer);
	if (pskClient)
		gnutls_psk_free_client_credentials(pskClient);
	if (x509)
		gnutls_certificate_free_credentials(x509);
	if (priority)
		gnutls_priority_deinit(priority);
}

Status TlsCredentials::State::initPriority(const char *spec)
{
	const char *errPos = nullptr;
	int r = gnutls_priority_init(&priority, spec, &errPos);
	if (r < 0)
		return Error::format(EINVAL, "TLS priority '{}' (at '{}'): {}", spec,
				     errPos ? errPos : "", gnutls_strerror(r));
	return {};
}

Status TlsCredentials::State::loadX509()
{
	const char *who = tlsRoleName(role);
	const std::string caPath = path + "/ca-cert.pem";
	const std::string certPath = fmt::format("{}/{}-cert.pem", path, who);
	const std::string keyPath = fmt::format("{}/{}-key.pem", path, who);
	auto withFix = [&](const Error &e) {
		return Error(e.code(), fmt::format("{} (a TLS {} needs ca-cert.pem, {}-cert.pem and "
						   "{}-key.pem in {}, the layout of libvirt's and "
						   "QEMU's migration TLS; x509:DIR names another "
						   "directory)",
						   e.message(), who, who, who, path));
	};
	auto ca = readCredentialFile(caPath);
	if (!ca.ok())
		return withFix(ca.error());
	auto cert = readCredentialFile(certPath);
	if (!cert.ok())
		return withFix(cert.error());
	auto key = readCredentialFile(keyPath);
	if (!key.ok())
		return withFix(key.error());

	int r = gnutls_certificate_allocate_credentials(&x509);
	if (r < 0)
		return Error::format(ENOMEM, "allocate TLS certificate credentials: {}", gnutls_strerror(r));
	gnutls_datum_t d = datumOf(*ca);
	r = gnutls_certificate_set_x509_trust_mem(x509, &d, GNUTLS_X509_FMT_PEM);
	if (r < 0)
		return Error::format(EINVAL, "{}: not a PEM CA certificate: {}", caPath, gnutls_strerror(r));
	if (r == 0)
		return Error::format(EINVAL, "{}: holds no certificate", caPath);

	CrtList chain;
	d = datumOf(*cert);
	r = gnutls_x509_crt_list_import2(&chain.certs, &chain.count, &d, GNUTLS_X509_FMT_PEM, 0);
	if (r < 0)
		return Error::format(EINVAL, "{}: not a PEM certificate: {}", certPath, gnutls_strerror(r));
	if (chain.count == 0)
		return Error::format(EINVAL, "{}: holds no certificate", certPath);
	FERRY_TRY(checkOwnCertificate(chain.certs[0], certPath, role));

	X509Privkey pk;
	if ((r = gnutls_x509_privkey_init(pk.out())) < 0)
		return Error::format(ENOMEM, "allocate a private key: {}", gnutls_strerror(r));
	d = datumOf(*key);
	r = gnutls_x509_privkey_import2(pk.get(), &d, GNUTLS_X509_FMT_PEM, nullptr, 0);
	wipe(*key);
	if (r < 0)
		return Error::format(EINVAL, "{}: not an unencrypted PEM private key: {}", keyPath,
				     gnutls_strerror(r));
	// Copies the chain and the key into the credentials.
	r = gnutls_certificate_set_x509_key(x509, chain.certs, chain.count, pk.get());
	if (r == GNUTLS_E_CERTIFICATE_KEY_MISMATCH)
		return Error::format(EINVAL, "{} is not the private key of {}", keyPath, certPath);
	if (r < 0)
		return Error::format(EINVAL, "{} with {}: {}", certPath, keyPath, gnutls_strerror(r));
	return initPriority(kX509Priority);
}

Status TlsCredentials::State::loadPsk()
{
	auto withFix = [&](const Error &e) {
		return Error(e.code(), fmt::format("{} (a PSK key file holds identity:hexkey lines, like "
						   "QEMU's keys.psk; psk:FILE names it)",
						   e.message()));
	};
	auto text = readCredentialFile(path);
	if (!text.ok())
		return withFix(text.error());

	Status parsed;
	std::string_view rest(*text);
	for (size_t lineNo = 1; !rest.empty() && parsed.ok(); lineNo++) {
		size_t eol = rest.find('\n');
		std::string_view line = rest.substr(0, eol);
		rest = eol == std::string_view::npos ? std::string_view() : rest.substr(eol + 1);
		if (!line.empty() && line.back() == '\r')
			line.remove_suffix(1);
		if (line.empty() || line.front() == '#')
			continue;
		size_t colon = line.find(':');
		std::string_view identity = line.substr(0, std::min(colon, line.size()));
		if (colon == std::string_view::npos || identity.empty() || identity.size() > kMaxPskIdentity) {
			parsed = Error::format(EINVAL, "{} line {}: expected identity:hexkey with an identity "
					       "of 1 to {} bytes", path, lineNo, kMaxPskIdentity);
			break;
		}
		auto keyBytes = hexDecode(line.substr(colon + 1));
		if (!keyBytes || keyBytes->size() < kMinPskKey || keyBytes->size() > kMaxPskKey) {
			parsed = Error::format(EINVAL, "{} line {}: the key must be {} to {} bytes in hex "
					       "(e.g. 64 hex digits for 32 random bytes)",
					       path, lineNo, kMinPskKey, kMaxPskKey);
			break;
		}
		if (pskIdentity.empty())
			pskIdentity = std::string(identity);
		if (!pskKeys.emplace(std::string(identity), std::move(*keyBytes)).second) {
			parsed = Error::format(EINVAL, "{} line {}: identity '{}' appears twice", path,
					       lineNo, identity);
			break;
		}
	}
	wipe(*text);
	FERRY_TRY(parsed);
	if (pskKeys.empty())
		return withFix(Error::format(EINVAL, "{}: holds no key", path));

	int r;
	if (role == TlsRole::Server) {
		if ((r = gnutls_psk_allocate_server_credentials(&pskServer)) < 0)
			return Error::format(ENOMEM, "allocate PSK credentials: {}", gnutls_strerror(r));
		gnutls_psk_set_server_credentials_function2(pskServer, TlsSession::pskKey);
	} else {
		if ((r = gnutls_psk_allocate_client_credentials(&pskClient)) < 0)
			return Error::format(ENOMEM, "allocate PSK credentials: {}", gnutls_strerror(r));
		const auto &key = pskKeys.find(pskIdentity)->second;
		gnutls_datum_t user = datumOf(pskIdentity);
		gnutls_datum_t k{const_cast<unsigned char *>(key.data()), unsigned(key.size())};
		if ((r = gnutls_psk_set_client_credentials2(pskClient, &user, &k, GNUTLS_PSK_KEY_RAW)) < 0)
			return Error::format(EINVAL, "{}: {}", path, gnutls_strerror(r));
		// The client presents only the first identity; keep nothing else in memory.
		for (auto it = pskKeys.begin(); it != pskKeys.end();) {
			::explicit_bzero(it->second.data(), it->second.size());
			it = pskKeys.erase(it);
		}
	}
	return initPriority(kPskPriority);
}

TlsCredentials::TlsCredentials() = default;
TlsCredentials::TlsCredentials(TlsCredentials &&) noexcept = default;
TlsCredentials &TlsCredentials::operator=(TlsCredentials &&) noexcept = default;
TlsCredentials::~TlsCredentials() = default;

Result<TlsCredentials> TlsCredentials::load(const TlsConfig &config, TlsRole role)
{
	auto s = std::make_shared<State>();
	s->mode = config.mode;
	s->role = role;
	s->path = config.path;
	switch (config.mode) {
	case TlsMode::Insecure:
		break;
	case TlsMode::X509:
		if (s->path.empty())
			s->path = std::string(kDefaultTlsDir);
		FERRY_TRY_CTX(s->loadX509(), "TLS x509 credentials for the {}", tlsRoleName(role));
		break;
	case TlsMode::Psk:
		if (s->path.empty())
			return Error(EINVAL, "TLS PSK credentials: no key file given (psk:FILE)");
		FERRY_TRY_CTX(s->loadPsk(), "TLS PSK credentials for the {}", tlsRoleName(role));
		break;
	}
	TlsCredentials c;
	c.s_ = std::move(s);
	return c;
}

bool TlsCredentials::valid() const { return s_ != nullptr; }

TlsMode TlsCredentials::mode() const { return s_ ? s_->mode : TlsMode::Insecure; }

TlsRole TlsCredentials::role() const { return s_ ? s_->role : TlsRole::Client; }

std::string TlsCredentials::describe() const
{
	if (!s_)
		return "none";
	if (s_->mode == TlsMode::Insecure)
		return "insecure";
	return fmt::format("{} {} ({})", tlsModeName(s_->mode), s_->path, tlsRoleName(s_->role));
}

} // namespace ferry
