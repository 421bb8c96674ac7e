#include "api/api_server.h"

#include <malloc.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <nlohmann/json.hpp>

#include "api/openapi.h"
#include "api/request_parsing.h"
#include "api/task_json.h"
#include "backend/png.h"
#include "core/base64.h"
#include "core/embedded.h"
#include "core/ids.h"
#include "core/metrics.h"
#include "core/time_format.h"

namespace ts {
namespace {

using nlohmann::json;
using httplib::Request;
using httplib::Response;

// Per-request bookkeeping for metrics: set by the pre-routing handler and the route wrapper,
// read by the logger, all on the thread that serves the request.
thread_local const char* t_route = "unmatched";
thread_local std::chrono::steady_clock::time_point t_start;
// The request's answer is held back (hold()): the logger leaves it to answer().
thread_local bool t_deferred = false;

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_json(Response& res, int status, const json& j) {
  res.status = status;
  res.set_content(dump(j), "application/json");
}

void send_text_json(Response& res, int status, std::string body) {
  res.status = status;
  res.set_content(std::move(body), "application/json");
}

void send_error(Response& res, const Status& st) {
  res.status = http_status(st.code());
  if (st.retry_after_s() > 0) res.set_header("Retry-After", std::to_string(st.retry_after_s()));
  res.set_content(error_body(st), "application/json");
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

// The request headers this API reads, found in one pass over the headers: each httplib lookup
// compares names case-insensitively through the whole map, and a submit made eight of them.
// Filled by the pre-routing handler; read by the handler on the same thread, same request.
struct RequestHeaders {
  const std::string* content_type = nullptr;
  const std::string* content_length = nullptr;
  const std::string* authorization = nullptr;
  const std::string* idempotency_key = nullptr;
  bool chunked = false;
  bool conflicting_lengths = false;
};
thread_local RequestHeaders t_headers;

void scan_headers(const Request& req) {
  RequestHeaders h;
  for (const auto& [name, value] : req.headers) {
    if (iequals(name, "Content-Type")) {
      h.content_type = &value;
    } else if (iequals(name, "Content-Length")) {
      if (h.content_length && *h.content_length != value) h.conflicting_lengths = true;
      h.content_length = &value;
    } else if (iequals(name, "Authorization")) {
      h.authorization = &value;
    } else if (iequals(name, "Idempotency-Key")) {
      h.idempotency_key = &value;
    } else if (iequals(name, "Transfer-Encoding")) {
      h.chunked = true;
    }
  }
  t_headers = h;
}

bool is_multipart(const RequestHeaders& h) {
  return h.content_type && h.content_type->size() >= 19 &&
         iequals(std::string_view(*h.content_type).substr(0, 19), "multipart/form-data");
}

// The media type of the current request (t_headers) without parameters, lower case ("" when
// absent).
std::string media_type() {
  std::string ct = t_headers.content_type ? *t_headers.content_type : std::string();
  ct = ct.substr(0, ct.find(';'));
  while (!ct.empty() && std::isspace(static_cast<unsigned char>(ct.back()))) ct.pop_back();
  while (!ct.empty() && std::isspace(static_cast<unsigned char>(ct.front()))) ct.erase(0, 1);
  return lower(ct);
}

// JSON bodies may be declared as JSON, or as what curl -d and simple clients send by default.
// Reads the current request's headers (t_headers).
Status check_json_body_type() {
  std::string mt = media_type();
  if (mt.empty() || mt == "application/json" || mt == "application/x-www-form-urlencoded" ||
      mt == "text/plain" || (mt.size() > 5 && mt.compare(mt.size() - 5, 5, "+json") == 0)) {
    return Status::Ok();
  }
  return Status(Code::kUnsupportedMedia, "unsupported_media_type",
                "the body must be JSON (Content-Type: application/json), not " + mt);
}

// A JSON body (at most --max-body, 1 MiB by default) must arrive within this long, however
// slowly its bytes trickle in: --read-timeout bounds each read, not the whole body.
constexpr auto kBodyDeadline = std::chrono::seconds(30);
// What a client refused an event stream is told to wait before it tries again.
constexpr int kRetryAfterStreamsS = 5;

Status body_incomplete() {
  return Status::Malformed("the body ended before its declared length (Content-Length)");
}

Status body_too_slow() {
  return Status(Code::kMalformed, "request_timeout",
                "the body did not arrive within " + std::to_string(kBodyDeadline.count()) + " s");
}

Status too_large(size_t limit) {
  return Status(Code::kTooLarge, "payload_too_large",
                "the body is larger than the limit of " + std::to_string(limit) + " bytes");
}

// The current request's declared Content-Length (t_headers) against the body limit of `path`
// (--max-upload for uploads, --max-body for the rest): checked before any of the body is read.
Status check_declared_length(const std::string& path, size_t max_body, size_t max_upload) {
  if (!t_headers.content_length) return Status::Ok();
  const std::string& cl = *t_headers.content_length;
  bool upload = (path == "/api/v1/tasks" || path == "/api/v1/audio/async") &&
                is_multipart(t_headers);
  size_t limit = upload ? max_upload : max_body;
  uint64_t n = 0;
  auto [p, ec] = std::from_chars(cl.data(), cl.data() + cl.size(), n);
  if (ec != std::errc() || p != cl.data() + cl.size()) return Status::Malformed("bad Content-Length");
  if (n > limit) return too_large(limit);
  return Status::Ok();
}

std::optional<std::string> idempotency_header() {
  if (!t_headers.idempotency_key) return std::nullopt;
  return *t_headers.idempotency_key;
}

const char* mime_for(const std::string& name) {
  auto ends = [&](const char* ext) {
    std::string e(ext);
    return name.size() >= e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0;
  };
  if (ends(".html")) return "text/html; charset=utf-8";
  if (ends(".js")) return "text/javascript; charset=utf-8";
  if (ends(".css")) return "text/css; charset=utf-8";
  if (ends(".svg")) return "image/svg+xml";
  if (ends(".png")) return "image/png";
  if (ends(".json")) return "application/json";
  return "application/octet-stream";
}

bool sse_write(httplib::DataSink& sink, const std::string& text) {
  return sink.write(text.data(), text.size());
}

// One SSE event; `data` is one line of JSON text.
std::string sse_event(const std::string& data, std::optional<uint64_t> id,
                      const std::string& event = "") {
  std::string out;
  if (id) out += "id: " + std::to_string(*id) + "\n";
  if (!event.empty()) out += "event: " + event + "\n";
  out += "data: " + data + "\n\n";
  return out;
}

// A multipart part as it streams in: `file` goes to a temporary file, small fields to memory.
struct PartSink {
  std::string name, filename, content_type;
  std::string data;  // for fields
  FILE* file = nullptr;
  std::string temp_path;
  int64_t file_size = 0;
};

}  // namespace

struct ApiServer::Impl {
  ApiOptions opt;
  TaskService& svc;
  ServerView view;
  Metrics& metrics;
  const BlobStore& inputs;
  TokenSet tokens;
  RouteTable routes;
  // SSE streams open now. Each holds a serving thread while it lasts, so past opt.max_streams a
  // new one is refused (503) instead of taking the threads every other request needs.
  std::atomic<int> open_streams{0};

