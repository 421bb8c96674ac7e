#include "service/file_sweep.h"

#include <spdlog/spdlog.h>

#include <string>
#include <vector>

#include "core/ids.h"
#include "core/thread_name.h"

namespace ts {

FileSweep::FileSweep(RetentionStore& store, const BlobStore& results, const BlobStore& inputs,
                     std::filesystem::file_time_type started)
    : thread_([this, &store, &results, &inputs, started] {
        name_this_thread("ts-sweep");
        size_t n =
            results.sweep_temporaries(stop_, started) + inputs.sweep_temporaries(stop_, started);
        if (n > 0) spdlog::info("removed {} temporary files left by an earlier process", n);
        size_t orphans = 0;
        for (const BlobStore* blobs : {&results, &inputs}) {
          auto removed = sweep_orphans(store, *blobs, stop_, started);
          if (!removed.ok()) {
            spdlog::warn("cannot look for files of deleted tasks: {}", removed.status().message());
            return;
          }
          orphans += *removed;
        }
        if (orphans > 0) spdlog::info("removed {} files of tasks the store does not have", orphans);
      }) {}

FileSweep::~FileSweep() { stop(); }

void FileSweep::stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

StatusOr<size_t> FileSweep::sweep_orphans(RetentionStore& store, const BlobStore& blobs,
                                          const std::atomic<bool>& stop,
                                          std::filesystem::file_time_type started) {
  size_t removed = 0;
  Status failed = Status::Ok();
  std::vector<std::string> batch;
  auto flush = [&] {
    if (batch.empty() || !failed.ok()) return;
    auto existing = store.existing_task_ids(batch);
    if (!existing.ok()) {
      failed = existing.status();
      return;
    }
    for (const std::string& name : batch) {
      if (existing->count(name) || !blobs.written_before(name, started)) continue;
      std::error_code ec;
      if (std::filesystem::remove(blobs.path_of(name), ec)) ++removed;
    }
    batch.clear();
  };
  blobs.for_each_name(stop, [&](const std::string& name) {
    if (!is_valid_task_id(name)) return;  // temporaries and anything else are not ours to judge
    batch.push_back(name);
    if (batch.size() == 500) flush();
  });
  flush();
  if (!failed.ok()) return failed;
  return removed;
}

}  // namespace ts
