#pragma once
// A minimal PNG writer (8-bit RGB, zlib from the system library) for the mock backend's images,
// and a structural check used by tests and by the result endpoint. Pure; thread-safe.

#include <cstdint>
#include <optional>
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

// The first image of an OpenAI-style images answer ({"data":[{"b64_json": ...}]}), decoded.
// nullopt when the answer is not JSON, holds no b64_json image, or the base64 is bad. Sees
// backend bytes: fuzzed.
std::optional<std::string> first_image_from_answer(std::string_view answer);
// True for an answer an images backend may give: a JSON object with a non-empty `data` array
// whose first entry carries a decodable b64_json image or a url. Anything else from a 2xx is a
// misbehaving backend, not a result.
bool is_images_answer(std::string_view answer);
// The media type of image bytes by their signature: image/png, image/jpeg, image/webp, or
// application/octet-stream.
std::string sniff_image_type(std::string_view bytes);
// The same from an image's first 16 bytes alone (a PNG by its signature, not its chunks), for
// an image streamed before it is whole.
std::string sniff_image_head(std::string_view head);

}  // namespace ts