  // A stream's claim on one of opt.max_streams; given back when the last copy of the stream's
  // content provider (which holds it) is destroyed, however the stream ended.
  struct StreamClaim {
    std::atomic<int>& open;
    explicit StreamClaim(std::atomic<int>& o) : open(o) {}
    StreamClaim(const StreamClaim&) = delete;
    StreamClaim& operator=(const StreamClaim&) = delete;
    ~StreamClaim() { open.fetch_sub(1, std::memory_order_acq_rel); }
  };

  // A claim for a new stream, or null (and the 503 sent) when opt.max_streams are open.
  std::shared_ptr<StreamClaim> claim_stream(Response& res) {
    if (open_streams.fetch_add(1, std::memory_order_acq_rel) >= opt.max_streams) {
      open_streams.fetch_sub(1, std::memory_order_acq_rel);
      Status st = Status::Unavailable(
          "too_many_streams",
          std::to_string(opt.max_streams) +
              " event streams are open, the most this server serves at once (--max-streams); "
              "retry later, or long-poll GET /api/v1/tasks/{id}?wait=30, which holds no thread");
      st.with_retry_after(kRetryAfterStreamsS);
      send_error(res, st);
      return nullptr;
    }
    return std::make_shared<StreamClaim>(open_streams);
  }

  Impl(ApiOptions o, TaskService& s, ServerView v, Metrics& m, const BlobStore& in)
      : opt(std::move(o)), svc(s), view(std::move(v)), metrics(m), inputs(in),
        tokens(opt.api_tokens) {}

  // Whether the current request (t_headers) may use /api/.
  bool authorized() const {
    return tokens.empty() ||
           tokens.allows(t_headers.authorization ? std::string_view(*t_headers.authorization)
                                                 : std::string_view());
  }

  // Reads a non-multipart body through the content reader, up to `limit` bytes and within
  // kBodyDeadline. A body that ends before its Content-Length (the client went away or stalled
  // past --read-timeout) is an error, never a shorter body taken as whole.
  Status read_body(const httplib::ContentReader& reader, size_t limit, std::string* body) {
    bool over = false, late = false;
    auto deadline = std::chrono::steady_clock::now() + kBodyDeadline;
    bool complete = reader([&](const char* data, size_t len) {
      if (body->size() + len > limit) {
        over = true;
        return false;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        late = true;
        return false;
      }
      body->append(data, len);
      return true;
    });
    if (over) return too_large(limit);
    if (late) return body_too_slow();
    if (!complete) return body_incomplete();
    return Status::Ok();
  }

  // Streams a multipart body: the `file` part to a temp file in inputs/ (fsynced), the other
  // parts (bounded) into `fields`.
  Status read_multipart(const httplib::ContentReader& reader, std::optional<Upload>* upload,
                        std::map<std::string, std::string>* fields) {
    std::vector<PartSink> parts;
    Status failure;
    size_t field_bytes = 0;
    bool complete = reader(
        [&](const httplib::MultipartFormData& header) {
          PartSink p;
          p.name = header.name;
          p.filename = header.filename;
          p.content_type = header.content_type;
          if (p.name == "file") {
            if (upload->has_value() || std::any_of(parts.begin(), parts.end(), [](const PartSink& q) {
                  return q.name == "file";
                })) {
              failure = Status::Invalid("file", "only one part named file is allowed");
              return false;
            }
            p.temp_path = inputs.temp_path();
            p.file = std::fopen(p.temp_path.c_str(), "wb");
            if (!p.file) {
              failure = Status::Unavailable("storage_unavailable", "cannot store the upload");
              return false;
            }
          }
          parts.push_back(std::move(p));
          return true;
        },
        [&](const char* data, size_t len) {
          if (parts.empty()) return false;
          PartSink& p = parts.back();
          if (p.file) {
            if (static_cast<size_t>(p.file_size) + len > opt.max_upload) {
              failure = too_large(opt.max_upload);
              return false;
            }
            if (std::fwrite(data, 1, len, p.file) != len) {
              failure = Status::Unavailable("storage_unavailable", "cannot store the upload");
              return false;
            }
            p.file_size += static_cast<int64_t>(len);
            return true;
          }
          field_bytes += len;
          if (field_bytes > opt.max_body) {
            failure = too_large(opt.max_body);
            return false;
          }
          p.data.append(data, len);
          return true;
        });
    Status st = failure;
    // A reader that stopped without our say-so saw the body end early or go bad: an upload cut
    // short must not become a task with half a file.
    if (st.ok() && !complete) st = body_incomplete();
    for (PartSink& p : parts) {
      if (p.file) {
        bool ok = std::fflush(p.file) == 0 && ::fsync(fileno(p.file)) == 0;
        std::fclose(p.file);
        if (!ok && st.ok()) st = Status::Unavailable("storage_unavailable", "cannot store the upload");
        if (st.ok()) {
          *upload = Upload{p.temp_path, p.filename.empty() ? "upload" : p.filename,
                           p.content_type.empty() ? "application/octet-stream" : p.content_type,
                           p.file_size};
        } else {
          std::remove(p.temp_path.c_str());
        }
      } else {
        (*fields)[p.name] = std::move(p.data);
      }
    }
    if (!st.ok() && upload->has_value()) {
      std::remove((*upload)->temp_path.c_str());
      upload->reset();
    }
    return st;
  }

