#include "api/uploads.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "api/request_context.h"

namespace ts {
namespace {

// A multipart part as it streams in: `file` goes to a temporary file, small fields to memory.
struct PartSink {
  std::string name, filename, content_type;
  std::string data;  // for fields
  FILE* file = nullptr;
  TempFile temp;
  int64_t file_size = 0;
};

Status storage_unavailable() {
  return Status::Unavailable("storage_unavailable", "cannot store the upload");
}

}  // namespace

Status read_multipart(const httplib::ContentReader& reader, const BlobStore& inputs,
                      const MultipartLimits& limits, std::optional<Upload>* upload,
                      std::map<std::string, std::string>* fields) {
  std::vector<PartSink> parts;
  Status failure;
  size_t field_bytes = 0;
  bool complete = reader(
      [&](const httplib::MultipartFormData& header) {
        PartSink p;
        p.name = header.name;
        p.filename = header.filename;
        p.content_type = header.content_type;
        if (p.name == "file") {
          if (std::any_of(parts.begin(), parts.end(),
                          [](const PartSink& q) { return q.name == "file"; })) {
            failure = Status::Invalid("file", "only one part named file is allowed");
            return false;
          }
          p.temp = TempFile(inputs.temp_path());
          p.file = std::fopen(p.temp.path().c_str(), "wb");
          if (!p.file) {
            failure = storage_unavailable();
            return false;
          }
        }
        parts.push_back(std::move(p));
        return true;
      },
      [&](const char* data, size_t len) {
        if (parts.empty()) return false;
        PartSink& p = parts.back();
        if (p.file) {
          if (static_cast<size_t>(p.file_size) + len > limits.max_upload) {
            failure = too_large(limits.max_upload);
            return false;
          }
          if (std::fwrite(data, 1, len, p.file) != len) {
            failure = storage_unavailable();
            return false;
          }
          p.file_size += static_cast<int64_t>(len);
          return true;
        }
        field_bytes += len;
        if (field_bytes > limits.max_fields) {
          failure = too_large(limits.max_fields);
          return false;
        }
        p.data.append(data, len);
        return true;
      });
  Status st = failure;
  // A reader that stopped without our say-so saw the body end early or go bad: an upload cut
  // short must not become a task with half a file.
  if (st.ok() && !complete) st = body_incomplete();
  for (PartSink& p : parts) {
    if (p.file) {
      bool ok = std::fflush(p.file) == 0 && ::fsync(fileno(p.file)) == 0;
      std::fclose(p.file);
      if (!ok && st.ok()) st = storage_unavailable();
      if (st.ok()) {
        *upload = Upload{std::move(p.temp), p.filename.empty() ? "upload" : p.filename,
                         p.content_type.empty() ? "application/octet-stream" : p.content_type,
                         p.file_size};
      }
    } else {
      (*fields)[p.name] = std::move(p.data);
    }
  }
  if (!st.ok()) upload->reset();  // its file goes with it
  return st;
}

}  // namespace ts
