// Hostile request bodies against the real binary: malformed and invalid JSON, odd and missing
// content types, oversized bodies and bodies cut short of their Content-Length. What a refusal
// must look like is in support/hostile.h.
#include <doctest/doctest.h>
#include <sys/socket.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "support/harness.h"
#include "support/hostile.h"
#include "support/raw_http.h"

using namespace tst;
using namespace tst::hostile;
using Clock = std::chrono::steady_clock;
using std::chrono::seconds;
using namespace std::string_literals;

TEST_CASE("hostile: malformed and invalid JSON bodies get 400 or 422 and write nothing") {
  Fixture f;
  const std::string T = "/api/v1/tasks";
  std::string invalid_utf8 = "{\"type\":\"image\",\"payload\":{\"prompt\":\"\xff\xfe\"}}";
  std::string overlong = "{\"type\":\"image\",\"payload\":{\"prompt\":\"\xc0\xaf\"}}";
  std::string cut_utf8 = "{\"type\":\"image\",\"payload\":{\"prompt\":\"\xe2\x82\"}}";
  std::string nul = "{\"type\":\"image\",\"payload\":{\"prompt\":\"x\"}}\0junk"s;
  std::vector<Case> cases = {
      {"empty body", post(T, ""), {400}},
      {"truncated {", post(T, "{"), {400}},
      {"truncated task", post(T, kTask.substr(0, kTask.size() - 1)), {400}},
      {"trailing comma", post(T, R"({"type":"image",})"), {400}},
      {"not json", post(T, "not json at all"), {400}},
      {"json null", post(T, "null"), {422}},
      {"json array", post(T, "[]"), {422}},
      {"json string", post(T, R"("image")"), {422}},
      {"json number", post(T, "123"), {422}},
      {"two documents", post(T, kTask + kTask), {400}},
      {"single quotes", post(T, "{'type':'image'}"), {400}},
      {"comment in json", post(T, "{/*c*/\"type\":\"image\"}"), {400}},
      {"type is a number", post(T, R"({"type":123})"), {422}},
      {"type missing", post(T, R"({"payload":{"prompt":"x"}})"), {422}},
      {"type upper case", post(T, R"({"type":"IMAGE","payload":{"prompt":"x"}})"), {422}},
      {"type unknown pool", post(T, R"({"type":"nosuchpool","payload":{}})"), {422}},
      {"type 65 chars", post(T, R"({"type":")" + std::string(65, 'a') + R"("})"), {422}},
      {"payload is a string", post(T, R"({"type":"image","payload":"x"})"), {422}},
      {"payload is an array", post(T, R"({"type":"image","payload":[1]})"), {422}},
      {"image without prompt", post(T, R"({"type":"image","payload":{}})"), {422}},
      {"prompt is a number", post(T, R"({"type":"image","payload":{"prompt":7}})"), {422}},
      {"priority 10", post(T, task_with(R"("priority":10)")), {422}},
      {"priority -1", post(T, task_with(R"("priority":-1)")), {422}},
      {"priority 2.5", post(T, task_with(R"("priority":2.5)")), {422}},
      {"priority 1e300", post(T, task_with(R"("priority":1e300)")), {422}},
      {"priority 1e400 (overflow)", post(T, task_with(R"("priority":1e400)")), {400, 422}},
      {"priority -1e400", post(T, task_with(R"("priority":-1e400)")), {400, 422}},
      {"priority 2^64", post(T, task_with(R"("priority":18446744073709551616)")), {422}},
      {"priority -2^63-1", post(T, task_with(R"("priority":-9223372036854775809)")), {422}},
      {"priority NaN", post(T, task_with(R"("priority":NaN)")), {400}},
      {"priority Infinity", post(T, task_with(R"("priority":Infinity)")), {400}},
      {"priority -Infinity", post(T, task_with(R"("priority":-Infinity)")), {400}},
      {"priority \"NaN\"", post(T, task_with(R"("priority":"NaN")")), {422}},
      {"priority \"5\"", post(T, task_with(R"("priority":"5")")), {422}},
      {"priority true", post(T, task_with(R"("priority":true)")), {422}},
      {"priority object", post(T, task_with(R"("priority":{"a":1})")), {422}},
      {"max_attempts 0", post(T, task_with(R"("max_attempts":0)")), {422}},
      {"max_attempts 101", post(T, task_with(R"("max_attempts":101)")), {422}},
      {"max_attempts string", post(T, task_with(R"("max_attempts":"3")")), {422}},
      {"timeout_s -1", post(T, task_with(R"("timeout_s":-1)")), {422}},
      {"timeout_s 86401", post(T, task_with(R"("timeout_s":86401)")), {422}},
      {"timeout_s 2^63", post(T, task_with(R"("timeout_s":9223372036854775808)")), {422}},
      {"idempotency_key empty", post(T, task_with(R"("idempotency_key":"")")), {422}},
      {"idempotency_key 256 bytes",
       post(T, task_with(R"("idempotency_key":")" + std::string(256, 'k') + "\"")),
       {422}},
      {"idempotency_key control char",
       post(T, task_with(R"("idempotency_key":"a\u0001b")")),
       {422}},
      {"idempotency_key number", post(T, task_with(R"("idempotency_key":5)")), {422}},
      {"webhook file://", post(T, task_with(R"("webhook_url":"file:///etc/passwd")")), {422}},
      {"webhook userinfo", post(T, task_with(R"("webhook_url":"http://u:p@h/")")), {422}},
      {"webhook javascript:",
       post(T, task_with(R"x("webhook_url":"javascript:alert(1)")x")),
       {422}},
      {"webhook 3000 bytes",
       post(T, task_with(R"("webhook_url":"http://h/)" + std::string(3000, 'a') + "\"")),
       {422}},
      // An unknown top-level string field is a label (seed 002); any other value is refused.
      {"unknown field", post(T, task_with(R"("steps":{"n":30})")), {422}},
      {"unknown string field with a bad label key",
       post(T, task_with(R"("not a key":"outside payload")")),
       {422}},
      {"invalid UTF-8", post(T, invalid_utf8), {400}},
      {"overlong UTF-8", post(T, overlong), {400}},
      {"cut UTF-8 sequence", post(T, cut_utf8), {400}},
      {"lone surrogate escape",
       post(T, R"({"type":"image","payload":{"prompt":"\ud800"}})"),
       {400}},
      {"NUL byte then junk", post(T, nul), {400}},
      {"10000-deep arrays",
       post(T, R"({"type":"image","payload":{"prompt":"x","a":)" + nested(10000, "[", "]", "1") +
                   "}}"),
       {400}},
      {"10000-deep objects", post(T, nested(10000, "{\"a\":", "}", "1")), {400}},
      {"10000 unclosed [", post(T, std::string(10000, '[')), {400}},
      {"65-deep payload",
       post(T,
            R"({"type":"image","payload":{"prompt":"x","a":)" + nested(63, "[", "]", "1") + "}}"),
       {400}},
      {"SQL in type", post(T, R"({"type":"image'; DROP TABLE tasks;--","payload":{}})"), {422}},
      {"SQL in type 2", post(T, R"({"type":"image\" OR 1=1 --","payload":{}})"), {422}},
      // batch
      {"batch empty", post(T + "/batch", R"({"tasks":[]})"), {422}},
      {"batch not array", post(T + "/batch", R"({"tasks":"x"})"), {422}},
      {"batch missing", post(T + "/batch", R"({})"), {422}},
      {"batch truncated", post(T + "/batch", R"({"tasks":[)" + kTask), {400}},
      {"batch one bad of two",
       post(T + "/batch", R"({"tasks":[)" + kTask + R"(,{"type":"image"}]})"),
       {422}},
      {"batch of 1001",
       post(T + "/batch",
            [] {
              std::string b = R"({"tasks":[)";
              for (int i = 0; i < 1001; ++i) b += (i ? "," : "") + kTask;
              return b + "]}";
            }()),
       {422}},
      {"batch invalid UTF-8", post(T + "/batch", "{\"tasks\":[" + invalid_utf8 + "]}"), {400}},
      // the seed shape
      {"image: empty object", post("/api/v1/image/async", "{}"), {422}},
      {"image: empty prompt", post("/api/v1/image/async", R"({"prompt":""})"), {422}},
      {"image: prompt array", post("/api/v1/image/async", R"({"prompt":["x"]})"), {422}},
      {"image: priority word",
       post("/api/v1/image/async", R"({"prompt":"x","priority":"urgent"})"),
       {422}},
      {"image: truncated", post("/api/v1/image/async", R"({"prompt":"x)"), {400}},
      {"image: NaN", post("/api/v1/image/async", R"({"prompt":"x","priority":NaN})"), {400}},
  };
  int64_t accepted = run_cases(f.port, cases);
  check_server_fine(f.server, accepted);
}

TEST_CASE("hostile: odd and missing content types") {
  Fixture f;
  const std::string T = "/api/v1/tasks";
  std::string bad_body = "{\"type\":";
  std::vector<Case> cases = {
      {"xml", post(T, kTask, "application/xml"), {415}},
      {"image/png body on tasks", post(T, "\x89PNG\r\n", "image/png"), {415}},
      {"text/html on batch",
       post(T + "/batch", R"({"tasks":[]})", "text/html; charset=utf-8"),
       {415}},
      {"octet-stream on image",
       post("/api/v1/image/async", "{}", "application/octet-stream"),
       {415}},
      {"no content type and bad body", post(T, bad_body, ""), {400}},
      {"empty content type and bad body", post(T, bad_body, "", "Content-Type: \r\n"), {400}},
      {"content type of 10 KB",
       post(T, kTask, "application/xml; x=" + std::string(10000, 'a')),
       {400, 415, 431}},
      {"content type with NUL", post(T, kTask, "application/x\0ml"s), {400, 415}},
      {"multipart without boundary",
       post(T, "--x\r\n\r\n--x--\r\n", "multipart/form-data"),
       {400, 415, 422}},
      {"multipart garbage",
       post(T, "not multipart at all", "multipart/form-data; boundary=zz"),
       {400, 422}},
      {"multipart truncated",
       post(T, "--zz\r\nContent-Disposition: form-data; name=\"task\"\r\n\r\n{\"ty",
            "multipart/form-data; boundary=zz"),
       {400, 422}},
      {"multipart task not json",
       post(T, "--zz\r\nContent-Disposition: form-data; name=\"task\"\r\n\r\nnope\r\n--zz--\r\n",
            "multipart/form-data; boundary=zz"),
       {400}},
      {"multipart two files",
       post(T,
            "--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\na\r\n"
            "--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b\"\r\n\r\nb\r\n"
            "--zz\r\nContent-Disposition: form-data; name=\"task\"\r\n\r\n" +
                kTask + "\r\n--zz--\r\n",
            "multipart/form-data; boundary=zz"),
       {422}},
      {"multipart on image route",
       post("/api/v1/image/async", "--zz--\r\n", "multipart/form-data; boundary=zz"),
       {415}},
      {"audio without multipart", post("/api/v1/audio/async", "{}"), {415}},
      {"audio without file part",
       post("/api/v1/audio/async",
            "--zz\r\nContent-Disposition: form-data; name=\"task\"\r\n\r\n{}\r\n--zz--\r\n",
            "multipart/form-data; boundary=zz"),
       {422}},
      {"audio file with traversal name and bad task",
       post("/api/v1/audio/async",
            "--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../etc/passwd\""
            "\r\n\r\nRIFF\r\n--zz\r\nContent-Disposition: form-data; name=\"task\"\r\n\r\n"
            "{\"priority\":99}\r\n--zz--\r\n",
            "multipart/form-data; boundary=zz"),
       {422}},
  };
  int64_t accepted = run_cases(f.port, cases);
  check_server_fine(f.server, accepted);
  // Nothing of the refused uploads stays behind in inputs/.
  namespace fs = std::filesystem;
  size_t leftovers = 0;
  if (fs::is_directory(f.server.data_dir() + "/inputs")) {
    for (const auto& e : fs::recursive_directory_iterator(f.server.data_dir() + "/inputs")) {
      leftovers += e.is_regular_file() ? 1 : 0;
    }
  }
  CHECK(leftovers == 0);
}

TEST_CASE("hostile: oversized bodies get 413 or a closed connection") {
  Fixture f;
  const size_t k50MB = 50u << 20;
  auto big_body = [&](const std::string& target, bool chunked, const std::string& extra = "") {
    std::string label = "50 MB " + std::string(chunked ? "chunked" : "Content-Length") + " " +
                        target + (extra.empty() ? "" : " +" + extra.substr(0, extra.find(':')));
    Sock s(f.port);
    REQUIRE(s.ok());
    auto deadline = Clock::now() + seconds(60);
    std::string head = "POST " + target +
                       " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                       "Content-Type: application/json\r\n" +
                       extra +
                       (chunked ? "Transfer-Encoding: chunked\r\n"
                                : "Content-Length: " + std::to_string(k50MB) + "\r\n") +
                       "\r\n";
    int64_t rss_before = rss_kb(f.server.process().pid());
    bool all = send_all(s.fd(), head, deadline);
    std::string block(1 << 20, ' ');
    block[0] = '[';
    size_t sent = 0;
    while (all && sent < k50MB) {
      std::string piece = block;
      if (chunked) {
        char size[32];
        std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
        piece = size + piece + "\r\n";
      }
      all = send_all(s.fd(), piece, deadline);
      sent += block.size();
    }
    if (all && chunked) send_all(s.fd(), "0\r\n\r\n", deadline);
    Reply r = read_reply(s.fd(), deadline);
    int64_t rss_after = rss_kb(f.server.process().pid());
    record(label, r.status);
    check_refused(label, r);
    CHECK((r.status == 413 || r.status == 0));
    // No 100 Continue for a body that is then refused as too large.
    CHECK(r.interim.empty());
    MESSAGE(label << ": " << (r.status ? std::to_string(r.status) : "closed") << " after "
                  << (sent >> 20) << " MB sent; server RSS " << rss_before / 1024 << " -> "
                  << rss_after / 1024 << " MB");
    return std::pair<size_t, int64_t>(sent, rss_after - rss_before);
  };
  big_body("/api/v1/tasks", false);
  big_body("/api/v1/tasks/batch", false);
  big_body("/api/v1/image/async", false);
  big_body("/api/v1/audio/async", false);
  big_body("/api/v1/tasks", false, "Expect: 100-continue\r\n");
  big_body("/api/v1/tasks", true);
  auto [image_sent, image_rss] = big_body("/api/v1/image/async", true);
  auto [batch_sent, batch_rss] = big_body("/api/v1/tasks/batch", true);
  // JSON routes stop reading a chunked body at --max-body (1 MiB), not at --max-upload.
  {
    INFO("sent " << (image_sent >> 20) << " and " << (batch_sent >> 20) << " MB");
    CHECK(image_sent < (8u << 20));
    CHECK(batch_sent < (8u << 20));
  }
  (void)image_rss;
  (void)batch_rss;

  std::string two_mb =
      R"({"type":"image","payload":{"prompt":")" + std::string(2 << 20, 'a') + "\"}}";
  std::vector<Case> cases = {
      {"2 MB JSON task", post("/api/v1/tasks", two_mb), {413, 0}},
      {"2 MB JSON image", post("/api/v1/image/async", two_mb), {413, 0}},
      {"Content-Length -1",
       "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}",
       {400, 0}},
      {"Content-Length abc",
       "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
       {400, 0}},
      {"Content-Length 10^23",
       "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: "
       "99999999999999999999999\r\n\r\n{}",
       {400, 413, 0}},
      {"two Content-Lengths",
       "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n"
       "Content-Length: 9\r\n\r\n{}",
       {400, 0},
       ""},
      {"Content-Length and chunked",
       "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n"
       "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
       {400, 422, 0}},
      {"bad chunk size",
       "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked"
       "\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
       {400, 0}},
      {"chunk size 2^64",
       "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked"
       "\r\n\r\n10000000000000000\r\n{}\r\n0\r\n\r\n",
       {400, 413, 0}},
  };
  int64_t accepted = run_cases(f.port, cases);
  check_server_fine(f.server, accepted);
}

TEST_CASE("hostile: a body cut short of its Content-Length is not taken as complete") {
  TempDir dir;
  MockBackend backend(dir, {"--latency-ms", "10"});
  // The transcribe pool too, for multipart uploads.
  Server server(dir, {"--read-timeout", "2"},
                {{"IMAGE_GEN_URL", backend.url()}, {"WHISPER_URL", backend.url()}});
  REQUIRE(server.started());
  int port = port_of(server.url());
  std::string json_head =
      "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: 200\r\n\r\n";
  std::string multipart_head =
      "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
      "boundary=zz\r\nContent-Length: 100000\r\n\r\n";
  std::string task_part =
      "--zz\r\nContent-Disposition: form-data; name=\"task\"\r\n\r\n{\"type\":\"transcribe\"}\r\n";
  struct Cut {
    std::string label, bytes;
    bool half_close;  // the client closes its side after sending
  };
  std::vector<Cut> cuts = {
      {"JSON body of 50 of 200 bytes then silence", json_head + kTask, false},
      {"JSON body of 50 of 200 bytes then half-close", json_head + kTask, true},
      {"image body of 24 of 200 bytes then silence",
       "POST /api/v1/image/async HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
       "Content-Length: 200\r\n\r\n{\"prompt\":\"short image\"}",
       false},
      {"multipart cut inside the file then silence",
       multipart_head + task_part +
           "--zz\r\nContent-Disposition: form-data; name=\"file\"; "
           "filename=\"a.wav\"\r\n\r\nRIFF-cut",
       false},
      {"multipart without its closing boundary then silence",
       multipart_head + task_part +
           "--zz\r\nContent-Disposition: form-data; name=\"file\"; "
           "filename=\"b.wav\"\r\n\r\nRIFF\r\n--zz",
       false},
  };
  int64_t rows = 0;
  for (const Cut& c : cuts) {
    Sock s(port);
    REQUIRE(s.ok());
    auto deadline = Clock::now() + seconds(15);
    send_all(s.fd(), c.bytes, deadline);
    if (c.half_close) ::shutdown(s.fd(), SHUT_WR);
    Reply r = read_reply(s.fd(), deadline);
    record(c.label, r.status);
    int64_t now_rows = server.count_rows();
    INFO(c.label << " got " << r.status << " " << r.body.substr(0, 200));
    // A body shorter than its Content-Length is never taken as complete.
    CHECK((r.status == 400 || r.status == 408 || r.status == 0));
    CHECK(now_rows == rows);
    if (r.status >= 400 || r.status == 0) check_refused(c.label, r);
    rows = now_rows;
  }
  check_server_fine(server, rows);
}
