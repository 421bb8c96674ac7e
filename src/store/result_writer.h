#pragma once
// ResultWriter takes a backend's answer as it arrives and keeps memory bounded whatever its
// size: the first `inline_limit` bytes are held in memory; once an answer passes that, all of
// it goes to a temporary file in the results folder as it comes. After the last byte finish()
// says where the answer is: small answers are handed to the store with the task's DONE (one
// group commit holds both); large ones are a whole, fsynced file to be moved into place before
// the DONE commits. Either way a DONE task's result is durable when its state is.
//
// One writer per answer; not thread-safe.

#include <cstdint>
#include <string>
#include <string_view>

#include "core/status.h"
#include "store/blob_store.h"

namespace ts {

class ResultWriter {
 public:
  // Answers up to inline_limit bytes stay in memory; none may pass max_bytes.
  ResultWriter(const BlobStore& results, size_t inline_limit, size_t max_bytes);
  ResultWriter(const ResultWriter&) = delete;
  ResultWriter& operator=(const ResultWriter&) = delete;

  // The next bytes. kTooLarge past max_bytes, kUnavailable when the disk refuses them; after a
  // failure nothing more is taken.
  Status write(std::string_view bytes);
  int64_t size() const { return size_; }
  bool spilled() const { return fd_ >= 0 || !file_.empty(); }

  struct Finished {
    int64_t size = 0;
    bool in_file = false;
    std::string bytes;  // the answer, when not in a file
    TempFile file;      // the answer, fsynced, when in a file
  };
  // After the last write. The answer moves out of the writer.
  StatusOr<Finished> finish();
  // Drops what was written (the call failed): a spilled file is removed.
  void discard();

  ~ResultWriter();

 private:
  Status spill();
  Status write_fd(std::string_view bytes);

  const BlobStore& results_;
  const size_t inline_limit_;
  const size_t max_bytes_;
  std::string buffer_;
  int64_t size_ = 0;
  int fd_ = -1;
  TempFile file_;
  Status failed_;
};

}  // namespace ts
