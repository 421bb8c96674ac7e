// BlobStore: the result and input folders.

#include <doctest/doctest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "store/blob_store.h"
#include "support/harness.h"

using namespace ts;

TEST_CASE("blob folders: temporaries of earlier processes are swept - this one's are not") {
  tst::TempDir dir;
  auto blobs = BlobStore::open(dir.file("results"));
  REQUIRE(blobs.ok());
  const auto now = std::filesystem::file_time_type::clock::now();
  const std::string mine = ".tmp-" + std::to_string(::getpid()) + "-";
  auto make = [&](const std::string& name, std::filesystem::file_time_type written) {
    std::ofstream(blobs->path_of(name)) << "x";
    std::filesystem::last_write_time(blobs->path_of(name), written);
  };
  make(".tmp-0-1", now);                            // another process's
  make(mine + "old", now - std::chrono::hours(1));  // an earlier process with this pid
  make(mine + "new", now);                          // this process's, being written
  make(blobs->temp_path().substr(blobs->dir().size() + 1), now);    // likewise
  make("0123456789abcdefghjkmnpqrs", now - std::chrono::hours(1));  // a result
  std::atomic<bool> stop{false};
  CHECK(blobs->sweep_temporaries(stop, now) == 2);
  std::set<std::string> left;
  blobs->for_each_name(stop, [&](const std::string& n) { left.insert(n); });
  CHECK(left.size() == 3);
  CHECK(left.count(mine + "new") == 1);
  CHECK(left.count("0123456789abcdefghjkmnpqrs") == 1);
  CHECK(left.count(".tmp-0-1") == 0);
  CHECK(left.count(mine + "old") == 0);
  // Stopped, it walks nothing.
  stop = true;
  make(".tmp-0-3", now);
  CHECK(blobs->sweep_temporaries(stop, now) == 0);
}
