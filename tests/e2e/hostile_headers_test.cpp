// Hostile headers and request lines against the real binary: header floods, malformed header
// lines, odd Idempotency-Key headers, and bytes that are not HTTP at all. What a refusal must look
// like is in support/hostile.h.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "support/harness.h"
#include "support/hostile.h"
#include "support/raw_http.h"

using namespace tst;
using namespace tst::hostile;
using Clock = std::chrono::steady_clock;
using std::chrono::seconds;
using namespace std::string_literals;

TEST_CASE("hostile: header floods and odd headers") {
  Fixture f;
  const std::string T = "/api/v1/tasks";
  std::string bad = "{\"type\":";
  std::string flood;
  for (int i = 0; i < 5000; ++i) flood += "X-Flood-" + std::to_string(i) + ": v\r\n";
  std::string many_cookies;
  for (int i = 0; i < 2000; ++i) many_cookies += "Cookie: a" + std::to_string(i) + "=b\r\n";
  std::vector<Case> cases = {
      {"5000 headers", post(T, bad, "application/json", flood), {400, 431, 0}},
      {"2000 cookies", post(T, bad, "application/json", many_cookies), {400, 431, 0}},
      {"1 MB header",
       post(T, bad, "application/json", "X-Big: " + std::string(1 << 20, 'a') + "\r\n"),
       {400, 431, 0}},
      {"1 MB header name",
       post(T, bad, "application/json", std::string(1 << 20, 'X') + ": v\r\n"),
       {400, 431, 0}},
      {"header without colon", post(T, bad, "application/json", "NoColonHere\r\n"), {400, 0}},
      {"header with NUL", post(T, bad, "application/json", "X-A: a\0b\r\n"s), {400, 0}},
      {"header name with space", post(T, bad, "application/json", "X Bad: v\r\n"), {400, 0}},
      {"obsolete line folding",
       post(T, bad, "application/json", "X-A: a\r\n  folded\r\n"),
       {400, 0}},
      {"Idempotency-Key 256 bytes",
       post(T, kTask, "application/json", "Idempotency-Key: " + std::string(256, 'k') + "\r\n"),
       {422}},
      {"Idempotency-Key with tab",
       post(T, kTask, "application/json", "Idempotency-Key: a\tb\r\n"),
       {422}},
      {"Idempotency-Key with DEL",
       post(T, kTask, "application/json", "Idempotency-Key: a\x7f\r\n"),
       {422}},
      {"Idempotency-Key differs from body",
       post(T, task_with(R"("idempotency_key":"one")"), "application/json",
            "Idempotency-Key: two\r\n"),
       {422}},
      {"Idempotency-Key empty",
       post(T, kTask, "application/json", "Idempotency-Key: \r\n"),
       {422},
       "an empty Idempotency-Key header is taken as absent and the task is created without a key"},
      {"garbage request line", "GARBAGE\r\n\r\n", {400, 0}},
      {"HTTP/0.9 request", "GET /health\r\n\r\n", {400, 0}},
      {"HTTP/2 preface", std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), {400, 404, 505, 0}},
      {"TLS hello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"s, {400, 0}},
      {"64 KB of binary",
       [] {
         std::string s(1 << 16, '\0');
         for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<char>((i * 2654435761u) >> 13);
         return s;
       }(),
       {400, 414, 0}},
      {"request line only LF",
       "POST /api/v1/tasks HTTP/1.1\nContent-Length: 2\n\n{}",
       {400, 422, 0}},
  };
  int64_t accepted = run_cases(f.port, cases);
  // After a 400 for bytes that are not a request the connection closes: what follows is not
  // parsed as further requests (httplib's own loop did, one more answer per garbage "line").
  auto binary = std::find_if(cases.begin(), cases.end(),
                             [](const Case& c) { return c.label == "64 KB of binary"; });
  REQUIRE(binary != cases.end());
  {
    Sock s(f.port);
    REQUIRE(s.ok());
    auto deadline = Clock::now() + seconds(15);
    send_all(s.fd(), binary->bytes, deadline);
    Reply r = read_reply(s.fd(), deadline);
    CHECK(r.status == 400);
    std::string more;
    auto took = wait_closed(s.fd(), seconds(5), &more);
    INFO("answered after the 400: " << (r.after + more).substr(0, 120));
    CHECK(took.has_value());
    CHECK(r.after.empty());
    CHECK(more.empty());
  }
  check_server_fine(f.server, accepted);
}
