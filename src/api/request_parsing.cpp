#include "api/request_parsing.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <cctype>
#include <charconv>

#include "service/task_request.h"

namespace ts {
namespace {

std::array<unsigned char, 32> sha256(std::string_view s) {
  std::array<unsigned char, 32> d{};
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), d.data());
  return d;
}

const std::string* first(const QueryParams& params, const std::string& name) {
  auto it = params.find(name);
  return it == params.end() ? nullptr : &it->second;
}

}  // namespace

StatusOr<int> int_param(const QueryParams& params, const std::string& name, int lo, int hi,
                        int dflt) {
  const std::string* v = first(params, name);
  if (!v) return dflt;
  int n = 0;
  auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (v->empty() || ec != std::errc() || p != v->data() + v->size() || n < lo || n > hi) {
    return Status::Invalid(name, name + " must be an integer from " + std::to_string(lo) + " to " +
                                     std::to_string(hi));
  }
  return n;
}

std::optional<TaskState> parse_state_param(std::string name) {
  for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (name == "PROCESSING") return TaskState::kRunning;
  return parse_task_state(name);
}

StatusOr<ListRequest> parse_list_query(const QueryParams& params) {
  ListRequest r;
  if (const std::string* s = first(params, "status"); s && !s->empty()) {
    r.status = parse_state_param(*s);
    if (!r.status) {
      return Status::Invalid(
          "status",
          "status must be one of QUEUED, RUNNING (or processing), DONE, FAILED, CANCELED");
    }
  }
  // Parameters of the list itself, and those other routes' clients may add; the rest filter by
  // label.
  static const char* const kListParams[] = {"status", "type", "limit", "cursor", "task_id", "wait"};
  for (auto it = params.begin(); it != params.end(); it = params.upper_bound(it->first)) {
    const std::string& name = it->first;
    bool known = false;
    for (const char* p : kListParams) known = known || name == p;
    if (known) continue;
    std::string key = name.rfind("label.", 0) == 0 ? name.substr(6) : name;
    std::string field = "label." + key;
    Status st = check_label(key, it->second, field);
    if (!st.ok()) return st;
    if (r.labels.size() == kMaxLabelFilters) {
      return Status::Invalid(
          field, "at most " + std::to_string(kMaxLabelFilters) + " label filters at once");
    }
    bool repeated = false;
    for (const auto& [k, v] : r.labels) repeated = repeated || k == key;
    if (!repeated) r.labels.emplace_back(key, it->second);
  }
  if (const std::string* t = first(params, "type"); t && !t->empty()) {
    if (!is_valid_type_name(*t)) return Status::Invalid("type", "type must name a pool");
    r.type = *t;
  }
  auto limit = int_param(params, "limit", 1, 1000, 50);
  if (!limit.ok()) return limit.status();
  r.limit = *limit;
  if (const std::string* c = first(params, "cursor"); c && !c->empty()) r.cursor = *c;
  return r;
}

std::optional<std::string> bearer_token(std::string_view header) {
  while (!header.empty() && (header.front() == ' ' || header.front() == '\t')) {
    header.remove_prefix(1);
  }
  if (header.size() < 7) return std::nullopt;
  std::string scheme(header.substr(0, 7));
  for (char& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (scheme != "bearer ") return std::nullopt;
  std::string_view token = header.substr(7);
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.remove_suffix(1);
  if (token.empty()) return std::nullopt;
  return std::string(token);
}

TokenSet::TokenSet(const std::vector<std::string>& tokens) {
  for (const auto& t : tokens) digests_.push_back(sha256(t));
}

bool TokenSet::allows(std::string_view authorization_header) const {
  if (digests_.empty()) return true;
  auto token = bearer_token(authorization_header);
  auto given = sha256(token ? *token : std::string_view("\x01no-token"));
  bool ok = false;
  for (const auto& d : digests_) ok |= CRYPTO_memcmp(given.data(), d.data(), d.size()) == 0;
  return ok && token.has_value();
}

}  // namespace ts
