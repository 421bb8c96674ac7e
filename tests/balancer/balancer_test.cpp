#include <doctest/doctest.h>

#include <map>

#include "balancer/balancer.h"
#include "core/clock.h"

using namespace ts;

namespace {

Balancer make(ManualClock& clock, int n, int slots = 1, HealthPolicy policy = {}) {
  std::vector<BackendSpec> specs;
  for (int i = 0; i < n; ++i) specs.push_back({"http://b" + std::to_string(i), slots});
  return Balancer("image", specs, policy, clock);
}

std::string state_of(const Balancer& b, size_t i) {
  return std::string(to_string(b.snapshot()[i].state));
}

}  // namespace

TEST_CASE("round-robin over backends with a free slot - never more than their slots") {
  ManualClock clock;
  Balancer b = make(clock, 3, 2);
  std::map<std::string, int> count;
  std::vector<Lease> held;
  for (int i = 0; i < 6; ++i) {
    auto l = b.acquire("");
    REQUIRE(l);
    ++count[l->url];
    held.push_back(*l);
  }
  for (auto& [url, n] : count) CHECK(n == 2);
  CHECK_FALSE(b.acquire(""));  // 3 backends x 2 slots, all taken
  CHECK_FALSE(b.has_free_slot());
  b.release(held[0], CallOutcome::kSuccess, 10, "");
  CHECK(b.has_free_slot());
  auto again = b.acquire("");
  REQUIRE(again);
  CHECK(again->url == held[0].url);
}

TEST_CASE("a retry prefers another backend - but takes the same one if it is the only choice") {
  ManualClock clock;
  Balancer b = make(clock, 2);
  auto first = b.acquire("http://b0");
  REQUIRE(first);
  CHECK(first->url == "http://b1");
  b.release(*first, CallOutcome::kSuccess, 1, "");
  Balancer single = make(clock, 1);
  auto only = single.acquire("http://b0");
  REQUIRE(only);
  CHECK(only->url == "http://b0");
}

TEST_CASE("probes: fall failures take a backend down - rise passes bring it back") {
  ManualClock clock;
  HealthPolicy p;
  p.fall = 3;
  p.rise = 2;
  Balancer b = make(clock, 1, 1, p);
  b.report_probe(0, false, "refused");
  b.report_probe(0, false, "refused");
  CHECK(state_of(b, 0) == "up");
  b.report_probe(0, false, "refused");
  CHECK(state_of(b, 0) == "down");
  CHECK_FALSE(b.acquire(""));
  b.report_probe(0, true, "");
  CHECK(state_of(b, 0) == "down");
  b.report_probe(0, true, "");
  CHECK(state_of(b, 0) == "up");
  CHECK(b.acquire(""));
}

TEST_CASE("failing tasks eject a backend for a time that doubles - even while probes pass") {
  ManualClock clock;
  HealthPolicy p;
  p.max_fails = 2;
  p.eject_base_ms = 5000;
  p.eject_max_ms = 12000;
  Balancer b = make(clock, 1, 1, p);
  auto fail = [&] {
    auto l = b.acquire("");
    REQUIRE(l);
    b.release(*l, CallOutcome::kFailure, 10, "HTTP 500");
  };
  fail();
  CHECK(state_of(b, 0) == "up");
  fail();
  CHECK(state_of(b, 0) == "ejected");
  b.report_probe(0, true, "");  // /health says ok: still out
  CHECK_FALSE(b.acquire(""));
  clock.advance_ms(4999);
  CHECK_FALSE(b.acquire(""));
  clock.advance_ms(1);
  CHECK(state_of(b, 0) == "up");
  fail();
  fail();  // ejected again in a row: 10 s
  clock.advance_ms(9999);
  CHECK(state_of(b, 0) == "ejected");
  clock.advance_ms(1);
  fail();
  fail();  // third time: capped at 12 s
  clock.advance_ms(11999);
  CHECK(state_of(b, 0) == "ejected");
  clock.advance_ms(1);
  CHECK(state_of(b, 0) == "up");
  // A success resets the doubling.
  auto l = b.acquire("");
  b.release(*l, CallOutcome::kSuccess, 10, "");
  fail();
  fail();
  clock.advance_ms(5000);
  CHECK(state_of(b, 0) == "up");
  CHECK(b.snapshot()[0].ejections == 4);
}

TEST_CASE("busy answers rest a backend without counting against it - 4xx says nothing") {
  ManualClock clock;
  Balancer b = make(clock, 1);
  auto l = b.acquire("");
  b.release(*l, CallOutcome::kBusy, 10, "HTTP 503", 3000);
  CHECK(state_of(b, 0) == "busy");
  CHECK_FALSE(b.acquire(""));
  clock.advance_ms(3000);
  l = b.acquire("");
  REQUIRE(l);
  b.release(*l, CallOutcome::kClientError, 10, "HTTP 400");
  auto s = b.snapshot()[0];
  CHECK(s.failures == 0);
  CHECK(s.client_errors == 1);
  CHECK(to_string(s.state) == "up");
}

TEST_CASE("latency statistics: mean and p95 of recent calls") {
  ManualClock clock;
  Balancer b = make(clock, 1);
  for (int i = 1; i <= 100; ++i) {
    auto l = b.acquire("");
    b.release(*l, CallOutcome::kSuccess, i, "");
  }
  auto s = b.snapshot()[0];
  CHECK(s.latency_mean_ms == doctest::Approx(50.5));
  CHECK(s.latency_p95_ms == doctest::Approx(95));
  CHECK(s.successes == 100);
}
