#pragma once
// One entry point per fuzz target, shared by the libFuzzer executables (tests/fuzz/fuzz_*.cpp,
// built with -DTASKSERVER_FUZZ=ON by scripts/fuzz.sh) and by the doctest replay of the
// committed corpus and regressions (tests/fuzz/regressions_test.cpp), so the two cannot drift.
//
// Each entry feeds its bytes to the parsers that see client or backend bytes and checks what
// their callers rely on. It returns "" when every invariant held, or a description of the first
// one that did not; a crash, leak or undefined behaviour is the sanitizers' to report. Pure and
// thread-compatible, like the parsers.
//
// Target names are the executable names without "fuzz_"; tests/fuzz/corpus/<name>/ holds the
// seeds and tests/fuzz/regressions/<name>/ the inputs that once failed.

#include <httplib.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/request_parsing.h"
#include "backend/backend_client.h"
#include "backend/images_answer.h"
#include "backend/png.h"
#include "core/base64.h"
#include "core/task.h"
#include "core/url.h"
#include "service/task_request.h"
#include "service/task_service.h"

namespace ts::fuzz {

using Failure = std::string;  // "" when every invariant held

namespace detail {

inline std::string show(std::string_view s) {
  std::string out;
  for (unsigned char c : s.substr(0, 120)) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (s.size() > 120) out += "...";
  return out;
}

// A rejected request: the API maps the code onto 400 or 422 and names the field.
inline Failure check_rejection(const Status& st, const char* who) {
  if (st.code() != Code::kMalformed && st.code() != Code::kInvalid) {
    return std::string(who) + ": rejected with a code other than 400/422";
  }
  if (st.slug().empty() || st.message().empty()) {
    return std::string(who) + ": rejection without slug or message";
  }
  if (st.code() == Code::kInvalid && st.field().empty()) {
    return std::string(who) + ": 422 without a field";
  }
  return {};
}

// An accepted task: everything the store and the workers take for granted.
inline Failure check_task(const NewTask& t, const char* who) {
  std::string w(who);
  if (!is_valid_type_name(t.type)) return w + ": accepted type " + show(t.type);
  if (t.priority < kMinPriority || t.priority > kMaxPriority) {
    return w + ": accepted priority " + std::to_string(t.priority);
  }
  if (t.max_attempts && (*t.max_attempts < kMinMaxAttempts || *t.max_attempts > kMaxMaxAttempts)) {
    return w + ": accepted max_attempts " + std::to_string(*t.max_attempts);
  }
  if (t.timeout_s && (*t.timeout_s < kMinTimeoutS || *t.timeout_s > kMaxTimeoutS)) {
    return w + ": accepted timeout_s " + std::to_string(*t.timeout_s);
  }
  if (t.idempotency_key && !check_idempotency_key(*t.idempotency_key, "k").ok()) {
    return w + ": accepted idempotency_key " + show(*t.idempotency_key);
  }
  if (t.webhook_url &&
      (t.webhook_url->size() > kMaxWebhookUrlBytes || !parse_url(*t.webhook_url))) {
    return w + ": accepted webhook_url " + show(*t.webhook_url);
  }
  // The payload is stored as text and forwarded as the backend's body: it must be an object
  // that parses again under the same bounds.
  auto payload = parse_json_bounded(t.payload);
  if (!payload.ok() || !payload->is_object()) {
    return w + ": payload does not re-parse as an object: " + show(t.payload);
  }
  if (t.type == "image") {
    auto p = payload->find("prompt");
    if (p == payload->end() || !p->is_string() || p->get<std::string>().empty()) {
      return w + ": image task without a prompt";
    }
  }
  return {};
}

inline bool same_task(const NewTask& a, const NewTask& b) {
  return a.type == b.type && a.payload == b.payload && a.priority == b.priority &&
         a.max_attempts == b.max_attempts && a.timeout_s == b.timeout_s &&
         a.idempotency_key == b.idempotency_key && a.webhook_url == b.webhook_url;
}

inline Failure check_list_request(const QueryParams& params, const char* who) {
  std::string w(who);
  auto q = parse_list_query(params);
  if (!q.ok()) return check_rejection(q.status(), who);
  if (q->limit < 1 || q->limit > 1000) return w + ": accepted limit " + std::to_string(q->limit);
  if (q->type && !is_valid_type_name(*q->type)) return w + ": accepted type " + show(*q->type);
  if (q->cursor && q->cursor->empty()) return w + ": accepted an empty cursor";
  if (q->cursor) {
    auto seq = TaskService::decode_cursor(*q->cursor);
    if (seq && (*seq <= 0 || TaskService::decode_cursor(TaskService::encode_cursor(*seq)) != seq)) {
      return w + ": cursor " + show(*q->cursor) + " decodes to a seq that does not round-trip";
    }
  }
  for (auto [name, lo, hi, dflt] :
       {std::tuple<const char*, int, int, int>{"wait", 0, 60, 0}, {"limit", 1, 1000, 50}}) {
    auto n = int_param(params, name, lo, hi, dflt);
    if (n.ok() && (*n < lo || *n > hi)) return w + ": int_param out of its bounds";
    if (!n.ok()) {
      if (Failure f = check_rejection(n.status(), who); !f.empty()) return f;
      if (n.status().field() != name) return w + ": int_param names another field";
    }
  }
  return {};
}

}  // namespace detail

// Submit bodies: POST /api/v1/tasks, /api/v1/tasks/batch, /api/v1/image/async.
inline Failure task_request(std::string_view data) {
  using detail::check_rejection;
  using detail::check_task;
  auto single = parse_task_request(data);
  if (single.ok()) {
    if (Failure f = check_task(*single, "parse_task_request"); !f.empty()) return f;
  } else if (Failure f = check_rejection(single.status(), "parse_task_request"); !f.empty()) {
    return f;
  }

  auto batch = parse_batch_request(data);
  if (batch.ok()) {
    if (batch->empty() || batch->size() > kMaxBatchSize)
      return "batch: accepted a batch of size " + std::to_string(batch->size());
    for (const NewTask& t : *batch) {
      if (Failure f = check_task(t, "parse_batch_request"); !f.empty()) return f;
    }
  } else if (Failure f = check_rejection(batch.status(), "parse_batch_request"); !f.empty()) {
    return f;
  }

  // A body that is a valid task is a valid one-task batch, with the same result. (Two more
  // levels of nesting: only for bodies that leave room for them.)
  // (A byte order mark is skipped only at the start of a document.)
  if (data.substr(0, 3) != "\xEF\xBB\xBF" && parse_json_bounded(data, kMaxJsonDepth - 2).ok()) {
    std::string wrapped = "{\"tasks\":[" + std::string(data) + "]}";
    auto one = parse_batch_request(wrapped);
    if (single.ok() != one.ok()) {
      return single.ok() ? "a task accepted alone is refused as a one-task batch"
                         : "a task refused alone is accepted as a one-task batch";
    }
    if (single.ok() && (one->size() != 1 || !detail::same_task(*single, (*one)[0]))) {
      return "a task and the same task in a batch parse differently";
    }
    if (!single.ok() && single.status().code() != one.status().code()) {
      return "a task and the same task in a batch are rejected with different codes";
    }
  }

  auto image = parse_image_request(data);
  if (image.ok()) {
    if (image->type != "image") return "parse_image_request: type is not image";
    if (Failure f = check_task(*image, "parse_image_request"); !f.empty()) return f;
    auto payload = nlohmann::json::parse(image->payload, nullptr, false);
    for (const char* k :
         {"priority", "max_attempts", "timeout_s", "idempotency_key", "webhook_url"}) {
      if (payload.contains(k))
        return std::string("parse_image_request: option ") + k + " left in the payload";
    }
  } else if (Failure f = check_rejection(image.status(), "parse_image_request"); !f.empty()) {
    return f;
  }
  return {};
}

// Query strings: GET /api/v1/tasks?status=&type=&limit=&cursor= and ?wait=. The input is the
// raw query text; it is split the simple way (no percent-decoding) and the way httplib does.
inline Failure list_query(std::string_view data) {
  QueryParams simple;
  size_t at = 0;
  while (at <= data.size()) {
    size_t amp = data.find('&', at);
    std::string_view pair = data.substr(at, amp == std::string_view::npos ? amp : amp - at);
    size_t eq = pair.find('=');
    simple.emplace(std::string(pair.substr(0, eq)),
                   eq == std::string_view::npos ? "" : std::string(pair.substr(eq + 1)));
    if (amp == std::string_view::npos) break;
    at = amp + 1;
  }
  if (Failure f = detail::check_list_request(simple, "split query"); !f.empty()) return f;
  httplib::Params decoded;
  httplib::detail::parse_query_text(std::string(data), decoded);
  return detail::check_list_request(decoded, "httplib query");
}

// List cursors: opaque to clients, handed back in ?cursor=.
inline Failure cursor(std::string_view data) {
  auto seq = TaskService::decode_cursor(std::string(data));
  if (seq) {
    if (*seq <= 0) return "decode_cursor: accepted seq " + std::to_string(*seq);
    if (data.size() > 64) return "decode_cursor: accepted a cursor over 64 bytes";
    if (TaskService::decode_cursor(TaskService::encode_cursor(*seq)) != seq) {
      return "encode_cursor(decode_cursor(x)) does not decode to the same seq";
    }
  }
  if (data.size() >= 8) {
    int64_t v = 0;
    std::memcpy(&v, data.data(), 8);
    if (v > 0) {
      std::string c = TaskService::encode_cursor(v);
      if (TaskService::decode_cursor(c) != v) {
        return "decode_cursor(encode_cursor(" + std::to_string(v) + ")) differs";
      }
    }
  }
  return {};
}

// Headers: Authorization and Idempotency-Key. The input is "<header>\n<other>": the other
// part is the accepted token, and the body's idempotency_key.
inline Failure headers(std::string_view data) {
  size_t nl = data.find('\n');
  std::string header(data.substr(0, nl));
  std::string other(nl == std::string_view::npos ? "" : data.substr(nl + 1));

  auto token = bearer_token(header);
  if (token) {
    if (token->empty()) return "bearer_token: empty token";
    if (token->front() == ' ' || token->back() == ' ' || token->back() == '\t') {
      return "bearer_token: token not trimmed: " + detail::show(*token);
    }
  }
  if (!TokenSet({}).allows(header)) return "TokenSet: auth off, yet refused";
  if (TokenSet({other}).allows(header) != (token && *token == other)) {
    return "TokenSet::allows disagrees with bearer_token";
  }
  if (!other.empty() && other.front() != ' ' && other.front() != '\t' && other.back() != ' ' &&
      other.back() != '\t' && !TokenSet({"x", other}).allows("Bearer " + other)) {
    return "TokenSet: refused its own token " + detail::show(other);
  }

  bool key_ok = !header.empty() && header.size() <= kMaxIdempotencyKeyBytes;
  for (unsigned char c : header) key_ok = key_ok && c >= 0x20 && c != 0x7f;
  Status st = check_idempotency_key(header, "Idempotency-Key");
  if (st.ok() != key_ok) return "check_idempotency_key: wrong verdict on " + detail::show(header);
  if (!st.ok() && st.field() != "Idempotency-Key") return "check_idempotency_key: wrong field";

  for (bool body_has_key : {false, true}) {
    NewTask t;
    if (body_has_key) t.idempotency_key = other;
    Status applied = apply_idempotency_header(t, header);
    bool want = key_ok && (!body_has_key || other == header);
    if (applied.ok() != want) return "apply_idempotency_header: wrong verdict";
    if (applied.ok() && t.idempotency_key != header) return "apply_idempotency_header: key lost";
    if (!applied.ok() && (applied.code() != Code::kInvalid || applied.field().empty())) {
      return "apply_idempotency_header: not a 422 naming the header";
    }
    NewTask u;
    if (body_has_key) u.idempotency_key = other;
    std::optional<std::string> before = u.idempotency_key;
    if (!apply_idempotency_header(u, std::nullopt).ok() || u.idempotency_key != before) {
      return "apply_idempotency_header: an absent header changed the task";
    }
  }
  return {};
}

// A backend's answer to an image request, and the image bytes it carries.
inline Failure backend_answer(std::string_view data) {
  static const char* kTypes[] = {"image/png", "image/jpeg", "image/webp",
                                 "application/octet-stream"};
  auto check_bytes = [&](std::string_view bytes, const char* who) -> Failure {
    std::string type = sniff_image_type(bytes);
    bool known = false;
    for (const char* k : kTypes) known = known || type == k;
    if (!known) return std::string(who) + ": sniffed " + type;
    if ((type == "image/png") != looks_like_png(bytes)) {
      return std::string(who) + ": sniff_image_type and looks_like_png disagree";
    }
    return {};
  };
  if (Failure f = check_bytes(data, "raw answer"); !f.empty()) return f;
  auto image = first_image_from_answer(data);
  if (image) {
    if (Failure f = check_bytes(*image, "decoded image"); !f.empty()) return f;
    if (base64_decode(base64_encode(*image)) != image) return "decoded image does not round-trip";
  }
  // The scanner reads answers as they stream in: the same verdict and image in any pieces.
  bool whole = is_images_answer(data);
  if (image && !whole) return "an image was decoded from an answer judged not an images answer";
  for (size_t pieces : {size_t{2}, size_t{3}, size_t{7}, data.size()}) {
    if (pieces == 0 || pieces > data.size()) continue;
    std::string got;
    ImagesAnswerScanner scan([&](std::string_view b) {
      got.append(b);
      return true;
    });
    size_t step = (data.size() + pieces - 1) / pieces;
    for (size_t at = 0; at < data.size(); at += step) scan.feed(data.substr(at, step));
    bool split = scan.finish();
    if (split != whole) return "a split answer is judged differently from the whole";
    if (split && scan.has_b64() && (!image || got != *image)) {
      return "a split answer decodes to another image";
    }
  }
  // Against a JSON parser: what the scanner accepts, nlohmann accepts as an images answer with
  // the same image (escaped surrogates aside, which nlohmann checks and the scanner skips);
  // and on JSON nlohmann writes itself, the two agree both ways.
  auto reference = [](const nlohmann::json& doc, std::optional<std::string>* img) {
    if (!doc.is_object()) return false;
    auto d = doc.find("data");
    if (d == doc.end() || !d->is_array() || d->empty() || !(*d)[0].is_object()) return false;
    const auto& first = (*d)[0];
    if (auto b = first.find("b64_json"); b != first.end()) {
      if (!b->is_string()) return false;
      *img = base64_decode(b->get<std::string>());
      return img->has_value();
    }
    auto u = first.find("url");
    return u != first.end() && u->is_string();
  };
  if (data.find('\0') == std::string_view::npos) {
    auto doc = nlohmann::json::parse(data.begin(), data.end(), nullptr, false);
    std::optional<std::string> ref_image;
    bool ref = !doc.is_discarded() && reference(doc, &ref_image);
    if (whole && data.find("\\u") == std::string_view::npos) {
      if (!ref) return "the scanner accepts an answer a JSON parser does not";
      if (image != ref_image) return "the scanner and a JSON parser decode different images";
    }
    if (!doc.is_discarded()) {
      std::string canonical = doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      std::optional<std::string> again;
      bool ref_canonical = reference(nlohmann::json::parse(canonical), &again);
      if (is_images_answer(canonical) != ref_canonical) {
        return "the scanner and a JSON parser disagree on a canonical answer";
      }
      if (ref_canonical && first_image_from_answer(canonical) != again) {
        return "the scanner decodes a canonical answer's image differently";
      }
    }
  }
  return {};
}

// Base64 as backends send images (standard alphabet) and as cursors travel (URL-safe).
inline Failure base64(std::string_view data) {
  if (base64_decode(base64_encode(data)) != std::string(data)) return "base64 round trip";
  if (base64url_decode(base64url_encode(data)) != std::string(data)) return "base64url round trip";
  std::string url = base64url_encode(data);
  if (url.find_first_of("+/=") != std::string::npos) return "base64url_encode: not URL-safe";
  if (base64_encode(data).size() != (data.size() + 2) / 3 * 4) return "base64_encode: length";

  size_t significant = data.size();
  while (significant > 0 && data[significant - 1] == '=') --significant;
  if (auto d = base64_decode(data)) {
    if (d->size() != significant * 6 / 8) return "base64_decode: length";
    if (base64_decode(base64_encode(*d)) != d) return "base64_decode: result does not round-trip";
  }
  if (auto d = base64url_decode(data)) {
    if (d->size() != data.size() * 6 / 8) return "base64url_decode: length";
    if (base64url_decode(base64url_encode(*d)) != d) {
      return "base64url_decode: result does not round-trip";
    }
  }
  return {};
}

// Backend and webhook URLs (IMAGE_GEN_URL_n, webhook_url).
inline Failure url(std::string_view data) {
  auto u = parse_url(data);
  if (!u) return {};
  if (u->scheme != "http" && u->scheme != "https") return "parse_url: scheme " + u->scheme;
  if (u->host.empty()) return "parse_url: empty host";
  if (u->port < 1 || u->port > 65535) return "parse_url: port " + std::to_string(u->port);
  if (!u->path.empty() && (u->path.front() != '/' || u->path.back() == '/')) {
    return "parse_url: path " + detail::show(u->path);
  }
  for (unsigned char c : u->host + u->path) {
    if (c <= 0x20 || c == 0x7f) return "parse_url: control or space in host or path";
  }
  if (u->host.find_first_of("/?#@") != std::string::npos) {
    return "parse_url: host holds / ? # or @: " + detail::show(u->host);
  }
  auto again = parse_url(u->origin() + u->path);
  if (!again || again->scheme != u->scheme || again->host != u->host || again->port != u->port ||
      again->path != u->path) {
    return "parse_url: origin() + path does not parse back the same: " +
           detail::show(u->origin() + u->path);
  }
  return {};
}

// A backend's Retry-After header.
inline Failure retry_after(std::string_view data) {
  int64_t ms = parse_retry_after_ms(std::string(data));
  if (ms < 0 || ms > 3600 * 1000 || ms % 1000 != 0) {
    return "parse_retry_after_ms: " + std::to_string(ms);
  }
  return {};
}

struct Target {
  const char* name;
  Failure (*run)(std::string_view);
};

inline constexpr Target kTargets[] = {
    {"task_request", task_request},
    {"list_query", list_query},
    {"cursor", cursor},
    {"headers", headers},
    {"backend_answer", backend_answer},
    {"base64", base64},
    {"url", url},
    {"retry_after", retry_after},
};

}  // namespace ts::fuzz

// Defines LLVMFuzzerTestOneInput for one entry: a failed invariant aborts, so libFuzzer saves
// the input as a crash.
#define TS_FUZZ_TARGET(entry)                                                                 \
  extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {                   \
    ts::fuzz::Failure f = entry(std::string_view(reinterpret_cast<const char*>(data), size)); \
    if (!f.empty()) {                                                                         \
      std::fprintf(stderr, "invariant failed: %s\n", f.c_str());                              \
      std::abort();                                                                           \
    }                                                                                         \
    return 0;                                                                                 \
  }
