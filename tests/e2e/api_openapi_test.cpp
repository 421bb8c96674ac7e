// The API end to end: /openapi.json describes every route of DESIGN.md, and every GET it
// describes is served.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "support/harness.h"

using namespace tst;

TEST_CASE("e2e api: /openapi.json lists every route the server has") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "5"});
  Server server(dir, {}, {{"IMAGE_GEN_URL", b.url()}});
  REQUIRE(server.started());
  json doc = server.get("/openapi.json");
  CHECK(doc["openapi"] == "3.1.0");
  const json& paths = doc["paths"];
  // Every route of DESIGN.md's table is described, with its methods.
  std::vector<std::pair<std::string, std::string>> design = {{"post", "/api/v1/tasks"},
                                                             {"post", "/api/v1/tasks/batch"},
                                                             {"get", "/api/v1/tasks/{id}"},
                                                             {"get", "/api/v1/tasks"},
                                                             {"get", "/api/v1/tasks/{id}/result"},
                                                             {"get", "/api/v1/tasks/{id}/events"},
                                                             {"delete", "/api/v1/tasks/{id}"},
                                                             {"post", "/api/v1/tasks/{id}/cancel"},
                                                             {"post", "/api/v1/image/async"},
                                                             {"get", "/api/images/{id}"},
                                                             {"post", "/api/v1/audio/async"},
                                                             {"get", "/health"},
                                                             {"get", "/ready"},
                                                             {"get", "/metrics"},
                                                             {"get", "/api/v1/stats/queues"},
                                                             {"get", "/api/v1/stats/workers"},
                                                             {"get", "/api/v1/backends"},
                                                             {"get", "/"},
                                                             {"get", "/api/v1/events"},
                                                             {"get", "/openapi.json"}};
  for (const auto& [method, path] : design) {
    CAPTURE(path);
    CHECK(paths.contains(path));
    if (paths.contains(path)) CHECK(paths[path].contains(method));
  }
  // And every GET it describes is served (no "no route" 404): the description is the routes.
  std::string id = server.submit("for the docs");
  server.wait_final(id);
  for (auto& [path, ops] : paths.items()) {
    if (!ops.contains("get") || path.find("events") != std::string::npos) continue;
    std::string concrete = path;
    for (const char* p : {"{id}", "{file}"}) {
      size_t at = concrete.find(p);
      if (at != std::string::npos)
        concrete.replace(at, std::strlen(p), std::string(p) == "{id}" ? id : "app.js");
    }
    int status = 0;
    json r = server.get(concrete, &status);
    CAPTURE(concrete);
    bool no_route = status == 404 && r.is_object() &&
                    r["error"]["message"].get<std::string>().rfind("no route", 0) == 0;
    CHECK_FALSE(no_route);
  }
}
