// The API end to end: multipart uploads that become transcribe tasks, over real HTTP.
#include <doctest/doctest.h>

#include <string>

#include "support/harness.h"

using namespace tst;

TEST_CASE("e2e api: uploads - an audio file becomes a transcribe task") {
  TempDir dir;
  MockBackend whisper(dir, {"--latency-ms", "20"});
  Server server(dir, {}, {{"WHISPER_URL", whisper.url()}});
  REQUIRE(server.started());
  auto cli = server.client();
  std::string audio(200000, '\x01');
  httplib::MultipartFormDataItems items = {{"file", audio, "meeting.wav", "audio/wav"},
                                           {"language", "en", "", ""}};
  auto r = cli.Post("/api/v1/audio/async", items);
  REQUIRE(r);
  REQUIRE(r->status == 202);
  json t = json::parse(r->body);
  CHECK(t["type"] == "transcribe");
  CHECK(t["input"]["filename"] == "meeting.wav");
  CHECK(t["input"]["size"] == 200000);
  CHECK(t["payload"]["language"] == "en");
  json done = server.wait_final(t["task_id"]);
  REQUIRE(done["status"] == "DONE");
  CHECK(done["result_url"] == "/api/v1/tasks/" + t["task_id"].get<std::string>() + "/result");
  json text = server.get(done["result_url"]);
  CHECK(text["text"] == "transcript of meeting.wav (200000 bytes)");
  // The generic route takes multipart too: a task part and a file part.
  httplib::MultipartFormDataItems generic = {
      {"task", R"({"type":"transcribe","payload":{"model":"base"},"priority":"high"})", "",
       "application/json"},
      {"file", "abc", "clip.mp3", "audio/mpeg"}};
  r = cli.Post("/api/v1/tasks", generic);
  REQUIRE(r);
  CHECK(r->status == 202);
  CHECK(json::parse(r->body)["priority"] == 8);
  // An upload without its file is refused, and nothing is stored.
  httplib::MultipartFormDataItems no_file = {{"language", "en", "", ""}};
  r = cli.Post("/api/v1/audio/async", no_file);
  REQUIRE(r);
  CHECK(r->status == 422);
  CHECK(server.count_rows() == 2);
}
