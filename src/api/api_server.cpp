#include "api/api_server.h"

#include <spdlog/spdlog.h>

#include "api/api_context.h"
#include "api/request_context.h"
#include "api/task_json.h"

namespace ts {

using httplib::Request;
using httplib::Response;

bool ApiContext::authorized() const {
  const std::string* h = request().headers.authorization;
  return tokens.empty() || tokens.allows(h ? std::string_view(*h) : std::string_view());
}

std::shared_ptr<ApiContext::StreamClaim> ApiContext::claim_stream(Response& res) {
  // What a client refused an event stream is told to wait before it tries again.
  constexpr int kRetryAfterStreamsS = 5;
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

namespace {

// Every route goes through a wrapper that names it (for the metrics) before its handler runs.
Routes::Handler named(const char* name, Routes::Handler h) {
  return [name, h = std::move(h)](const Request& req, Response& res) {
    request().route = name;
    h(req, res);
  };
}

}  // namespace

void Routes::get(const char* pattern, RouteDoc doc, Handler h) {
  server_.Get(pattern, named(doc.name, std::move(h)));
  table_.add("GET", std::move(doc));
}

void Routes::del(const char* pattern, RouteDoc doc, Handler h) {
  server_.Delete(pattern, named(doc.name, std::move(h)));
  table_.add("DELETE", std::move(doc));
}

void Routes::post(const char* pattern, RouteDoc doc, ReaderHandler h) {
  const char* name = doc.name;
  server_.Post(pattern, [name, h = std::move(h)](const Request& req, Response& res,
                                                 const httplib::ContentReader& reader) {
    request().route = name;
    h(req, res, reader);
  });
  table_.add("POST", std::move(doc));
}

ApiServer::ApiServer(ApiOptions options, TaskService& service, ServerView view, Metrics& metrics,
                     const BlobStore& inputs)
    : ctx_(std::make_shared<ApiContext>(std::move(options), service, std::move(view), metrics,
                                        inputs)) {}

ApiServer::~ApiServer() = default;

namespace {

// Refuses a request before its handler runs: named `route` in the metrics.
httplib::Server::HandlerResponse refuse(Response& res, const char* route, const Status& st,
                                        bool close) {
  request().route = route;
  if (close) res.set_header("Connection", "close");
  send_error(res, st);
  return httplib::Server::HandlerResponse::Handled;
}

}  // namespace

void ApiServer::install(HttpServer& server) {
  Context ctx = ctx_;
  // httplib reads a body before a regular handler runs; its limit must admit uploads, so JSON
  // routes check Content-Length before the body is read (pre-routing) and the size after.
  server.set_payload_max_length(std::max(ctx->opt.max_body, ctx->opt.max_upload));

  server.set_pre_routing_handler([ctx](const Request& req, Response& res) {
    begin_request(req);
    const std::string& path = req.path;
    bool api = path.rfind("/api/", 0) == 0;
    if (api && !ctx->authorized()) {
      res.set_header("WWW-Authenticate", "Bearer realm=\"taskserver\"");
      return refuse(res, "auth",
                    Status(Code::kUnauthorized, "unauthorized",
                           "this server needs Authorization: Bearer <token>"),
                    false);
    }
    if (ctx->svc.shutting_down() && req.method != "GET" && req.method != "HEAD") {
      return refuse(res, "shutting_down",
                    Status::Unavailable("shutting_down", "the server is shutting down"), true);
    }
    // JSON-only routes refuse other bodies before reading them (httplib would otherwise parse
    // a multipart body itself and answer 400).
    if (req.method == "POST" && (path == "/api/v1/image/async" || path == "/api/v1/tasks/batch")) {
      Status st = check_json_body_type();
      if (!st.ok()) return refuse(res, "unsupported_media", st, true);
    }
    // Two Content-Length headers that disagree are how requests are smuggled past proxies
    // (RFC 9112 6.3): refused.
    if (request().headers.conflicting_lengths) {
      return refuse(res, "malformed", Status::Malformed("conflicting Content-Length headers"),
                    false);
    }
    // The body is not read, so the connection cannot be reused.
    if (Status st = check_declared_length(path, ctx->opt.max_body, ctx->opt.max_upload); !st.ok()) {
      return refuse(res, "too_large", st, true);
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });

  // "Expect: 100-continue" for a body over the limit gets the 413 at once instead of a 100
  // that invites the client to send it.
  server.set_expect_100_continue_handler([ctx](const Request& req, Response& res) {
    scan_headers(req);
    Status st = check_declared_length(req.path, ctx->opt.max_body, ctx->opt.max_upload);
    if (st.ok()) return 100;
    request().route = "too_large";
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
      case 400:
        st = Status::Malformed("the request cannot be parsed");
        break;
      case 405:
        st = Status(Code::kMalformed, "method_not_allowed", "method not allowed");
        break;
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

  server.set_logger([ctx](const Request& req, const Response& res) {
    RequestContext& rc = request();
    if (rc.deferred) {  // counted when its answer is sent
      rc.deferred = false;
      return;
    }
    count_request(ctx->metrics, rc.route, req.method, res.status, rc.start);
  });

  Routes routes(server, ctx->routes);
  install_ops_routes(routes, ctx);
  install_submit_routes(routes, ctx);
  install_task_routes(routes, ctx);
  install_event_routes(routes, ctx);
  install_static_routes(routes, ctx);
  // Any other POST is answered without reading its body (httplib would read a chunked body
  // whole, whatever its size, before finding that no route wants it).
  server.Post(".*", [](const Request& req, Response& res, const httplib::ContentReader&) {
    request().route = "unmatched";
    send_error(res, Status::NotFound("no route for " + req.method + " " + req.path));
  });
}

}  // namespace ts
