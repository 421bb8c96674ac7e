#pragma once
// Files compiled into the binary by scripts/embed.cmake: the SQL migrations and the dashboard.
// The arrays are static and immutable; thread-safe to read from anywhere.

#include <cstddef>

namespace ts {

struct EmbeddedFile {
  // Migrations: store folder and file ("sqlite/0001_init.sql"); web: the base name
  // ("app.js"). nullptr ends the list.
  const char* name;
  const char* data;
  std::size_t size;
};

// Both lists end with an entry whose name is nullptr. Migrations are sorted by name.
const EmbeddedFile* embedded_migrations();
const EmbeddedFile* embedded_web();

}  // namespace ts
