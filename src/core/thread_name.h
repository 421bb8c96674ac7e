#pragma once
// Names the calling thread, so that `top -H`, `ps -L`, /proc/PID/task/*/comm and perf tell the
// writer from the HTTP threads. Linux keeps 15 bytes of a name; longer names are cut.

#include <pthread.h>

#include <string>

namespace ts {

inline void name_this_thread(const std::string& name) {
  pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
}

}  // namespace ts
