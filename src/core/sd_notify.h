#pragma once
// sd_notify: tells systemd (Type=notify) that the service is ready or stopping, by a datagram to
// $NOTIFY_SOCKET. A no-op when the variable is unset. Thread-safe.

#include <string>

namespace ts {

// Sends `state` (e.g. "READY=1", "STOPPING=1", "STATUS=...") and returns true when sent.
bool sd_notify(const std::string& state);

}  // namespace ts
