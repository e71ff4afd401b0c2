// Files compiled into the binary (schema/*.sql, jobs/*.toml); see cmake/embed_files.cmake.
#pragma once
#include <string_view>
#include <vector>

namespace stsync {
struct EmbeddedFile {
  std::string_view name;
  std::string_view content;
};
/// schema/*.sql, sorted by file name (which starts with the migration's version).
const std::vector<EmbeddedFile>& embedded_migrations();
/// jobs/*.toml, sorted by file name.
const std::vector<EmbeddedFile>& embedded_jobs();
}  // namespace stsync