  // The tasks_submitted_total cell of a pool, remembered per HTTP thread.
  CounterFamily::Cell& submitted_cell(const std::string& type) {
    thread_local std::vector<std::pair<std::string, CounterFamily::Cell*>> cells;
    for (auto& [t, cell] : cells) {
      if (t == type) return *cell;
    }
    CounterFamily::Cell* cell = &metrics.tasks_submitted.cell({type});
    cells.emplace_back(type, cell);
    return *cell;
  }

  void reply_submit(Response& res, const StatusOr<SubmitOutcome>& out) {
    if (!out.ok()) return send_error(res, out.status());
    if (out->created) {
      submitted_cell(out->task.type).inc();
      res.set_header("Location", "/api/v1/tasks/" + out->task.task_id);
    }
    send_text_json(res, out->created ? 202 : 200, task_json(out->task, false));
  }

  // POST /api/v1/tasks: JSON, or multipart with a `task` part and an optional `file`.
  void submit(const Request&, Response& res, const httplib::ContentReader& reader) {
    if (is_multipart(t_headers)) {
      std::optional<Upload> upload;
      std::map<std::string, std::string> fields;
      Status st = read_multipart(reader, &upload, &fields);
      if (!st.ok()) return send_error(res, st);
      auto discard = [&] {
        if (upload) std::remove(upload->temp_path.c_str());
      };
      auto it = fields.find("task");
      if (it == fields.end()) {
        discard();
        return send_error(res, Status::Invalid("task", "a multipart submit needs a part named "
                                                       "task holding the task's JSON"));
      }
      auto task = parse_task_request(it->second);
      if (task.ok()) st = apply_idempotency_header(*task, idempotency_header());
      if (!task.ok() || !st.ok()) {
        discard();
        return send_error(res, task.ok() ? st : task.status());
      }
      return reply_submit(res, svc.submit(std::move(*task), std::move(upload)));
    }
    Status st = check_json_body_type();
    if (!st.ok()) return send_error(res, st);
    std::string body;
    st = read_body(reader, opt.max_body, &body);
    if (!st.ok()) return send_error(res, st);
    auto task = parse_task_request(body);
    if (!task.ok()) return send_error(res, task.status());
    st = apply_idempotency_header(*task, idempotency_header());
    if (!st.ok()) return send_error(res, st);
    submit_task(std::move(*task), res);
  }

  // A request answered after its handler returned (defer_response). The logger skips it;
  // answer() counts it in the metrics when the answer is sent.
  struct Held {
    DeferredCompletion done;
    const char* route;
    std::chrono::steady_clock::time_point start;
    CounterFamily::Cell* submitted = nullptr;  // a held submit's counter, once its task is built
  };
  // For a handler that checked can_defer_response().
  static std::shared_ptr<Held> hold() {
    t_deferred = true;
    return std::make_shared<Held>(Held{defer_response(), t_route, t_start});
  }
  // Counts the request and sends `reply` (nullptr: the response its handler left).
  void answer(Held& held, const char* method, int status, const ReplacementReply* reply) {
    count_request(held.route, method, status, held.start);
    held.done(reply);
  }
  // The JSON error of `st` in place of a held response; without keep_alive the connection is
  // closed after it.
  static ReplacementReply error_reply(const Status& st, bool keep_alive) {
    return {http_status(st.code()), error_body(st), keep_alive};
  }

  // A JSON submit: the 202 is written now and held back until the insert is durable, and this
  // thread serves other requests meanwhile instead of sleeping on the commit. A repeated
  // idempotency key is answered 200 with the first task instead, and a failed insert with its
  // error (and the connection closed).
  void submit_deferred(NewTask task, Response& res) {
    auto held = hold();
    Status st = svc.submit_nowait(
        std::move(task),
        [&](const Task& t) {
          held->submitted = &submitted_cell(t.type);
          res.set_header("Location", "/api/v1/tasks/" + t.task_id);
          send_text_json(res, 202, task_json(t, false));
        },
        [this, held](const Status& committed, const Task* first) {
          if (!committed.ok()) {
            ReplacementReply error = error_reply(committed, false);
            return answer(*held, "POST", error.status, &error);
          }
          if (first) {
            ReplacementReply repeat{200, task_json(*first, false), true};
            return answer(*held, "POST", repeat.status, &repeat);
          }
          held->submitted->inc();
          answer(*held, "POST", 202, nullptr);
        });
    if (st.ok()) return;
    // Refused before the insert (backlog full, shutting down, invalid): answered at once.
    send_error(res, st);
    answer(*held, "POST", res.status, nullptr);
  }

  // http_requests_total and http_request_duration_seconds for one answered request. Each thread
  // remembers its cells, so the hot path neither allocates nor locks.
  void count_request(const char* route, const std::string& method, int status,
                     std::chrono::steady_clock::time_point start) {
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    struct Key {
      const char* route;
      std::string method;
      int code;
      CounterFamily::Cell* cell;
    };
    thread_local std::vector<Key> counters;
    thread_local std::vector<std::pair<const char*, HistogramFamily::Series*>> latencies;
    CounterFamily::Cell* cell = nullptr;
    for (const Key& k : counters) {
      if (k.route == route && k.code == status && k.method == method) cell = k.cell;
    }
    if (!cell) {
      cell = &metrics.http_requests.cell({method, route, std::to_string(status)});
      counters.push_back({route, method, status, cell});
    }
    cell->inc();
    HistogramFamily::Series* series = nullptr;
    for (const auto& [r, s] : latencies) {
      if (r == route) series = s;
    }
    if (!series) {
      series = &metrics.http_duration.series({route});
      latencies.emplace_back(route, series);
    }
    series->observe(secs);
  }

  // A JSON submit: held back for its commit (above) where the server can.
  void submit_task(NewTask task, Response& res) {
    if (can_defer_response()) return submit_deferred(std::move(task), res);
    reply_submit(res, svc.submit(std::move(task)));
  }

