#pragma once
// Task ids: 26 characters of lower-case Crockford base32, the first 10 a millisecond timestamp
// and the rest 80 random bits, so ids sort by creation time and are safe in URLs and file
// names. Thread-safe.

#include <cstdint>
#include <string>
#include <string_view>

namespace ts {

std::string new_task_id(int64_t now_ms);
// True for strings new_task_id could have made. Anything else is never looked up.
bool is_valid_task_id(std::string_view id);

}  // namespace ts
