// The routes that read and change one task or list them: GET /api/v1/tasks/{id} (also held as
// a long-poll), GET /api/v1/tasks, cancel, and the result (as stored, or the image decoded).

#include <fstream>

#include "api/api_context.h"
#include "api/request_context.h"
#include "api/task_json.h"
#include "backend/images_answer.h"
#include "backend/png.h"
#include "service/task_request.h"

namespace ts {
namespace {

using httplib::ContentReader;
using httplib::Request;
using httplib::Response;

constexpr size_t kImageChunk = 64 * 1024;

class TaskRoutes {
 public:
  explicit TaskRoutes(Context ctx) : ctx_(std::move(ctx)) {}

  void get_task(const std::string& id, const Request& req, Response& res) {
    auto wait = int_param(req.params, "wait", 0, ctx_->opt.max_wait_s, 0);
    if (!wait.ok()) return send_error(res, wait.status());
    if (*wait > 0) return get_task_held(id, *wait);
    auto view = ctx_->svc.view(id);
    if (!view.ok()) return send_error(res, view.status());
    send_text_json(res, 200, task_json(*view, true));
  }

  void list_tasks(const Request& req, Response& res) {
    if (req.has_param("task_id")) return get_task(req.get_param_value("task_id"), req, res);
    auto q = parse_list_query(req.params);
    if (!q.ok()) return send_error(res, q.status());
    auto page = ctx_->svc.list(q->status, q->type, q->limit, q->cursor, q->labels);
    if (!page.ok()) return send_error(res, page.status());
    std::string body;
    JsonWriter w(body);
    w.begin_object().key("tasks").begin_array();
    for (const Task& t : page->tasks) write_task(w, t, false);
    w.end_array().field("next_cursor", page->next_cursor).end_object();
    send_text_json(res, 200, std::move(body));
  }

  void cancel(const std::string& id, Response& res) {
    auto t = ctx_->svc.cancel(id);
    if (!t.ok()) return send_error(res, t.status());
    send_text_json(res, 200, task_json(*t, true));
  }

  void retry(const std::string& id, Response& res) {
    auto t = ctx_->svc.retry(id);
    if (!t.ok()) return send_error(res, t.status());
    send_text_json(res, 200, task_json(*t, true));
  }

  // POST /api/v1/tasks/retry {status?, type?, labels?, limit?}
  void retry_matching(const std::string& body, Response& res) {
    auto filter = parse_retry_filter(body);
    if (!filter.ok()) return send_error(res, filter.status());
    auto out = ctx_->svc.retry_matching(*filter);
    if (!out.ok()) return send_error(res, out.status());
    std::string answer;
    JsonWriter w(answer);
    w.begin_object().field("count", static_cast<int64_t>(out->task_ids.size()));
    w.key("task_ids").begin_array();
    for (const std::string& id : out->task_ids) w.string(id);
    w.end_array().field("skipped_backlog_full", int64_t{out->skipped_backlog_full}).end_object();
    send_text_json(res, 200, std::move(answer));
  }

  // The result as stored: small ones from the store, large ones streamed from their file, so a
  // large answer is never held in memory whole.
  void result(const std::string& id, Response& res) {
    auto stored = ctx_->svc.result(id);
    if (!stored.ok()) return send_error(res, stored.status());
    if (stored->bytes) {
      res.status = 200;
      res.set_content(std::move(*stored->bytes), stored->content_type);
      return;
    }
    auto in = std::make_shared<std::ifstream>(stored->path, std::ios::binary);
    if (!*in) return send_error(res, ctx_->svc.missing_result(id));
    in->seekg(0, std::ios::end);
    size_t size = static_cast<size_t>(in->tellg());
    res.status = 200;
    res.set_content_provider(size, stored->content_type,
                             [in](size_t offset, size_t length, httplib::DataSink& sink) {
                               char buf[64 * 1024];
                               in->seekg(static_cast<std::streamoff>(offset));
                               size_t want = std::min(length, sizeof buf);
                               in->read(buf, static_cast<std::streamsize>(want));
                               std::streamsize got = in->gcount();
                               return got > 0 && sink.write(buf, static_cast<size_t>(got));
                             });
  }

