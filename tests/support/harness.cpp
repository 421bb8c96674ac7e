#include "support/harness.h"

#include <SQLiteCpp/Database.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace tst {

httplib::Client http_client(const std::string& url) {
  size_t colon = url.rfind(':');
  size_t host_at = url.find("://");
  host_at = host_at == std::string::npos ? 0 : host_at + 3;
  return httplib::Client(url.substr(host_at, colon - host_at), std::stoi(url.substr(colon + 1)));
}

std::string taskserver_bin() {
  if (const char* b = std::getenv("TASKSERVER_TEST_BIN"); b && *b) return b;
  return TASKSERVER_BIN;
}

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "taskserver-test-XXXXXX").string();
  char* made = mkdtemp(tmpl.data());
  path_ = made ? made : "/tmp";
}

TempDir::~TempDir() {
  std::error_code ec;
  if (std::getenv("TASKSERVER_KEEP_TEST_DIRS") == nullptr) std::filesystem::remove_all(path_, ec);
}

Process::Process(const std::vector<std::string>& args,
                 const std::map<std::string, std::string>& env, const std::string& dir,
                 const std::string& name) {
  out_path_ = dir + "/" + name + ".out";
  err_path_ = dir + "/" + name + ".err";
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);

  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    std::string key = kv.substr(0, kv.find('='));
    // The test's own environment must not leak backend URLs or settings into the child.
    // Nor may a test run under systemd send READY=1 to the real manager.
    if (key.rfind("IMAGE_GEN_URL", 0) == 0 || key.rfind("WHISPER_URL", 0) == 0 ||
        key.rfind("TASKSERVER_", 0) == 0 || key == "NOTIFY_SOCKET" || env.count(key)) {
      continue;
    }
    env_strings.push_back(kv);
  }
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_strings = args;
  std::vector<char*> argv;
  for (auto& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  if (posix_spawn(&pid_, argv[0], &fa, &attr, argv.data(), envp.data()) != 0) pid_ = -1;
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
}

Process::~Process() {
  if (pid_ > 0 && running()) {
    ::kill(pid_, SIGKILL);
    wait(std::chrono::seconds(5));
  }
}

bool Process::running() {
  if (pid_ <= 0 || exited_) return false;
  int st = 0;
  pid_t r = waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    exited_ = true;
    status_ = st;
    return false;
  }
  return true;
}

void Process::signal(int sig) {
  if (pid_ > 0 && !exited_) ::kill(pid_, sig);
}

int Process::wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (running()) {
    if (std::chrono::steady_clock::now() > deadline) return INT_MIN;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (pid_ <= 0) return INT_MIN;
  if (WIFEXITED(status_)) return WEXITSTATUS(status_);
  if (WIFSIGNALED(status_)) return -WTERMSIG(status_);
  return INT_MIN;
}

static std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string Process::stdout_text() const { return slurp(out_path_); }
std::string Process::stderr_text() const { return slurp(err_path_); }

