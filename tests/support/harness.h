#pragma once
// Test harness for end-to-end tests: temp folders, the real taskserver binary started as a child
// process on a free loopback port (serve or mock-backend), and an HTTP client to it. Nothing of
// the server is mocked. Not thread-safe: one test thread drives it (helpers that run requests
// in parallel make their own clients).

#include <httplib.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace tst {

using nlohmann::json;

// A fresh folder under /tmp, removed with its contents at the end of the scope.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A child process whose stdout and stderr go to files in `dir`.
class Process {
 public:
  Process(const std::vector<std::string>& args, const std::map<std::string, std::string>& env,
          const std::string& dir, const std::string& name);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  pid_t pid() const { return pid_; }
  bool running();
  void signal(int sig);
  // Waits up to `timeout` for the exit; returns the exit code, or -signal, or INT_MIN on timeout.
  int wait(std::chrono::milliseconds timeout);
  // Waits until stdout holds "listening on <url>"; returns the URL or "" after the timeout.
  std::string wait_listening(std::chrono::milliseconds timeout);
  std::string stdout_text() const;
  std::string stderr_text() const;

 private:
  pid_t pid_ = -1;
  int status_ = 0;
  bool exited_ = false;
  std::string out_path_, err_path_;
};

// `taskserver mock-backend` on a free port.
class MockBackend {
 public:
  explicit MockBackend(const TempDir& dir, std::vector<std::string> extra_args = {}, int port = 0);
  const std::string& url() const { return url_; }
  int port() const { return port_; }
  json stats();
  void set_healthy(bool ok);
  void kill_hard();  // SIGKILL
  Process& process() { return *proc_; }

 private:
  std::unique_ptr<Process> proc_;
  std::string url_;
  int port_ = 0;
};

// `taskserver serve` with a data folder in `dir`.
class Server {
 public:
  Server(const TempDir& dir, std::vector<std::string> extra_args = {},
         std::map<std::string, std::string> env = {}, std::string data_dir = "");
  ~Server();
  const std::string& url() const { return url_; }
  std::string data_dir() const { return data_dir_; }
  bool started() const { return !url_.empty(); }
  httplib::Client client(int read_timeout_s = 30) const;
  Process& process() { return *proc_; }
  // SIGTERM and wait; returns the exit code.
  int stop(std::chrono::milliseconds timeout = std::chrono::seconds(60));
  void kill_hard();

  // Convenience calls; each returns the parsed JSON body (or null) and the status code.
  json get(const std::string& path, int* status = nullptr) const;
  json post(const std::string& path, const std::string& body, int* status = nullptr,
            const std::string& content_type = "application/json",
            const httplib::Headers& headers = {}) const;
  json del(const std::string& path, int* status = nullptr) const;
  // POST /api/v1/tasks of an image task with this prompt (plus `extra` fields); the new id.
  // Fails the test unless the answer is 202.
  std::string submit(const std::string& prompt, const json& extra = json::object()) const;
  // Polls GET /api/v1/tasks/{id}?wait= until a final state or the timeout; returns the task.
  json wait_final(const std::string& id,
                  std::chrono::seconds timeout = std::chrono::seconds(60)) const;
  // Rows in the tasks table (a fresh read-only connection to the store).
  int64_t count_rows() const;

 private:
  std::unique_ptr<Process> proc_;
  std::string url_;
  std::string data_dir_;
};

// Repeats `check` until it is true or the timeout passes.
bool eventually(const std::function<bool()>& check,
                std::chrono::milliseconds timeout = std::chrono::seconds(10),
                std::chrono::milliseconds every = std::chrono::milliseconds(50));

std::string taskserver_bin();

// The port of "http://host:port".
int port_of(const std::string& url);

// The resident set size of process `pid` in KiB, from /proc; -1 when it cannot be read.
int64_t rss_kb(pid_t pid);

// An HTTP client for "http://host:port" built from host and port: httplib's URL constructor
// matches a static std::regex inside the uninstrumented library, a false race under TSan.
httplib::Client http_client(const std::string& url);

}  // namespace tst
