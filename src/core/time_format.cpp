#include "core/time_format.h"

#include <ctime>

namespace ts {
namespace {

void put(char* at, int value, int digits) {
  for (int i = digits - 1; i >= 0; --i) {
    at[i] = static_cast<char>('0' + value % 10);
    value /= 10;
  }
}

}  // namespace

std::string format_rfc3339_ms(int64_t epoch_ms) {
  int64_t secs = epoch_ms / 1000;
  int64_t ms = epoch_ms % 1000;
  if (ms < 0) {
    ms += 1000;
    secs -= 1;
  }
  time_t t = static_cast<time_t>(secs);
  struct tm tm {};
  gmtime_r(&t, &tm);
  std::string out = "0000-00-00T00:00:00.000Z";
  put(&out[0], tm.tm_year + 1900, 4);
  put(&out[5], tm.tm_mon + 1, 2);
  put(&out[8], tm.tm_mday, 2);
  put(&out[11], tm.tm_hour, 2);
  put(&out[14], tm.tm_min, 2);
  put(&out[17], tm.tm_sec, 2);
  put(&out[20], static_cast<int>(ms), 3);
  return out;
}

}  // namespace ts
