// The Server-Sent Events routes: one task's changes until it is final, and every task's
// changes (the dashboard's feed). Each open stream holds a serving thread, so at most
// --max-streams are open at once.

#include <algorithm>
#include <charconv>

#include "api/api_context.h"
#include "api/request_context.h"
#include "api/task_json.h"

namespace ts {
namespace {

using httplib::Request;
using httplib::Response;

// The headers of every event stream: never cached, never buffered by a proxy.
void stream_headers(Response& res) {
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
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

class EventRoutes {
 public:
  explicit EventRoutes(Context ctx) : ctx_(std::move(ctx)) {}

  void task_events(const std::string& id, Response& res) {
    TaskService& svc = ctx_->svc;
    auto first = svc.view(id);
    uint64_t cursor = svc.events().last_id();
    // Read again after taking the cursor: a change between the two reads is then both in the
    // snapshot and among the events, and the duplicate is skipped below, never lost.
    first = svc.view(id);
    if (!first.ok()) return send_error(res, first.status());
    auto claim = ctx_->claim_stream(res);
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
    stream_headers(res);
    int heartbeat = ctx_->opt.sse_heartbeat_s;
    Context ctx = ctx_;
    res.set_chunked_content_provider("text/event-stream", [this, ctx, state, id, heartbeat, claim](
                                                              size_t, httplib::DataSink& sink) {
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
      if (ctx->svc.shutting_down()) {
        sink.done();
        return true;
      }
      auto events = next_events(
          sink, &state->cursor, heartbeat, [&](const TaskEvent& e) { return e.task_id == id; },
          nullptr);
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
          auto t = ctx->svc.view(id);
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
    TaskService& svc = ctx_->svc;
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
    auto claim = ctx_->claim_stream(res);
    if (!claim) return;
    auto state = std::make_shared<uint64_t>(cursor);
    auto started = std::make_shared<bool>(false);
    stream_headers(res);
    int heartbeat = ctx_->opt.sse_heartbeat_s;
    Context ctx = ctx_;
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, ctx, state, started, type, heartbeat, claim](size_t, httplib::DataSink& sink) {
          if (!*started) {
            *started = true;
            // A comment first, so clients and proxies see the stream open at once.
            return sse_write(sink, "retry: 2000\n: connected\n\n");
          }
          if (ctx->svc.shutting_down()) {
            sink.done();
            return true;
          }
          bool lost = false;
          auto events = next_events(
              sink, state.get(), heartbeat,
              [&](const TaskEvent& e) { return !type || e.type == *type; }, &lost);
          if (!events) return false;
          if (lost && !sse_write(sink, sse_event("{}", std::nullopt, "reset"))) return false;
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

 private:
  // For an SSE stream: the events after *cursor that `filter` takes, waiting up to
  // `heartbeat_s` for the first. The wait is cut into one-second slices with a look at the
  // client between them, so a stream whose client has gone ends (and gives back its claim)
  // within a second: a write to it would fail only at the second heartbeat after. Null when
  // the client is gone.
  std::optional<std::vector<TaskEvent>> next_events(
      httplib::DataSink& sink, uint64_t* cursor, int heartbeat_s,
      const std::function<bool(const TaskEvent&)>& filter, bool* lost) {
    using namespace std::chrono;
    EventHub& events = ctx_->svc.events();
    auto until = steady_clock::now() + seconds(heartbeat_s);
    for (;;) {
      auto left = duration_cast<milliseconds>(until - steady_clock::now());
      bool lost_now = false;
      auto got = events.wait_after(cursor, std::clamp(left, milliseconds(0), milliseconds(1000)),
                                   filter, &lost_now);
      if (lost) *lost = *lost || lost_now;
      if (!got.empty() || events.closed() || steady_clock::now() >= until) return got;
      if (sink.is_writable && !sink.is_writable()) return std::nullopt;
    }
  }

  Context ctx_;
};

}  // namespace

void install_event_routes(Routes& r, const Context& ctx) {
  auto e = std::make_shared<EventRoutes>(ctx);
  r.get(R"(/api/v1/tasks/([^/]+)/events)",
        {"task_events", "/api/v1/tasks/{id}/events",
         "Server-Sent Events of one task until it is final."},
        [e](const Request& req, Response& res) { e->task_events(req.matches[1], res); });
  r.get("/api/v1/events", {"events", "/api/v1/events", "Server-Sent Events of every task change."},
        [e](const Request& req, Response& res) { e->all_events(req, res); });
}

}  // namespace ts
