#pragma once
// Applies migrations to a SQLite database: each in its own transaction, tracked by
// PRAGMA user_version; a database newer than the list is refused untouched. Not thread-safe:
// run once, on the write connection, before anything else uses it.

#include <SQLiteCpp/Database.h>

#include <vector>

#include "store/migrations.h"

namespace ts::sqlite {

StatusOr<MigrationReport> apply_migrations(SQLite::Database& db,
                                           const std::vector<Migration>& migrations);

}  // namespace ts::sqlite
