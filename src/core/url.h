#pragma once
// A parsed http(s) URL, as the backend client and webhook sender need it. Pure; thread-safe.

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
