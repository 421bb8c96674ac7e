#pragma once
// Base64 (RFC 4648, standard and URL-safe alphabets). Pure functions; thread-safe.

#include <optional>
#include <string>
#include <string_view>

namespace ts {

std::string base64_encode(std::string_view bytes);
// Strict: only the standard alphabet, '=' padding at the end (optional), no whitespace.
std::optional<std::string> base64_decode(std::string_view text);
// URL-safe alphabet without padding, for opaque tokens (cursors).
std::string base64url_encode(std::string_view bytes);
std::optional<std::string> base64url_decode(std::string_view text);

}  // namespace ts
