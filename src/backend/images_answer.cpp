#include "backend/images_answer.h"

#include <array>
#include <cstring>

namespace ts {
namespace {

// Standard base64 alphabet; -1 for anything else.
constexpr std::array<int8_t, 256> kB64 = [] {
  std::array<int8_t, 256> t{};
  for (auto& v : t) v = -1;
  const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(a[i])] = static_cast<int8_t>(i);
  return t;
}();

constexpr size_t kHeadBytes = 16;
constexpr size_t kFlushAt = 16 * 1024;  // decoded bytes handed to the sink at a time
constexpr size_t kMaxKey = 16;          // longer keys are none we look for

bool is_literal_char(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
         c == '+' || c == '.';
}

bool valid_literal(const std::string& s) {
  if (s == "true" || s == "false" || s == "null") return true;
  // A JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  size_t i = 0, n = s.size();
  auto digits = [&] {
    size_t start = i;
    while (i < n && s[i] >= '0' && s[i] <= '9') ++i;
    return i > start;
  };
  if (i < n && s[i] == '-') ++i;
  if (i < n && s[i] == '0') {
    ++i;
  } else if (!digits()) {
    return false;
  }
  if (i < n && s[i] == '.') {
    ++i;
    if (!digits()) return false;
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
    if (!digits()) return false;
  }
  return i == n;
}

}  // namespace

ImagesAnswerScanner::ImagesAnswerScanner(ImageSink sink) : sink_(std::move(sink)) {}

bool ImagesAnswerScanner::fail() {
  failed_ = true;
  return false;
}

// A container or scalar starts with `c` where a value is expected. Strings and literals are
// read by their own states; containers push a frame whose role follows from where it is.
void ImagesAnswerScanner::begin_value(char c) {
  bool top_level = stack_.empty();
  bool data_member = stack_.size() == 1 && stack_.back().object && key_ == "data";
  bool first_entry =
      in_data_array_ && stack_.size() == 2 && !stack_.back().object && stack_.back().index == 0;
  bool first_member = in_first_ && stack_.size() == 3;
  if (top_level && c != '{') {
    fail();  // an images answer is a JSON object
    return;
  }
  if (data_member) {
    if (seen_data_) {
      fail();
      return;
    }
    seen_data_ = true;
  }
  if (first_member && (key_ == "b64_json" || key_ == "url") && c != '"') {
    if (key_ == "b64_json") b64_bad_ = true;  // present but not a string
  }
  switch (c) {
    case '{':
      stack_.push_back({true, 0});
      if (first_entry) in_first_ = true;
      reading_key_ = true;
      lex_ = Lex::kKey;
      break;
    case '[':
      stack_.push_back({false, 0});
      if (data_member) in_data_array_ = true;
      lex_ = Lex::kValue;
      break;
    case '"':
      reading_key_ = false;
      in_target_ = first_member && key_ == "b64_json";
      in_url_ = first_member && key_ == "url";
      if (in_target_) {
        if (found_ == Found::kB64) b64_bad_ = true;  // a second b64_json: not a clean answer
        found_ = Found::kB64;
      } else if (in_url_ && found_ == Found::kNone) {
        found_ = Found::kUrl;
      }
      lex_ = Lex::kString;
      break;
    default:
      if (!is_literal_char(c)) {
        fail();
        return;
      }
      literal_.assign(1, c);
      lex_ = Lex::kLiteral;
  }
}

// A value just ended: what follows is a comma, a close, or (at the top) the end.
void ImagesAnswerScanner::end_value() {
  if (in_target_) flush_b64(true);
  in_target_ = in_url_ = false;
  lex_ = stack_.empty() ? Lex::kDone : Lex::kAfterValue;
}

