// SPDX-License-Identifier: GPL-2.0-or-later
// ferryd's control socket (SOCKET_DIR/ferryd.sock, root only): one JSON request line, one JSON
// reply line, then the daemon closes. Requests: {"cmd":"ping"}, {"cmd":"status"[,"domain":D]},
// {"cmd":"abort","domain":D} (a ferry migration of D, or libvirt's migration waiting at its gate).
// Every reply has "ok"; a failed one has "error".
#pragma once

#include <string>

#include "ferry/base/json.h"
#include "ferry/base/result.h"

namespace ferry::daemon {

// The control socket a CLI command should use: `socket` if given, else the one the
// configuration at configPath names, else SOCKET_DIR/ferryd.sock of the default directory.
std::string controlSocketFor(const std::string &configPath, const std::string &socket);

// Sends one request and returns the reply (an error when the daemon is not there, or when
// it answers "ok": false, with its message).
Result<JsonValue> askDaemon(const std::string &controlSocket, const JsonValue &request, int timeoutMs = 5000);

} // namespace ferry::daemon
