#include <doctest/doctest.h>

#include "backend/png.h"

using namespace ts;

TEST_CASE("the mock's images are valid PNGs that differ by prompt") {
  std::string a = png_for_prompt("a red fox");
  std::string b = png_for_prompt("a blue whale");
  CHECK(looks_like_png(a));
  CHECK(looks_like_png(b));
  CHECK(a != b);
  CHECK(a == png_for_prompt("a red fox"));
  std::string broken = a;
  broken[20] ^= 1;  // inside IHDR: the CRC no longer matches
  CHECK_FALSE(looks_like_png(broken));
  CHECK_FALSE(looks_like_png("GIF89a"));
}
