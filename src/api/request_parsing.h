#pragma once
// Parsers for what clients send besides bodies: query parameters, the Authorization header.
// Pure functions of their input (no I/O): the fuzz targets call them directly. Thread-safe.

#include <array>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "core/task.h"

namespace ts {

// Query parameters as httplib hands them over (a multimap: a name may repeat; the first wins).
using QueryParams = std::multimap<std::string, std::string>;

// An integer parameter within [lo, hi]; `dflt` when absent. kInvalid naming it otherwise.
StatusOr<int> int_param(const QueryParams& params, const std::string& name, int lo, int hi,
                        int dflt);

// GET /api/v1/tasks?status=&type=&limit=&cursor=
// Label filters: label.KEY=VALUE, or (seed 002) any other parameter KEY=VALUE; at most
// kMaxLabelFilters of them, every one must match. status=processing is RUNNING.
inline constexpr size_t kMaxLabelFilters = 4;
struct ListRequest {
  std::optional<TaskState> status;
  std::optional<std::string> type;
  int limit = 50;
  std::optional<std::string> cursor;  // not yet decoded: the service knows its format
  std::vector<std::pair<std::string, std::string>> labels;
};
StatusOr<ListRequest> parse_list_query(const QueryParams& params);
// A task state by its name in any case, with seed 002's "processing" for RUNNING.
std::optional<TaskState> parse_state_param(std::string name);

// The token of "Authorization: Bearer <token>" (scheme case-insensitive), or nullopt.
std::optional<std::string> bearer_token(std::string_view header);

// The accepted API tokens, kept as SHA-256 digests. check() compares the digest of the given
// token with every accepted one in constant time, so timing tells nothing about which bytes
// matched nor which token came close.
class TokenSet {
 public:
  explicit TokenSet(const std::vector<std::string>& tokens);
  bool empty() const { return digests_.empty(); }
  // True when auth is off (no tokens) or `authorization_header` carries an accepted token.
  bool allows(std::string_view authorization_header) const;

 private:
  std::vector<std::array<unsigned char, 32>> digests_;
};

}  // namespace ts