  // POST /api/v1/audio/async: multipart `file` (+ optional `task` JSON, + form fields that go
  // into the payload) → a transcribe task.
  void submit_audio(const Request&, Response& res, const httplib::ContentReader& reader) {
    if (!is_multipart(t_headers)) {
      return send_error(res, Status(Code::kUnsupportedMedia, "unsupported_media_type",
                                    "send the audio as multipart/form-data with a part named file"));
    }
    std::optional<Upload> upload;
    std::map<std::string, std::string> fields;
    Status st = read_multipart(reader, &upload, &fields);
    if (!st.ok()) return send_error(res, st);
    if (!upload) return send_error(res, Status::Invalid("file", "a part named file is required"));
    NewTask task;
    task.type = "transcribe";
    json payload = json::object();
    if (auto it = fields.find("task"); it != fields.end()) {
      auto j = parse_json_bounded(it->second);
      StatusOr<NewTask> parsed = j.ok() ? [&]() -> StatusOr<NewTask> {
        json with_type = *j;
        if (with_type.is_object()) with_type["type"] = "transcribe";
        return task_from_json(with_type);
      }() : StatusOr<NewTask>(j.status());
      if (!parsed.ok()) {
        std::remove(upload->temp_path.c_str());
        return send_error(res, parsed.status());
      }
      task = std::move(*parsed);
      payload = json::parse(task.payload, nullptr, false);
      fields.erase(it);
    }
    for (auto& [k, v] : fields) payload[k] = v;
    task.payload = dump(payload);
    st = apply_idempotency_header(task, idempotency_header());
    if (!st.ok()) {
      std::remove(upload->temp_path.c_str());
      return send_error(res, st);
    }
    reply_submit(res, svc.submit(std::move(task), std::move(upload)));
  }

  void submit_image(const Request&, Response& res, const httplib::ContentReader& reader) {
    Status st = check_json_body_type();
    if (!st.ok()) return send_error(res, st);
    std::string body;
    st = read_body(reader, opt.max_body, &body);
    if (!st.ok()) return send_error(res, st);
    auto task = parse_image_request(body);
    if (!task.ok()) return send_error(res, task.status());
    st = apply_idempotency_header(*task, idempotency_header());
    if (!st.ok()) return send_error(res, st);
    submit_task(std::move(*task), res);
  }

  void submit_batch(const Request&, Response& res, const httplib::ContentReader& reader) {
    Status st = check_json_body_type();
    if (!st.ok()) return send_error(res, st);
    std::string body;
    st = read_body(reader, opt.max_body, &body);
    if (!st.ok()) return send_error(res, st);
    auto tasks = parse_batch_request(body);
    if (!tasks.ok()) return send_error(res, tasks.status());
    auto out = svc.submit_batch(std::move(*tasks));
    if (!out.ok()) return send_error(res, out.status());
    bool any_created = false;
    std::string answer;
    JsonWriter w(answer);
    w.begin_object().key("task_ids").begin_array();
    for (const SubmitOutcome& o : *out) w.string(o.task.task_id);
    w.end_array().key("tasks").begin_array();
    for (const SubmitOutcome& o : *out) {
      write_task(w, o.task, false, nullptr, o.created);
      if (o.created) {
        submitted_cell(o.task.type).inc();
        any_created = true;
      }
    }
    w.end_array().end_object();
    send_text_json(res, any_created ? 202 : 200, std::move(answer));
  }

  void get_task(const std::string& id, const Request& req, Response& res) {
    auto wait = int_param(req.params, "wait", 0, opt.max_wait_s, 0);
    if (!wait.ok()) return send_error(res, wait.status());
    if (*wait > 0 && can_defer_response()) return get_task_deferred(id, *wait);
    auto view = svc.get(id, std::chrono::seconds(*wait));
    if (!view.ok()) return send_error(res, view.status());
    send_text_json(res, 200, task_json(*view, true));
  }

  // A long-poll (?wait=N): held back without a thread until the task is final or the wait is
  // over, then answered by the service's long-poll thread. Counted in the metrics when answered.
  void get_task_deferred(const std::string& id, int wait_s) {
    auto held = hold();
    svc.get_async(id, std::chrono::seconds(wait_s), [this, held](StatusOr<TaskView> view) {
      ReplacementReply reply = view.ok() ? ReplacementReply{200, task_json(*view, true), true}
                                         : error_reply(view.status(), true);
      answer(*held, "GET", reply.status, &reply);
    });
  }

  void list_tasks(const Request& req, Response& res) {
    if (req.has_param("task_id")) return get_task(req.get_param_value("task_id"), req, res);
    auto q = parse_list_query(req.params);
    if (!q.ok()) return send_error(res, q.status());
    auto page = svc.list(q->status, q->type, q->limit, q->cursor);
    if (!page.ok()) return send_error(res, page.status());
    std::string body;
    JsonWriter w(body);
    w.begin_object().key("tasks").begin_array();
    for (const Task& t : page->tasks) write_task(w, t, false);
    w.end_array().field("next_cursor", page->next_cursor).end_object();
    send_text_json(res, 200, std::move(body));
  }

  void cancel(const std::string& id, Response& res) {
    auto t = svc.cancel(id);
    if (!t.ok()) return send_error(res, t.status());
    send_text_json(res, 200, task_json(*t, true));
  }

  // The result file is streamed from disk: a large answer is never held in memory whole.
  void result(const std::string& id, Response& res) {
    auto file = svc.result_file(id);
    if (!file.ok()) return send_error(res, file.status());
    auto in = std::make_shared<std::ifstream>(file->path, std::ios::binary);
    if (!*in) return send_error(res, svc.missing_result(id));
    in->seekg(0, std::ios::end);
    size_t size = static_cast<size_t>(in->tellg());
    res.status = 200;
    res.set_content_provider(
        size, file->content_type, [in](size_t offset, size_t length, httplib::DataSink& sink) {
          char buf[64 * 1024];
          in->seekg(static_cast<std::streamoff>(offset));
          size_t want = std::min(length, sizeof buf);
          in->read(buf, static_cast<std::streamsize>(want));
          std::streamsize got = in->gcount();
          return got > 0 && sink.write(buf, static_cast<size_t>(got));
        });
  }

