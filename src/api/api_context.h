#pragma once
// Internal to src/api: what every group of routes shares (ApiContext) and how a group
// registers its routes (Routes): each route on the HttpServer, named for the metrics and listed
// for /openapi.json. The route groups are one file each: submit_routes.cpp, task_routes.cpp,
// event_routes.cpp, ops_routes.cpp, static_routes.cpp; api_server.cpp installs them in order.
//
// Thread-safe after install(): handlers run on the HTTP server's threads and only read the
// context, but for open_streams (atomic).

#include <httplib.h>

#include <atomic>
#include <functional>
#include <memory>

#include "api/api_server.h"
#include "api/openapi.h"
#include "api/request_parsing.h"
#include "core/metrics.h"

namespace ts {

struct ApiContext {
  ApiContext(ApiOptions o, TaskService& s, ServerView v, Metrics& m, const BlobStore& in)
      : opt(std::move(o)),
        svc(s),
        view(std::move(v)),
        metrics(m),
        inputs(in),
        tokens(opt.api_tokens) {}

  // Whether the current request may use /api/.
  bool authorized() const;

  // A stream's claim on one of opt.max_streams; given back when the last copy of the stream's
  // content provider (which holds it) is destroyed, however the stream ended.
  struct StreamClaim {
    std::atomic<int>& open;
    explicit StreamClaim(std::atomic<int>& o) : open(o) {}
    StreamClaim(const StreamClaim&) = delete;
    StreamClaim& operator=(const StreamClaim&) = delete;
    ~StreamClaim() { open.fetch_sub(1, std::memory_order_acq_rel); }
  };
  // A claim for a new SSE stream, or null (and the 503 sent) when opt.max_streams are open.
  std::shared_ptr<StreamClaim> claim_stream(httplib::Response& res);

  const ApiOptions opt;
  TaskService& svc;
  const ServerView view;
  Metrics& metrics;
  const BlobStore& inputs;
  const TokenSet tokens;
  RouteTable routes;
  // SSE streams open now. Each holds a serving thread while it lasts, so past opt.max_streams
  // a new one is refused (503) instead of taking the threads every other request needs.
  std::atomic<int> open_streams{0};
};

class Routes {
 public:
  using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;
  using ReaderHandler = std::function<void(const httplib::Request&, httplib::Response&,
                                           const httplib::ContentReader&)>;
  Routes(HttpServer& server, RouteTable& table) : server_(server), table_(table) {}
  void get(const char* pattern, RouteDoc doc, Handler h);
  void del(const char* pattern, RouteDoc doc, Handler h);
  // A POST whose handler reads the body itself (streamed, bounded).
  void post(const char* pattern, RouteDoc doc, ReaderHandler h);

 private:
  HttpServer& server_;
  RouteTable& table_;
};

using Context = std::shared_ptr<ApiContext>;
void install_submit_routes(Routes& r, const Context& ctx);
void install_task_routes(Routes& r, const Context& ctx);
void install_event_routes(Routes& r, const Context& ctx);
void install_ops_routes(Routes& r, const Context& ctx);
void install_static_routes(Routes& r, const Context& ctx);

}  // namespace ts
