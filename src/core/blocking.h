#pragma once
// about_to_block(): the calling thread is about to wait for a while (a group commit, a
// long-poll, an SSE stream waiting for events). A thread pool that keeps only a few of its
// threads taking work (HttpServer) sets a notice for its threads and puts another one to work;
// on any other thread it does nothing. Called from the waiting code, which knows nothing of the
// pool.

namespace ts {

struct BlockingNotice {
  void (*fn)(void* ctx) = nullptr;
  void* ctx = nullptr;
};

// Set by a pool for each of its threads.
inline thread_local BlockingNotice t_blocking_notice;

inline void about_to_block() {
  if (t_blocking_notice.fn) t_blocking_notice.fn(t_blocking_notice.ctx);
}

}  // namespace ts