  // GET /api/images/{id}: the first image of an OpenAI-style answer, decoded.
  void image(const std::string& id, Response& res) {
    auto blob = svc.result(id);
    if (!blob.ok()) return send_error(res, blob.status());
    auto bytes = first_image_from_answer(blob->bytes);
    if (!bytes) {
      return send_error(res, Status::Conflict("no_image",
                                              "the backend's answer holds no data[0].b64_json "
                                              "image; GET /api/v1/tasks/" + id +
                                                  "/result returns it as it came"));
    }
    std::string type = sniff_image_type(*bytes);
    res.status = 200;
    res.set_header("Cache-Control", "private, max-age=86400, immutable");
    res.set_content(std::move(*bytes), type);
  }

  // For an SSE stream: the events after *cursor that `filter` takes, waiting up to
  // `heartbeat_s` for the first. The wait is cut into one-second slices with a look at the
  // client between them, so a stream whose client has gone ends (and gives back its claim)
  // within a second: a write to it would fail only at the second heartbeat after. Null when
  // the client is gone.
  std::optional<std::vector<TaskEvent>> next_events(
      httplib::DataSink& sink, uint64_t* cursor, int heartbeat_s,
      const std::function<bool(const TaskEvent&)>& filter, bool* lost) {
    using namespace std::chrono;
    auto until = steady_clock::now() + seconds(heartbeat_s);
    for (;;) {
      auto left = duration_cast<milliseconds>(until - steady_clock::now());
      bool lost_now = false;
      auto events = svc.events().wait_after(
          cursor, std::clamp(left, milliseconds(0), milliseconds(1000)), filter, &lost_now);
      if (lost) *lost = *lost || lost_now;
      if (!events.empty() || svc.events().closed() || steady_clock::now() >= until) {
        return events;
      }
      if (sink.is_writable && !sink.is_writable()) return std::nullopt;
    }
  }

  void task_events(const std::string& id, Response& res) {
    auto first = svc.get(id, std::chrono::milliseconds(0));
    uint64_t cursor = svc.events().last_id();
    // Read again after taking the cursor: a change between the two reads is then both in the
    // snapshot and among the events, and the duplicate is skipped below, never lost.
    first = svc.get(id, std::chrono::milliseconds(0));
    if (!first.ok()) return send_error(res, first.status());
    auto claim = claim_stream(res);
    if (!claim) return;
    struct State {
      uint64_t cursor;
      std::string initial;  // the task's JSON when the stream opened
      TaskState last_status;
      int last_attempt;
      bool sent_initial = false;
    };
    auto state = std::make_shared<State>(
        State{cursor, task_json(*first, true), first->task.status, first->task.attempt});
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    int heartbeat = opt.sse_heartbeat_s;
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, state, id, heartbeat, claim](size_t, httplib::DataSink& sink) {
          if (!state->sent_initial) {
            state->sent_initial = true;
            std::string data;
            JsonWriter w(data);
            w.begin_object();
            w.field("task_id", id);
            w.field("status", to_string(state->last_status));
            w.field("attempt", int64_t{state->last_attempt});
            w.key("task").raw(state->initial);
            w.end_object();
            if (!sse_write(sink, "retry: 2000\n" + sse_event(data, state->cursor))) return false;
            if (is_final(state->last_status)) sink.done();
            return true;
          }
          if (svc.shutting_down()) {
            sink.done();
            return true;
          }
          auto events = next_events(
              sink, &state->cursor, heartbeat,
              [&](const TaskEvent& e) { return e.task_id == id; }, nullptr);
          if (!events) return false;
          if (events->empty()) return sse_write(sink, ": keep-alive\n\n");
          for (const TaskEvent& e : *events) {
            if (e.status == state->last_status && e.attempt == state->last_attempt) continue;
            state->last_status = e.status;
            state->last_attempt = e.attempt;
            std::string data;
            JsonWriter w(data);
            write_event(w, e);
            if (is_final(e.status)) {
              // The final event carries the whole task, so a client needs no second request.
              auto t = svc.get(id, std::chrono::milliseconds(0));
              if (t.ok()) {
                data.pop_back();
                data += ",\"task\":" + task_json(*t, true) + "}";
              }
            }
            if (!sse_write(sink, sse_event(data, e.id))) return false;
            if (is_final(e.status)) {
              sink.done();
              return true;
            }
          }
          return true;
        });
  }

