#include <doctest/doctest.h>

#include "api/request_parsing.h"

using namespace ts;

TEST_CASE("list queries: bounds and names") {
  auto q = parse_list_query({});
  REQUIRE(q.ok());
  CHECK(q->limit == 50);
  q = parse_list_query(
      {{"status", "done"}, {"type", "image"}, {"limit", "1000"}, {"cursor", "abc"}});
  REQUIRE(q.ok());
  CHECK(q->status == TaskState::kDone);
  CHECK(q->type == "image");
  CHECK(q->limit == 1000);
  CHECK(q->cursor == "abc");
  for (const char* bad : {"0", "1001", "-1", "ten", "5x", "", "99999999999999999999"}) {
    CAPTURE(std::string(bad));
    CHECK(parse_list_query({{"limit", bad}}).status().field() == "limit");
  }
  CHECK(parse_list_query({{"status", "PENDING"}}).status().field() == "status");
  CHECK(parse_list_query({{"type", "../etc"}}).status().field() == "type");
  CHECK(int_param({{"wait", "61"}}, "wait", 0, 60, 0).status().field() == "wait");
  CHECK(*int_param({{"wait", "60"}}, "wait", 0, 60, 0) == 60);
}

TEST_CASE("bearer tokens: scheme case-insensitive and constant-time match") {
  CHECK(bearer_token("Bearer abc") == "abc");
  CHECK(bearer_token("bearer   abc  ") == "abc");
  CHECK_FALSE(bearer_token("Basic abc"));
  CHECK_FALSE(bearer_token("Bearer "));
  CHECK_FALSE(bearer_token(""));
  TokenSet none({});
  CHECK(none.allows(""));
  TokenSet set({"s3cret", "other"});
  CHECK(set.allows("Bearer s3cret"));
  CHECK(set.allows("Bearer other"));
  CHECK_FALSE(set.allows("Bearer s3cre"));
  CHECK_FALSE(set.allows("Bearer s3cret2"));
  CHECK_FALSE(set.allows("s3cret"));
  CHECK_FALSE(set.allows(""));
}
