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

// Reads `digits` decimal digits at `at`; -1 when one is not a digit.
int digits_at(std::string_view s, size_t at, size_t digits) {
  if (at + digits > s.size()) return -1;
  int v = 0;
  for (size_t i = at; i < at + digits; ++i) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

bool is_leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

}  // namespace

std::optional<int64_t> parse_rfc3339_ms(std::string_view s) {
  if (s.size() < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
      s[13] != ':' || s[16] != ':') {
    return std::nullopt;
  }
  int year = digits_at(s, 0, 4), month = digits_at(s, 5, 2), day = digits_at(s, 8, 2);
  int hour = digits_at(s, 11, 2), minute = digits_at(s, 14, 2), second = digits_at(s, 17, 2);
  if (year < 0 || month < 1 || month > 12 || day < 1 || hour < 0 || hour > 23 || minute < 0 ||
      minute > 59 || second < 0 || second > 60) {
    return std::nullopt;
  }
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int month_days = kDays[month - 1] + (month == 2 && is_leap(year) ? 1 : 0);
  if (day > month_days) return std::nullopt;
  size_t at = 19;
  int ms = 0;
  if (at < s.size() && s[at] == '.') {
    size_t start = ++at;
    int scale = 100;
    while (at < s.size() && s[at] >= '0' && s[at] <= '9') {
      ms += (s[at] - '0') * scale;
      scale /= 10;
      ++at;
    }
    if (at == start || at - start > 9) return std::nullopt;
  }
  if (at >= s.size()) return std::nullopt;
  int offset_min = 0;
  if (s[at] == 'Z' || s[at] == 'z') {
    ++at;
  } else if (s[at] == '+' || s[at] == '-') {
    int oh = digits_at(s, at + 1, 2), om = digits_at(s, at + 4, 2);
    if (oh < 0 || oh > 23 || om < 0 || om > 59 || at + 3 >= s.size() || s[at + 3] != ':') {
      return std::nullopt;
    }
    offset_min = (oh * 60 + om) * (s[at] == '+' ? 1 : -1);
    at += 6;
  } else {
    return std::nullopt;
  }
  if (at != s.size()) return std::nullopt;
  struct tm tm {};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  int64_t secs = static_cast<int64_t>(timegm(&tm)) - int64_t{offset_min} * 60;
  return secs * 1000 + ms;
}

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