  void all_events(const Request& req, Response& res) {
    uint64_t cursor = svc.events().last_id();
    std::string last = req.get_header_value("Last-Event-ID");
    if (last.empty()) last = req.get_param_value("after");
    if (!last.empty()) {
      uint64_t v = 0;
      auto [p, ec] = std::from_chars(last.data(), last.data() + last.size(), v);
      if (ec == std::errc() && p == last.data() + last.size() && v <= cursor) cursor = v;
    }
    std::optional<std::string> type;
    if (req.has_param("type")) type = req.get_param_value("type");
    auto claim = claim_stream(res);
    if (!claim) return;
    auto state = std::make_shared<uint64_t>(cursor);
    auto started = std::make_shared<bool>(false);
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    int heartbeat = opt.sse_heartbeat_s;
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, state, started, type, heartbeat, claim](size_t, httplib::DataSink& sink) {
          if (!*started) {
            *started = true;
            // A comment first, so clients and proxies see the stream open at once.
            return sse_write(sink, "retry: 2000\n: connected\n\n");
          }
          if (svc.shutting_down()) {
            sink.done();
            return true;
          }
          bool lost = false;
          auto events = next_events(
              sink, state.get(), heartbeat,
              [&](const TaskEvent& e) { return !type || e.type == *type; }, &lost);
          if (!events) return false;
          if (lost && !sse_write(sink, sse_event("{}", std::nullopt, "reset"))) {
            return false;
          }
          if (events->empty()) return sse_write(sink, ": keep-alive\n\n");
          std::string batch;
          for (const TaskEvent& e : *events) {
            std::string data;
            JsonWriter w(data);
            write_event(w, e);
            batch += sse_event(data, e.id);
          }
          return sse_write(sink, batch);
        });
  }

  json backend_json(const std::string& pool, const BackendSnapshot& b) {
    return {{"pool", pool},
            {"url", b.url},
            {"state", b.state},
            {"since", format_rfc3339_ms(b.since_ms)},
            {"slots", b.slots},
            {"slots_busy", b.slots_busy},
            {"successes", b.successes},
            {"failures", b.failures},
            {"client_errors", b.client_errors},
            {"ejections", b.ejections},
            {"last_error", b.last_error.empty() ? json(nullptr) : json(b.last_error)},
            {"last_error_at",
             b.last_error_at_ms ? json(format_rfc3339_ms(b.last_error_at_ms)) : json(nullptr)},
            {"latency_ms", {{"mean", b.latency_mean_ms}, {"p95", b.latency_p95_ms}}}};
  }

  void backends(Response& res) {
    json list = json::array();
    for (const PoolStats& p : view.pools()) {
      for (const BackendSnapshot& b : p.backends) list.push_back(backend_json(p.name, b));
    }
    send_json(res, 200, {{"backends", list}});
  }

  void stats_queues(Response& res) {
    json pools = json::array();
    int64_t now = svc.clock().now_ms();
    for (const PoolStats& p : view.pools()) {
      json oldest = nullptr;
      if (p.oldest_queued_ms) oldest = static_cast<double>(now - *p.oldest_queued_ms) / 1000.0;
      pools.push_back({{"pool", p.name},
                       {"depth", p.queued},
                       {"in_memory", p.in_memory},
                       {"running", p.running},
                       {"max_queued", p.max_queued},
                       {"oldest_queued_age_s", oldest},
                       {"completed_last_minute", p.completed_last_minute},
                       {"throughput_per_minute", p.throughput_per_minute}});
    }
    send_json(res, 200, {{"queues", pools}});
  }

  void stats_workers(Response& res) {
    json pools = json::array();
    for (const PoolStats& p : view.pools()) {
      int slots = 0, busy_slots = 0, up = 0;
      for (const auto& b : p.backends) {
        slots += b.slots;
        busy_slots += b.slots_busy;
        if (b.state != "down" && b.state != "ejected") ++up;
      }
      pools.push_back({{"pool", p.name},
                       {"workers", p.workers},
                       {"busy", p.workers_busy},
                       {"idle", p.workers - p.workers_busy},
                       {"backends", p.backends.size()},
                       {"backends_up", up},
                       {"slots", slots},
                       {"slots_busy", busy_slots}});
    }
    send_json(res, 200, {{"workers", pools}});
  }

  void stats_summary(Response& res) {
    json totals = json::object();
    for (const char* s : {"QUEUED", "RUNNING", "DONE", "FAILED", "CANCELED"}) totals[s] = 0;
    for (const auto& [k, v] : svc.totals()) totals[k] = v;
    int64_t now = svc.clock().now_ms();
    send_json(res, 200,
              {{"version", opt.version},
               {"started_at", format_rfc3339_ms(view.started_at_ms)},
               {"uptime_s", (now - view.started_at_ms) / 1000},
               {"totals", totals},
               {"auth", !tokens.empty()},
               {"last_event_id", svc.events().last_id()}});
  }

  void ready(Response& res) {
    json reasons = json::array();
    if (svc.shutting_down()) reasons.push_back("the server is shutting down");
    Status st = view.store_writable();
    if (!st.ok()) reasons.push_back("store: " + st.message());
    json pools = json::object();
    for (const PoolStats& p : view.pools()) {
      int usable = 0;
      for (const auto& b : p.backends) {
        if (b.state == "up" || b.state == "busy") ++usable;
      }
      pools[p.name] = {{"backends", p.backends.size()}, {"healthy", usable}};
      if (usable == 0) {
        reasons.push_back("pool " + p.name + " has no healthy backend (" +
                          std::to_string(p.backends.size()) + " configured)");
      }
    }
    send_json(res, reasons.empty() ? 200 : 503,
              {{"ready", reasons.empty()}, {"reasons", reasons}, {"pools", pools},
               {"store", st.ok() ? "writable" : st.message()}});
  }

  void metrics_text(Response& res) {
    std::string out;
    metrics.render(out);
    std::vector<std::pair<std::vector<std::string>, double>> queue, active, idle, up, inflight,
        slots, running;
    for (const PoolStats& p : view.pools()) {
      queue.push_back({{p.name}, static_cast<double>(p.queued)});
      running.push_back({{p.name}, static_cast<double>(p.running)});
      active.push_back({{p.name}, static_cast<double>(p.workers_busy)});
      idle.push_back({{p.name}, static_cast<double>(p.workers - p.workers_busy)});
      for (const auto& b : p.backends) {
        up.push_back({{p.name, b.url}, b.state == "up" || b.state == "busy" ? 1.0 : 0.0});
        inflight.push_back({{p.name, b.url}, static_cast<double>(b.slots_busy)});
        slots.push_back({{p.name, b.url}, static_cast<double>(b.slots)});
      }
    }
    write_gauge(out, "task_queue_size", "Tasks QUEUED in the store, by queue (pool).", {"queue"},
                queue);
    write_gauge(out, "task_running", "Tasks RUNNING, by pool.", {"queue"}, running);
    write_gauge(out, "worker_pool_active", "Workers running a task, by pool.", {"pool"}, active);
    write_gauge(out, "worker_pool_idle", "Workers waiting for a task, by pool.", {"pool"}, idle);
    write_gauge(out, "backend_up", "1 when the backend may take requests (up or busy).",
                {"pool", "backend"}, up);
    write_gauge(out, "backend_inflight", "Requests in flight to the backend.",
                {"pool", "backend"}, inflight);
    write_gauge(out, "backend_slots", "Requests the backend may hold at once.",
                {"pool", "backend"}, slots);
    write_gauge(out, "http_event_streams_open",
                "SSE streams open now; past --max-streams a new one gets 503 too_many_streams.",
                {}, {{{}, static_cast<double>(open_streams.load())}});
    if (view.store_memory_bytes) {
      write_gauge(out, "store_sqlite_memory_bytes",
                  "Heap held by SQLite, page caches included (bounded by their cache_size).", {},
                  {{{}, static_cast<double>(view.store_memory_bytes())}});
    }
    // glibc's count of allocated bytes over every arena: unlike RSS it does not include what
    // malloc keeps after a free, so a leak shows here first.
    struct mallinfo2 mi = mallinfo2();
    write_gauge(out, "process_heap_inuse_bytes", "Bytes allocated with malloc and not freed.", {},
                {{{}, static_cast<double>(mi.uordblks + mi.hblkhd)}});
    res.status = 200;
    res.set_content(out, "text/plain; version=0.0.4; charset=utf-8");
  }

  void static_file(const std::string& name, Response& res) {
    for (const EmbeddedFile* f = embedded_web(); f->name; ++f) {
      if (name == f->name) {
        res.status = 200;
        res.set_header("Cache-Control", "no-cache");
        res.set_content(std::string(f->data, f->size), mime_for(name));
        return;
      }
    }
    send_error(res, Status::NotFound("no such file: " + name));
  }
};

