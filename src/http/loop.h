#pragma once
// Internal to src/http: how HttpServer creates its Loop (the epoll set and serving threads,
// http/loop.cpp) and hands it accepted connections.

#include <httplib.h>

#include "http/server.h"

namespace ts {

// A new Loop for `server`, as httplib's task queue (httplib owns and deletes it); *out points
// at it while it lives.
httplib::TaskQueue* new_loop(HttpServer& server, HttpServer::Loop** out);
// An accepted connection joins the loop's epoll set.
void loop_add(HttpServer::Loop& loop, int fd);

}  // namespace ts
