#pragma once
// Multipart bodies as they stream in: the part named `file` goes to a temporary file in the
// inputs folder (fsynced before it is handed over), the other parts, bounded, into memory.
// Per request; not shared across threads.

#include <httplib.h>

#include <map>
#include <optional>
#include <string>

#include "core/status.h"
#include "service/task_service.h"
#include "store/blob_store.h"

namespace ts {

struct MultipartLimits {
  size_t max_upload;  // bytes of the file
  size_t max_fields;  // bytes of the other parts together
};

// Reads the whole body. On success *upload holds the file (if there was one) and *fields the
// other parts by name. On failure nothing is left on disk.
Status read_multipart(const httplib::ContentReader& reader, const BlobStore& inputs,
                      const MultipartLimits& limits, std::optional<Upload>* upload,
                      std::map<std::string, std::string>* fields);

}  // namespace ts
