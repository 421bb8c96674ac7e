#pragma once
// The commands that run a server process, as main.cpp dispatches them: `serve` (and `demo`,
// serve with built-in mock backends), `migrate` and `mock-backend`. Each returns the process's
// exit code. The stop signals (SIGTERM, SIGINT) must be blocked in every thread before these
// run (block_stop_signals): they are taken by sigwait.

#include "config/config.h"

namespace ts {

void block_stop_signals();
int serve(ServeConfig cfg, bool demo);
int migrate(const ServeConfig& cfg);
int mock_backend(const MockConfig& cfg);

}  // namespace ts
