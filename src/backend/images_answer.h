#pragma once
// ImagesAnswerScanner reads an OpenAI-style images answer ({"data":[{"b64_json": "..."}]} or
// {"data":[{"url": "..."}]}) as it streams in, chunk by chunk, without holding it: it checks the
// JSON's structure, finds the first entry of `data`, and decodes that entry's b64_json as it
// passes (handing the image's bytes to an optional sink, and keeping the first few to tell the
// image's type). Memory is a few bytes of state whatever the answer's size, so a worker can
// judge a 100 MB answer while writing it to disk, and the result endpoint can serve the image
// of a stored answer without reading it whole.
//
// Sees backend bytes: fuzzed (tests/fuzz/fuzz_backend_answer.cpp). Not thread-safe: one answer
// per scanner.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace ts {

class ImagesAnswerScanner {
 public:
  // Receives the first image's decoded bytes in order; returning false stops the scan (it then
  // reports a failure).
  using ImageSink = std::function<bool(std::string_view bytes)>;
  explicit ImagesAnswerScanner(ImageSink sink = nullptr);

  // Feeds the next bytes of the answer. False once the answer cannot be an images answer (or
  // the sink said stop); later calls change nothing.
  bool feed(std::string_view chunk);
  // After the last chunk: true when the whole answer was one JSON object whose `data` array's
  // first entry holds a b64_json string that decoded cleanly, or a url string.
  bool finish();

  bool has_b64() const { return found_ == Found::kB64; }
  bool has_url() const { return found_ == Found::kUrl; }
  // The first bytes of the decoded image (up to 16), for sniff_image_type().
  const std::string& image_head() const { return head_; }
  int64_t image_bytes() const { return image_bytes_; }

 private:
  enum class Found { kNone, kB64, kUrl };
  // Where the scanner is in the JSON text.
  enum class Lex { kValue, kAfterValue, kKey, kColon, kString, kEscape, kUnicode, kLiteral, kDone };
  // Open containers, and for objects whether the next string is a key.
  struct Frame {
    bool object;
    int64_t index;  // arrays: the element being read
  };

  bool fail();
  void begin_value(char c);
  void end_value();
  // A byte of a string's content (escapes already decoded).
  void string_byte(unsigned char c);
  // A raw byte of a string: false when it breaks UTF-8 (as a JSON parser would refuse).
  bool utf8_ok(unsigned char c);
  void decode_b64(unsigned char c);
  bool flush_b64(bool final);

  ImageSink sink_;
  bool failed_ = false;
  Lex lex_ = Lex::kValue;
  std::vector<Frame> stack_;
  // The string being read is: the key of a member at this depth (key_), or a value.
  bool reading_key_ = false;
  std::string key_;  // the last key read at the current object (only short keys are kept)
  // The path state: 1 inside the top object's "data" array; 2 inside its first element.
  bool in_data_ = false;    // the value being read is the top object's member "data"
  bool in_first_ = false;   // inside data[0], an object
  bool in_target_ = false;  // the string being read is data[0].b64_json
  bool in_url_ = false;     // the string being read is data[0].url
  bool in_data_array_ = false;
  bool seen_data_ = false;  // a second top-level "data" makes the answer ambiguous: refused
  int utf8_left_ = 0;       // continuation bytes still due in a string
  unsigned char utf8_min_ = 0x80, utf8_max_ = 0xbf;  // the range of the next one
  int unicode_left_ = 0;
  uint32_t unicode_ = 0;
  Found found_ = Found::kNone;
  uint32_t b64_bits_ = 0;
  int b64_count_ = 0;
  int b64_pad_ = 0;
  bool b64_bad_ = false;
  std::string out_;  // decoded bytes not yet handed to the sink
  std::string head_;
  int64_t image_bytes_ = 0;
  std::string literal_;
};

}  // namespace ts
