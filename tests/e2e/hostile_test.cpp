// Hostile clients and hostile backends against the real binary: malformed and oversized bodies,
// odd content types, path traversal and SQL metacharacters, header floods, slow clients over raw
// sockets, and a backend that answers garbage. Every refused request must get a 4xx/5xx JSON
// error ({"error":{"code","message"}}) or a closed connection, the server must answer
// GET /health at once after each group, and nothing refused may leave a row in the store.
//
// Known findings (DESIGN.md says otherwise) are asserted with WARN, so the suite stays green
// while the report lists them; everything else is a CHECK. Set TASKSERVER_HOSTILE_VERBOSE=1 to
// print every request with the code it got.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "core/base64.h"
#include "support/harness.h"

using namespace tst;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;
using namespace std::string_literals;

namespace {

// ---------------------------------------------------------------------------------------------
// Raw sockets.

class Sock {
 public:
  explicit Sock(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~Sock() {
    if (fd_ >= 0) ::close(fd_);
  }
  Sock(const Sock&) = delete;
  Sock& operator=(const Sock&) = delete;
  int fd() const { return fd_; }
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

int ms_left(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

// Sends all of `data` unless the peer closes, answers first (POLLIN) or the deadline passes.
// False when it stopped early.
bool send_all(int fd, std::string_view data, Clock::time_point deadline) {
  while (!data.empty()) {
    pollfd p{fd, POLLOUT | POLLIN, 0};
    if (::poll(&p, 1, ms_left(deadline)) <= 0) return false;
    if (p.revents & (POLLIN | POLLERR | POLLHUP)) return false;
    ssize_t n = ::send(fd, data.data(), std::min<size_t>(data.size(), 1 << 16), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

struct Reply {
  int status = 0;  // 0: no HTTP answer, the connection was closed (or reset)
  std::string head, body;
  bool closed = false;
  bool garbled = false;      // bytes came that are not an HTTP response
  std::vector<int> interim;  // 1xx answers before the final one
  std::string after;         // bytes that came after the answer (more answers)
  std::string header(const std::string& name) const {
    std::istringstream in(head);
    std::string line;
    while (std::getline(in, line)) {
      size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string k = line.substr(0, colon);
      std::transform(k.begin(), k.end(), k.begin(), ::tolower);
      if (k == name) {
        std::string v = line.substr(colon + 1);
        while (!v.empty() && (v.front() == ' ')) v.erase(0, 1);
        while (!v.empty() && (v.back() == '\r' || v.back() == ' ')) v.pop_back();
        return v;
      }
    }
    return "";
  }
};

// Reads one response: up to its Content-Length, or until the peer closes or the deadline.
Reply read_reply(int fd, Clock::time_point deadline) {
  Reply r;
  std::string buf;
  size_t want = std::string::npos;
  for (;;) {
    size_t end = buf.find("\r\n\r\n");
    if (end != std::string::npos && want == std::string::npos) {
      r.head = buf.substr(0, end);
      if (r.head.rfind("HTTP/1.", 0) != 0 || r.head.size() < 12) {
        r.garbled = true;
        break;
      }
      r.status = std::atoi(r.head.c_str() + 9);
      if (r.status >= 100 && r.status < 200) {  // interim (100 Continue): the answer follows
        r.interim.push_back(r.status);
        buf.erase(0, end + 4);
        r.status = 0;
        continue;
      }
      std::string cl = r.header("content-length");
      want = cl.empty() ? std::string::npos - 1 : end + 4 + std::stoul(cl);
    }
    if (want != std::string::npos && buf.size() >= want) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, ms_left(deadline)) <= 0) break;
    char chunk[65536];
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) {
      r.closed = true;
      break;
    }
    buf.append(chunk, static_cast<size_t>(n));
  }
  if (r.status == 0 && !buf.empty() && !r.garbled) r.garbled = buf.rfind("HTTP/1.", 0) != 0;
  size_t end = buf.find("\r\n\r\n");
  if (r.status != 0 && end != std::string::npos) {
    r.body =
        buf.substr(end + 4, want == std::string::npos - 1 ? std::string::npos : want - end - 4);
    if (want < buf.size()) r.after = buf.substr(want);
  }
  return r;
}

// Waits until the server closes the connection (reading and keeping whatever it sends).
// Returns how long that took, or nullopt after `timeout`.
std::optional<milliseconds> wait_closed(int fd, milliseconds timeout, std::string* got) {
  auto start = Clock::now();
  auto deadline = start + timeout;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, ms_left(deadline)) <= 0) return std::nullopt;
    char chunk[4096];
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) return std::chrono::duration_cast<milliseconds>(Clock::now() - start);
    if (got) got->append(chunk, static_cast<size_t>(n));
  }
}

Reply talk(int port, const std::string& bytes, milliseconds timeout = seconds(15)) {
  Sock s(port);
  if (!s.ok()) return Reply{};
  auto deadline = Clock::now() + timeout;
  send_all(s.fd(), bytes, deadline);
  return read_reply(s.fd(), deadline);
}

std::string request(const std::string& method, const std::string& target, const std::string& body,
                    const std::string& content_type = "application/json",
                    const std::string& extra_headers = "") {
  std::string r = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  if (!content_type.empty()) r += "Content-Type: " + content_type + "\r\n";
  if (method == "POST" || !body.empty())
    r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  return r + extra_headers + "\r\n" + body;
}
std::string post(const std::string& target, const std::string& body,
                 const std::string& content_type = "application/json",
                 const std::string& extra = "") {
  return request("POST", target, body, content_type, extra);
}
std::string get(const std::string& target, const std::string& extra = "") {
  return request("GET", target, "", "", extra);
}

int port_of(const std::string& url) { return std::stoi(url.substr(url.rfind(':') + 1)); }

int64_t rss_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6);
  }
  return -1;
}

// ---------------------------------------------------------------------------------------------
// What every refused request must look like, and the record of what each got.

std::mutex g_seen_mu;
std::vector<std::pair<std::string, int>> g_seen;  // guarded by g_seen_mu

void record(const std::string& label, int status) {
  std::lock_guard<std::mutex> lock(g_seen_mu);
  g_seen.emplace_back(label, status);
  if (std::getenv("TASKSERVER_HOSTILE_VERBOSE")) {
    std::printf("hostile: %-62s -> %s\n", label.c_str(),
                status ? std::to_string(status).c_str() : "closed");
  }
}

// A 4xx/5xx answer with a JSON error body, or a closed connection. True when it is a JSON error.
bool check_refused(const std::string& label, const Reply& r) {
  INFO(label);
  INFO("head: " << r.head.substr(0, 200));
  INFO("body: " << r.body.substr(0, 300));
  CHECK_FALSE(r.garbled);
  if (r.status == 0) {
    CHECK(r.closed);
    return false;
  }
  CHECK(r.status >= 400);
  CHECK(r.status < 600);
  CHECK(r.header("content-type").rfind("application/json", 0) == 0);
  // A strict parse: invalid UTF-8 in the body fails it.
  json j = json::parse(r.body, nullptr, false);
  CHECK(j.is_object());
  if (!j.is_object()) return false;
  CHECK(j.contains("error"));
  bool shaped = j.contains("error") && j["error"].is_object() && j["error"].contains("code") &&
                j["error"]["code"].is_string() && j["error"].contains("message") &&
                j["error"]["message"].is_string() && !j["error"]["code"].get<std::string>().empty();
  CHECK(shaped);
  return shaped;
}