std::string Process::wait_listening(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    std::string out = stdout_text();
    size_t at = out.find("listening on ");
    if (at != std::string::npos) {
      size_t end = out.find('\n', at);
      if (end != std::string::npos) return out.substr(at + 13, end - at - 13);
    }
    if (!running()) return "";
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return "";
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

MockBackend::MockBackend(const TempDir& dir, std::vector<std::string> extra_args, int port) {
  static int n = 0;
  std::vector<std::string> args = {taskserver_bin(), "mock-backend", "--listen",
                                   "127.0.0.1:" + std::to_string(port)};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  proc_ =
      std::make_unique<Process>(args, std::map<std::string, std::string>{}, dir.path(),
                                "mock" + std::to_string(++n) + "-" + std::to_string(::getpid()));
  url_ = proc_->wait_listening(std::chrono::seconds(10));
  if (!url_.empty()) port_ = port_of(url_);
}

json MockBackend::stats() {
  httplib::Client c = http_client(url_);
  c.set_connection_timeout(2, 0);
  auto r = c.Get("/admin/stats");
  if (!r) return nullptr;
  return json::parse(r->body, nullptr, false);
}

void MockBackend::set_healthy(bool ok) {
  httplib::Client c = http_client(url_);
  c.Post(ok ? "/admin/health?ok=true" : "/admin/health?ok=false", "", "text/plain");
}

void MockBackend::kill_hard() {
  proc_->signal(SIGKILL);
  proc_->wait(std::chrono::seconds(5));
}

Server::Server(const TempDir& dir, std::vector<std::string> extra_args,
               std::map<std::string, std::string> env, std::string data_dir) {
  static int n = 0;
  data_dir_ = data_dir.empty() ? dir.file("data") : data_dir;
  std::vector<std::string> args = {
      taskserver_bin(),   "serve", "--listen",          "127.0.0.1:0", "--data-dir",      data_dir_,
      "--shutdown-grace", "10",    "--health-interval", "200",         "--sse-heartbeat", "1"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  proc_ = std::make_unique<Process>(
      args, env, dir.path(), "server" + std::to_string(++n) + "-" + std::to_string(::getpid()));
  url_ = proc_->wait_listening(std::chrono::seconds(30));
}

Server::~Server() {
  if (proc_ && proc_->running()) stop(std::chrono::seconds(20));
}

httplib::Client Server::client(int read_timeout_s) const {
  httplib::Client c = http_client(url_);
  c.set_connection_timeout(5, 0);
  c.set_read_timeout(read_timeout_s, 0);
  return c;
}

int Server::stop(std::chrono::milliseconds timeout) {
  proc_->signal(SIGTERM);
  int code = proc_->wait(timeout);
  if (code == INT_MIN) {
    proc_->signal(SIGKILL);
    proc_->wait(std::chrono::seconds(5));
  }
  return code;
}

void Server::kill_hard() {
  proc_->signal(SIGKILL);
  proc_->wait(std::chrono::seconds(5));
}

static json parse_result(const httplib::Result& r, int* status) {
  if (status) *status = r ? r->status : 0;
  if (!r) return nullptr;
  json j = json::parse(r->body, nullptr, false);
  return j.is_discarded() ? json(nullptr) : j;
}

json Server::get(const std::string& path, int* status) const {
  auto c = client(90);
  return parse_result(c.Get(path.c_str()), status);
}

json Server::post(const std::string& path, const std::string& body, int* status,
                  const std::string& content_type, const httplib::Headers& headers) const {
  auto c = client();
  return parse_result(c.Post(path.c_str(), headers, body, content_type.c_str()), status);
}

json Server::del(const std::string& path, int* status) const {
  auto c = client();
  return parse_result(c.Delete(path.c_str()), status);
}

std::string Server::submit(const std::string& prompt, const json& extra) const {
  json body = {{"type", "image"}, {"payload", {{"prompt", prompt}}}};
  body.update(extra);
  int status = 0;
  json t = post("/api/v1/tasks", body.dump(), &status);
  if (status != 202 || !t.contains("task_id")) {
    throw std::runtime_error("submit answered " + std::to_string(status) + ": " + t.dump());
  }
  return t["task_id"];
}

json Server::wait_final(const std::string& id, std::chrono::seconds timeout) const {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  json t;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    t = get("/api/v1/tasks/" + id + "?wait=5", &status);
    if (status != 200) return t;
    std::string s = t.value("status", "");
    if (s == "DONE" || s == "FAILED" || s == "CANCELED") return t;
  }
  return t;
}

int64_t Server::count_rows() const {
  SQLite::Database db(data_dir_ + "/tasks.db", SQLite::OPEN_READONLY, 5000);
  return db.execAndGet("SELECT COUNT(*) FROM tasks").getInt64();
}

bool eventually(const std::function<bool()>& check, std::chrono::milliseconds timeout,
                std::chrono::milliseconds every) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (check()) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(every);
  }
}

}  // namespace tst
