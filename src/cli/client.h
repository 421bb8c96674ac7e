#pragma once
// The client verbs: taskserver submit | status | wait | cancel | list --server URL [--token T].
// Exit codes scripts can use:
//   0 DONE (or the command did what it was asked), 1 FAILED, 2 CANCELED,
//   3 still not final when --timeout ran out, 4 an error (unreachable server, unknown id,
//   rejected request), 5 cancel of a task that was already final.
// Not thread-safe; run from main.

#include "config/config.h"

namespace ts {

inline constexpr int kExitDone = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitCanceled = 2;
inline constexpr int kExitTimeout = 3;
inline constexpr int kExitError = 4;
inline constexpr int kExitAlreadyFinal = 5;

int run_client(Command command, const ClientConfig& config);

}  // namespace ts
