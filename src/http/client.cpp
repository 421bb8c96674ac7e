#include "http/client.h"

#include <httplib.h>

namespace ts {

std::unique_ptr<httplib::Client> make_client(const Url& url) {
  std::string host = url.host;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (url.scheme == "http") return std::make_unique<httplib::Client>(host, url.port);
  return std::make_unique<httplib::Client>(url.origin());
}

}  // namespace ts
