#pragma once
// Config: the command line of every subcommand, parsed with CLI11, with the precedence of
// DESIGN.md: flags > environment (TASKSERVER_*, IMAGE_GEN_URL*, WHISPER_URL*) > config file
// (--config, TOML) > defaults. main.cpp copies these values into each module's own Options;
// no module includes this header. Not thread-safe: parse once at start.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cli/client.h"

namespace ts {

struct PoolConfig {
  std::string name;
  std::string request_path;
  std::string health_path = "/health";
  std::vector<std::string> urls;
  int slots = 1;  // per backend
  int workers = 0;
  int timeout_s = 0;     // 0: the server default
  int max_attempts = 0;  // 0: the server default
  int64_t retry_base_ms = 0;
  int64_t retry_cap_ms = 0;
};

struct ServeConfig {
  std::string listen = "127.0.0.1:8080";
  std::string data_dir = "./data";
  std::string config_file;
  std::string sync = "full";  // full | normal
  int64_t queue_capacity = 1024;
  int64_t max_queued = 100'000;
  int shutdown_grace_s = 30;
  int http_threads = 128;
  int max_streams = 0;  // SSE streams open at once; 0 (resolved by parsing): 3/4 of http_threads
  // Final tasks are deleted, results and uploads with them, this long after they finished:
  // "7d", "12h", "30m", "45s" (a bare number is seconds). "0": kept for ever.
  std::string retain_final = "0";
  int64_t retain_final_s = 0;  // parsed from retain_final
  int64_t max_body = 1 << 20;
  int64_t max_upload = 100ll << 20;
  int64_t max_result = 128ll << 20;
  int64_t inline_result_max = 256ll << 10;
  std::vector<std::string> api_tokens;
  std::string api_token_file;
  std::string webhook_secret;
  std::string log_format = "text";  // text | json
  std::string log_level = "info";
  int health_interval_ms = 2000;
  int health_timeout_ms = 1000;
  int fall = 3;
  int rise = 2;
  int max_fails = 3;
  int64_t eject_base_ms = 5000;
  int64_t eject_max_ms = 300'000;
  int64_t retry_base_ms = 1000;
  int64_t retry_cap_ms = 60'000;
  int default_timeout_s = 300;
  int max_timeout_s = 3600;
  int max_attempts = 3;
  int sse_heartbeat_s = 15;
  int read_timeout_s = 10;
  std::vector<PoolConfig> pools;
  // demo only
  int demo_backends = 3;
  int demo_latency_ms = 1500;
};

struct MockConfig {
  std::string listen = "127.0.0.1:0";
  int latency_ms = 50;
  int latency_jitter_ms = 0;
  double fail_rate = 0;
  double hang_rate = 0;
  int status_code = 0;
  int retry_after_s = 1;
  uint64_t seed = 0;
  int threads = 64;
};

enum class Command {
  kServe,
  kDemo,
  kMigrate,
  kMockBackend,
  kSubmit,
  kStatus,
  kWait,
  kCancel,
  kList
};

struct Parsed {
  Command command = Command::kServe;
  ServeConfig serve;
  MockConfig mock;
  ClientOptions client;
  int exit_code = -1;  // >= 0: parsing already answered (help, error); exit with it
};

Parsed parse_command_line(int argc, char** argv);

// "7d", "12h", "30m", "45s" or a bare number of seconds, in seconds; nullopt when it is none
// of those (or over 100 years).
std::optional<int64_t> parse_duration_s(const std::string& text);

// The backend URLs in the environment for a prefix: PREFIX, then PREFIX_1 ... PREFIX_N in
// numeric order (gaps allowed).
std::vector<std::string> urls_from_env(const std::string& prefix);

}  // namespace ts
