#include "store/store_factory.h"

#include "store/sqlite/sqlite_task_store.h"

namespace ts {

StatusOr<std::unique_ptr<TaskStore>> open_task_store(const StoreOptions& options,
                                                     const Clock& clock) {
  auto store = sqlite::SqliteTaskStore::open(options, clock);
  if (!store.ok()) return store.status();
  return std::unique_ptr<TaskStore>(std::move(*store));
}

StatusOr<MigrationReport> migrate_task_store(const StoreOptions& options) {
  return sqlite::SqliteTaskStore::migrate(options.path);
}

}  // namespace ts
