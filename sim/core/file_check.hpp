// Why an input path cannot be read as a file, in the words error messages use.
#pragma once

#include <filesystem>
#include <string>
#include <system_error>

namespace trainsim {

/// Empty for a regular file (or a symlink to one); else "no such file", "is a directory" or
/// "is not a regular file (a device, FIFO or socket)": inputs are read whole and hashed, so
/// only regular files are accepted.
inline std::string unreadable_file_reason(const std::filesystem::path& path) {
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (std::filesystem::is_regular_file(st)) return {};
  if (!std::filesystem::exists(st)) return "no such file";
  if (std::filesystem::is_directory(st)) return "is a directory";
  return "is not a regular file (a device, FIFO or socket)";
}

/// "KEY: no such file "PATH"", or "KEY: "PATH" is a directory" (the other reasons alike).
inline std::string unreadable_file_message(const std::string& key,
                                           const std::filesystem::path& path,
                                           const std::string& reason) {
  if (reason == "no such file") return key + ": no such file \"" + path.string() + "\"";
  return key + ": \"" + path.string() + "\" " + reason;
}

}  // namespace trainsim
