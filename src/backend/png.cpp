#include "backend/png.h"

#include <zlib.h>

#include <cstring>

#include "backend/images_answer.h"

namespace ts {
namespace {

constexpr char kSignature[] = "\x89PNG\r\n\x1a\n";

void put_u32(std::string& out, uint32_t v) {
  out += static_cast<char>((v >> 24) & 0xff);
  out += static_cast<char>((v >> 16) & 0xff);
  out += static_cast<char>((v >> 8) & 0xff);
  out += static_cast<char>(v & 0xff);
}

uint32_t get_u32(std::string_view s, size_t at) {
  return (static_cast<uint32_t>(static_cast<uint8_t>(s[at])) << 24) |
         (static_cast<uint32_t>(static_cast<uint8_t>(s[at + 1])) << 16) |
         (static_cast<uint32_t>(static_cast<uint8_t>(s[at + 2])) << 8) |
         static_cast<uint32_t>(static_cast<uint8_t>(s[at + 3]));
}

void put_chunk(std::string& out, const char* type, std::string_view data) {
  put_u32(out, static_cast<uint32_t>(data.size()));
  std::string body(type, 4);
  body.append(data);
  out += body;
  uLong crc =
      crc32(0L, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()));
  put_u32(out, static_cast<uint32_t>(crc));
}

uint64_t fnv1a(std::string_view text) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

std::string encode_png(int width, int height, std::string_view rgb) {
  std::string raw;
  raw.reserve(static_cast<size_t>(height) * (1 + width * 3));
  for (int y = 0; y < height; ++y) {
    raw += '\0';  // filter type: none
    raw.append(rgb.substr(static_cast<size_t>(y) * width * 3, static_cast<size_t>(width) * 3));
  }
  uLongf zlen = compressBound(static_cast<uLong>(raw.size()));
  std::string z(zlen, '\0');
  compress2(reinterpret_cast<Bytef*>(z.data()), &zlen, reinterpret_cast<const Bytef*>(raw.data()),
            static_cast<uLong>(raw.size()), 6);
  z.resize(zlen);

  std::string out(kSignature, 8);
  std::string ihdr;
  put_u32(ihdr, static_cast<uint32_t>(width));
  put_u32(ihdr, static_cast<uint32_t>(height));
  ihdr += '\x08';  // bit depth
  ihdr += '\x02';  // colour type: RGB
  ihdr += '\0';    // compression
  ihdr += '\0';    // filter
  ihdr += '\0';    // interlace
  put_chunk(out, "IHDR", ihdr);
  put_chunk(out, "IDAT", z);
  put_chunk(out, "IEND", "");
  return out;
}

std::string png_for_prompt(std::string_view text, int size) {
  uint64_t h = fnv1a(text);
  uint8_t r = h & 0xff, g = (h >> 8) & 0xff, b = (h >> 16) & 0xff;
  uint8_t r2 = (h >> 24) & 0xff, g2 = (h >> 32) & 0xff, b2 = (h >> 40) & 0xff;
  std::string rgb;
  rgb.reserve(static_cast<size_t>(size) * size * 3);
  for (int y = 0; y < size; ++y) {
    for (int x = 0; x < size; ++x) {
      // A diagonal blend between two colours of the hash.
      int t = (x + y) * 255 / (2 * size - 2 > 0 ? 2 * size - 2 : 1);
      rgb += static_cast<char>((r * (255 - t) + r2 * t) / 255);
      rgb += static_cast<char>((g * (255 - t) + g2 * t) / 255);
      rgb += static_cast<char>((b * (255 - t) + b2 * t) / 255);
    }
  }
  return encode_png(size, size, rgb);
}

bool looks_like_png(std::string_view bytes) {
  if (bytes.size() < 8 + 25 + 12 || std::memcmp(bytes.data(), kSignature, 8) != 0) return false;
  if (get_u32(bytes, 8) != 13 || bytes.substr(12, 4) != "IHDR") return false;
  uLong crc = crc32(0L, reinterpret_cast<const Bytef*>(bytes.data() + 12), 17);
  if (get_u32(bytes, 29) != static_cast<uint32_t>(crc)) return false;
  if (get_u32(bytes, 16) == 0 || get_u32(bytes, 20) == 0) return false;
  return bytes.substr(bytes.size() - 8, 4) == "IEND";
}

std::optional<std::string> first_image_from_answer(std::string_view answer) {
  std::string image;
  ImagesAnswerScanner scan([&](std::string_view bytes) {
    image.append(bytes);
    return true;
  });
  if (!scan.feed(answer) || !scan.finish() || !scan.has_b64()) return std::nullopt;
  return image;
}

bool is_images_answer(std::string_view answer) {
  ImagesAnswerScanner scan;
  return scan.feed(answer) && scan.finish();
}

std::string sniff_image_head(std::string_view head) {
  if (head.size() >= 8 && std::memcmp(head.data(), kSignature, 8) == 0) return "image/png";
  return sniff_image_type(head);
}

std::string sniff_image_type(std::string_view bytes) {
  if (looks_like_png(bytes)) return "image/png";
  if (bytes.size() > 3 && static_cast<unsigned char>(bytes[0]) == 0xff &&
      static_cast<unsigned char>(bytes[1]) == 0xd8) {
    return "image/jpeg";
  }
  if (bytes.size() > 12 && bytes.substr(0, 4) == "RIFF" && bytes.substr(8, 4) == "WEBP") {
    return "image/webp";
  }
  return "application/octet-stream";
}

}  // namespace ts
