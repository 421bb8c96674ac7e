#include "core/status.h"

namespace ts {

int http_status(Code code) {
  switch (code) {
    case Code::kOk:
      return 200;
    case Code::kMalformed:
      return 400;
    case Code::kUnauthorized:
      return 401;
    case Code::kNotFound:
      return 404;
    case Code::kConflict:
      return 409;
    case Code::kTooLarge:
      return 413;
    case Code::kUnsupportedMedia:
      return 415;
    case Code::kInvalid:
      return 422;
    case Code::kBacklogFull:
      return 429;
    case Code::kInternal:
      return 500;
    case Code::kUnavailable:
      return 503;
  }
  return 500;
}

}  // namespace ts
