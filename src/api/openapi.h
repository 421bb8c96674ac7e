#pragma once
// RouteTable: every route the API registers, with its documentation, so /openapi.json is built
// from the routes that exist rather than written beside them. Filled once in
// ApiServer::install(); read-only afterwards (thread-safe to read).

#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

namespace ts {

struct RouteDoc {
  const char* name;  // the route label in metrics and the OpenAPI operationId stem
  std::string path;  // OpenAPI form: /api/v1/tasks/{id}
  std::string summary;
};

class RouteTable {
 public:
  void add(const std::string& method, RouteDoc doc);
  // (method, path) of every route, in registration order.
  std::vector<std::pair<std::string, std::string>> routes() const;
  // The OpenAPI 3.1 document.
  nlohmann::json openapi(const std::string& version) const;

 private:
  std::vector<std::pair<std::string, RouteDoc>> routes_;
};

}  // namespace ts
