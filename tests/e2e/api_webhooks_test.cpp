// The API end to end: webhooks signed with the secret, retried after a failed delivery and
// shown on the task, over real HTTP.
#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "support/harness.h"

using namespace tst;

namespace {

std::string hmac_hex(const std::string& key, const std::string& body) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(body.data()), body.size(), mac, &len);
  std::string out;
  char buf[3];
  for (unsigned int i = 0; i < len; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", mac[i]);
    out += buf;
  }
  return out;
}

}  // namespace

TEST_CASE("e2e api: webhooks are signed - retried after a 500 - and shown on the task") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "10"});
  // A receiver that fails the first delivery.
  httplib::Server receiver;
  std::mutex mu;
  std::vector<std::pair<std::string, std::string>> got;  // body, signature
  std::atomic<int> calls{0};
  receiver.Post("/hook", [&](const httplib::Request& req, httplib::Response& res) {
    std::lock_guard<std::mutex> lock(mu);
    got.emplace_back(req.body, req.get_header_value("X-Taskserver-Signature"));
    res.status = ++calls == 1 ? 500 : 200;
  });
  int port = receiver.bind_to_any_port("127.0.0.1");
  std::thread rt([&] { receiver.listen_after_bind(); });
  Server server(dir, {"--webhook-secret", "s3cret", "--retry-base-ms", "200"},
                {{"IMAGE_GEN_URL", b.url()}});
  REQUIRE(server.started());
  std::string id = server.submit(
      "hooked", {{"webhook_url", "http://127.0.0.1:" + std::to_string(port) + "/hook"}});
  CHECK(eventually([&] { return calls.load() >= 2; }, std::chrono::seconds(15)));
  json t;
  CHECK(eventually([&] {
    t = server.get("/api/v1/tasks/" + id);
    return t["webhook"]["state"] == "delivered";
  }));
  receiver.stop();
  rt.join();
  std::lock_guard<std::mutex> lock(mu);
  REQUIRE(got.size() == 2);
  for (const auto& [body, signature] : got) {
    CHECK(signature == "sha256=" + hmac_hex("s3cret", body));
    json delivered = json::parse(body);
    CHECK(delivered["task_id"] == id);
    CHECK(delivered["status"] == "DONE");
  }
  REQUIRE(t["webhook"]["deliveries"].size() == 2);
  CHECK(t["webhook"]["deliveries"][0]["status_code"] == 500);
  CHECK(t["webhook"]["deliveries"][1]["status_code"] == 200);
  // Only http(s) webhook URLs are taken.
  int status = 0;
  json bad = server.post(
      "/api/v1/tasks",
      R"({"type":"image","payload":{"prompt":"x"},"webhook_url":"file:///etc/passwd"})", &status);
  CHECK(status == 422);
  CHECK(bad["error"]["field"] == "webhook_url");
}