  // GET /api/images/{id}: the first image of an OpenAI-style answer, decoded. An answer kept in
  // a file is read twice, a chunk at a time: once to check it and learn the image's type, then
  // decoded as it is sent.
  void image(const std::string& id, Response& res) {
    auto stored = ctx_->svc.result(id);
    if (!stored.ok()) return send_error(res, stored.status());
    Status no_image = Status::Conflict("no_image",
                                       "the backend's answer holds no data[0].b64_json image; "
                                       "GET /api/v1/tasks/" +
                                           id + "/result returns it as it came");
    res.set_header("Cache-Control", "private, max-age=86400, immutable");
    if (stored->bytes) {
      auto bytes = first_image_from_answer(*stored->bytes);
      if (!bytes) return send_error(res, no_image);
      std::string type = sniff_image_type(*bytes);
      res.status = 200;
      res.set_content(std::move(*bytes), type);
      return;
    }
    std::ifstream check(stored->path, std::ios::binary);
    if (!check) return send_error(res, ctx_->svc.missing_result(id));
    ImagesAnswerScanner scan;
    std::vector<char> buf(kImageChunk);
    while (check.read(buf.data(), static_cast<std::streamsize>(buf.size())) || check.gcount() > 0) {
      if (!scan.feed(std::string_view(buf.data(), static_cast<size_t>(check.gcount())))) break;
    }
    if (!scan.finish() || !scan.has_b64()) return send_error(res, no_image);
    struct Stream {
      std::ifstream in;
      ImagesAnswerScanner scan;
      std::vector<char> buf = std::vector<char>(kImageChunk);
    };
    auto stream = std::make_shared<Stream>();
    stream->in.open(stored->path, std::ios::binary);
    if (!stream->in) return send_error(res, ctx_->svc.missing_result(id));
    res.status = 200;
    res.set_chunked_content_provider(
        sniff_image_head(scan.image_head()), [stream](size_t, httplib::DataSink& sink) {
          stream->scan = ImagesAnswerScanner(
              [&sink](std::string_view bytes) { return sink.write(bytes.data(), bytes.size()); });
          while (stream->in.read(stream->buf.data(),
                                 static_cast<std::streamsize>(stream->buf.size())) ||
                 stream->in.gcount() > 0) {
            std::string_view chunk(stream->buf.data(), static_cast<size_t>(stream->in.gcount()));
            if (!stream->scan.feed(chunk)) return false;
          }
          if (!stream->scan.finish()) return false;
          sink.done();
          return true;
        });
  }

 private:
  // A long-poll (?wait=N): held back without a thread until the task is final or the wait is
  // over, then answered by the service's long-poll thread. Counted in the metrics when answered.
  void get_task_held(const std::string& id, int wait_s) {
    auto held = hold();
    Context ctx = ctx_;
    ctx_->svc.get_async(id, std::chrono::seconds(wait_s), [ctx, held](StatusOr<TaskView> view) {
      ReplacementReply reply = view.ok() ? ReplacementReply{200, task_json(*view, true), true}
                                         : error_reply(view.status(), true);
      answer(ctx->metrics, *held, "GET", reply.status, &reply);
    });
  }

  Context ctx_;
};

}  // namespace

void install_task_routes(Routes& r, const Context& ctx) {
  auto t = std::make_shared<TaskRoutes>(ctx);
  r.get(
      R"(/api/v1/tasks/([^/]+))",
      {"get_task", "/api/v1/tasks/{id}", "A task; ?wait=N long-polls up to N s for a final state."},
      [t](const Request& req, Response& res) { t->get_task(req.matches[1], req, res); });
  r.get("/api/v1/tasks",
        {"list_tasks", "/api/v1/tasks",
         "List tasks newest first (status, type, limit, cursor); ?task_id= returns one."},
        [t](const Request& req, Response& res) { t->list_tasks(req, res); });
  r.get(R"(/api/v1/tasks/([^/]+)/result)",
        {"task_result", "/api/v1/tasks/{id}/result", "The result bytes of a DONE task."},
        [t](const Request& req, Response& res) { t->result(req.matches[1], res); });
  r.del(R"(/api/v1/tasks/([^/]+))",
        {"cancel", "/api/v1/tasks/{id}", "Cancel a queued or running task."},
        [t](const Request& req, Response& res) { t->cancel(req.matches[1], res); });
  // A route that reads its body: httplib would otherwise insist on reading one, and answer 400
  // to `curl -XPOST .../cancel`, which sends none (and no Content-Length).
  Context c = ctx;
  r.post(R"(/api/v1/tasks/([^/]+)/cancel)",
         {"cancel", "/api/v1/tasks/{id}/cancel", "Cancel a queued or running task."},
         [t, c](const Request& req, Response& res, const ContentReader& reader) {
           if (request().headers.content_length || request().headers.chunked) {
             std::string ignored;
             Status st = read_body(reader, c->opt.max_body, &ignored);
             if (!st.ok()) return send_error(res, st);
           }
           t->cancel(req.matches[1], res);
         });
  // Bodies are optional here as for cancel: `curl -XPOST .../retry` sends none.
  r.post(R"(/api/v1/tasks/([^/]+)/retry)",
         {"retry", "/api/v1/tasks/{id}/retry",
          "Put a FAILED or CANCELED task back to QUEUED with a fresh attempt budget."},
         [t, c](const Request& req, Response& res, const ContentReader& reader) {
           if (request().headers.content_length || request().headers.chunked) {
             std::string ignored;
             Status st = read_body(reader, c->opt.max_body, &ignored);
             if (!st.ok()) return send_error(res, st);
           }
           t->retry(req.matches[1], res);
         });
  r.post("/api/v1/tasks/retry",
         {"retry_matching", "/api/v1/tasks/retry",
          "Retry the FAILED or CANCELED tasks matching {status, type, labels, limit}, in one "
          "transaction."},
         [t, c](const Request&, Response& res, const ContentReader& reader) {
           std::string body;
           if (request().headers.content_length || request().headers.chunked) {
             Status st = read_body(reader, c->opt.max_body, &body);
             if (!st.ok()) return send_error(res, st);
           }
           t->retry_matching(body, res);
         });
  r.get(R"(/api/images/([^/]+))",
        {"image", "/api/images/{id}", "The first image of a DONE image task, decoded."},
        [t](const Request& req, Response& res) { t->image(req.matches[1], res); });
}

}  // namespace ts
