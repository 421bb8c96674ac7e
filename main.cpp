// taskserver: wiring only. Parse the command line, set up logging, run the command
// (src/app/serve.h for the server's, src/cli/ for the client verbs).

#include <iostream>

#include "app/serve.h"
#include "cli/client.h"
#include "config/config.h"
#include "core/logging.h"

int main(int argc, char** argv) {
  // Stop signals are taken by sigwait in the main thread; every thread made later inherits the
  // mask.
  ts::block_stop_signals();
  ts::Parsed parsed = ts::parse_command_line(argc, argv);
  if (parsed.exit_code >= 0) return parsed.exit_code;
  if (!ts::setup_logging(parsed.serve.log_format, parsed.serve.log_level)) {
    std::cerr << "unknown --log-level " << parsed.serve.log_level << "\n";
    return 2;
  }
  switch (parsed.command) {
    case ts::Command::kServe:
      return ts::serve(parsed.serve, false);
    case ts::Command::kDemo:
      return ts::serve(parsed.serve, true);
    case ts::Command::kMigrate:
      return ts::migrate(parsed.serve);
    case ts::Command::kMockBackend:
      return ts::mock_backend(parsed.mock);
    case ts::Command::kSubmit:
      return ts::run_client(ts::ClientVerb::kSubmit, parsed.client);
    case ts::Command::kStatus:
      return ts::run_client(ts::ClientVerb::kStatus, parsed.client);
    case ts::Command::kWait:
      return ts::run_client(ts::ClientVerb::kWait, parsed.client);
    case ts::Command::kCancel:
      return ts::run_client(ts::ClientVerb::kCancel, parsed.client);
    case ts::Command::kList:
      return ts::run_client(ts::ClientVerb::kList, parsed.client);
  }
  return 2;
}