void ImagesAnswerScanner::decode_b64(unsigned char c) {
  if (b64_bad_) return;
  if (c == '=') {
    ++b64_pad_;
    return;
  }
  int8_t v = kB64[c];
  if (v < 0 || b64_pad_ > 0) {  // a stray byte, or data after padding
    b64_bad_ = true;
    return;
  }
  b64_bits_ = (b64_bits_ << 6) | static_cast<uint32_t>(v);
  ++b64_count_;
  if (b64_count_ % 4 == 0) {
    out_.push_back(static_cast<char>((b64_bits_ >> 16) & 0xff));
    out_.push_back(static_cast<char>((b64_bits_ >> 8) & 0xff));
    out_.push_back(static_cast<char>(b64_bits_ & 0xff));
    b64_bits_ = 0;
    if (out_.size() >= kFlushAt) flush_b64(false);
  }
}

// Hands the decoded bytes on; at the string's end, decodes its last group and checks padding.
bool ImagesAnswerScanner::flush_b64(bool final) {
  if (final && !b64_bad_) {
    int rest = b64_count_ % 4;
    // Padding may only close the text: at most two '=' and only at a 4-aligned length.
    if (rest == 1 || b64_pad_ > 2 || (b64_pad_ > 0 && (rest + b64_pad_) % 4 != 0)) {
      b64_bad_ = true;
    } else if (rest == 2) {
      if ((b64_bits_ & 0xf) != 0) b64_bad_ = true;  // canonical: unused bits are zero
      out_.push_back(static_cast<char>((b64_bits_ >> 4) & 0xff));
    } else if (rest == 3) {
      if ((b64_bits_ & 0x3) != 0) b64_bad_ = true;
      out_.push_back(static_cast<char>((b64_bits_ >> 10) & 0xff));
      out_.push_back(static_cast<char>((b64_bits_ >> 2) & 0xff));
    }
  }
  if (b64_bad_) {
    out_.clear();
    return false;
  }
  if (head_.size() < kHeadBytes) {
    head_.append(out_, 0, std::min(out_.size(), kHeadBytes - head_.size()));
  }
  image_bytes_ += static_cast<int64_t>(out_.size());
  if (sink_ && !out_.empty() && !sink_(out_)) {
    out_.clear();
    return fail();
  }
  out_.clear();
  return true;
}

bool ImagesAnswerScanner::utf8_ok(unsigned char c) {
  if (utf8_left_ > 0) {
    if (c < utf8_min_ || c > utf8_max_) return false;
    --utf8_left_;
    utf8_min_ = 0x80;
    utf8_max_ = 0xbf;
    return true;
  }
  if (c < 0x80) return true;
  // Lead bytes, and the range of the byte after each (no overlongs, no surrogates).
  if (c >= 0xc2 && c <= 0xdf) {
    utf8_left_ = 1;
  } else if (c == 0xe0) {
    utf8_left_ = 2, utf8_min_ = 0xa0;
  } else if (c == 0xed) {
    utf8_left_ = 2, utf8_max_ = 0x9f;
  } else if (c >= 0xe1 && c <= 0xef) {
    utf8_left_ = 2;
  } else if (c == 0xf0) {
    utf8_left_ = 3, utf8_min_ = 0x90;
  } else if (c == 0xf4) {
    utf8_left_ = 3, utf8_max_ = 0x8f;
  } else if (c >= 0xf1 && c <= 0xf3) {
    utf8_left_ = 3;
  } else {
    return false;
  }
  return true;
}

void ImagesAnswerScanner::string_byte(unsigned char c) {
  if (reading_key_) {
    if (key_.size() <= kMaxKey) key_.push_back(static_cast<char>(c));
  } else if (in_target_) {
    decode_b64(c);
  }
}

