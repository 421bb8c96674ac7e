#pragma once
// FileSweep removes, on a thread of its own once the server serves, what an earlier process
// left in the blob folders: temporaries of writes it did not finish, and files of tasks the
// store does not have (a crash between a purge's commit and its unlinks, or between an
// upload's arrival and its insert). The walk visits every file, so it never runs before
// serving. Stopped and joined by stop() or the destructor.

#include <atomic>
#include <filesystem>
#include <thread>

#include "core/status.h"
#include "store/blob_store.h"
#include "store/task_store.h"

namespace ts {

class FileSweep {
 public:
  // Starts at once. `started`: when this process started; only older files are judged.
  FileSweep(RetentionStore& store, const BlobStore& results, const BlobStore& inputs,
            std::filesystem::file_time_type started);
  ~FileSweep();
  void stop();

  // The files of `blobs` named like a task id that the store does not have and that were
  // written before `started`, removed. Stops early once *stop is set. How many it removed.
  static StatusOr<size_t> sweep_orphans(RetentionStore& store, const BlobStore& blobs,
                                        const std::atomic<bool>& stop,
                                        std::filesystem::file_time_type started);

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;  // last: it reads stop_
};

}  // namespace ts
