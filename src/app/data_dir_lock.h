#pragma once
// DataDirLock holds the data folder for this process alone (flock on taskserver.lock): two
// servers on one store would each recover the other's RUNNING tasks. Released when it goes.

#include <string>

namespace ts {

class DataDirLock {
 public:
  DataDirLock() = default;
  DataDirLock(const DataDirLock&) = delete;
  DataDirLock& operator=(const DataDirLock&) = delete;
  ~DataDirLock();
  // False, with the reason in *error, when another process holds it.
  bool acquire(const std::string& dir, std::string* error);

 private:
  int fd_ = -1;
};

}  // namespace ts
