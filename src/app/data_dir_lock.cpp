#include "app/data_dir_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

namespace ts {

bool DataDirLock::acquire(const std::string& dir, std::string* error) {
  std::string path = dir + "/taskserver.lock";
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (fd_ < 0 || ::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    *error = "the data folder " + dir + " is in use by another taskserver (" + path + ")";
    return false;
  }
  return true;
}

DataDirLock::~DataDirLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace ts
