#include "http/client.h"

#include <httplib.h>

namespace ts {

std::unique_ptr<httplib::Client> make_client(const Url& url) {
  std::string host = url.host;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  auto client = url.scheme == "http" ? std::make_unique<httplib::Client>(host, url.port)
                                     : std::make_unique<httplib::Client>(url.origin());
  // httplib writes a request's head and body apart: with Nagle on, a kept-alive connection
  // holds the body until the head's ACK, which the peer delays (40 ms a request).
  client->set_tcp_nodelay(true);
  return client;
}

}  // namespace ts
