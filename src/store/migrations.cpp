#include "store/migrations.h"

#include <algorithm>
#include <cctype>

namespace ts {
namespace {

StatusOr<Migration> parse_migration(const std::string& name, const char* data, size_t size) {
  size_t digits = 0;
  while (digits < name.size() && std::isdigit(static_cast<unsigned char>(name[digits]))) {
    ++digits;
  }
  if (digits == 0 || digits > 6 || name.size() <= digits || name[digits] != '_') {
    return Status::Internal("migration file name must be NNNN_name.sql: " + name);
  }
  return Migration{std::stoi(name.substr(0, digits)), name, std::string(data, size)};
}

StatusOr<std::vector<Migration>> sorted(std::vector<Migration> out) {
  std::sort(out.begin(), out.end(),
            [](const Migration& a, const Migration& b) { return a.version < b.version; });
  for (size_t i = 1; i < out.size(); ++i) {
    if (out[i].version == out[i - 1].version) {
      return Status::Internal("two migrations share number " + std::to_string(out[i].version));
    }
  }
  return out;
}

}  // namespace

StatusOr<std::vector<Migration>> migrations_from(const EmbeddedFile* files) {
  std::vector<Migration> out;
  for (const EmbeddedFile* f = files; f->name != nullptr; ++f) {
    auto m = parse_migration(f->name, f->data, f->size);
    if (!m.ok()) return m.status();
    out.push_back(std::move(*m));
  }
  return sorted(std::move(out));
}

StatusOr<std::vector<Migration>> builtin_migrations(std::string_view store) {
  const std::string prefix = std::string(store) + "/";
  std::vector<Migration> out;
  for (const EmbeddedFile* f = embedded_migrations(); f->name != nullptr; ++f) {
    std::string name = f->name;
    if (name.rfind(prefix, 0) != 0) continue;
    auto m = parse_migration(name.substr(prefix.size()), f->data, f->size);
    if (!m.ok()) return m.status();
    out.push_back(std::move(*m));
  }
  return sorted(std::move(out));
}

Status schema_too_new(int current, int newest) {
  return Status::Unavailable(
      "schema_too_new",
      "the database has schema version " + std::to_string(current) +
          " but this taskserver knows only up to version " + std::to_string(newest) +
          "; it was written by a newer taskserver. Refusing to touch it: run the newer binary, "
          "or restore a backup made for this version");
}

}  // namespace ts