struct Case {
  std::string label;
  std::string bytes;
  std::set<int> codes;       // acceptable answers; 0 is a closed connection
  std::string finding = {};  // non-empty: a known deviation from DESIGN.md, asserted with WARN
};

// Returns how many requests were accepted (2xx) against their case's expectation: only a known
// finding may do that, and each such request may have written a row.
int64_t run_cases(int port, const std::vector<Case>& cases) {
  int64_t accepted = 0;
  for (const Case& c : cases) {
    Reply r = talk(port, c.bytes);
    record(c.label, r.status);
    INFO(c.label << " got " << r.status << " " << r.body.substr(0, 200));
    if (c.finding.empty() || r.status == 0 || r.status >= 400) check_refused(c.label, r);
    if (c.finding.empty()) {
      CHECK(c.codes.count(r.status) == 1);
    } else {
      INFO("known finding: " << c.finding);
      WARN(c.codes.count(r.status) == 1);
      accepted += r.status >= 200 && r.status < 300 ? 1 : 0;
    }
  }
  return accepted;
}

// The server answers GET /health at once and holds exactly `rows` tasks.
void check_server_fine(Server& server, int64_t rows) {
  auto start = Clock::now();
  int status = 0;
  json h = server.get("/health", &status);
  auto took = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
  CHECK(status == 200);
  CHECK(h.value("status", "") == "ok");
  CHECK(took < milliseconds(1500));
  CHECK(server.process().running());
  CHECK(server.count_rows() == rows);
}

std::string nested(int depth, const char* open, const char* close, const std::string& inner) {
  std::string s;
  for (int i = 0; i < depth; ++i) s += open;
  s += inner;
  for (int i = 0; i < depth; ++i) s += close;
  return s;
}

const std::string kTask = R"({"type":"image","payload":{"prompt":"a red fox"}})";

std::string task_with(const std::string& fields) {
  return R"({"type":"image","payload":{"prompt":"x"},)" + fields + "}";
}

// A server with a real mock backend, its read timeout short for the slow-client tests.
struct Fixture {
  TempDir dir;
  MockBackend backend{dir, {"--latency-ms", "10"}};
  Server server{dir, {"--read-timeout", "2"}, {{"IMAGE_GEN_URL", backend.url()}}};
  int port = 0;
  Fixture() {
    REQUIRE(!backend.url().empty());
    REQUIRE(server.started());
    port = port_of(server.url());
  }
};

}  // namespace

// -----------------------------------------------------------------------------------------------