ApiServer::ApiServer(ApiOptions options, TaskService& service, ServerView view, Metrics& metrics,
                     const BlobStore& inputs)
    : impl_(std::make_shared<Impl>(std::move(options), service, std::move(view), metrics,
                                   inputs)) {}

void ApiServer::install(HttpServer& server) {
  auto impl = impl_;
  Impl& I = *impl;
  RouteTable& R = I.routes;

  // httplib reads a body before a regular handler runs; its limit must admit uploads, so JSON
  // routes check Content-Length before the body is read (pre-routing) and the size after.
  server.set_payload_max_length(std::max(I.opt.max_body, I.opt.max_upload));

  server.set_pre_routing_handler([impl](const Request& req, Response& res) {
    t_route = "unmatched";
    t_start = std::chrono::steady_clock::now();
    scan_headers(req);
    const std::string& path = req.path;
    bool api = path.rfind("/api/", 0) == 0;
    if (api && !impl->authorized()) {
      t_route = "auth";
      res.set_header("WWW-Authenticate", "Bearer realm=\"taskserver\"");
      send_error(res, Status(Code::kUnauthorized, "unauthorized",
                             "this server needs Authorization: Bearer <token>"));
      return httplib::Server::HandlerResponse::Handled;
    }
    if (impl->svc.shutting_down() && req.method != "GET" && req.method != "HEAD") {
      t_route = "shutting_down";
      res.set_header("Connection", "close");
      send_error(res, Status::Unavailable("shutting_down", "the server is shutting down"));
      return httplib::Server::HandlerResponse::Handled;
    }
    // JSON-only routes refuse other bodies before reading them (httplib would otherwise parse
    // a multipart body itself and answer 400).
    if (req.method == "POST" && (path == "/api/v1/image/async" || path == "/api/v1/tasks/batch")) {
      Status st = check_json_body_type();
      if (!st.ok()) {
        t_route = "unsupported_media";
        res.set_header("Connection", "close");
        send_error(res, st);
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    // Two Content-Length headers that disagree are how requests are smuggled past proxies
    // (RFC 9112 6.3): refused.
    if (t_headers.conflicting_lengths) {
      t_route = "malformed";
      send_error(res, Status::Malformed("conflicting Content-Length headers"));
      return httplib::Server::HandlerResponse::Handled;
    }
    if (Status st = check_declared_length(path, impl->opt.max_body, impl->opt.max_upload);
        !st.ok()) {
      t_route = "too_large";
      // The body is not read, so the connection cannot be reused.
      res.set_header("Connection", "close");
      send_error(res, st);
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });

  // "Expect: 100-continue" for a body over the limit gets the 413 at once instead of a 100
  // that invites the client to send it.
  server.set_expect_100_continue_handler([impl](const Request& req, Response& res) {
    scan_headers(req);
    Status st = check_declared_length(req.path, impl->opt.max_body, impl->opt.max_upload);
    if (st.ok()) return 100;
    t_route = "too_large";
    send_error(res, st);
    return res.status;
  });

  server.set_error_handler([](const Request& req, Response& res) {
    if (!res.body.empty()) return;  // our own JSON error, already written
    Status st;
    switch (res.status) {
      case 404:
        st = Status::NotFound("no route for " + req.method + " " + req.path);
        break;
      case 413:
        st = Status(Code::kTooLarge, "payload_too_large", "the body is too large");
        break;
      case 400: st = Status::Malformed("the request cannot be parsed"); break;
      case 405: st = Status(Code::kMalformed, "method_not_allowed", "method not allowed"); break;
      default:
        st = Status(Code::kInternal, "http_" + std::to_string(res.status),
                    "the request failed with HTTP " + std::to_string(res.status));
    }
    res.set_content(error_body(st), "application/json");
  });

  server.set_exception_handler([](const Request& req, Response& res, std::exception_ptr ep) {
    std::string what = "unknown";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    spdlog::error("{} {}: unhandled exception: {}", req.method, req.path, what);
    send_error(res, Status::Internal("internal error"));
  });

  server.set_logger([impl](const Request& req, const Response& res) {
    if (t_deferred) {  // counted when its answer is sent
      t_deferred = false;
      return;
    }
    impl->count_request(t_route, req.method, res.status, t_start);
  });

  using H = std::function<void(const Request&, Response&)>;
  using HR = std::function<void(const Request&, Response&, const httplib::ContentReader&)>;
  // Every route goes through here: it is named for metrics and listed in /openapi.json.
  auto route = [&](const char* method, const char* pattern, RouteDoc doc, H h) {
    const char* name = doc.name;
    H wrapped = [name, h = std::move(h)](const Request& req, Response& res) {
      t_route = name;
      h(req, res);
    };
    std::string m = method;
    if (m == "GET") server.Get(pattern, wrapped);
    else if (m == "POST") server.Post(pattern, wrapped);
    else if (m == "DELETE") server.Delete(pattern, wrapped);
    R.add(method, std::move(doc));
  };
  auto route_reader = [&](const char* pattern, RouteDoc doc, HR h) {
    const char* name = doc.name;
    server.Post(pattern, [name, h = std::move(h)](const Request& req, Response& res,
                                                   const httplib::ContentReader& reader) {
      t_route = name;
      h(req, res, reader);
    });
    R.add("POST", std::move(doc));
  };

  route("GET", "/health", {"health", "/health", "Liveness: the process answers."},
        [impl](const Request&, Response& res) {
          // `auth` tells the dashboard to ask for a token before its first API call.
          send_json(res, 200, {{"status", "ok"}, {"version", impl->opt.version},
                               {"auth", !impl->tokens.empty()}});
        });
  route_reader("/api/v1/tasks",
               {"submit", "/api/v1/tasks", "Submit a task (JSON, or multipart with task and file)."},
               [impl](const Request& req, Response& res, const httplib::ContentReader& reader) {
                 impl->submit(req, res, reader);
               });
  route("GET", R"(/api/v1/tasks/([^/]+))",
        {"get_task", "/api/v1/tasks/{id}", "A task; ?wait=N long-polls up to N s for a final state."},
        [impl](const Request& req, Response& res) { impl->get_task(req.matches[1], req, res); });
  route("GET", "/api/v1/tasks",
        {"list_tasks", "/api/v1/tasks", "List tasks newest first (status, type, limit, cursor); ?task_id= returns one."},
        [impl](const Request& req, Response& res) { impl->list_tasks(req, res); });
  route_reader("/api/v1/tasks/batch",
               {"submit_batch", "/api/v1/tasks/batch", "Submit many tasks: all accepted or none."},
               [impl](const Request& req, Response& res, const httplib::ContentReader& reader) {
                 impl->submit_batch(req, res, reader);
               });
  route("GET", R"(/api/v1/tasks/([^/]+)/result)",
        {"task_result", "/api/v1/tasks/{id}/result", "The result bytes of a DONE task."},
        [impl](const Request& req, Response& res) { impl->result(req.matches[1], res); });
  route("GET", R"(/api/v1/tasks/([^/]+)/events)",
        {"task_events", "/api/v1/tasks/{id}/events", "Server-Sent Events of one task until it is final."},
        [impl](const Request& req, Response& res) { impl->task_events(req.matches[1], res); });
  route("DELETE", R"(/api/v1/tasks/([^/]+))",
        {"cancel", "/api/v1/tasks/{id}", "Cancel a queued or running task."},
        [impl](const Request& req, Response& res) { impl->cancel(req.matches[1], res); });
  // A content-reader route: httplib would otherwise insist on reading a body, and answer 400 to
  // `curl -XPOST .../cancel`, which sends none (and no Content-Length).
  route_reader(R"(/api/v1/tasks/([^/]+)/cancel)",
               {"cancel", "/api/v1/tasks/{id}/cancel", "Cancel a queued or running task."},
               [impl](const Request& req, Response& res, const httplib::ContentReader& reader) {
                 if (t_headers.content_length || t_headers.chunked) {
                   std::string ignored;
                   Status st = impl->read_body(reader, impl->opt.max_body, &ignored);
                   if (!st.ok()) return send_error(res, st);
                 }
                 impl->cancel(req.matches[1], res);
               });
  route_reader("/api/v1/image/async",
               {"image_async", "/api/v1/image/async", "Seed shape: {prompt, ...} becomes an image task."},
               [impl](const Request& req, Response& res, const httplib::ContentReader& reader) {
                 impl->submit_image(req, res, reader);
               });
  route("GET", R"(/api/images/([^/]+))",
        {"image", "/api/images/{id}", "The first image of a DONE image task, decoded."},
        [impl](const Request& req, Response& res) { impl->image(req.matches[1], res); });
  route_reader("/api/v1/audio/async",
               {"audio_async", "/api/v1/audio/async", "Multipart file (+ task JSON) becomes a transcribe task."},
               [impl](const Request& req, Response& res, const httplib::ContentReader& reader) {
                 impl->submit_audio(req, res, reader);
               });
  route("GET", "/api/v1/events",
        {"events", "/api/v1/events", "Server-Sent Events of every task change."},
        [impl](const Request& req, Response& res) { impl->all_events(req, res); });
  route("GET", "/api/v1/backends",
        {"backends", "/api/v1/backends", "Every backend: state, slots, counters, latency."},
        [impl](const Request&, Response& res) { impl->backends(res); });
  route("GET", "/api/v1/stats/queues",
        {"stats_queues", "/api/v1/stats/queues", "Per pool: depth, oldest queued age, throughput."},
        [impl](const Request&, Response& res) { impl->stats_queues(res); });
  route("GET", "/api/v1/stats/workers",
        {"stats_workers", "/api/v1/stats/workers", "Per pool: busy and idle workers, slots."},
        [impl](const Request&, Response& res) { impl->stats_workers(res); });
  route("GET", "/api/v1/stats",
        {"stats", "/api/v1/stats", "Version, uptime and task totals by state."},
        [impl](const Request&, Response& res) { impl->stats_summary(res); });
  route("GET", "/ready", {"ready", "/ready", "Readiness: store writable and a healthy backend in every pool."},
        [impl](const Request&, Response& res) { impl->ready(res); });
  route("GET", "/metrics", {"metrics", "/metrics", "Prometheus metrics."},
        [impl](const Request&, Response& res) { impl->metrics_text(res); });
  route("GET", "/openapi.json", {"openapi", "/openapi.json", "This API's OpenAPI 3.1 description."},
        [impl](const Request&, Response& res) {
          res.status = 200;
          res.set_content(dump(impl->routes.openapi(impl->opt.version)), "application/json");
        });
  route("GET", "/", {"dashboard", "/", "The dashboard."},
        [impl](const Request&, Response& res) { impl->static_file("index.html", res); });
  route("GET", R"(/web/([A-Za-z0-9_.-]+))", {"web", "/web/{file}", "Dashboard assets."},
        [impl](const Request& req, Response& res) { impl->static_file(req.matches[1], res); });
  // Any other POST is answered without reading its body (httplib would read a chunked body
  // whole, whatever its size, before finding that no route wants it).
  server.Post(".*", [](const Request& req, Response& res, const httplib::ContentReader&) {
    t_route = "unmatched";
    send_error(res, Status::NotFound("no route for " + req.method + " " + req.path));
  });
}

}  // namespace ts
