#pragma once
// BlobStore: files under one folder (results/, inputs/), each written to a temporary name,
// fsynced, renamed into place and the folder fsynced, so a file that exists is whole and
// survives power loss. Names are task ids (validated by the caller). Thread-safe: no shared
// state besides the file system.

#include <atomic>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "core/status.h"

namespace ts {

// A file written under a temporary name inside a BlobStore's folder (an upload as it streams
// in): removed when it goes out of scope, unless adopted into place or released. Move-only.
class TempFile {
 public:
  TempFile() = default;
  explicit TempFile(std::string path) : path_(std::move(path)) {}
  TempFile(TempFile&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  TempFile& operator=(TempFile&& other) noexcept;
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() { discard(); }
  const std::string& path() const { return path_; }
  bool empty() const { return path_.empty(); }
  // Removes the file now.
  void discard();
  // The path, whose file is the caller's from now on.
  std::string release();

 private:
  std::string path_;
};

class BlobStore {
 public:
  // Creates the folder if missing.
  static StatusOr<BlobStore> open(const std::string& dir);
  // Removes the temporaries a crash left behind: those of any other process (the data folder
  // lock makes this one the only writer), and those named with this process's pid but written
  // before `started` (an earlier process with the same pid: PID 1 in a container). A walk over
  // every file, so it runs after start-up, not before: 300,000 results took 0.2 s warm and
  // 0.5 s from a cold cache. Stops early once *stop is set. Returns how many it removed.
  size_t sweep_temporaries(const std::atomic<bool>& stop,
                           std::filesystem::file_time_type started) const;
  // Whether the file was written before a process that started at `started` could write it,
  // so by an earlier one (false when it is gone).
  bool written_before(const std::string& name, std::filesystem::file_time_type started) const;
  // Calls fn with the name of each file in the folder (temporaries too), until *stop is set.
  void for_each_name(const std::atomic<bool>& stop,
                     const std::function<void(const std::string&)>& fn) const;
  Status put(const std::string& name, std::string_view bytes) const;
  // Moves an existing file (already fsynced, on the same file system) into place.
  Status adopt(const std::string& temp_path, const std::string& name) const;
  Status adopt(TempFile file, const std::string& name) const { return adopt(file.release(), name); }
  StatusOr<std::string> read(const std::string& name) const;
  void remove(const std::string& name) const;
  std::string path_of(const std::string& name) const { return dir_ + "/" + name; }
  // A fresh temporary path inside the folder, for streaming writes.
  std::string temp_path() const;
  const std::string& dir() const { return dir_; }

 private:
  explicit BlobStore(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

// Writes bytes to path and fsyncs it. Used for streamed uploads before adopt().
Status write_file_synced(const std::string& path, std::string_view bytes);

}  // namespace ts
