#pragma once
// A parsed http(s) URL, as the backend client and webhook sender need it. Pure; thread-safe.

#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace ts {

struct Url {
  std::string scheme;  // "http" or "https"
  std::string host;
  int port = 0;
  std::string path;  // "" or starting with '/', without a trailing '/'
  // "http://host:port", the form httplib::Client takes.
  std::string origin() const;
};

// nullopt unless `text` is an absolute http:// or https:// URL with a host.
std::optional<Url> parse_url(std::string_view text);

}  // namespace ts

namespace httplib {
class Client;
}

namespace ts {

// An httplib client for the URL's origin. Plain http goes through the (host, port) constructor:
// the scheme://host:port one matches a std::regex on every call (and its function-local static
// regex, built inside the uninstrumented libcpp-httplib, shows up as a false race under TSan).
std::unique_ptr<httplib::Client> make_client(const Url& url);

}  // namespace ts