TEST_CASE("hostile: malformed and invalid JSON bodies get 400 or 422 and write nothing") {
  Fixture f;
  const std::string T = "/api/v1/tasks";
  std::string invalid_utf8 = "{\"type\":\"image\",\"payload\":{\"prompt\":\"\xff\xfe\"}}";
  std::string overlong = "{\"type\":\"image\",\"payload\":{\"prompt\":\"\xc0\xaf\"}}";
  std::string cut_utf8 = "{\"type\":\"image\",\"payload\":{\"prompt\":\"\xe2\x82\"}}";
  std::string nul = "{\"type\":\"image\",\"payload\":{\"prompt\":\"x\"}}\0junk"s;
  std::vector<Case> cases = {
      {"empty body", post(T, ""), {400}},
      {"truncated {", post(T, "{"), {400}},
      {"truncated task", post(T, kTask.substr(0, kTask.size() - 1)), {400}},
      {"trailing comma", post(T, R"({"type":"image",})"), {400}},
      {"not json", post(T, "not json at all"), {400}},
      {"json null", post(T, "null"), {422}},
      {"json array", post(T, "[]"), {422}},
      {"json string", post(T, R"("image")"), {422}},
      {"json number", post(T, "123"), {422}},
      {"two documents", post(T, kTask + kTask), {400}},
      {"single quotes", post(T, "{'type':'image'}"), {400}},
      {"comment in json", post(T, "{/*c*/\"type\":\"image\"}"), {400}},
      {"type is a number", post(T, R"({"type":123})"), {422}},
      {"type missing", post(T, R"({"payload":{"prompt":"x"}})"), {422}},
      {"type upper case", post(T, R"({"type":"IMAGE","payload":{"prompt":"x"}})"), {422}},
      {"type unknown pool", post(T, R"({"type":"nosuchpool","payload":{}})"), {422}},
      {"type 65 chars", post(T, R"({"type":")" + std::string(65, 'a') + R"("})"), {422}},
      {"payload is a string", post(T, R"({"type":"image","payload":"x"})"), {422}},
      {"payload is an array", post(T, R"({"type":"image","payload":[1]})"), {422}},
      {"image without prompt", post(T, R"({"type":"image","payload":{}})"), {422}},
      {"prompt is a number", post(T, R"({"type":"image","payload":{"prompt":7}})"), {422}},
      {"priority 10", post(T, task_with(R"("priority":10)")), {422}},
      {"priority -1", post(T, task_with(R"("priority":-1)")), {422}},
      {"priority 2.5", post(T, task_with(R"("priority":2.5)")), {422}},
      {"priority 1e300", post(T, task_with(R"("priority":1e300)")), {422}},
      {"priority 1e400 (overflow)", post(T, task_with(R"("priority":1e400)")), {400, 422}},
      {"priority -1e400", post(T, task_with(R"("priority":-1e400)")), {400, 422}},
      {"priority 2^64", post(T, task_with(R"("priority":18446744073709551616)")), {422}},
      {"priority -2^63-1", post(T, task_with(R"("priority":-9223372036854775809)")), {422}},
      {"priority NaN", post(T, task_with(R"("priority":NaN)")), {400}},
      {"priority Infinity", post(T, task_with(R"("priority":Infinity)")), {400}},
      {"priority -Infinity", post(T, task_with(R"("priority":-Infinity)")), {400}},
      {"priority \"NaN\"", post(T, task_with(R"("priority":"NaN")")), {422}},
      {"priority \"5\"", post(T, task_with(R"("priority":"5")")), {422}},
      {"priority true", post(T, task_with(R"("priority":true)")), {422}},
      {"priority object", post(T, task_with(R"("priority":{"a":1})")), {422}},
      {"max_attempts 0", post(T, task_with(R"("max_attempts":0)")), {422}},
      {"max_attempts 101", post(T, task_with(R"("max_attempts":101)")), {422}},
      {"max_attempts string", post(T, task_with(R"("max_attempts":"3")")), {422}},
      {"timeout_s -1", post(T, task_with(R"("timeout_s":-1)")), {422}},
      {"timeout_s 86401", post(T, task_with(R"("timeout_s":86401)")), {422}},
      {"timeout_s 2^63", post(T, task_with(R"("timeout_s":9223372036854775808)")), {422}},
      {"idempotency_key empty", post(T, task_with(R"("idempotency_key":"")")), {422}},
      {"idempotency_key 256 bytes",
       post(T, task_with(R"("idempotency_key":")" + std::string(256, 'k') + "\"")),
       {422}},
      {"idempotency_key control char",
       post(T, task_with(R"("idempotency_key":"a\u0001b")")),
       {422}},
      {"idempotency_key number", post(T, task_with(R"("idempotency_key":5)")), {422}},
      {"webhook file://", post(T, task_with(R"("webhook_url":"file:///etc/passwd")")), {422}},
      {"webhook userinfo", post(T, task_with(R"("webhook_url":"http://u:p@h/")")), {422}},
      {"webhook javascript:",
       post(T, task_with(R"x("webhook_url":"javascript:alert(1)")x")),
       {422}},
      {"webhook 3000 bytes",
       post(T, task_with(R"("webhook_url":"http://h/)" + std::string(3000, 'a') + "\"")),
       {422}},
      {"unknown field", post(T, task_with(R"("prompt":"outside payload")")), {422}},
      {"invalid UTF-8", post(T, invalid_utf8), {400}},
      {"overlong UTF-8", post(T, overlong), {400}},
      {"cut UTF-8 sequence", post(T, cut_utf8), {400}},
      {"lone surrogate escape",
       post(T, R"({"type":"image","payload":{"prompt":"\ud800"}})"),
       {400}},
      {"NUL byte then junk", post(T, nul), {400}},
      {"10000-deep arrays",
       post(T, R"({"type":"image","payload":{"prompt":"x","a":)" + nested(10000, "[", "]", "1") +
                   "}}"),
       {400}},
      {"10000-deep objects", post(T, nested(10000, "{\"a\":", "}", "1")), {400}},
      {"10000 unclosed [", post(T, std::string(10000, '[')), {400}},
      {"65-deep payload",
       post(T,
            R"({"type":"image","payload":{"prompt":"x","a":)" + nested(63, "[", "]", "1") + "}}"),
       {400}},
      {"SQL in type", post(T, R"({"type":"image'; DROP TABLE tasks;--","payload":{}})"), {422}},
      {"SQL in type 2", post(T, R"({"type":"image\" OR 1=1 --","payload":{}})"), {422}},
      // batch
      {"batch empty", post(T + "/batch", R"({"tasks":[]})"), {422}},
      {"batch not array", post(T + "/batch", R"({"tasks":"x"})"), {422}},
      {"batch missing", post(T + "/batch", R"({})"), {422}},
      {"batch truncated", post(T + "/batch", R"({"tasks":[)" + kTask), {400}},
      {"batch one bad of two",
       post(T + "/batch", R"({"tasks":[)" + kTask + R"(,{"type":"image"}]})"),
       {422}},
      {"batch of 1001",
       post(T + "/batch",
            [] {
              std::string b = R"({"tasks":[)";
              for (int i = 0; i < 1001; ++i) b += (i ? "," : "") + kTask;
              return b + "]}";
            }()),
       {422}},
      {"batch invalid UTF-8", post(T + "/batch", "{\"tasks\":[" + invalid_utf8 + "]}"), {400}},
      // the seed shape
      {"image: empty object", post("/api/v1/image/async", "{}"), {422}},
      {"image: empty prompt", post("/api/v1/image/async", R"({"prompt":""})"), {422}},
      {"image: prompt array", post("/api/v1/image/async", R"({"prompt":["x"]})"), {422}},
      {"image: priority word",
       post("/api/v1/image/async", R"({"prompt":"x","priority":"urgent"})"),
       {422}},
      {"image: truncated", post("/api/v1/image/async", R"({"prompt":"x)"), {400}},
      {"image: NaN", post("/api/v1/image/async", R"({"prompt":"x","priority":NaN})"), {400}},
  };
  int64_t accepted = run_cases(f.port, cases);
  check_server_fine(f.server, accepted);
}

TEST_CASE("hostile: odd and missing content types") {
  Fixture f;
  const std::string T = "/api/v1/tasks";
  std::string bad_body = "{\"type\":";
  std::vector<Case> cases = {
      {"xml", post(T, kTask, "application/xml"), {415}},
      {"image/png body on tasks", post(T, "\x89PNG\r\n", "image/png"), {415}},
      {"text/html on batch",
       post(T + "/batch", R"({"tasks":[]})", "text/html; charset=utf-8"),
       {415}},
      {"octet-stream on image",
       post("/api/v1/image/async", "{}", "application/octet-stream"),
       {415}},
      {"no content type and bad body", post(T, bad_body, ""), {400}},
      {"empty content type and bad body", post(T, bad_body, "", "Content-Type: \r\n"), {400}},
      {"content type of 10 KB",
       post(T, kTask, "application/xml; x=" + std::string(10000, 'a')),
       {400, 415, 431}},
      {"content type with NUL", post(T, kTask, "application/x\0ml"s), {400, 415}},
      {"multipart without boundary",
       post(T, "--x\r\n\r\n--x--\r\n", "multipart/form-data"),
       {400, 415, 422}},
      {"multipart garbage",
       post(T, "not multipart at all", "multipart/form-data; boundary=zz"),
       {400, 422}},
      {"multipart truncated",
       post(T, "--zz\r\nContent-Disposition: form-data; name=\"task\"\r\n\r\n{\"ty",
            "multipart/form-data; boundary=zz"),
       {400, 422}},
      {"multipart task not json",
       post(T, "--zz\r\nContent-Disposition: form-data; name=\"task\"\r\n\r\nnope\r\n--zz--\r\n",
            "multipart/form-data; boundary=zz"),
       {400}},
      {"multipart two files",
       post(T,
            "--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\na\r\n"
            "--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b\"\r\n\r\nb\r\n"
            "--zz\r\nContent-Disposition: form-data; name=\"task\"\r\n\r\n" +
                kTask + "\r\n--zz--\r\n",
            "multipart/form-data; boundary=zz"),
       {422}},
      {"multipart on image route",
       post("/api/v1/image/async", "--zz--\r\n", "multipart/form-data; boundary=zz"),
       {415}},
      {"audio without multipart", post("/api/v1/audio/async", "{}"), {415}},
      {"audio without file part",
       post("/api/v1/audio/async",
            "--zz\r\nContent-Disposition: form-data; name=\"task\"\r\n\r\n{}\r\n--zz--\r\n",
            "multipart/form-data; boundary=zz"),
       {422}},
      {"audio file with traversal name and bad task",
       post("/api/v1/audio/async",
            "--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../etc/passwd\""
            "\r\n\r\nRIFF\r\n--zz\r\nContent-Disposition: form-data; name=\"task\"\r\n\r\n"
            "{\"priority\":99}\r\n--zz--\r\n",
            "multipart/form-data; boundary=zz"),
       {422}},
  };
  int64_t accepted = run_cases(f.port, cases);
  check_server_fine(f.server, accepted);
  // Nothing of the refused uploads stays behind in inputs/.
  namespace fs = std::filesystem;
  size_t leftovers = 0;
  if (fs::is_directory(f.server.data_dir() + "/inputs")) {
    for (const auto& e : fs::recursive_directory_iterator(f.server.data_dir() + "/inputs")) {
      leftovers += e.is_regular_file() ? 1 : 0;
    }
  }
  CHECK(leftovers == 0);
}

TEST_CASE("hostile: oversized bodies get 413 or a closed connection") {
  Fixture f;
  const size_t k50MB = 50u << 20;
  auto big_body = [&](const std::string& target, bool chunked, const std::string& extra = "") {
    std::string label = "50 MB " + std::string(chunked ? "chunked" : "Content-Length") + " " +
                        target + (extra.empty() ? "" : " +" + extra.substr(0, extra.find(':')));
    Sock s(f.port);
    REQUIRE(s.ok());
    auto deadline = Clock::now() + seconds(60);
    std::string head = "POST " + target +
                       " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                       "Content-Type: application/json\r\n" +
                       extra +
                       (chunked ? "Transfer-Encoding: chunked\r\n"
                                : "Content-Length: " + std::to_string(k50MB) + "\r\n") +
                       "\r\n";
    int64_t rss_before = rss_kb(f.server.process().pid());
    bool all = send_all(s.fd(), head, deadline);
    std::string block(1 << 20, ' ');
    block[0] = '[';
    size_t sent = 0;
    while (all && sent < k50MB) {
      std::string piece = block;
      if (chunked) {
        char size[32];
        std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
        piece = size + piece + "\r\n";
      }
      all = send_all(s.fd(), piece, deadline);
      sent += block.size();
    }
    if (all && chunked) send_all(s.fd(), "0\r\n\r\n", deadline);
    Reply r = read_reply(s.fd(), deadline);
    int64_t rss_after = rss_kb(f.server.process().pid());
    record(label, r.status);
    check_refused(label, r);
    CHECK((r.status == 413 || r.status == 0));
    // No 100 Continue for a body that is then refused as too large.
    CHECK(r.interim.empty());
    MESSAGE(label << ": " << (r.status ? std::to_string(r.status) : "closed") << " after "
                  << (sent >> 20) << " MB sent; server RSS " << rss_before / 1024 << " -> "
                  << rss_after / 1024 << " MB");
    return std::pair<size_t, int64_t>(sent, rss_after - rss_before);
  };
  big_body("/api/v1/tasks", false);
  big_body("/api/v1/tasks/batch", false);
  big_body("/api/v1/image/async", false);
  big_body("/api/v1/audio/async", false);
  big_body("/api/v1/tasks", false, "Expect: 100-continue\r\n");
  big_body("/api/v1/tasks", true);
  auto [image_sent, image_rss] = big_body("/api/v1/image/async", true);
  auto [batch_sent, batch_rss] = big_body("/api/v1/tasks/batch", true);
  // JSON routes stop reading a chunked body at --max-body (1 MiB), not at --max-upload.
  {
    INFO("sent " << (image_sent >> 20) << " and " << (batch_sent >> 20) << " MB");
    CHECK(image_sent < (8u << 20));
    CHECK(batch_sent < (8u << 20));
  }
  (void)image_rss;
  (void)batch_rss;

  std::string two_mb =
      R"({"type":"image","payload":{"prompt":")" + std::string(2 << 20, 'a') + "\"}}";
  std::vector<Case> cases = {
      {"2 MB JSON task", post("/api/v1/tasks", two_mb), {413, 0}},
      {"2 MB JSON image", post("/api/v1/image/async", two_mb), {413, 0}},
      {"Content-Length -1",
       "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}",
       {400, 0}},
      {"Content-Length abc",
       "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
       {400, 0}},
      {"Content-Length 10^23",
       "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: "
       "99999999999999999999999\r\n\r\n{}",
       {400, 413, 0}},
      {"two Content-Lengths",
       "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n"
       "Content-Length: 9\r\n\r\n{}",
       {400, 0},
       ""},
      {"Content-Length and chunked",
       "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n"
       "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
       {400, 422, 0}},
      {"bad chunk size",
       "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked"
       "\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
       {400, 0}},
      {"chunk size 2^64",
       "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked"
       "\r\n\r\n10000000000000000\r\n{}\r\n0\r\n\r\n",
       {400, 413, 0}},
  };
  int64_t accepted = run_cases(f.port, cases);
  check_server_fine(f.server, accepted);
}

TEST_CASE("hostile: path traversal and odd ids get 404 JSON and never a file") {
  Fixture f;
  std::vector<std::string> ids = {"..%2F..%2Ftasks.db",
                                  "%2e%2e",
                                  "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                                  "..%252f..%252ftasks.db",
                                  "..%5c..%5ctasks.db",
                                  "%00",
                                  "%ff%fe",
                                  "%c0%af",
                                  std::string(5000, 'a'),
                                  "'%20OR%20'1'%3D'1",
                                  "1%3BDROP%20TABLE%20tasks",
                                  "%27%29%3B--",
                                  "%22%3E%3Cscript%3E",
                                  "01M85WJ7S6KT1YKFEMT8SECF9Z",
                                  "01m85wj7s6kt1ykfemt8secf9z%00"};
  std::vector<Case> cases;
  for (const std::string& id : ids) {
    std::string shown = id.substr(0, 40);
    cases.push_back({"GET task " + shown, get("/api/v1/tasks/" + id), {404}});
    cases.push_back({"GET result " + shown, get("/api/v1/tasks/" + id + "/result"), {404}});
    cases.push_back({"GET image " + shown, get("/api/images/" + id), {404}});
    cases.push_back({"DELETE " + shown, request("DELETE", "/api/v1/tasks/" + id, ""), {404}});
  }
  for (const char* path :
       {"/api/v1/tasks/../../etc/passwd", "/api/v1/tasks/../tasks.db", "/web/..%2F..%2Ftasks.db",
        "/web/%2e%2e%2fCMakeLists.txt", "/web/../../main.cpp", "/web/..", "/web/.",
        "/api/v1/tasks?task_id=../../etc/passwd", "/api/v1/tasks?task_id=%27%20OR%201%3D1",
        "/api/v1/tasks/x/events/../../../result", "//etc/passwd", "/%2e%2e/%2e%2e/etc/passwd"}) {
    cases.push_back({std::string("GET ") + path, get(path), {404}});
  }
  cases.push_back({"POST cancel traversal", post("/api/v1/tasks/..%2f..%2f/cancel", ""), {404}});
  cases.push_back({"PUT tasks", request("PUT", "/api/v1/tasks", kTask), {404, 405}});
  cases.push_back({"PATCH task", request("PATCH", "/api/v1/tasks/x", "{}"), {404, 405}});
  cases.push_back({"unknown method", request("FROB", "/api/v1/tasks", ""), {400, 405, 0}});
  // (A file served by mistake would fail check_refused: it is not a JSON error.)
  int64_t accepted = run_cases(f.port, cases);
  check_server_fine(f.server, accepted);
}

TEST_CASE("hostile: SQL metacharacters in query parameters are refused or harmless") {
  Fixture f;
  const std::string L = "/api/v1/tasks?";
  std::string neg_cursor = ts::base64url_encode("t1:-1");
  std::string sql_cursor = ts::base64url_encode("t1:1 OR 1=1");
  std::vector<Case> cases = {
      {"status SQL", get(L + "status=DONE%27%20OR%20%271%27%3D%271"), {422}},
      {"status unknown", get(L + "status=PENDING"), {422}},
      {"status invalid UTF-8", get(L + "status=%ff"), {422}},
      {"type SQL", get(L + "type=image%27%20--"), {422}},
      {"type NUL", get(L + "type=image%00"), {422}},
      {"type traversal", get(L + "type=..%2F..%2Fetc"), {422}},
      {"limit SQL", get(L + "limit=1%3BDROP%20TABLE%20tasks"), {422}},
      {"limit huge", get(L + "limit=99999999999999999999"), {422}},
      {"limit -5", get(L + "limit=-5"), {422}},
      {"limit 0", get(L + "limit=0"), {422}},
      {"limit 1e3", get(L + "limit=1e3"), {422}},
      {"limit hex", get(L + "limit=0x10"), {422}},
      {"limit empty", get(L + "limit="), {422}},
      {"cursor SQL", get(L + "cursor=%27%20OR%201%3D1%20--"), {422}},
      {"cursor negative seq", get(L + "cursor=" + neg_cursor), {422}},
      {"cursor seq with SQL", get(L + "cursor=" + sql_cursor), {422}},
      {"cursor 100 chars", get(L + "cursor=" + std::string(100, 'A')), {422}},
      {"cursor with padding", get(L + "cursor=dDE6NDI%3D"), {422}},
      {"wait abc", get("/api/v1/tasks/01m85wj7s6kt1ykfemt8secf9z?wait=abc"), {422}},
      {"wait 61", get("/api/v1/tasks/01m85wj7s6kt1ykfemt8secf9z?wait=61"), {422}},
      {"wait -1", get("/api/v1/tasks/01m85wj7s6kt1ykfemt8secf9z?wait=-1"), {422}},
      {"events after SQL", get("/api/v1/tasks/x/events?after=1%20OR%201"), {404}},
      {"query of 7000 bytes", get(L + "type=" + std::string(7000, 'a')), {422, 414}},
      {"URI of 20000 bytes", get(L + "type=" + std::string(20000, 'a')), {414, 400, 0}},
  };
  int64_t accepted = run_cases(f.port, cases);
  check_server_fine(f.server, accepted);

  // Metacharacters where they are allowed (payload, idempotency key) are stored as text.
  std::string key = "' OR '1'='1'; DROP TABLE tasks; --";
  json body = {{"type", "image"},
               {"payload", {{"prompt", "Robert'); DROP TABLE tasks;--"}}},
               {"idempotency_key", key}};
  int status = 0;
  json t = f.server.post("/api/v1/tasks", body.dump(), &status);
  REQUIRE(status == 202);
  json again = f.server.post("/api/v1/tasks", body.dump(), &status);
  CHECK(status == 200);
  CHECK(again["task_id"] == t["task_id"]);
  json by_header = f.server.post("/api/v1/image/async", R"({"prompt":"x"})", &status,
                                 "application/json", {{"Idempotency-Key", key}});
  CHECK(status == 200);
  CHECK(by_header["task_id"] == t["task_id"]);
  json list = f.server.get("/api/v1/tasks?type=image&limit=5", &status);
  CHECK(status == 200);
  CHECK(list["tasks"].size() == 1);
  check_server_fine(f.server, accepted + 1);
  json done = f.server.wait_final(t["task_id"]);
  CHECK(done["status"] == "DONE");
  CHECK(done["idempotency_key"] == key);
}

TEST_CASE("hostile: header floods and odd headers") {
  Fixture f;
  const std::string T = "/api/v1/tasks";
  std::string bad = "{\"type\":";
  std::string flood;
  for (int i = 0; i < 5000; ++i) flood += "X-Flood-" + std::to_string(i) + ": v\r\n";
  std::string many_cookies;
  for (int i = 0; i < 2000; ++i) many_cookies += "Cookie: a" + std::to_string(i) + "=b\r\n";
  std::vector<Case> cases = {
      {"5000 headers", post(T, bad, "application/json", flood), {400, 431, 0}},
      {"2000 cookies", post(T, bad, "application/json", many_cookies), {400, 431, 0}},
      {"1 MB header",
       post(T, bad, "application/json", "X-Big: " + std::string(1 << 20, 'a') + "\r\n"),
       {400, 431, 0}},
      {"1 MB header name",
       post(T, bad, "application/json", std::string(1 << 20, 'X') + ": v\r\n"),
       {400, 431, 0}},
      {"header without colon", post(T, bad, "application/json", "NoColonHere\r\n"), {400, 0}},
      {"header with NUL", post(T, bad, "application/json", "X-A: a\0b\r\n"s), {400, 0}},
      {"header name with space", post(T, bad, "application/json", "X Bad: v\r\n"), {400, 0}},
      {"obsolete line folding",
       post(T, bad, "application/json", "X-A: a\r\n  folded\r\n"),
       {400, 0}},
      {"Idempotency-Key 256 bytes",
       post(T, kTask, "application/json", "Idempotency-Key: " + std::string(256, 'k') + "\r\n"),
       {422}},
      {"Idempotency-Key with tab",
       post(T, kTask, "application/json", "Idempotency-Key: a\tb\r\n"),
       {422}},
      {"Idempotency-Key with DEL",
       post(T, kTask, "application/json", "Idempotency-Key: a\x7f\r\n"),
       {422}},
      {"Idempotency-Key differs from body",
       post(T, task_with(R"("idempotency_key":"one")"), "application/json",
            "Idempotency-Key: two\r\n"),
       {422}},
      {"Idempotency-Key empty",
       post(T, kTask, "application/json", "Idempotency-Key: \r\n"),
       {422},
       "an empty Idempotency-Key header is taken as absent and the task is created without a key"},
      {"garbage request line", "GARBAGE\r\n\r\n", {400, 0}},
      {"HTTP/0.9 request", "GET /health\r\n\r\n", {400, 0}},
      {"HTTP/2 preface", std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), {400, 404, 505, 0}},
      {"TLS hello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"s, {400, 0}},
      {"64 KB of binary",
       [] {
         std::string s(1 << 16, '\0');
         for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<char>((i * 2654435761u) >> 13);
         return s;
       }(),
       {400, 414, 0}},
      {"request line only LF",
       "POST /api/v1/tasks HTTP/1.1\nContent-Length: 2\n\n{}",
       {400, 422, 0}},
  };
  int64_t accepted = run_cases(f.port, cases);
  // After a 400 for bytes that are not a request the connection closes: what follows is not
  // parsed as further requests (httplib's own loop did, one more answer per garbage "line").
  auto binary = std::find_if(cases.begin(), cases.end(),
                             [](const Case& c) { return c.label == "64 KB of binary"; });
  REQUIRE(binary != cases.end());
  {
    Sock s(f.port);
    REQUIRE(s.ok());
    auto deadline = Clock::now() + seconds(15);
    send_all(s.fd(), binary->bytes, deadline);
    Reply r = read_reply(s.fd(), deadline);
    CHECK(r.status == 400);
    std::string more;
    auto took = wait_closed(s.fd(), seconds(5), &more);
    INFO("answered after the 400: " << (r.after + more).substr(0, 120));
    CHECK(took.has_value());
    CHECK(r.after.empty());
    CHECK(more.empty());
  }
  check_server_fine(f.server, accepted);
}

TEST_CASE("hostile: slow clients are cut off and do not stall the server") {
  Fixture f;  // --read-timeout 2; keep-alive timeout 5 s
  // 40 connections that never send a byte, and one that stops in the middle of each part of a
  // request: the server keeps answering others, and closes each within its timeouts.
  std::vector<std::unique_ptr<Sock>> silent;
  for (int i = 0; i < 40; ++i) silent.push_back(std::make_unique<Sock>(f.port));
  Sock half_line(f.port), half_headers(f.port), half_body(f.port);
  auto far = Clock::now() + seconds(5);
  send_all(half_line.fd(), "POST /api/v1/ta", far);
  send_all(half_headers.fd(), "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Le", far);
  send_all(half_body.fd(),
           "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           "Content-Length: 100\r\n\r\n{\"type\":\"image\",",
           far);
  check_server_fine(f.server, 0);

  struct Stalled {
    const char* label;
    Sock* sock;
  } stalled[] = {{"stalled in the request line", &half_line},
                 {"stalled in the headers", &half_headers},
                 {"stalled in the body", &half_body}};
  for (const Stalled& s : stalled) {
    std::string got;
    auto took = wait_closed(s.sock->fd(), seconds(12), &got);
    INFO(s.label << ": " << got.substr(0, 200));
    CHECK(took.has_value());
    if (took) CHECK(*took < seconds(8));
    Reply r;
    if (!got.empty()) {
      r.status = std::atoi(got.c_str() + 9);
      r.head = got.substr(0, got.find("\r\n\r\n"));
      r.body = got.substr(got.find("\r\n\r\n") + 4);
    }
    r.closed = true;
    record(s.label, r.status);
    check_refused(s.label, r);
  }
  for (size_t i = 0; i < silent.size(); ++i) {
    auto took = wait_closed(silent[i]->fd(), seconds(10), nullptr);
    CHECK(took.has_value());
  }
  record("40 silent connections", 0);

  // Dribbling a byte a second keeps each read under the 2 s timeout. The request's head has a
  // total deadline (the read timeout), so the dribbled headers are cut; a body has none (an
  // upload on a slow link may take long), so the dribbled body holds a server thread for as
  // long as it dribbles.
  auto dribble = [&](const std::string& prefix, const std::string& drip, bool* cut) {
    Sock s(f.port);
    send_all(s.fd(), prefix, Clock::now() + seconds(2));
    for (size_t i = 0; i < drip.size() && i < 9; ++i) {
      if (!send_all(s.fd(), drip.substr(i, 1), Clock::now() + seconds(2))) {
        *cut = true;
        return;
      }
      pollfd p{s.fd(), POLLIN, 0};
      if (::poll(&p, 1, 1000) > 0) {
        *cut = true;
        return;
      }
    }
  };
  bool headers_cut = false, body_cut = false;
  std::thread a(dribble, "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\n", "X-Slow: aaaaaaaaaaaaaa",
                &headers_cut);
  std::thread b(dribble, "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n",
                "{\"type\":\"imageeeeeeeeee", &body_cut);
  std::this_thread::sleep_for(seconds(2));
  check_server_fine(f.server, 0);
  a.join();
  b.join();
  record("slowloris headers, 1 byte/s for 9 s", headers_cut ? 0 : -1);
  record("slowloris body, 1 byte/s for 9 s", body_cut ? 0 : -1);
  CHECK(headers_cut);
  {
    INFO(
        "known finding: --read-timeout bounds each read of a body, not the whole body; a client "
        "sending its body a byte a second holds a server thread indefinitely");
    WARN(body_cut);
  }
  check_server_fine(f.server, 0);
}

TEST_CASE("hostile: event streams past --max-streams get 503 instead of every serving thread") {
  TempDir dir;
  // 8 serving threads, so 6 (three quarters) may stream; the heartbeat is the default 15 s.
  Server server(dir, {"--http-threads", "8", "--sse-heartbeat", "15"});  // no backend: QUEUED
  REQUIRE(server.started());
  const int port = port_of(server.url());
  std::string id = server.submit("streamed to many");
  auto open_streams = [&] {
    httplib::Client cli = server.client(5);
    auto r = cli.Get("/metrics");
    const std::string key = "\nhttp_event_streams_open ";
    size_t at = r ? r->body.find(key) : std::string::npos;
    return at == std::string::npos ? -1.0 : std::stod(r->body.substr(at + key.size()));
  };
  CHECK(open_streams() == 0);

  // Ten clients ask for a stream, more than there are threads: without the limit the eighth
  // would take the last thread and the server would answer nobody else until a stream ended.
  std::vector<std::unique_ptr<Sock>> streams;
  int opened = 0;
  for (int i = 0; i < 10; ++i) {
    auto s = std::make_unique<Sock>(port);
    REQUIRE(s->ok());
    auto deadline = Clock::now() + seconds(5);
    send_all(s->fd(), get(i % 2 ? "/api/v1/events" : "/api/v1/tasks/" + id + "/events"),
             deadline);
    // Reads into `got` until `enough` says so, the peer closes or the deadline passes.
    std::string got;
    auto read_until = [&](const std::function<bool()>& enough) {
      while (!enough()) {
        pollfd p{s->fd(), POLLIN, 0};
        if (::poll(&p, 1, ms_left(deadline)) <= 0) return;
        char chunk[4096];
        ssize_t n = ::recv(s->fd(), chunk, sizeof chunk, 0);
        if (n <= 0) return;
        got.append(chunk, static_cast<size_t>(n));
      }
    };
    // A refusal is a whole response; a stream is a head and then chunks: read the head only.
    read_until([&] { return got.find("\r\n\r\n") != std::string::npos; });
    INFO("client " << i << ": " << got.substr(0, 400));
    REQUIRE(got.rfind("HTTP/1.1 ", 0) == 0);
    int status = std::atoi(got.c_str() + 9);
    if (i < 6) {
      CHECK(status == 200);
      CHECK(got.find("Content-Type: text/event-stream") != std::string::npos);
      ++opened;
      streams.push_back(std::move(s));
      continue;
    }
    CHECK(status == 503);
    Reply r;
    r.head = got.substr(0, got.find("\r\n\r\n"));
    CHECK(r.header("retry-after") == "5");
    std::string cl = r.header("content-length");
    REQUIRE(!cl.empty());
    const size_t whole = r.head.size() + 4 + std::stoul(cl);
    read_until([&] { return got.size() >= whole; });
    json e = json::parse(got.substr(r.head.size() + 4), nullptr, false);
    CHECK(e["error"]["code"] == "too_many_streams");
    CHECK(e["error"]["message"].get<std::string>().find("--max-streams") != std::string::npos);
    record("event stream past --max-streams", status);
  }
  CHECK(opened == 6);
  CHECK(open_streams() == 6);
  // Everything else is still served, at once.
  check_server_fine(server, 1);
  int status = 0;
  json t = server.get("/api/v1/tasks/" + id, &status);
  CHECK(status == 200);
  CHECK(t["status"] == "QUEUED");
  server.submit("while six streams are open");

  // The streaming clients go away without a word. Their streams end within a second or two
  // (a write to them would first fail only at the second heartbeat, 30 s on), and a new
  // stream is served again.
  auto gone = Clock::now();
  streams.clear();
  CHECK(eventually([&] { return open_streams() == 0; }, seconds(6)));
  CHECK(Clock::now() - gone < seconds(6));
  Sock again(port);
  send_all(again.fd(), get("/api/v1/events"), Clock::now() + seconds(5));
  std::string head;
  CHECK(wait_closed(again.fd(), milliseconds(1500), &head) == std::nullopt);  // stays open
  CHECK(head.rfind("HTTP/1.1 200", 0) == 0);

  // --max-streams must leave a thread for everything else.
  Process p({taskserver_bin(), "serve", "--listen", "127.0.0.1:0", "--data-dir",
             dir.path() + "/other", "--http-threads", "8", "--max-streams", "8"},
            {}, dir.path(), "max-streams");
  CHECK(p.wait(seconds(30)) > 0);
  CHECK(p.stderr_text().find("--max-streams: must be below --http-threads") != std::string::npos);
  CHECK(p.stdout_text().find("listening on") == std::string::npos);
}

TEST_CASE("hostile: a body cut short of its Content-Length is not taken as complete") {
  TempDir dir;
  MockBackend backend(dir, {"--latency-ms", "10"});
  // The transcribe pool too, for multipart uploads.
  Server server(dir, {"--read-timeout", "2"},
                {{"IMAGE_GEN_URL", backend.url()}, {"WHISPER_URL", backend.url()}});
  REQUIRE(server.started());
  int port = port_of(server.url());
  std::string json_head =
      "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: 200\r\n\r\n";
  std::string multipart_head =
      "POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
      "boundary=zz\r\nContent-Length: 100000\r\n\r\n";
  std::string task_part =
      "--zz\r\nContent-Disposition: form-data; name=\"task\"\r\n\r\n{\"type\":\"transcribe\"}\r\n";
  struct Cut {
    std::string label, bytes;
    bool half_close;  // the client closes its side after sending
  };
  std::vector<Cut> cuts = {
      {"JSON body of 50 of 200 bytes then silence", json_head + kTask, false},
      {"JSON body of 50 of 200 bytes then half-close", json_head + kTask, true},
      {"image body of 24 of 200 bytes then silence",
       "POST /api/v1/image/async HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
       "Content-Length: 200\r\n\r\n{\"prompt\":\"short image\"}",
       false},
      {"multipart cut inside the file then silence",
       multipart_head + task_part +
           "--zz\r\nContent-Disposition: form-data; name=\"file\"; "
           "filename=\"a.wav\"\r\n\r\nRIFF-cut",
       false},
      {"multipart without its closing boundary then silence",
       multipart_head + task_part +
           "--zz\r\nContent-Disposition: form-data; name=\"file\"; "
           "filename=\"b.wav\"\r\n\r\nRIFF\r\n--zz",
       false},
  };
  int64_t rows = 0;
  for (const Cut& c : cuts) {
    Sock s(port);
    REQUIRE(s.ok());
    auto deadline = Clock::now() + seconds(15);
    send_all(s.fd(), c.bytes, deadline);
    if (c.half_close) ::shutdown(s.fd(), SHUT_WR);
    Reply r = read_reply(s.fd(), deadline);
    record(c.label, r.status);
    int64_t now_rows = server.count_rows();
    INFO(c.label << " got " << r.status << " " << r.body.substr(0, 200));
    // A body shorter than its Content-Length is never taken as complete.
    CHECK((r.status == 400 || r.status == 408 || r.status == 0));
    CHECK(now_rows == rows);
    if (r.status >= 400 || r.status == 0) check_refused(c.label, r);
    rows = now_rows;
  }
  check_server_fine(server, rows);
}

// -----------------------------------------------------------------------------------------------
// A backend that answers garbage: a raw TCP server that answers GET /health properly (so the
// balancer keeps it up) and answers each task request according to the mode named in its
// prompt.

namespace {

class GarbageBackend {
 public:
  GarbageBackend() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(listen_fd_, 64) == 0);
    socklen_t len = sizeof a;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~GarbageBackend() {
    stop_ = true;
    acceptor_.join();
    std::vector<Conn> threads;
    {
      std::lock_guard<std::mutex> lock(mu_);
      threads.swap(threads_);
    }
    for (auto& c : threads) c.thread.join();
    ::close(listen_fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int requests(const std::string& mode) {
    std::lock_guard<std::mutex> lock(mu_);
    return counts_[mode];
  }

 private:
  void accept_loop() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      std::lock_guard<std::mutex> lock(mu_);
      // Health probes come every 200 ms: join the connections that are over.
      for (auto it = threads_.begin(); it != threads_.end();) {
        if (it->done->load()) {
          it->thread.join();
          it = threads_.erase(it);
        } else {
          ++it;
        }
      }
      auto done = std::make_shared<std::atomic<bool>>(false);
      threads_.push_back({std::thread([this, fd, done] {
                            serve(fd);
                            ::close(fd);
                            *done = true;
                          }),
                          done});
    }
  }

  // Holds the connection open, sending `drip` every 500 ms, until the client goes or the test
  // ends.
  void hold(int fd, const std::string& drip) {
    while (!stop_) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 500) > 0) {
        char c[256];
        if (::recv(fd, c, sizeof c, 0) <= 0) return;
      }
      if (!drip.empty() && ::send(fd, drip.data(), drip.size(), MSG_NOSIGNAL) <= 0) return;
    }
  }

  void serve(int fd) {
    auto deadline = Clock::now() + seconds(5);
    std::string in;
    size_t want = std::string::npos;
    while (in.size() < want && !stop_) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, ms_left(deadline)) <= 0) return;
      char chunk[8192];
      ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
      if (n <= 0) return;
      in.append(chunk, static_cast<size_t>(n));
      size_t end = in.find("\r\n\r\n");
      if (want == std::string::npos && end != std::string::npos) {
        std::string head = in.substr(0, end);
        std::transform(head.begin(), head.end(), head.begin(), ::tolower);
        size_t cl = head.find("content-length:");
        want = end + 4 + (cl == std::string::npos ? 0 : std::stoul(head.substr(cl + 15)));
      }
    }
    auto send = [&](const std::string& s) { ::send(fd, s.data(), s.size(), MSG_NOSIGNAL); };
    if (in.rfind("GET /health", 0) == 0) {
      return send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    }
    size_t at = in.find("mode-");
    std::string mode = at == std::string::npos ? "" : in.substr(at, in.find('"', at) - at);
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++counts_[mode];
    }
    auto ok_json = [&](const std::string& body) {
      send("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
    };
    if (mode == "mode-nonhttp") {
      send("SSH-2.0-OpenSSH_9.2\r\n\x00\xff\xfe garbage\r\n\r\n"s);
    } else if (mode == "mode-notjson") {
      ok_json("this is not json");
    } else if (mode == "mode-badb64") {
      ok_json(R"({"created":1,"data":[{"b64_json":"!!!not base64!!!"}]})");
    } else if (mode == "mode-truncated") {
      send(
          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
          "{\"data\":[{\"b64_json\":\"iVBOR");
    } else if (mode == "mode-hang") {
      hold(fd, "");
    } else if (mode == "mode-trickle") {
      send("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n");
      hold(fd, "x");
    } else if (mode == "mode-500binary") {
      std::string body = "\xff\xfe\xc0\xaf\x00 broken \xe2\x82 utf-8 \"quotes\" \\ </script>"s;
      send("HTTP/1.1 500 Oops\r\nContent-Type: text/plain\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
    } else if (mode == "mode-badstatus") {
      send("HTTP/1.1 abc What\r\nContent-Length: 0\r\n\r\n");
    } else if (mode == "mode-negcl") {
      send("HTTP/1.1 200 OK\r\nContent-Length: -5\r\nConnection: close\r\n\r\n{}");
    } else if (mode == "mode-badchunks") {
      send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n");
    } else if (mode == "mode-reset") {
      linger l{1, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    } else if (mode == "mode-busy") {
      send("HTTP/1.1 503 Busy\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    } else if (mode == "mode-hugeheader") {
      send("HTTP/1.1 200 OK\r\nX-Big: " + std::string(1 << 20, 'a') +
           "\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
    } else {
      send("HTTP/1.1 400 Bad\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    }
  }

  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::mutex mu_;
  struct Conn {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Conn> threads_;          // guarded by mu_
  std::map<std::string, int> counts_;  // guarded by mu_
};

}  // namespace

TEST_CASE("hostile: a backend that answers garbage fails its tasks and the server lives on") {
  TempDir dir;
  GarbageBackend garbage;
  Server server(dir,
                {"--read-timeout", "2", "--retry-base-ms", "100", "--retry-cap-ms", "300",
                 "--max-fails", "1000000", "--eject-base-ms", "100", "--eject-max-ms", "200"},
                {{"IMAGE_GEN_URL", garbage.url()}});
  REQUIRE(server.started());
  const std::vector<std::string> failing = {
      "mode-nonhttp",   "mode-truncated", "mode-hang",      "mode-trickle", "mode-500binary",
      "mode-badstatus", "mode-reset",     "mode-badchunks", "mode-negcl",   "mode-hugeheader"};
  // Odd but not broken answers (a negative Content-Length, a 1 MB header): DONE is fine too.
  const std::set<std::string> lenient = {"mode-negcl", "mode-hugeheader"};
  const std::vector<std::string> done_garbage = {"mode-notjson", "mode-badb64"};
  std::map<std::string, std::string> ids;
  auto submit = [&](const std::string& mode) {
    int status = 0;
    json t = server.post("/api/v1/tasks",
                         json{{"type", "image"},
                              {"payload", {{"prompt", mode}}},
                              {"max_attempts", 2},
                              {"timeout_s", 2}}
                             .dump(),
                         &status);
    REQUIRE(status == 202);
    ids[mode] = t["task_id"].get<std::string>();
  };
  for (const auto& m : failing) submit(m);
  for (const auto& m : done_garbage) submit(m);
  submit("mode-busy");
  check_server_fine(server, static_cast<int64_t>(ids.size()));

  std::map<std::string, std::string> final_status;
  for (const auto& m : failing) {
    json t = server.wait_final(ids[m], seconds(90));
    final_status[m] = t.value("status", "?");
    MESSAGE("backend " << m << ": task " << final_status[m]);
    INFO(m << ": " << t.dump().substr(0, 400));
    if (lenient.count(m)) {
      CHECK((final_status[m] == "FAILED" || final_status[m] == "DONE"));
    } else {
      CHECK(final_status[m] == "FAILED");
      CHECK(t["attempt"] == 2);
    }
    CHECK(!t.value("error", "").empty() == (final_status[m] == "FAILED"));
    // The task's JSON parses strictly even when the backend's error text was not UTF-8.
    auto c = server.client();
    auto raw = c.Get(("/api/v1/tasks/" + ids[m]).c_str());
    REQUIRE(raw);
    CHECK(!json::parse(raw->body, nullptr, false).is_discarded());
    CHECK(garbage.requests(m) >= 1);
  }
  for (const auto& m : done_garbage) {
    json t = server.wait_final(ids[m], seconds(60));
    final_status[m] = t.value("status", "?");
    MESSAGE("backend " << m << ": task " << final_status[m]);
    // A 2xx that is not an images answer fails the attempt: no DONE task without an image.
    CHECK(final_status[m] == "FAILED");
    int status = 0;
    json img = server.get("/api/images/" + ids[m], &status);
    record("GET /api/images/ of " + m, status);
    if (final_status[m] == "DONE") {
      CHECK(status == 409);
      CHECK(img["error"]["code"] == "no_image");
    }
  }
  // A busy backend is not broken: the task keeps retrying without spending attempts, and can
  // still be canceled.
  std::this_thread::sleep_for(seconds(2));
  int status = 0;
  json busy = server.get("/api/v1/tasks/" + ids["mode-busy"], &status);
  CHECK(status == 200);
  CHECK((busy["status"] == "QUEUED" || busy["status"] == "RUNNING"));
  CHECK(garbage.requests("mode-busy") >= 1);
  json canceled = server.del("/api/v1/tasks/" + ids["mode-busy"], &status);
  CHECK(status == 200);
  CHECK(server.wait_final(ids["mode-busy"], seconds(10))["status"] == "CANCELED");
  MESSAGE("backend mode-busy: retried without spending attempts then CANCELED");

  check_server_fine(server, static_cast<int64_t>(ids.size()));
  CHECK(server.stop() == 0);
}
