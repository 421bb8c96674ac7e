#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "service/task_request.h"

using namespace ts;

TEST_CASE("a task request: defaults - words for priorities - bounds by field") {
  auto t = parse_task_request(R"({"type":"image","payload":{"prompt":"x"}})");
  REQUIRE(t.ok());
  CHECK(t->priority == 5);
  CHECK_FALSE(t->max_attempts);
  t = parse_task_request(
      R"({"type":"image","payload":{"prompt":"x"},"priority":"high","max_attempts":7,"timeout_s":30,"idempotency_key":"k","webhook_url":"https://example.com/hook"})");
  REQUIRE(t.ok());
  CHECK(t->priority == 8);
  CHECK(t->max_attempts == 7);
  CHECK(t->timeout_s == 30);
  CHECK(t->idempotency_key == "k");

  struct Bad {
    const char* body;
    Code code;
    const char* field;
  };
  for (const Bad& b : std::initializer_list<Bad>{
           {R"({"type":"image","payload":{"prompt":"x"},"priority":10})", Code::kInvalid,
            "priority"},
           {R"({"type":"image","payload":{"prompt":"x"},"priority":-1})", Code::kInvalid,
            "priority"},
           {R"({"type":"image","payload":{"prompt":"x"},"priority":1e300})", Code::kInvalid,
            "priority"},
           {R"({"type":"image","payload":{"prompt":"x"},"priority":2.5})", Code::kInvalid,
            "priority"},
           {R"({"type":"image","payload":{"prompt":"x"},"priority":"urgent"})", Code::kInvalid,
            "priority"},
           {R"({"type":"image","payload":{"prompt":"x"},"priority":18446744073709551615})",
            Code::kInvalid, "priority"},
           {R"({"type":"image","payload":{"prompt":"x"},"max_attempts":0})", Code::kInvalid,
            "max_attempts"},
           {R"({"type":"image","payload":{"prompt":"x"},"max_attempts":101})", Code::kInvalid,
            "max_attempts"},
           {R"({"type":"image","payload":{"prompt":"x"},"timeout_s":86401})", Code::kInvalid,
            "timeout_s"},
           {R"({"type":"image","payload":{"prompt":"x"},"idempotency_key":""})", Code::kInvalid,
            "idempotency_key"},
           {R"({"type":"image","payload":{"prompt":"x"},"webhook_url":"ftp://x"})", Code::kInvalid,
            "webhook_url"},
           {R"({"type":"image","payload":{"prompt":"x"},"webhook_url":"file:///etc/passwd"})",
            Code::kInvalid, "webhook_url"},
           {R"({"type":"image","payload":"x"})", Code::kInvalid, "payload"},
           {R"({"type":"image","payload":{}})", Code::kInvalid, "payload.prompt"},
           {R"({"type":"image"})", Code::kInvalid, "payload.prompt"},
           {R"({"type":"Image!","payload":{}})", Code::kInvalid, "type"},
           {R"({"payload":{}})", Code::kInvalid, "type"},
           {R"({"type":"image","payload":{"prompt":"x"},"priorty":1})", Code::kInvalid, "priorty"},
           {R"([1,2])", Code::kInvalid, "body"},
           {R"({"type":)", Code::kMalformed, ""},
           {"", Code::kMalformed, ""},
           {"{\"type\":\"image\",\"payload\":{\"prompt\":\"\xff\xfe\"}}", Code::kMalformed, ""},
       }) {
    std::string body_text = b.body;
    CAPTURE(body_text);
    auto r = parse_task_request(b.body);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == b.code);
    CHECK(r.status().field() == b.field);
  }
  CHECK(parse_task_request(std::string(256, 'x')).status().code() == Code::kMalformed);
  std::string long_key = R"({"type":"image","payload":{"prompt":"x"},"idempotency_key":")" +
                         std::string(256, 'k') + "\"}";
  CHECK(parse_task_request(long_key).status().field() == "idempotency_key");
}

TEST_CASE("deep nesting is refused before parsing") {
  std::string deep =
      R"({"type":"x","payload":)" + std::string(10000, '[') + std::string(10000, ']') + "}";
  auto r = parse_task_request(deep);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kMalformed);
  // Brackets inside strings do not count.
  std::string in_string = R"({"type":"x","payload":{"s":")" + std::string(1000, '[') + "\"}}";
  CHECK(parse_task_request(in_string).ok());
}

TEST_CASE("the seed image shape: options out - the rest is the payload") {
  auto t = parse_image_request(
      R"({"prompt":"fox","n":2,"size":"512x512","priority":"low","idempotency_key":"k1"})");
  REQUIRE(t.ok());
  CHECK(t->type == "image");
  CHECK(t->priority == 2);
  CHECK(t->idempotency_key == "k1");
  auto payload = nlohmann::json::parse(t->payload);
  CHECK(payload["prompt"] == "fox");
  CHECK(payload["n"] == 2);
  CHECK_FALSE(payload.contains("priority"));
  CHECK_FALSE(payload.contains("idempotency_key"));
  CHECK(parse_image_request(R"({"prompt":""})").status().field() == "prompt");
  CHECK(parse_image_request(R"({"prompt":["x"]})").status().field() == "prompt");
}

TEST_CASE("batches name their first bad task") {
  auto ok = parse_batch_request(R"({"tasks":[{"type":"a"},{"type":"b"}]})");
  REQUIRE(ok.ok());
  CHECK(ok->size() == 2);
  auto bad = parse_batch_request(R"({"tasks":[{"type":"a"},{"type":"b","priority":99}]})");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().field() == "tasks[1].priority");
  CHECK(parse_batch_request(R"({"tasks":[]})").status().field() == "tasks");
  CHECK(parse_batch_request(R"({"nope":1})").status().field() == "tasks");
}

TEST_CASE("the Idempotency-Key header") {
  NewTask t;
  CHECK(apply_idempotency_header(t, std::string("abc")).ok());
  CHECK(t.idempotency_key == "abc");
  CHECK(apply_idempotency_header(t, std::string("other")).field() == "Idempotency-Key");
  NewTask u;
  CHECK(apply_idempotency_header(u, std::string("a\nb")).field() == "Idempotency-Key");
  CHECK(apply_idempotency_header(u, std::nullopt).ok());
}
