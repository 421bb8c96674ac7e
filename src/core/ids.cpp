#include "core/ids.h"

#include <random>

namespace ts {
namespace {

constexpr char kAlphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";
constexpr size_t kIdLength = 26;

uint64_t random_u64() {
  thread_local std::mt19937_64 rng([] {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd()};
    return std::mt19937_64(seq);
  }());
  return rng();
}

bool in_alphabet(char c) {
  for (const char* p = kAlphabet; *p; ++p) {
    if (*p == c) return true;
  }
  return false;
}

}  // namespace

std::string new_task_id(int64_t now_ms) {
  std::string id(kIdLength, '0');
  uint64_t t = static_cast<uint64_t>(now_ms);
  for (int i = 9; i >= 0; --i) {
    id[i] = kAlphabet[t & 31];
    t >>= 5;
  }
  uint64_t hi = random_u64();
  uint64_t lo = random_u64();
  for (size_t i = 10; i < kIdLength; ++i) {
    id[i] = kAlphabet[hi & 31];
    hi = (hi >> 5) | (lo << 59);
    lo >>= 5;
  }
  return id;
}

bool is_valid_task_id(std::string_view id) {
  if (id.size() != kIdLength) return false;
  for (char c : id) {
    if (!in_alphabet(c)) return false;
  }
  return true;
}

}  // namespace ts
