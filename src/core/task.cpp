#include "core/task.h"

namespace ts {

std::optional<int> priority_from_word(std::string_view word) {
  if (word == "low") return 2;
  if (word == "normal") return 5;
  if (word == "high") return 8;
  return std::nullopt;
}

}  // namespace ts
