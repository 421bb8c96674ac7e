#include "core/url.h"

#include <charconv>

namespace ts {

std::string Url::origin() const { return scheme + "://" + host + ":" + std::to_string(port); }

std::optional<Url> parse_url(std::string_view text) {
  Url url;
  size_t rest_at;
  if (text.substr(0, 7) == "http://") {
    url.scheme = "http";
    url.port = 80;
    rest_at = 7;
  } else if (text.substr(0, 8) == "https://") {
    url.scheme = "https";
    url.port = 443;
    rest_at = 8;
  } else {
    return std::nullopt;
  }
  std::string_view rest = text.substr(rest_at);
  size_t slash = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? "" : rest.substr(slash);
  if (authority.empty() || authority.find('@') != std::string_view::npos) return std::nullopt;
  for (char c : text) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return std::nullopt;
  }
  std::string_view host = authority;
  if (authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = authority.substr(0, close + 1);
    if (host.size() <= 2) return std::nullopt;  // "[]"
    authority.remove_prefix(close + 1);
    if (!authority.empty() && authority.front() != ':') return std::nullopt;
  } else {
    size_t colon = authority.find(':');
    host = authority.substr(0, colon);
    authority = colon == std::string_view::npos ? "" : authority.substr(colon);
  }
  if (host.empty()) return std::nullopt;
  if (!authority.empty()) {  // ":port"
    std::string_view digits = authority.substr(1);
    int port = 0;
    auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
    if (ec != std::errc() || p != digits.data() + digits.size() || port <= 0 || port > 65535) {
      return std::nullopt;
    }
    url.port = port;
  }
  url.host = std::string(host);
  if (!path.empty() && path.front() != '/') return std::nullopt;  // "?x" or "#x" with no path
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  url.path = std::string(path);
  return url;
}

}  // namespace ts
