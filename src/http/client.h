#pragma once
// The factory for outgoing HTTP clients (backend calls, health probes, webhooks, the CLI): the
// one place that knows how to build an httplib::Client for a parsed URL. Thread-safe; each
// client it returns belongs to its caller.

#include <memory>

#include "core/url.h"

namespace httplib {
class Client;
}

namespace ts {

// An httplib client for the URL's origin. Plain http goes through the (host, port) constructor:
// the scheme://host:port one matches a std::regex on every call (and its function-local static
// regex, built inside the uninstrumented libcpp-httplib, shows up as a false race under TSan).
std::unique_ptr<httplib::Client> make_client(const Url& url);

}  // namespace ts
