// Replays every seed of tests/fuzz/corpus/<target>/ and every input that once failed, kept in
// tests/fuzz/regressions/<target>/, through the same entry points the libFuzzer targets call
// (fuzz_entry.h). A regression file's name says what it once broke.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "fuzz_entry.h"

namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

int replay(const std::string& folder) {
  int files = 0;
  for (const ts::fuzz::Target& t : ts::fuzz::kTargets) {
    fs::path dir = fs::path(TASKSERVER_SOURCE_DIR) / "tests/fuzz" / folder / t.name;
    if (!fs::is_directory(dir)) continue;
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (!entry.is_regular_file()) continue;
      ++files;
      CAPTURE(entry.path().string());
      CHECK(t.run(slurp(entry.path())) == "");
    }
  }
  return files;
}

}  // namespace

TEST_CASE("fuzz: every committed seed passes the fuzz targets' checks") {
  CHECK(replay("corpus") > 0);
}

TEST_CASE("fuzz: every input that once failed a fuzz target passes now") { replay("regressions"); }

TEST_CASE("fuzz regression: a NUL byte does not end a JSON body early") {
  using namespace std::string_literals;
  auto t = ts::parse_task_request("{\"type\":\"image\",\"payload\":{\"prompt\":\"x\"}}\0junk"s);
  REQUIRE_FALSE(t.ok());
  CHECK(t.status().code() == ts::Code::kMalformed);
  CHECK(ts::parse_image_request("{\"prompt\":\"x\"}\0"s).status().code() == ts::Code::kMalformed);
  CHECK(ts::parse_batch_request("{\"tasks\":[{\"type\":\"a\"}]}\0]"s).status().code() ==
        ts::Code::kMalformed);
}

TEST_CASE("fuzz regression: an unknown field with an empty name is still a 422 naming a field") {
  auto t = ts::parse_task_request(R"({"type":"x","":1})");
  REQUIRE_FALSE(t.ok());
  CHECK(t.status().code() == ts::Code::kInvalid);
  CHECK(t.status().field() == "body");
  auto b = ts::parse_batch_request(R"({"tasks":[{"type":"x","":1}]})");
  REQUIRE_FALSE(b.ok());
  CHECK(b.status().field() == "tasks[0].body");
}
