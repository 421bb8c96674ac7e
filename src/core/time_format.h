#pragma once
// RFC 3339 UTC timestamps with milliseconds ("2026-11-24T03:17:28.123Z"), the only time format
// of the API. Pure functions; thread-safe.

#include <cstdint>
#include <string>

namespace ts {

std::string format_rfc3339_ms(int64_t epoch_ms);

}  // namespace ts
