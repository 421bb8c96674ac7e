// The dashboard (web/, compiled in) and this API's OpenAPI description.

#include "api/api_context.h"
#include "api/request_context.h"
#include "core/embedded.h"

namespace ts {
namespace {

using httplib::Request;
using httplib::Response;

const char* mime_for(const std::string& name) {
  auto ends = [&](const char* ext) {
    std::string e(ext);
    return name.size() >= e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0;
  };
  if (ends(".html")) return "text/html; charset=utf-8";
  if (ends(".js")) return "text/javascript; charset=utf-8";
  if (ends(".css")) return "text/css; charset=utf-8";
  if (ends(".svg")) return "image/svg+xml";
  if (ends(".png")) return "image/png";
  if (ends(".json")) return "application/json";
  return "application/octet-stream";
}

void static_file(const std::string& name, Response& res) {
  for (const EmbeddedFile* f = embedded_web(); f->name; ++f) {
    if (name == f->name) {
      res.status = 200;
      res.set_header("Cache-Control", "no-cache");
      res.set_content(std::string(f->data, f->size), mime_for(name));
      return;
    }
  }
  send_error(res, Status::NotFound("no such file: " + name));
}

}  // namespace

void install_static_routes(Routes& r, const Context& ctx) {
  Context c = ctx;
  r.get("/openapi.json", {"openapi", "/openapi.json", "This API's OpenAPI 3.1 description."},
        [c](const Request&, Response& res) {
          res.status = 200;
          res.set_content(dump(c->routes.openapi(c->opt.version)), "application/json");
        });
  r.get("/", {"dashboard", "/", "The dashboard."},
        [](const Request&, Response& res) { static_file("index.html", res); });
  r.get(R"(/web/([A-Za-z0-9_.-]+))", {"web", "/web/{file}", "Dashboard assets."},
        [](const Request& req, Response& res) { static_file(req.matches[1], res); });
}

}  // namespace ts
