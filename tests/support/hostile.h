#pragma once
// What the hostile_*_test.cpp files share. They throw hostile clients and hostile backends at the
// real binary: malformed and oversized bodies, odd content types, path traversal and SQL
// metacharacters, header floods, slow clients over raw sockets, and a backend that answers
// garbage. Every refused request must get a 4xx/5xx JSON error ({"error":{"code","message"}}) or
// a closed connection, the server must answer GET /health at once after each group, and nothing
// refused may leave a row in the store.
//
// Known findings (DESIGN.md says otherwise) are asserted with WARN, so the suite stays green
// while the report lists them; everything else is a CHECK. Set TASKSERVER_HOSTILE_VERBOSE=1 to
// print every request with the code it got. record() may be called from any thread; the checks
// run on the test's thread.

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "support/harness.h"
#include "support/raw_http.h"

namespace tst::hostile {

// Notes the code (0: closed) a hostile request got, and prints it when verbose.
void record(const std::string& label, int status);

// A 4xx/5xx answer with a JSON error body, or a closed connection. True when it is a JSON error.
bool check_refused(const std::string& label, const Reply& r);

struct Case {
  std::string label;
  std::string bytes;
  std::set<int> codes;       // acceptable answers; 0 is a closed connection
  std::string finding = {};  // non-empty: a known deviation from DESIGN.md, asserted with WARN
};

// Sends each case on a connection of its own and checks its answer. Returns how many requests
// were accepted (2xx) against their case's expectation: only a known finding may do that, and
// each such request may have written a row.
int64_t run_cases(int port, const std::vector<Case>& cases);

// The server answers GET /health at once and holds exactly `rows` tasks.
void check_server_fine(Server& server, int64_t rows);

// `inner` inside `depth` pairs of `open` and `close`.
std::string nested(int depth, const char* open, const char* close, const std::string& inner);

// A valid task, and one with `fields` added at its top level.
inline const std::string kTask = R"({"type":"image","payload":{"prompt":"a red fox"}})";
std::string task_with(const std::string& fields);

// A server with a real mock backend, its read timeout short for the slow-client tests.
struct Fixture {
  TempDir dir;
  MockBackend backend{dir, {"--latency-ms", "10"}};
  Server server{dir, {"--read-timeout", "2"}, {{"IMAGE_GEN_URL", backend.url()}}};
  int port = 0;
  Fixture();
};

}  // namespace tst::hostile
