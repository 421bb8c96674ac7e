#pragma once
// RFC 3339 UTC timestamps with milliseconds ("2026-11-24T03:17:28.123Z"), the only time format
// of the API. Pure functions; thread-safe.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ts {

std::string format_rfc3339_ms(int64_t epoch_ms);
// "2026-11-24T03:17:28Z", with an optional fraction (milliseconds kept, the rest cut) and "Z"
// or a "+hh:mm"/"-hh:mm" offset (a lower-case t or z too). nullopt for anything else.
std::optional<int64_t> parse_rfc3339_ms(std::string_view text);

}  // namespace ts
