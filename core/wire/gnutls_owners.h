// SPDX-License-Identifier: GPL-2.0-or-later
// Move-only owners for the GnuTLS objects core/wire creates (internal to core/wire).
#pragma once

#include <string_view>
#include <utility>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

namespace ferry::wire {

// T is one of GnuTLS' opaque handle types (a pointer); Deinit releases it.
template<typename T, void (*Deinit)(T)>
class GnutlsOwner {
public:
	GnutlsOwner() = default;
	GnutlsOwner(GnutlsOwner &&o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
	GnutlsOwner &operator=(GnutlsOwner &&o) noexcept
	{
		if (this != &o) {
			reset();
			h_ = std::exchange(o.h_, nullptr);
		}
		return *this;
	}
	GnutlsOwner(const GnutlsOwner &) = delete;
	GnutlsOwner &operator=(const GnutlsOwner &) = delete;
	~GnutlsOwner() { reset(); }

	T get() const { return h_; }
	// For the *_init(&handle) functions; the owner must be empty.
	T *out() { return &h_; }
	void reset()
	{
		if (h_)
			Deinit(std::exchange(h_, nullptr));
	}

private:
	T h_ = nullptr;
};

using X509Crt = GnutlsOwner<gnutls_x509_crt_t, gnutls_x509_crt_deinit>;
using X509Privkey = GnutlsOwner<gnutls_x509_privkey_t, gnutls_x509_privkey_deinit>;

// Memory GnuTLS allocated for us (export2, get_dn3, ...), released with gnutls_free.
class GnutlsDatum {
public:
	GnutlsDatum() = default;
	GnutlsDatum(const GnutlsDatum &) = delete;
	GnutlsDatum &operator=(const GnutlsDatum &) = delete;
	~GnutlsDatum() { gnutls_free(d_.data); }

	gnutls_datum_t *out() { return &d_; }
	std::string_view view() const
	{
		return {reinterpret_cast<const char *>(d_.data), d_.size};
	}

private:
	gnutls_datum_t d_{nullptr, 0};
};

} // namespace ferry::wire
