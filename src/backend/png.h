#pragma once
// A minimal PNG writer (8-bit RGB, zlib from the system library) for the mock backend's images,
// and a structural check used by tests and by the result endpoint. Pure; thread-safe.

#include <cstdint>
#include <string>
#include <string_view>

namespace ts {

// rgb holds width*height*3 bytes, row by row.
std::string encode_png(int width, int height, std::string_view rgb);
// A small image whose colours are derived from a hash of `text`: different prompts, different
// images.
std::string png_for_prompt(std::string_view text, int size = 64);
// True when bytes start with the PNG signature and an IHDR chunk with a valid CRC and end with
// IEND.
bool looks_like_png(std::string_view bytes);

}  // namespace ts
