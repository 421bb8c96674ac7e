#pragma once
// Schema migrations, store-neutral: numbered SQL files, one folder per store
// (migrations/sqlite/NNNN_name.sql, migrations/postgres/...), compiled into the binary. Each
// store applies its own list once each, in order, and refuses a database newer than the newest
// it knows (SqliteTaskStore::migrate; store_factory.h runs it for `taskserver migrate`). Pure;
// thread-safe.

#include <string>
#include <string_view>
#include <vector>

#include "core/embedded.h"
#include "core/status.h"

namespace ts {

struct Migration {
  int version = 0;   // the NNNN prefix of the file name
  std::string name;  // file name
  std::string sql;
};

// The migrations of one store compiled into this binary ("sqlite", "postgres"), sorted by
// version. A malformed name (no numeric prefix, a repeated number) is a build defect and
// reported as kInternal.
StatusOr<std::vector<Migration>> builtin_migrations(std::string_view store);
// Files named NNNN_name.sql (no folder), sorted by version.
StatusOr<std::vector<Migration>> migrations_from(const EmbeddedFile* files);

struct MigrationReport {
  int from_version = 0;
  int to_version = 0;
  std::vector<std::string> applied;  // file names, in order
};

// The refusal of a database whose schema is newer than this binary knows.
Status schema_too_new(int current, int newest);

}  // namespace ts
