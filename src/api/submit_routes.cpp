// The submit routes: POST /api/v1/tasks (JSON or multipart with a file), the batch, and the
// seed shapes /api/v1/image/async and /api/v1/audio/async.

#include <vector>

#include "api/api_context.h"
#include "api/request_context.h"
#include "api/task_json.h"
#include "api/uploads.h"

namespace ts {
namespace {

using httplib::ContentReader;
using httplib::Request;
using httplib::Response;
using nlohmann::json;

class SubmitRoutes {
 public:
  explicit SubmitRoutes(Context ctx) : ctx_(std::move(ctx)) {}

  // POST /api/v1/tasks: JSON, or multipart with a `task` part and an optional `file`.
  void submit(Response& res, const ContentReader& reader) {
    if (is_multipart()) {
      std::optional<Upload> upload;
      std::map<std::string, std::string> fields;
      Status st = read_multipart(reader, ctx_->inputs, limits(), &upload, &fields);
      if (!st.ok()) return send_error(res, st);
      auto it = fields.find("task");
      if (it == fields.end()) {
        return send_error(res, Status::Invalid("task",
                                               "a multipart submit needs a part named "
                                               "task holding the task's JSON"));
      }
      auto task = parse_task_request(it->second);
      if (task.ok()) st = apply_idempotency_header(*task, idempotency_header());
      if (!task.ok() || !st.ok()) return send_error(res, task.ok() ? st : task.status());
      return reply_submit(res, ctx_->svc.submit(std::move(*task), std::move(upload)));
    }
    submit_json(res, reader, parse_task_request);
  }

  // POST /api/v1/audio/async: multipart `file` (+ optional `task` JSON, + form fields that go
  // into the payload) → a transcribe task.
  void submit_audio(Response& res, const ContentReader& reader) {
    if (!is_multipart()) {
      return send_error(res,
                        Status(Code::kUnsupportedMedia, "unsupported_media_type",
                               "send the audio as multipart/form-data with a part named file"));
    }
    std::optional<Upload> upload;
    std::map<std::string, std::string> fields;
    Status st = read_multipart(reader, ctx_->inputs, limits(), &upload, &fields);
    if (!st.ok()) return send_error(res, st);
    if (!upload) return send_error(res, Status::Invalid("file", "a part named file is required"));
    NewTask task;
    task.type = "transcribe";
    json payload = json::object();
    if (auto it = fields.find("task"); it != fields.end()) {
      auto parsed = parse_typed_task(it->second, "transcribe");
      if (!parsed.ok()) return send_error(res, parsed.status());
      task = std::move(*parsed);
      payload = json::parse(task.payload, nullptr, false);
      fields.erase(it);
    }
    for (auto& [k, v] : fields) payload[k] = v;
    task.payload = dump(payload);
    st = apply_idempotency_header(task, idempotency_header());
    if (!st.ok()) return send_error(res, st);
    reply_submit(res, ctx_->svc.submit(std::move(task), std::move(upload)));
  }

  void submit_image(Response& res, const ContentReader& reader) {
    submit_json(res, reader, parse_image_request);
  }

  void submit_batch(Response& res, const ContentReader& reader) {
    std::string body;
    Status st = read_json_body(reader, &body);
    if (!st.ok()) return send_error(res, st);
    auto tasks = parse_batch_request(body);
    if (!tasks.ok()) return send_error(res, tasks.status());
    auto out = ctx_->svc.submit_batch(std::move(*tasks));
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

 private:
  MultipartLimits limits() const { return {ctx_->opt.max_upload, ctx_->opt.max_body}; }

  // A JSON body parsed into one task by `parse`, then held for its commit.
  void submit_json(Response& res, const ContentReader& reader,
                   StatusOr<NewTask> (*parse)(std::string_view body)) {
    std::string body;
    Status st = read_json_body(reader, &body);
    if (!st.ok()) return send_error(res, st);
    auto task = parse(body);
    if (!task.ok()) return send_error(res, task.status());
    st = apply_idempotency_header(*task, idempotency_header());
    if (!st.ok()) return send_error(res, st);
    submit_held(std::move(*task), res);
  }

  Status read_json_body(const ContentReader& reader, std::string* body) {
    Status st = check_json_body_type();
    if (!st.ok()) return st;
    return read_body(reader, ctx_->opt.max_body, body);
  }

  // The `task` part of an audio upload: its type is always `type`.
  static StatusOr<NewTask> parse_typed_task(const std::string& text, const char* type) {
    auto j = parse_json_bounded(text);
    if (!j.ok()) return j.status();
    json with_type = *j;
    if (with_type.is_object()) with_type["type"] = type;
    return task_from_json(with_type);
  }

  // The tasks_submitted_total cell of a pool, remembered per HTTP thread.
  CounterFamily::Cell& submitted_cell(const std::string& type) {
    thread_local std::vector<std::pair<std::string, CounterFamily::Cell*>> cells;
    for (auto& [t, cell] : cells) {
      if (t == type) return *cell;
    }
    CounterFamily::Cell* cell = &ctx_->metrics.tasks_submitted.cell({type});
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

  // A JSON submit: the 202 is written now and held back until the insert is durable, and this
  // thread serves other requests meanwhile instead of sleeping on the commit. A repeated
  // idempotency key is answered 200 with the first task instead, and a failed insert with its
  // error (and the connection closed).
  void submit_held(NewTask task, Response& res) {
    auto held = hold();
    Context ctx = ctx_;
    Status st = ctx_->svc.submit_nowait(
        std::move(task),
        [&](const Task& t) {
          held->submitted = &submitted_cell(t.type);
          res.set_header("Location", "/api/v1/tasks/" + t.task_id);
          send_text_json(res, 202, task_json(t, false));
        },
        [ctx, held](const Status& committed, const Task* first) {
          if (!committed.ok()) {
            ReplacementReply error = error_reply(committed, false);
            return answer(ctx->metrics, *held, "POST", error.status, &error);
          }
          if (first) {
            ReplacementReply repeat{200, task_json(*first, false), true};
            return answer(ctx->metrics, *held, "POST", repeat.status, &repeat);
          }
          held->submitted->inc();
          answer(ctx->metrics, *held, "POST", 202, nullptr);
        });
    if (st.ok()) return;
    // Refused before the insert (backlog full, shutting down, invalid): answered at once.
    send_error(res, st);
    answer(ctx_->metrics, *held, "POST", res.status, nullptr);
  }

  Context ctx_;
};

}  // namespace

void install_submit_routes(Routes& r, const Context& ctx) {
  auto s = std::make_shared<SubmitRoutes>(ctx);
  r.post(
      "/api/v1/tasks",
      {"submit", "/api/v1/tasks", "Submit a task (JSON, or multipart with task and file)."},
      [s](const Request&, Response& res, const ContentReader& reader) { s->submit(res, reader); });
  r.post("/api/v1/tasks/batch",
         {"submit_batch", "/api/v1/tasks/batch", "Submit many tasks: all accepted or none."},
         [s](const Request&, Response& res, const ContentReader& reader) {
           s->submit_batch(res, reader);
         });
  r.post("/api/v1/image/async",
         {"image_async", "/api/v1/image/async", "Seed shape: {prompt, ...} becomes an image task."},
         [s](const Request&, Response& res, const ContentReader& reader) {
           s->submit_image(res, reader);
         });
  r.post("/api/v1/audio/async",
         {"audio_async", "/api/v1/audio/async",
          "Multipart file (+ task JSON) becomes a transcribe task."},
         [s](const Request&, Response& res, const ContentReader& reader) {
           s->submit_audio(res, reader);
         });
}

}  // namespace ts
