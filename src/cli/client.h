#pragma once
// The client verbs: taskserver submit | status | wait | cancel | list --server URL [--token T].
// Exit codes scripts can use:
//   0 DONE (or the command did what it was asked), 1 FAILED, 2 CANCELED,
//   3 still not final when --timeout ran out, 4 an error (unreachable server, unknown id,
//   rejected request), 5 cancel of a task that was already final.
// Not thread-safe; run from main. The cli module knows nothing of config: config fills its
// ClientOptions.

#include <string>

namespace ts {

inline constexpr int kExitDone = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitCanceled = 2;
inline constexpr int kExitTimeout = 3;
inline constexpr int kExitError = 4;
inline constexpr int kExitAlreadyFinal = 5;

enum class ClientVerb { kSubmit, kStatus, kWait, kCancel, kList };

// What the verbs take from the command line (config.cpp fills it).
struct ClientOptions {
  std::string server = "http://127.0.0.1:8080";
  std::string token;
  std::string type = "image";
  std::string prompt;
  std::string payload;  // JSON object text
  std::string priority;
  std::string idempotency_key;
  std::string webhook_url;
  std::string file;
  std::string task_id;
  std::string status;
  std::string list_type;
  int limit = 20;
  int timeout_s = 0;  // wait: 0 = forever
  bool wait = false;  // submit --wait
  bool quiet = false;
  bool json = false;
};

int run_client(ClientVerb verb, const ClientOptions& options);

}  // namespace ts
