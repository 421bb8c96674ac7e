#pragma once
// Which TaskStore a server runs on: the one place that names the implementations, so nothing
// else includes a store's own headers. Thread-safe (no state).

#include <memory>

#include "core/clock.h"
#include "store/migrations.h"
#include "store/task_store.h"

namespace ts {

// Opens the store (creating it if missing), applies its migrations and starts its writer.
StatusOr<std::unique_ptr<TaskStore>> open_task_store(const StoreOptions& options,
                                                     const Clock& clock);
// Applies the store's migrations without serving (`taskserver migrate`).
StatusOr<MigrationReport> migrate_task_store(const StoreOptions& options);

}  // namespace ts