bool ImagesAnswerScanner::feed(std::string_view chunk) {
  if (failed_) return false;
  for (char ch : chunk) {
    if (failed_) return false;  // the sink said stop
    unsigned char c = static_cast<unsigned char>(ch);
    bool space = c == ' ' || c == '\t' || c == '\n' || c == '\r';
    switch (lex_) {
      case Lex::kString:
        if (c >= 0x80 || utf8_left_ > 0) {
          if (!utf8_ok(c)) return fail();
          string_byte(c);
          break;
        }
        if (c == '"') {
          if (reading_key_) {
            reading_key_ = false;
            lex_ = Lex::kColon;
          } else {
            end_value();
          }
        } else if (c == '\\') {
          lex_ = Lex::kEscape;
        } else if (c < 0x20) {
          return fail();
        } else {
          string_byte(c);
        }
        break;
      case Lex::kEscape: {
        const char* plain = "\"\\/bfnrt";
        const char* decoded = "\"\\/\b\f\n\r\t";
        const char* at = c != 0 ? std::strchr(plain, c) : nullptr;
        if (c == 'u') {
          unicode_left_ = 4;
          unicode_ = 0;
          lex_ = Lex::kUnicode;
        } else if (at) {
          string_byte(static_cast<unsigned char>(decoded[at - plain]));
          lex_ = Lex::kString;
        } else {
          return fail();
        }
        break;
      }
      case Lex::kUnicode: {
        int v = (c >= '0' && c <= '9')   ? c - '0'
                : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                         : -1;
        if (v < 0) return fail();
        unicode_ = (unicode_ << 4) | static_cast<uint32_t>(v);
        if (--unicode_left_ == 0) {
          // Not base64 and not a key we look for: one byte that stands for it is enough.
          string_byte(unicode_ < 0x80 ? static_cast<unsigned char>(unicode_) : 0xff);
          lex_ = Lex::kString;
        }
        break;
      }
      case Lex::kLiteral:
        if (is_literal_char(static_cast<char>(c))) {
          literal_.push_back(static_cast<char>(c));
          if (literal_.size() > 64) return fail();
          break;
        }
        if (!valid_literal(literal_)) return fail();
        end_value();
        [[fallthrough]];
      case Lex::kAfterValue:
      case Lex::kDone:
        if (space) break;
        if (lex_ == Lex::kDone) return fail();  // bytes after the top object
        if (c == ',') {
          Frame& f = stack_.back();
          if (f.object) {
            reading_key_ = true;
            lex_ = Lex::kKey;
          } else {
            ++f.index;
            lex_ = Lex::kValue;
          }
        } else if (c == '}' || c == ']') {
          if ((c == '}') != stack_.back().object) return fail();
          bool closing_first = in_first_ && stack_.size() == 3;
          stack_.pop_back();
          if (closing_first) in_first_ = false;
          if (in_data_array_ && stack_.size() == 1) in_data_array_ = false;
          key_.clear();
          end_value();
        } else {
          return fail();
        }
        break;
      case Lex::kKey:
        if (space) break;
        if (c == '"') {
          key_.clear();
          reading_key_ = true;
          lex_ = Lex::kString;
        } else if (c == '}' && stack_.back().index == 0 && key_.empty()) {
          // An empty object.
          bool closing_first = in_first_ && stack_.size() == 3;
          stack_.pop_back();
          if (closing_first) in_first_ = false;
          end_value();
        } else {
          return fail();
        }
        break;
      case Lex::kColon:
        if (space) break;
        if (c != ':') return fail();
        ++stack_.back().index;  // members read so far, so an empty-object close is told apart
        lex_ = Lex::kValue;
        break;
      case Lex::kValue:
        if (space) break;
        if (c == ']' && !stack_.empty() && !stack_.back().object && stack_.back().index == 0) {
          // An empty array.
          stack_.pop_back();
          if (in_data_array_ && stack_.size() == 1) in_data_array_ = false;
          key_.clear();
          end_value();
          break;
        }
        begin_value(static_cast<char>(c));
        break;
    }
  }
  return !failed_;
}

bool ImagesAnswerScanner::finish() {
  if (failed_) return false;
  if (lex_ == Lex::kLiteral) return fail();  // only a top-level literal could end here
  if (lex_ != Lex::kDone) return fail();
  if (found_ == Found::kB64) return !b64_bad_;
  return found_ == Found::kUrl && !b64_bad_;
}

}  // namespace ts
