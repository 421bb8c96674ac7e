#include "store/result_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ts {
namespace {

Status disk_error(const std::string& what) {
  int e = errno;
  return Status::Unavailable("storage_unavailable", what + ": " + std::strerror(e));
}

}  // namespace

ResultWriter::ResultWriter(const BlobStore& results, size_t inline_limit, size_t max_bytes)
    : results_(results), inline_limit_(inline_limit), max_bytes_(max_bytes) {}

ResultWriter::~ResultWriter() { discard(); }

Status ResultWriter::write_fd(std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd_, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return disk_error("write " + file_.path());
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

Status ResultWriter::spill() {
  file_ = TempFile(results_.temp_path());
  fd_ = ::open(file_.path().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd_ < 0) return disk_error("create " + file_.path());
  Status st = write_fd(buffer_);
  std::string().swap(buffer_);
  return st;
}

Status ResultWriter::write(std::string_view bytes) {
  if (!failed_.ok()) return failed_;
  if (static_cast<size_t>(size_) + bytes.size() > max_bytes_) {
    failed_ = Status(Code::kTooLarge, "answer_too_large",
                     "the backend's answer is larger than the limit of " +
                         std::to_string(max_bytes_) + " bytes");
    return failed_;
  }
  size_ += static_cast<int64_t>(bytes.size());
  if (fd_ < 0 && static_cast<size_t>(size_) <= inline_limit_) {
    buffer_.append(bytes);
    return Status::Ok();
  }
  if (fd_ < 0) {
    failed_ = spill();
    if (!failed_.ok()) return failed_;
  }
  failed_ = write_fd(bytes);
  return failed_;
}

StatusOr<ResultWriter::Finished> ResultWriter::finish() {
  if (!failed_.ok()) return failed_;
  Finished out;
  out.size = size_;
  if (fd_ < 0) {
    out.bytes = std::move(buffer_);
    return out;
  }
  if (::fsync(fd_) != 0) {
    Status st = disk_error("fsync " + file_.path());
    discard();
    return st;
  }
  ::close(fd_);
  fd_ = -1;
  out.in_file = true;
  out.file = std::move(file_);
  return out;
}

void ResultWriter::discard() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  file_.discard();
  std::string().swap(buffer_);
}

}  // namespace ts
