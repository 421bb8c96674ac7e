#include "store/sqlite/migrate.h"

#include <SQLiteCpp/Exception.h>
#include <SQLiteCpp/Transaction.h>

namespace ts::sqlite {

StatusOr<MigrationReport> apply_migrations(SQLite::Database& db,
                                           const std::vector<Migration>& migrations) {
  MigrationReport report;
  try {
    int current = db.execAndGet("PRAGMA user_version").getInt();
    report.from_version = current;
    report.to_version = current;
    int newest = migrations.empty() ? 0 : migrations.back().version;
    if (current > newest) return schema_too_new(current, newest);
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

}  // namespace ts::sqlite
