// Writing an output file so that a failed run leaves nothing half-written.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

namespace trainsim {

/// Writes `text` to `given` through a temporary file renamed into place, so the file is either
/// the old one or the whole new one. Through a symlink it writes the link's target (renaming
/// onto the link would replace the link); a device, FIFO or socket (/dev/null, /dev/stdout, a
/// named pipe) is written in place, since renaming onto it would replace the node with a
/// regular file (as root, /dev/null itself). Returns false when it cannot write.
inline bool write_file_atomically(const std::filesystem::path& given, const std::string& text) {
  std::filesystem::path path = given;
  std::error_code ec;
  if (std::filesystem::is_symlink(given, ec)) {
    auto target = std::filesystem::canonical(given, ec);
    if (!ec) path = std::move(target);
  }
  const auto st = std::filesystem::status(path, ec);
  if (std::filesystem::exists(st) && !std::filesystem::is_regular_file(st)) {
    std::ofstream out(path, std::ios::binary);
    out << text;
    out.flush();
    return static_cast<bool>(out);
  }
  std::filesystem::path tmp = path;
  tmp += ".tmp-trainsim";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) {
      std::filesystem::remove(tmp, ec);
      return false;
    }
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    return false;
  }
  return true;
}

}  // namespace trainsim
