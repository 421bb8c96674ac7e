// A backend that answers garbage (support/garbage_backend.h): its tasks fail, a busy one is
// retried without spending attempts, and the server lives on.
#include <doctest/doctest.h>

#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/garbage_backend.h"
#include "support/harness.h"
#include "support/hostile.h"

using namespace tst;
using namespace tst::hostile;
using std::chrono::seconds;

TEST_CASE("hostile: a backend that answers garbage fails its tasks and the server lives on") {
  TempDir dir;
  GarbageBackend garbage;
  Server server(dir,
                {"--read-timeout", "2", "--retry-base-ms", "100", "--retry-cap-ms", "300",
                 "--max-fails", "1000000", "--eject-base-ms", "100", "--eject-max-ms", "200"},
                {{"IMAGE_GEN_URL", garbage.url()}});
  REQUIRE(server.started());
  const std::vector<std::string> failing = {
      "mode-nonhttp",   "mode-truncated", "mode-hang",      "mode-trickle", "mode-500binary",
      "mode-badstatus", "mode-reset",     "mode-badchunks", "mode-negcl",   "mode-hugeheader"};
  // Odd but not broken answers (a negative Content-Length, a 1 MB header): DONE is fine too.
  const std::set<std::string> lenient = {"mode-negcl", "mode-hugeheader"};
  const std::vector<std::string> done_garbage = {"mode-notjson", "mode-badb64"};
  std::map<std::string, std::string> ids;
  auto submit = [&](const std::string& mode) {
    int status = 0;
    json t = server.post("/api/v1/tasks",
                         json{{"type", "image"},
                              {"payload", {{"prompt", mode}}},
                              {"max_attempts", 2},
                              {"timeout_s", 2}}
                             .dump(),
                         &status);
    REQUIRE(status == 202);
    ids[mode] = t["task_id"].get<std::string>();
  };
  for (const auto& m : failing) submit(m);
  for (const auto& m : done_garbage) submit(m);
  submit("mode-busy");
  check_server_fine(server, static_cast<int64_t>(ids.size()));

  std::map<std::string, std::string> final_status;
  for (const auto& m : failing) {
    json t = server.wait_final(ids[m], seconds(90));
    final_status[m] = t.value("status", "?");
    MESSAGE("backend " << m << ": task " << final_status[m]);
    INFO(m << ": " << t.dump().substr(0, 400));
    if (lenient.count(m)) {
      CHECK((final_status[m] == "FAILED" || final_status[m] == "DONE"));
    } else {
      CHECK(final_status[m] == "FAILED");
      CHECK(t["attempt"] == 2);
    }
    CHECK(!t.value("error", "").empty() == (final_status[m] == "FAILED"));
    // The task's JSON parses strictly even when the backend's error text was not UTF-8.
    auto c = server.client();
    auto raw = c.Get(("/api/v1/tasks/" + ids[m]).c_str());
    REQUIRE(raw);
    CHECK(!json::parse(raw->body, nullptr, false).is_discarded());
    CHECK(garbage.requests(m) >= 1);
  }
  for (const auto& m : done_garbage) {
    json t = server.wait_final(ids[m], seconds(60));
    final_status[m] = t.value("status", "?");
    MESSAGE("backend " << m << ": task " << final_status[m]);
    // A 2xx that is not an images answer fails the attempt: no DONE task without an image.
    CHECK(final_status[m] == "FAILED");
    int status = 0;
    json img = server.get("/api/images/" + ids[m], &status);
    record("GET /api/images/ of " + m, status);
    if (final_status[m] == "DONE") {
      CHECK(status == 409);
      CHECK(img["error"]["code"] == "no_image");
    }
  }
  // A busy backend is not broken: the task keeps retrying without spending attempts, and can
  // still be canceled.
  std::this_thread::sleep_for(seconds(2));
  int status = 0;
  json busy = server.get("/api/v1/tasks/" + ids["mode-busy"], &status);
  CHECK(status == 200);
  CHECK((busy["status"] == "QUEUED" || busy["status"] == "RUNNING"));
  CHECK(garbage.requests("mode-busy") >= 1);
  json canceled = server.del("/api/v1/tasks/" + ids["mode-busy"], &status);
  CHECK(status == 200);
  CHECK(server.wait_final(ids["mode-busy"], seconds(10))["status"] == "CANCELED");
  MESSAGE("backend mode-busy: retried without spending attempts then CANCELED");

  check_server_fine(server, static_cast<int64_t>(ids.size()));
  CHECK(server.stop() == 0);
}
