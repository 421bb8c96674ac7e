#include <doctest/doctest.h>

#include <set>
#include <vector>

#include "config/config.h"
#include "core/base64.h"
#include "core/ids.h"
#include "core/task.h"
#include "core/time_format.h"
#include "core/url.h"

using namespace ts;

TEST_CASE("task ids are URL-safe - valid - unique and sort by time") {
  std::set<std::string> seen;
  std::string prev;
  for (int i = 0; i < 1000; ++i) {
    std::string id = new_task_id(1'700'000'000'000 + i);
    CHECK(is_valid_task_id(id));
    CHECK(seen.insert(id).second);
    if (!prev.empty()) CHECK(prev.substr(0, 10) <= id.substr(0, 10));
    prev = id;
  }
  CHECK_FALSE(is_valid_task_id(""));
  CHECK_FALSE(is_valid_task_id("../../etc/passwd"));
  CHECK_FALSE(is_valid_task_id("01M85WJ7S6KT1YKFEMT8SECF9Z"));  // upper case is not ours
  CHECK_FALSE(is_valid_task_id("01m85wj7s6kt1ykfemt8secf9"));   // 25 chars
}

TEST_CASE("RFC 3339 UTC with milliseconds") {
  CHECK(format_rfc3339_ms(0) == "1970-01-01T00:00:00.000Z");
  CHECK(format_rfc3339_ms(1795490248123) == "2026-11-24T03:17:28.123Z");
}

TEST_CASE("the state machine allows only DESIGN.md's transitions") {
  using S = TaskState;
  CHECK(can_transition(S::kQueued, S::kRunning));
  CHECK(can_transition(S::kQueued, S::kCanceled));
  CHECK(can_transition(S::kRunning, S::kDone));
  CHECK(can_transition(S::kRunning, S::kQueued));
  CHECK_FALSE(can_transition(S::kQueued, S::kDone));
  for (S final_state : {S::kDone, S::kFailed, S::kCanceled}) {
    CHECK(is_final(final_state));
    for (S to : {S::kQueued, S::kRunning, S::kDone, S::kFailed, S::kCanceled}) {
      // The one way out of a final state is an operator's retry, to QUEUED.
      bool retry = to == S::kQueued && can_retry(final_state);
      CHECK(can_transition(final_state, to) == retry);
    }
  }
  CHECK_FALSE(can_retry(S::kDone));
  CHECK(can_retry(S::kFailed));
  CHECK(can_retry(S::kCanceled));
  CHECK(parse_task_state("DONE") == S::kDone);
  CHECK_FALSE(parse_task_state("done").has_value());
  CHECK(priority_from_word("high") == 8);
  CHECK(priority_from_word("low") == 2);
  CHECK_FALSE(priority_from_word("urgent").has_value());
}

TEST_CASE("URLs: http and https only - ports and paths kept") {
  auto u = parse_url("http://127.0.0.1:9001/prefix/");
  REQUIRE(u);
  CHECK(u->host == "127.0.0.1");
  CHECK(u->port == 9001);
  CHECK(u->path == "/prefix");
  CHECK(u->origin() == "http://127.0.0.1:9001");
  CHECK(parse_url("https://example.com")->port == 443);
  CHECK_FALSE(parse_url("ftp://x"));
  CHECK_FALSE(parse_url("http://"));
  CHECK_FALSE(parse_url("http://host:99999/"));
  CHECK_FALSE(parse_url("http://user@host/"));
  CHECK_FALSE(parse_url("http://host/a b"));
  CHECK_FALSE(parse_url("javascript:alert(1)"));
  CHECK_FALSE(parse_url("http://[]:80/"));
  CHECK(parse_url("http://[::1]:8080")->port == 8080);
}

TEST_CASE("base64 round trips and rejects what is not base64") {
  for (const std::string& s : std::vector<std::string>{"", "f", "fo", "foo", "foob", "fooba",
                                                       "foobar", std::string("\0\xff\x10", 3)}) {
    CHECK(base64_decode(base64_encode(s)) == s);
    CHECK(base64url_decode(base64url_encode(s)) == s);
  }
  CHECK(base64_encode("foobar") == "Zm9vYmFy");
  CHECK(base64_encode("fo") == "Zm8=");
  CHECK_FALSE(base64_decode("Zm9v!mFy"));
  CHECK_FALSE(base64_decode("Zm8=Zm8="));
  CHECK_FALSE(base64_decode("Z"));
  CHECK_FALSE(base64url_decode("Zm8="));
  CHECK(base64_decode("QQ==") == "A");
  CHECK_FALSE(base64_decode("QR=="));  // non-canonical trailing bits
}

TEST_CASE("durations for --retain-final: a number and a unit, or seconds") {
  CHECK(parse_duration_s("0") == 0);
  CHECK(parse_duration_s("45") == 45);
  CHECK(parse_duration_s("45s") == 45);
  CHECK(parse_duration_s("30m") == 1800);
  CHECK(parse_duration_s("12h") == 43200);
  CHECK(parse_duration_s("7d") == 604800);
  CHECK(parse_duration_s("36500d") == 36500LL * 86400);
  for (const char* bad : {"", "d", "7x", "-1d", "1.5h", " 7d", "7d ", "7dd", "1e3", "36501d",
                          "99999999999s", "1234567890123"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_duration_s(bad).has_value());
  }
}
