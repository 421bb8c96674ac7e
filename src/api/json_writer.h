#pragma once
// JsonWriter appends JSON text to a string without building a document first: the hot paths
// (a submitted task's answer, task lists, event streams) write straight into the response
// body. Strings are escaped; invalid UTF-8 (a backend's truncated error text) becomes U+FFFD,
// as nlohmann's error_handler_t::replace does. raw() embeds text that is already JSON (a stored
// payload). Not thread-safe; one writer per string. Commas are placed by the writer.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ts {

class JsonWriter {
 public:
  explicit JsonWriter(std::string& out) : out_(out) {}

  JsonWriter& begin_object();
  JsonWriter& end_object();
  JsonWriter& begin_array();
  JsonWriter& end_array();
  JsonWriter& key(std::string_view k);
  JsonWriter& string(std::string_view v);
  JsonWriter& number(int64_t v);
  JsonWriter& number(double v);
  JsonWriter& boolean(bool v);
  JsonWriter& null();
  JsonWriter& raw(std::string_view json_text);
  // Convenience: "k": v, with null for nullopt.
  JsonWriter& field(std::string_view k, std::string_view v) { return key(k).string(v); }
  JsonWriter& field(std::string_view k, const std::string& v) { return key(k).string(v); }
  JsonWriter& field(std::string_view k, const char* v) { return key(k).string(v); }
  JsonWriter& field(std::string_view k, int64_t v) { return key(k).number(v); }
  JsonWriter& field(std::string_view k, const std::optional<std::string>& v);
  JsonWriter& field(std::string_view k, const std::optional<int64_t>& v);
  JsonWriter& field_time(std::string_view k, std::optional<int64_t> epoch_ms);
  // A time as RFC 3339 UTC with milliseconds.
  JsonWriter& time(int64_t epoch_ms);

 private:
  void separate();
  std::string& out_;
  bool need_comma_ = false;
};

// Appends `v` as a JSON string literal (quotes included).
void append_json_string(std::string& out, std::string_view v);

}  // namespace ts
