#include "config/config.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>

extern char** environ;

namespace ts {
namespace {

// An option that may also come from the environment and the config file.
struct Layered {
  CLI::Option* option;
  std::string env;  // TASKSERVER_...
  std::string key;  // the config file's key
};

std::string env_name_for(const std::string& key) {
  std::string e = "TASKSERVER_";
  for (char c : key)
    e += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return e;
}

template <typename T>
void add_layered(CLI::App* app, std::vector<Layered>& layered, const std::string& key, T& var,
                 const std::string& help) {
  CLI::Option* o = app->add_option("--" + key, var, help)->capture_default_str();
  std::string env = env_name_for(key);
  o->description(help + "  [env " + env + "]");
  layered.push_back({o, env, key});
}

// Applies, to every option not given on the command line, its environment variable, else its
// config file value. CLI11 itself ranks a config file above the environment; DESIGN.md ranks
// the environment above the file, hence this step of our own after parsing.
void apply_layers(const std::vector<Layered>& layered,
                  const std::map<std::string, std::vector<std::string>>& file_values) {
  for (const Layered& l : layered) {
    if (l.option->count() > 0) continue;
    if (const char* v = std::getenv(l.env.c_str()); v && *v) {
      l.option->add_result(std::string(v));
    } else if (auto it = file_values.find(l.key); it != file_values.end()) {
      l.option->add_result(it->second);
    } else {
      continue;
    }
    l.option->run_callback();
  }
}

int to_int(const std::string& s, const std::string& what) {
  try {
    size_t used = 0;
    long long v = std::stoll(s, &used);
    if (used != s.size()) throw std::invalid_argument(s);
    return static_cast<int>(v);
  } catch (const std::exception&) {
    throw CLI::ValidationError(what, "must be an integer: " + s);
  }
}

// [pool.NAME] sections of the config file.
void read_pools(const std::vector<CLI::ConfigItem>& items, ServeConfig& cfg) {
  std::map<std::string, PoolConfig> pools;
  for (const CLI::ConfigItem& item : items) {
    if (item.parents.size() != 2 || item.parents[0] != "pool") continue;
    if (item.name == "++" || item.name == "--") continue;
    const std::string& name = item.parents[1];
    PoolConfig& p = pools[name];
    p.name = name;
    std::string what = "pool." + name + "." + item.name;
    std::string one = item.inputs.empty() ? "" : item.inputs.front();
    if (item.name == "urls" || item.name == "url") {
      for (const auto& u : item.inputs) p.urls.push_back(u);
    } else if (item.name == "request_path") {
      p.request_path = one;
    } else if (item.name == "health_path") {
      p.health_path = one;
    } else if (item.name == "slots") {
      p.slots = to_int(one, what);
    } else if (item.name == "workers") {
      p.workers = to_int(one, what);
    } else if (item.name == "timeout_s") {
      p.timeout_s = to_int(one, what);
    } else if (item.name == "max_attempts") {
      p.max_attempts = to_int(one, what);
    } else if (item.name == "retry_base_ms") {
      p.retry_base_ms = to_int(one, what);
    } else if (item.name == "retry_cap_ms") {
      p.retry_cap_ms = to_int(one, what);
    } else {
      throw CLI::ValidationError(what,
                                 "unknown pool setting (known: urls, request_path, "
                                 "health_path, slots, workers, timeout_s, max_attempts, "
                                 "retry_base_ms, retry_cap_ms)");
    }
  }
  for (auto& [name, p] : pools) cfg.pools.push_back(std::move(p));
}

// The built-in pools get their URLs from the environment (which ranks above the file).
void merge_builtin_pools(ServeConfig& cfg) {
  struct Builtin {
    const char* name;
    const char* env;
    const char* path;
  };
  for (const Builtin& b : {Builtin{"image", "IMAGE_GEN_URL", "/v1/images/generations"},
                           Builtin{"transcribe", "WHISPER_URL", "/v1/audio/transcriptions"}}) {
    auto it = std::find_if(cfg.pools.begin(), cfg.pools.end(),
                           [&](const PoolConfig& p) { return p.name == b.name; });
    std::vector<std::string> env_urls = urls_from_env(b.env);
    if (it == cfg.pools.end()) {
      // `image` always exists (the seed API); `transcribe` once it has a backend.
      if (env_urls.empty() && std::string(b.name) != "image") continue;
      PoolConfig p;
      p.name = b.name;
      cfg.pools.push_back(p);
      it = cfg.pools.end() - 1;
    }
    if (!env_urls.empty()) it->urls = env_urls;
    if (it->request_path.empty()) it->request_path = b.path;
    if (const char* s = std::getenv((std::string(b.env) + "_SLOTS").c_str()); s && *s) {
      it->slots = to_int(s, std::string(b.env) + "_SLOTS");
    }
  }
  for (PoolConfig& p : cfg.pools) {
    if (p.request_path.empty()) {
      throw CLI::ValidationError("pool." + p.name, "needs request_path (e.g. \"/v1/process\")");
    }
    if (p.slots < 1 || p.slots > 1024) {
      throw CLI::ValidationError("pool." + p.name + ".slots", "must be from 1 to 1024");
    }
  }
}

void add_client_options(CLI::App* sub, ClientOptions& c) {
  sub->add_option("--server", c.server, "taskserver URL")
      ->envname("TASKSERVER_URL")
      ->capture_default_str();
  sub->add_option("--token", c.token, "API token")->envname("TASKSERVER_TOKEN");
  sub->add_flag("--json", c.json, "Print the server's JSON");
}

}  // namespace

std::optional<int64_t> parse_duration_s(const std::string& text) {
  if (text.empty() || text.size() > 12) return std::nullopt;
  int64_t unit = 1;
  std::string digits = text;
  switch (text.back()) {
    case 's':
      unit = 1;
      digits.pop_back();
      break;
    case 'm':
      unit = 60;
      digits.pop_back();
      break;
    case 'h':
      unit = 3600;
      digits.pop_back();
      break;
    case 'd':
      unit = 86400;
      digits.pop_back();
      break;
    default:
      break;
  }
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return std::nullopt;
  int64_t n = std::stoll(digits);
  if (n > 100LL * 365 * 86400 / unit) return std::nullopt;
  return n * unit;
}

std::vector<std::string> urls_from_env(const std::string& prefix) {
  std::vector<std::string> urls;
  if (const char* v = std::getenv(prefix.c_str()); v && *v) urls.push_back(v);
  std::vector<std::pair<long, std::string>> numbered;
  std::string head = prefix + "_";
  for (char** e = environ; e && *e; ++e) {
    std::string kv = *e;
    if (kv.rfind(head, 0) != 0) continue;
    size_t eq = kv.find('=');
    std::string digits = kv.substr(head.size(), eq - head.size());
    if (digits.empty() || digits.size() > 6 ||
        !std::all_of(digits.begin(), digits.end(), ::isdigit)) {
      continue;
    }
    std::string value = kv.substr(eq + 1);
    if (!value.empty()) numbered.emplace_back(std::stol(digits), value);
  }
  std::sort(numbered.begin(), numbered.end());
  for (auto& [n, u] : numbered) urls.push_back(u);
  return urls;
}

Parsed parse_command_line(int argc, char** argv) {
  Parsed out;
  ServeConfig& s = out.serve;
  CLI::App app{
      "taskserver: an asynchronous task queue in front of AI inference backends.\n"
      "With no subcommand it serves (taskserver serve)."};
  app.set_version_flag("--version", TASKSERVER_VERSION);
  // A flag given twice takes its last value, so wrappers can append overrides.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.require_subcommand(0, 1);
  std::vector<Layered> layered;
  app.add_option("--config", s.config_file, "Config file (TOML): settings and [pool.NAME] sections")
      ->envname("TASKSERVER_CONFIG");
  add_layered(&app, layered, "listen", s.listen, "Address to serve HTTP on (host:port)");
  add_layered(&app, layered, "data-dir", s.data_dir, "Folder of the SQLite store and result files");
  add_layered(&app, layered, "sync", s.sync,
              "full: durable on power loss; normal: durable on process crash");
  add_layered(&app, layered, "queue-capacity", s.queue_capacity, "Tasks per pool held in memory");
  add_layered(&app, layered, "max-queued", s.max_queued,
              "Queued tasks per pool before submits get 429");
  add_layered(&app, layered, "shutdown-grace", s.shutdown_grace_s,
              "Seconds running attempts may finish after SIGTERM");
  add_layered(&app, layered, "http-threads", s.http_threads,
              "HTTP serving threads (an SSE stream holds one while it lasts; a ?wait= long-poll or "
              "an idle keep-alive connection holds none)");
  add_layered(&app, layered, "max-streams", s.max_streams,
              "SSE streams open at once, 503 beyond (0: three quarters of --http-threads)");
  add_layered(&app, layered, "retain-final", s.retain_final,
              "Delete final tasks and their results this long after they finished: 7d, 12h, 30m, "
              "45s (0: keep them)");
  add_layered(&app, layered, "max-body", s.max_body, "Largest JSON body in bytes (413 beyond)");
  add_layered(&app, layered, "max-upload", s.max_upload, "Largest multipart upload in bytes");
  add_layered(&app, layered, "max-result", s.max_result,
              "Largest backend answer kept as a result, in bytes");
  add_layered(&app, layered, "inline-result-max", s.inline_result_max,
              "Results up to this many bytes are kept in the database with the task's DONE; "
              "larger ones are files in results/ (0: every result a file)");
  add_layered(&app, layered, "api-token", s.api_tokens,
              "Require Authorization: Bearer <token> on /api/ (repeatable)");
  layered.back().option->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  add_layered(&app, layered, "api-token-file", s.api_token_file,
              "File of API tokens, one per line");
  add_layered(&app, layered, "webhook-secret", s.webhook_secret,
              "HMAC-SHA256 key for X-Taskserver-Signature");
  add_layered(&app, layered, "log-format", s.log_format, "text or json");
  add_layered(&app, layered, "log-level", s.log_level, "trace, debug, info, warn, error");
  add_layered(&app, layered, "health-interval", s.health_interval_ms,
              "Milliseconds between health probes");
  add_layered(&app, layered, "health-timeout", s.health_timeout_ms,
              "Milliseconds a health probe may take");
  add_layered(&app, layered, "fall", s.fall, "Failing probes in a row that mark a backend down");
  add_layered(&app, layered, "rise", s.rise, "Passing probes in a row that bring it back");
  add_layered(&app, layered, "max-fails", s.max_fails,
              "Failed tasks in a row that eject a backend");
  add_layered(&app, layered, "eject-base-ms", s.eject_base_ms,
              "First ejection time; doubles per ejection in a row");
  add_layered(&app, layered, "eject-max-ms", s.eject_max_ms, "Longest ejection time");
  add_layered(&app, layered, "retry-base-ms", s.retry_base_ms, "First retry backoff");
  add_layered(&app, layered, "retry-cap-ms", s.retry_cap_ms, "Longest retry backoff");
  add_layered(&app, layered, "timeout", s.default_timeout_s,
              "Seconds an attempt may take (pool default)");
  add_layered(&app, layered, "max-timeout", s.max_timeout_s,
              "Largest timeout_s a task may ask for");
  add_layered(&app, layered, "max-attempts", s.max_attempts, "Attempts per task (default)");
  add_layered(&app, layered, "sse-heartbeat", s.sse_heartbeat_s,
              "Seconds between SSE keep-alive comments");
  add_layered(&app, layered, "read-timeout", s.read_timeout_s,
              "Seconds a client may take to send a request");

  auto* serve = app.add_subcommand("serve", "Serve the API (the default)");
  serve->fallthrough();
  auto* demo = app.add_subcommand("demo", "Serve with built-in mock backends (no GPU needed)");
  demo->fallthrough();
  demo->add_option("--backends", s.demo_backends, "Mock image backends")->capture_default_str();
  demo->add_option("--mock-latency-ms", s.demo_latency_ms, "Mock latency")->capture_default_str();
  auto* migrate = app.add_subcommand("migrate", "Apply the schema migrations and exit");
  migrate->fallthrough();

  MockConfig& m = out.mock;
  auto* mock = app.add_subcommand("mock-backend", "A fake GPU backend for tests and demos");
  mock->add_option("--listen", m.listen, "host:port (port 0: any)")->capture_default_str();
  mock->add_option("--latency-ms", m.latency_ms, "Answer after this long")->capture_default_str();
  mock->add_option("--latency-jitter-ms", m.latency_jitter_ms, "Plus up to this much");
  mock->add_option("--fail-rate", m.fail_rate, "Share of task requests answered 500")
      ->check(CLI::Range(0.0, 1.0));
  mock->add_option("--hang-rate", m.hang_rate, "Share of task requests never answered")
      ->check(CLI::Range(0.0, 1.0));
  mock->add_option("--status-code", m.status_code, "Answer every task request with this code")
      ->check(CLI::Range(100, 599));
  mock->add_option("--retry-after", m.retry_after_s, "Retry-After seconds sent with 429/503");
  mock->add_option("--seed", m.seed, "Random seed for the fault rates");
  mock->add_option("--threads", m.threads, "Requests served at once")->capture_default_str();

  ClientOptions& c = out.client;
  auto* submit = app.add_subcommand("submit", "Submit a task; prints its id");
  add_client_options(submit, c);
  submit->add_option("--type", c.type, "Pool")->capture_default_str();
  submit->add_option("--prompt", c.prompt, "Prompt (sets payload.prompt)");
  submit->add_option("--payload", c.payload, "Payload JSON object");
  submit->add_option("--priority", c.priority, "0-9 or low/normal/high");
  submit->add_option("--idempotency-key", c.idempotency_key, "Idempotency key");
  submit->add_option("--webhook-url", c.webhook_url, "Webhook URL");
  submit->add_option("--file", c.file, "Input file (multipart upload)");
  submit->add_flag("--wait", c.wait, "Wait for the task to finish");
  submit->add_option("--timeout", c.timeout_s, "With --wait: give up after this many seconds");
  submit->add_flag("-q,--quiet", c.quiet, "No progress line");
  auto* status = app.add_subcommand("status", "Show a task");
  add_client_options(status, c);
  status->add_option("task_id", c.task_id, "Task id")->required();
  auto* wait =
      app.add_subcommand("wait", "Wait until a task is final; exit code says how it ended");
  add_client_options(wait, c);
  wait->add_option("task_id", c.task_id, "Task id")->required();
  wait->add_option("--timeout", c.timeout_s, "Give up after this many seconds (0: never)");
  wait->add_flag("-q,--quiet", c.quiet, "No progress line");
  auto* cancel = app.add_subcommand("cancel", "Cancel a task");
  add_client_options(cancel, c);
  cancel->add_option("task_id", c.task_id, "Task id")->required();
  auto* list = app.add_subcommand("list", "List tasks, newest first");
  add_client_options(list, c);
  list->add_option("--status", c.status, "QUEUED, RUNNING, DONE, FAILED, CANCELED");
  list->add_option("--type", c.list_type, "Pool");
  list->add_option("--limit", c.limit, "How many")->capture_default_str();

  try {
    app.parse(argc, argv);
    if (!s.config_file.empty()) {
      CLI::ConfigTOML toml;
      std::vector<CLI::ConfigItem> items = toml.from_file(s.config_file);
      std::map<std::string, std::vector<std::string>> top;
      for (const CLI::ConfigItem& item : items) {
        if (!item.parents.empty() || item.name == "++" || item.name == "--") continue;
        bool known = std::any_of(layered.begin(), layered.end(),
                                 [&](const Layered& l) { return l.key == item.name; });
        if (!known) throw CLI::ValidationError(item.name, "unknown setting in " + s.config_file);
        top[item.name] = item.inputs;
      }
      apply_layers(layered, top);
      read_pools(items, s);
    } else {
      apply_layers(layered, {});
    }
    if (s.sync != "full" && s.sync != "normal") {
      throw CLI::ValidationError("--sync", "must be full or normal");
    }
    if (s.log_format != "text" && s.log_format != "json") {
      throw CLI::ValidationError("--log-format", "must be text or json");
    }
    if (s.queue_capacity < 1 || s.max_queued < 1 || s.http_threads < 4 || s.max_body < 1024 ||
        s.fall < 1 || s.rise < 1 || s.max_fails < 1 || s.health_interval_ms < 10 ||
        s.max_attempts < 1 || s.max_attempts > 100 || s.default_timeout_s < 1 ||
        s.max_timeout_s < s.default_timeout_s || s.sse_heartbeat_s < 1 || s.max_streams < 0 ||
        s.inline_result_max < 0 || s.inline_result_max > (64ll << 20)) {
      throw CLI::ValidationError("settings", "a numeric setting is out of range (see --help)");
    }
    if (auto keep = parse_duration_s(s.retain_final)) {
      s.retain_final_s = *keep;
    } else {
      throw CLI::ValidationError("--retain-final",
                                 "must be a duration such as 7d, 12h, 30m, "
                                 "45s or 0, not \"" +
                                     s.retain_final + "\"");
    }
    if (s.max_streams >= s.http_threads) {
      throw CLI::ValidationError("--max-streams",
                                 "must be below --http-threads: each open stream "
                                 "holds a serving thread");
    }
    // Each open stream holds a serving thread: a quarter are always left for everything else.
    if (s.max_streams == 0) s.max_streams = s.http_threads * 3 / 4;
    if (!s.api_token_file.empty()) {
      std::ifstream in(s.api_token_file);
      if (!in) throw CLI::ValidationError("--api-token-file", "cannot read " + s.api_token_file);
      for (std::string line; std::getline(in, line);) {
        while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back())))
          line.pop_back();
        if (!line.empty() && line[0] != '#') s.api_tokens.push_back(line);
      }
    }
    merge_builtin_pools(s);
  } catch (const CLI::ParseError& e) {
    out.exit_code = app.exit(e);
    return out;
  } catch (const std::exception& e) {
    std::cerr << "taskserver: " << e.what() << "\n";
    out.exit_code = 2;
    return out;
  }

  if (demo->parsed())
    out.command = Command::kDemo;
  else if (migrate->parsed())
    out.command = Command::kMigrate;
  else if (mock->parsed())
    out.command = Command::kMockBackend;
  else if (submit->parsed())
    out.command = Command::kSubmit;
  else if (status->parsed())
    out.command = Command::kStatus;
  else if (wait->parsed())
    out.command = Command::kWait;
  else if (cancel->parsed())
    out.command = Command::kCancel;
  else if (list->parsed())
    out.command = Command::kList;
  return out;
}

}  // namespace ts
