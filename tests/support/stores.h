#pragma once
// The stores the conformance suite (tests/store/conformance_test.cpp) runs on. Each is a
// factory that owns where its stores live (a temp folder, later a database it starts) and
// opens stores there; opening twice reopens the same data, as a restart would. Not
// thread-safe: one per test.

#include <doctest/doctest.h>

#include <memory>

#include "core/clock.h"
#include "store/store_factory.h"
#include "support/harness.h"

namespace tst {

// The embedded SQLite store, in a temp folder.
struct SqliteStores {
  TempDir dir;
  ts::StatusOr<std::unique_ptr<ts::TaskStore>> try_open(const ts::Clock& clock,
                                                        ts::StoreOptions options = {}) {
    options.path = dir.file("tasks.db");
    return ts::open_task_store(options, clock);
  }
  std::unique_ptr<ts::TaskStore> open(const ts::Clock& clock) {
    auto s = try_open(clock);
    REQUIRE(s.ok());
    return std::move(*s);
  }
};

}  // namespace tst

TYPE_TO_STRING(tst::SqliteStores);

// Every store the suite runs on, for TEST_CASE_TEMPLATE.
#define TS_STORES tst::SqliteStores
