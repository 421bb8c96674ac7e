#include "store/migrations.h"

#include <SQLiteCpp/Exception.h>
#include <SQLiteCpp/Transaction.h>

#include <algorithm>
#include <cctype>

namespace ts {

StatusOr<std::vector<Migration>> migrations_from(const EmbeddedFile* files) {
  std::vector<Migration> out;
  for (const EmbeddedFile* f = files; f->name != nullptr; ++f) {
    std::string name = f->name;
    size_t digits = 0;
    while (digits < name.size() && std::isdigit(static_cast<unsigned char>(name[digits]))) {
      ++digits;
    }
    if (digits == 0 || digits > 6 || name.size() <= digits || name[digits] != '_') {
      return Status::Internal("migration file name must be NNNN_name.sql: " + name);
    }
    out.push_back({std::stoi(name.substr(0, digits)), name, std::string(f->data, f->size)});
  }
  std::sort(out.begin(), out.end(),
            [](const Migration& a, const Migration& b) { return a.version < b.version; });
  for (size_t i = 1; i < out.size(); ++i) {
    if (out[i].version == out[i - 1].version) {
      return Status::Internal("two migrations share number " + std::to_string(out[i].version));
    }
  }
  return out;
}

StatusOr<std::vector<Migration>> builtin_migrations() {
  return migrations_from(embedded_migrations());
}

StatusOr<MigrationReport> apply_migrations(SQLite::Database& db,
                                           const std::vector<Migration>& migrations) {
  MigrationReport report;
  try {
    int current = db.execAndGet("PRAGMA user_version").getInt();
    report.from_version = current;
    report.to_version = current;
    int newest = migrations.empty() ? 0 : migrations.back().version;
    if (current > newest) {
      return Status::Unavailable(
          "schema_too_new",
          "the database has schema version " + std::to_string(current) +
              " but this taskserver knows only up to version " + std::to_string(newest) +
              "; it was written by a newer taskserver. Refusing to touch it: run the newer "
              "binary, or restore a backup made for this version");
    }
    for (const Migration& m : migrations) {
      if (m.version <= current) continue;
      SQLite::Transaction txn(db);
      db.exec(m.sql);
      db.exec("PRAGMA user_version = " + std::to_string(m.version));
      txn.commit();
      current = m.version;
      report.applied.push_back(m.name);
      report.to_version = current;
    }
  } catch (const SQLite::Exception& e) {
    return Status::Internal(std::string("migration failed: ") + e.what());
  }
  return report;
}

}  // namespace ts
