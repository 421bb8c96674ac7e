#pragma once
// Schema migrations: numbered SQL files (migrations/NNNN_name.sql, compiled into the binary),
// applied once each, in order, each in its own transaction, tracked by PRAGMA user_version.
// A database newer than the binary knows is refused untouched. Not thread-safe: run once at
// start on the write connection.

#include <SQLiteCpp/Database.h>

#include <string>
#include <vector>

#include "core/embedded.h"
#include "core/status.h"

namespace ts {

struct Migration {
  int version = 0;   // the NNNN prefix of the file name
  std::string name;  // file name
  std::string sql;
};

// The migrations compiled into this binary, sorted by version. A malformed name (no numeric
// prefix, a repeated number) is a build defect and reported as kInternal.
StatusOr<std::vector<Migration>> builtin_migrations();
StatusOr<std::vector<Migration>> migrations_from(const EmbeddedFile* files);

struct MigrationReport {
  int from_version = 0;
  int to_version = 0;
  std::vector<std::string> applied;  // file names, in order
};

// Brings `db` up to the newest migration. kUnavailable with a clear message when the
// database's user_version is newer than the newest migration known.
StatusOr<MigrationReport> apply_migrations(SQLite::Database& db,
                                           const std::vector<Migration>& migrations);

}  // namespace ts
