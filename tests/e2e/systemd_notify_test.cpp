// The systemd notify protocol end to end, as a Type=notify unit sees it: the real binary,
// started with NOTIFY_SOCKET naming a unix datagram socket of the test, says READY=1 once its
// HTTP socket serves, STOPPING=1 on SIGTERM, and then exits 0.
#include <doctest/doctest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "support/harness.h"

using namespace tst;

namespace {

// A bound unix datagram socket standing in for the service manager. `name` is a path, or
// "@name" for the abstract namespace (as NOTIFY_SOCKET spells it).
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& name) : name_(name) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (name.empty() || name.size() >= sizeof(addr.sun_path)) return;
    std::memcpy(addr.sun_path, name.data(), name.size());
    if (name[0] == '@') addr.sun_path[0] = '\0';
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return;
    auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    if (::bind(fd_, reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~NotifySocket() {
    if (fd_ >= 0) ::close(fd_);
    if (!name_.empty() && name_[0] == '/') ::unlink(name_.c_str());
  }
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;

  bool ok() const { return fd_ >= 0; }

  // Reads datagrams until one of them has `assignment` (e.g. "READY=1") as a line, or the
  // timeout passes. Every line read on the way is appended to `seen`.
  bool wait_for(const std::string& assignment, std::chrono::milliseconds timeout,
                std::vector<std::string>* seen) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) continue;
      std::istringstream lines(std::string(buf, static_cast<size_t>(n)));
      bool found = false;
      for (std::string line; std::getline(lines, line);) {
        seen->push_back(line);
        if (line == assignment) found = true;
      }
      if (found) return true;
    }
  }

 private:
  std::string name_;
  int fd_ = -1;
};

bool has_line_starting(const std::vector<std::string>& lines, const std::string& prefix) {
  for (const auto& l : lines) {
    if (l.rfind(prefix, 0) == 0) return true;
  }
  return false;
}

// Starts the server with NOTIFY_SOCKET=<name> and walks it through READY=1 and STOPPING=1.
void check_notify_protocol(const TempDir& dir, const std::string& socket_name) {
  NotifySocket manager(socket_name);
  REQUIRE_MESSAGE(manager.ok(), "cannot bind the notify socket ", socket_name);

  Server server(dir, {}, {{"NOTIFY_SOCKET", socket_name}});
  REQUIRE(server.started());

  std::vector<std::string> seen;
  REQUIRE_MESSAGE(manager.wait_for("READY=1", std::chrono::seconds(5), &seen),
                  "no READY=1 within 5 s; stderr: ", server.process().stderr_text());
  CHECK_FALSE(has_line_starting(seen, "STOPPING="));
  // The STATUS= line names the address it serves.
  CHECK(has_line_starting(seen, "STATUS=serving " + server.url()));

  // READY=1 means the HTTP socket answers: a unit ordered after this one may call it at once.
  auto c = server.client(5);
  auto health = c.Get("/health");
  REQUIRE(health);
  CHECK(health->status == 200);

  int code = server.stop(std::chrono::seconds(30));
  seen.clear();
  CHECK_MESSAGE(manager.wait_for("STOPPING=1", std::chrono::seconds(5), &seen),
                "no STOPPING=1 after SIGTERM; stderr: ", server.process().stderr_text());
  CHECK(code == 0);
}

}  // namespace

TEST_CASE("e2e systemd notify: READY=1 once serving then STOPPING=1 on SIGTERM and exit 0") {
  TempDir dir;
  check_notify_protocol(dir, dir.file("notify.sock"));
}

TEST_CASE("e2e systemd notify: an abstract-namespace NOTIFY_SOCKET works too") {
  TempDir dir;
  check_notify_protocol(dir, "@taskserver-notify-test-" + std::to_string(::getpid()));
}

TEST_CASE("e2e systemd notify: an unreachable NOTIFY_SOCKET does not stop the server") {
  TempDir dir;
  // Nothing is bound there: the notifications are lost and the server serves and stops as usual.
  Server server(dir, {}, {{"NOTIFY_SOCKET", dir.file("nobody-listens.sock")}});
  REQUIRE(server.started());
  auto c = server.client(5);
  auto health = c.Get("/health");
  REQUIRE(health);
  CHECK(health->status == 200);
  CHECK(server.stop(std::chrono::seconds(30)) == 0);
}
