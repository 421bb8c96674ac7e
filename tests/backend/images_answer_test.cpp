#include <doctest/doctest.h>

#include <string>

#include "backend/images_answer.h"
#include "backend/png.h"
#include "core/base64.h"

using namespace ts;

namespace {

// The scanner's verdict and image when fed `answer` in pieces of `step` bytes.
struct Scan {
  bool ok;
  std::string image;
};
Scan scan(const std::string& answer, size_t step) {
  Scan out{false, ""};
  ImagesAnswerScanner s([&](std::string_view b) {
    out.image.append(b);
    return true;
  });
  for (size_t at = 0; at < answer.size(); at += step)
    s.feed(std::string_view(answer).substr(at, step));
  out.ok = s.finish();
  return out;
}

}  // namespace

TEST_CASE("images answers are judged as they stream in, a byte at a time as in one piece") {
  std::string png = png_for_prompt("a red fox", 32);
  std::string good = R"({"created":1,"data":[{"b64_json":")" + base64_encode(png) +
                     R"(","revised_prompt":"x"}],"usage":{"n":[1,2.5e3,null,true]}})";
  for (size_t step : {size_t{1}, size_t{3}, size_t{64}, good.size()}) {
    CAPTURE(step);
    Scan s = scan(good, step);
    CHECK(s.ok);
    CHECK(s.image == png);
  }
  CHECK(scan(R"({"data":[{"url":"https://x/y.png"}]})", 1).ok);
  // An escaped slash is a slash in base64, as JSON encoders may write it.
  std::string slashy = base64_encode(std::string("\xff\xff\xff", 3));  // "////"
  Scan esc = scan(R"({"data":[{"b64_json":"\/\/\/\/"}]})", 2);
  CHECK(esc.ok);
  CHECK(esc.image == std::string("\xff\xff\xff", 3));
  CHECK(slashy == "////");
}

TEST_CASE("what is not an images answer is refused however it is cut") {
  for (const char* bad : {
           R"([{"b64_json":"QQ=="}])",                     // not an object
           R"({"data":[]})",                               // no first entry
           R"({"data":["QQ=="]})",                         // the entry is not an object
           R"({"data":[{"b64_json":"Q"}]})",               // base64 cut
           R"({"data":[{"b64_json":"QR=="}]})",            // not canonical
           R"({"data":[{"b64_json":"QQ=x"}]})",            // data after padding
           R"({"data":[{"b64_json":1}]})",                 // not a string
           R"({"data":[{"url":7}]})",                      // likewise
           R"({"data":[{"b64_json":"QQ=="}],})",           // trailing comma
           R"({"data":[{"b64_json":"QQ=="}]} x)",          // bytes after the object
           R"({"data":[{"b64_json":"QQ=="}])",             // unclosed
           R"({"data":[{"b64_json":"QQ=="}],"data":[]})",  // two answers in one
           R"({"nodata":[{"b64_json":"QQ=="}]})",
           R"({"data":[{"b64_json":"QQ==","b64_json":"QQ=="}]})",
           "{\"data\":[{\"b64_json\":\"QQ==\",\"x\":\"\xff\"}]}",  // not UTF-8
       }) {
    CAPTURE(bad);
    CHECK_FALSE(scan(bad, 1).ok);
    CHECK_FALSE(scan(bad, 1000).ok);
    CHECK_FALSE(is_images_answer(bad));
  }
}

TEST_CASE("a sink that says stop ends the scan as a failure") {
  std::string answer =
      R"({"data":[{"b64_json":")" + base64_encode(std::string(100000, 'x')) + R"("}]})";
  int calls = 0;
  ImagesAnswerScanner s([&](std::string_view) { return ++calls < 2; });
  s.feed(answer);
  CHECK_FALSE(s.finish());
  CHECK(calls == 2);
}
