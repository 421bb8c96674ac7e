// The SQLite store's migrations: applied once, in order, each in its own transaction, and a
// database newer than the binary refused untouched.

#include <doctest/doctest.h>

#include <SQLiteCpp/Database.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/clock.h"
#include "store/migrations.h"
#include "store/sqlite/migrate.h"
#include "store/store_factory.h"
#include "support/harness.h"

using namespace ts;
using ts::sqlite::apply_migrations;

namespace {

EmbeddedFile file(const char* name, const char* sql) { return {name, sql, std::strlen(sql)}; }

}  // namespace

TEST_CASE("migrations apply once - in order - each in its own transaction") {
  tst::TempDir dir;
  // Deliberately listed out of order: they must run by number.
  const EmbeddedFile files[] = {
      file("0002_second.sql", "INSERT INTO log VALUES ('second');"),
      file("0001_first.sql", "CREATE TABLE log (what TEXT); INSERT INTO log VALUES ('first');"),
      file("0003_third.sql", "INSERT INTO log VALUES ('third');"),
      {nullptr, nullptr, 0}};
  auto list = migrations_from(files);
  REQUIRE(list.ok());
  SQLite::Database db(dir.file("m.db"), SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
  auto r = apply_migrations(db, *list);
  REQUIRE(r.ok());
  CHECK(r->from_version == 0);
  CHECK(r->to_version == 3);
  CHECK(r->applied ==
        std::vector<std::string>{"0001_first.sql", "0002_second.sql", "0003_third.sql"});
  SQLite::Statement q(db, "SELECT group_concat(what, ',') FROM log");
  q.executeStep();
  CHECK(q.getColumn(0).getString() == "first,second,third");
  // Again: nothing to do, nothing repeated.
  auto again = apply_migrations(db, *list);
  REQUIRE(again.ok());
  CHECK(again->applied.empty());
  CHECK(db.execAndGet("SELECT COUNT(*) FROM log").getInt() == 3);
}

TEST_CASE("a failing migration leaves the schema at the last good version") {
  tst::TempDir dir;
  const EmbeddedFile files[] = {file("0001_ok.sql", "CREATE TABLE a (x);"),
                                file("0002_bad.sql", "CREATE TABLE b (x); SELECT * FROM nope;"),
                                {nullptr, nullptr, 0}};
  auto list = migrations_from(files);
  REQUIRE(list.ok());
  SQLite::Database db(dir.file("m.db"), SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
  CHECK_FALSE(apply_migrations(db, *list).ok());
  CHECK(db.execAndGet("PRAGMA user_version").getInt() == 1);
  CHECK_FALSE(db.tableExists("b"));  // 0002's first statement was rolled back with it
}

TEST_CASE("a database newer than the binary is refused untouched") {
  tst::TempDir dir;
  {
    SQLite::Database db(dir.file("tasks.db"), SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    db.exec("PRAGMA user_version = 999");
  }
  StoreOptions o;
  o.path = dir.file("tasks.db");
  auto s = open_task_store(o, SystemClock::instance());
  REQUIRE_FALSE(s.ok());
  CHECK(s.status().slug() == "schema_too_new");
  CHECK(s.status().message().find("999") != std::string::npos);
  SQLite::Database db(dir.file("tasks.db"), SQLite::OPEN_READONLY);
  CHECK(db.execAndGet("PRAGMA user_version").getInt() == 999);
  CHECK_FALSE(db.tableExists("tasks"));
}

TEST_CASE("the built-in migrations have distinct numbers and build the task table") {
  auto list = builtin_migrations("sqlite");
  REQUIRE(list.ok());
  REQUIRE(list->size() >= 2);
  CHECK(list->front().name == "0001_init.sql");
}
