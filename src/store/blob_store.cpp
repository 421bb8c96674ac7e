#include "store/blob_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

namespace ts {
namespace {

Status errno_status(const std::string& what) {
  int e = errno;
  Status st = Status::Internal(what + ": " + std::strerror(e));
  if (e == ENOSPC || e == EDQUOT || e == EROFS || e == EIO) {
    st = Status::Unavailable("storage_unavailable", what + ": " + std::strerror(e));
  }
  return st;
}

Status fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno_status("open " + dir);
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return errno_status("fsync " + dir);
  return Status::Ok();
}

}  // namespace

Status write_file_synced(const std::string& path, std::string_view bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return errno_status("create " + path);
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + off, bytes.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      Status st = errno_status("write " + path);
      ::close(fd);
      ::unlink(path.c_str());
      return st;
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    Status st = errno_status("fsync " + path);
    ::close(fd);
    ::unlink(path.c_str());
    return st;
  }
  ::close(fd);
  return Status::Ok();
}

TempFile& TempFile::operator=(TempFile&& other) noexcept {
  if (this != &other) {
    discard();
    path_ = std::move(other.path_);
    other.path_.clear();
  }
  return *this;
}

void TempFile::discard() {
  if (!path_.empty()) ::unlink(path_.c_str());
  path_.clear();
}

std::string TempFile::release() { return std::exchange(path_, std::string()); }

StatusOr<BlobStore> BlobStore::open(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::Internal("cannot create " + dir + ": " + ec.message());
  return BlobStore(dir);
}

void BlobStore::for_each_name(const std::atomic<bool>& stop,
                              const std::function<void(const std::string&)>& fn) const {
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(dir_, ec);
       !ec && it != std::filesystem::directory_iterator() && !stop.load(); it.increment(ec)) {
    fn(it->path().filename().string());
  }
}

bool BlobStore::written_before(const std::string& name,
                               std::filesystem::file_time_type started) const {
  // Coarse file times may stamp a file written just after `started` a little before it.
  std::error_code ec;
  auto written = std::filesystem::last_write_time(path_of(name), ec);
  return !ec && written < started - std::chrono::seconds(5);
}

size_t BlobStore::sweep_temporaries(const std::atomic<bool>& stop,
                                    std::filesystem::file_time_type started) const {
  // temp_path() names this process's own ".tmp-<pid>-<n>": a crash can leave half-written ones
  // of an earlier process behind, and nothing refers to them.
  const std::string ours = ".tmp-" + std::to_string(::getpid()) + "-";
  size_t removed = 0;
  for_each_name(stop, [&](const std::string& name) {
    if (name.rfind(".tmp-", 0) != 0) return;
    if (name.rfind(ours, 0) == 0 && !written_before(name, started)) return;
    std::error_code ec;
    if (std::filesystem::remove(path_of(name), ec)) ++removed;
  });
  return removed;
}

std::string BlobStore::temp_path() const {
  static std::atomic<uint64_t> counter{0};
  return dir_ + "/.tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1));
}

Status BlobStore::put(const std::string& name, std::string_view bytes) const {
  std::string tmp = temp_path();
  Status st = write_file_synced(tmp, bytes);
  if (!st.ok()) return st;
  return adopt(tmp, name);
}

Status BlobStore::adopt(const std::string& temp_path, const std::string& name) const {
  if (::rename(temp_path.c_str(), path_of(name).c_str()) != 0) {
    Status st = errno_status("rename into " + path_of(name));
    ::unlink(temp_path.c_str());
    return st;
  }
  return fsync_dir(dir_);
}

StatusOr<std::string> BlobStore::read(const std::string& name) const {
  std::ifstream in(path_of(name), std::ios::binary);
  if (!in) return Status::NotFound("no stored file for " + name);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void BlobStore::remove(const std::string& name) const { ::unlink(path_of(name).c_str()); }

}  // namespace ts
