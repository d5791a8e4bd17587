// Writing an output file so that a failed run leaves nothing half-written.
#pragma once

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace trainsim {

namespace detail {

/// The file a write to `given` lands in: a symlink's target (also when the target does not
/// exist yet: a dangling link gets its target created, not replaced by a file), else `given`.
inline std::filesystem::path write_target(const std::filesystem::path& given) {
  std::error_code ec;
  if (!std::filesystem::is_symlink(given, ec)) return given;
  auto target = std::filesystem::canonical(given, ec);
  if (!ec) return target;
  // Dangling: follow the chain of links by hand (relative targets are relative to the
  // link's folder), at most 40 hops as the kernel does.
  std::filesystem::path link = given;
  for (int hop = 0; hop < 40 && std::filesystem::is_symlink(link, ec); ++hop) {
    const auto to = std::filesystem::read_symlink(link, ec);
    if (ec) return given;
    link = to.is_absolute() ? to : link.parent_path() / to;
  }
  return std::filesystem::weakly_canonical(link, ec);
}

/// True for an existing node that is not a regular file (device, FIFO, socket).
inline bool is_special(const std::filesystem::path& path) {
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  return std::filesystem::exists(st) && !std::filesystem::is_regular_file(st);
}

inline bool write_stream(const std::filesystem::path& path, const std::string& text,
                         std::ios::openmode mode) {
  std::ofstream out(path, mode);
  out << text;
  out.flush();
  return static_cast<bool>(out);
}

}  // namespace detail

/// Writes a set of output files so that a failure leaves none of them changed: every regular
/// file is first written to a temporary file next to it, and only when all of them were
/// written are they renamed into place. Devices, FIFOs and sockets (see write_file_atomically)
/// are written in place last. Returns the path that could not be written, or an empty path.
inline std::filesystem::path write_files_atomically(
    const std::vector<std::pair<std::filesystem::path, std::string>>& files) {
  std::vector<std::pair<std::filesystem::path, std::filesystem::path>> staged;  // tmp, target
  std::vector<std::size_t> special;
  std::error_code ec;
  auto discard = [&](std::size_t from) {
    for (std::size_t i = from; i < staged.size(); ++i) std::filesystem::remove(staged[i].first, ec);
  };
  for (std::size_t i = 0; i < files.size(); ++i) {
    const auto path = detail::write_target(files[i].first);
    if (detail::is_special(path)) {
      special.push_back(i);
      continue;
    }
    std::filesystem::path tmp = path;
    tmp += ".tmp-trainsim";
    // The same file named twice: the later text wins, as with writes one after another.
    const bool again = std::any_of(staged.begin(), staged.end(),
                                   [&](const auto& st) { return st.second == path; });
    if (!again) staged.emplace_back(tmp, path);
    if (!detail::write_stream(tmp, files[i].second, std::ios::binary | std::ios::trunc)) {
      discard(0);
      return files[i].first;
    }
  }
  for (std::size_t i = 0; i < staged.size(); ++i) {
    std::filesystem::rename(staged[i].first, staged[i].second, ec);
    if (ec) {
      discard(i);
      return staged[i].second;
    }
  }
  for (std::size_t i : special) {
    if (!detail::write_stream(detail::write_target(files[i].first), files[i].second,
                              std::ios::binary)) {
      return files[i].first;
    }
  }
  return {};
}

/// Writes `text` to `given` through a temporary file renamed into place, so the file is either
/// the old one or the whole new one. Through a symlink it writes the link's target (renaming
/// onto the link would replace the link); a device, FIFO or socket (/dev/null, /dev/stdout, a
/// named pipe) is written in place, since renaming onto it would replace the node with a
/// regular file (as root, /dev/null itself). Returns false when it cannot write.
inline bool write_file_atomically(const std::filesystem::path& given, const std::string& text) {
  return write_files_atomically({{given, text}}).empty();
}

}  // namespace trainsim
