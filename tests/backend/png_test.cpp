#include <doctest/doctest.h>

#include "backend/png.h"
#include "core/base64.h"

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

TEST_CASE("images answers: the first b64_json image is decoded - anything else is not a result") {
  std::string png = png_for_prompt("a red fox");
  std::string answer = R"({"created":1,"data":[{"b64_json":")" + base64_encode(png) + R"("}]})";
  REQUIRE(first_image_from_answer(answer).has_value());
  CHECK(*first_image_from_answer(answer) == png);
  CHECK(is_images_answer(answer));
  CHECK(is_images_answer(R"({"data":[{"url":"http://127.0.0.1/x.png"}]})"));
  CHECK_FALSE(first_image_from_answer(R"({"data":[{"url":"http://127.0.0.1/x.png"}]})"));

  for (std::string bad :
       {std::string("not json"), std::string("[]"), std::string(R"({"data":[]})"),
        std::string(R"({"data":{}})"), std::string(R"({"data":["x"]})"),
        std::string(R"({"data":[{}]})"), std::string(R"({"data":[{"url":7}]})"),
        std::string(R"({"data":[{"b64_json":"@@not base64"}]})"),
        std::string(R"({"data":[{"b64_json":5}]})"),
        std::string("{\"data\":[{\"url\":\"x\"}]}\0", 23)}) {  // valid JSON, then a NUL
    CAPTURE(bad);
    CHECK_FALSE(is_images_answer(bad));
    CHECK_FALSE(first_image_from_answer(bad).has_value());
  }
}
