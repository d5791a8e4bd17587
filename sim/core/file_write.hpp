// Writing an output file so that a failed run leaves nothing half-written.
#pragma once

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <unistd.h>
#include <utility>
#include <vector>

namespace trainsim {

namespace detail {

/// The file a write to `given` lands in, absolute and normalized (symlinked folders resolved):
/// a symlink's target — also a dangling link's, which gets its target created rather than being
/// replaced by a file — else `given`. Empty when the links loop or cannot be read.
inline std::filesystem::path write_target(const std::filesystem::path& given) {
  std::error_code ec;
  std::filesystem::path link = std::filesystem::absolute(given, ec);
  if (ec) return {};
  for (int hop = 0; hop < 40; ++hop) {  // at most 40 links, as the kernel follows
    if (!std::filesystem::is_symlink(link, ec)) {
      auto resolved = std::filesystem::weakly_canonical(link, ec);
      return ec ? std::filesystem::path() : resolved;
    }
    const auto to = std::filesystem::read_symlink(link, ec);
    if (ec) return {};
    link = to.is_absolute() ? to : link.parent_path() / to;
  }
  return {};
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

/// A set of output files written all together or not at all, in three steps: stage() writes
/// every regular file to a temporary file of its own next to it (a unique name: concurrent runs
/// and files that happen to carry the suffix are left alone); write_special() writes devices,
/// FIFOs and sockets in place (renaming onto /dev/null would replace it); commit() renames the
/// temporary files into place. A caller with more to emit (a report on standard output) does it
/// between write_special() and commit(), and drops the set on failure: the destructor removes
/// whatever was staged and not committed. Each step returns the path, as given, that could not
/// be written (a symlink loop cannot), or an empty path. The same file named twice keeps the
/// later text.
class StagedFiles {
 public:
  explicit StagedFiles(std::vector<std::pair<std::filesystem::path, std::string>> files)
      : files_(std::move(files)) {}
  StagedFiles(const StagedFiles&) = delete;
  StagedFiles& operator=(const StagedFiles&) = delete;
  ~StagedFiles() { discard(); }

  std::filesystem::path stage() {
    for (std::size_t i = 0; i < files_.size(); ++i) {
      const auto& given = files_[i].first;
      if (detail::is_special(given)) {
        special_.push_back(i);
        continue;
      }
      const auto target = detail::write_target(given);
      if (target.empty()) {
        discard();
        return given;
      }
      auto same = std::find_if(staged_.begin(), staged_.end(),
                               [&](const Staged& st) { return st.target == target; });
      if (same == staged_.end()) {
        std::filesystem::path tmp = target;
        tmp += ".tmp-trainsim." + std::to_string(::getpid()) + "." + std::to_string(i);
        staged_.push_back({tmp, target, given});
        same = staged_.end() - 1;
      }
      if (!detail::write_stream(same->tmp, files_[i].second, std::ios::binary | std::ios::trunc)) {
        discard();
        return given;
      }
    }
    return {};
  }

  std::filesystem::path write_special() {
    for (std::size_t i : special_) {
      if (!detail::write_stream(files_[i].first, files_[i].second, std::ios::binary)) {
        discard();
        return files_[i].first;
      }
    }
    return {};
  }

  std::filesystem::path commit() {
    std::error_code ec;
    for (; committed_ < staged_.size(); ++committed_) {
      std::filesystem::rename(staged_[committed_].tmp, staged_[committed_].target, ec);
      if (ec) {
        auto failed = staged_[committed_].given;
        discard();
        return failed;
      }
    }
    return {};
  }

  /// Removes the staged files not committed yet.
  void discard() {
    std::error_code ec;
    for (std::size_t i = committed_; i < staged_.size(); ++i) {
      std::filesystem::remove(staged_[i].tmp, ec);
    }
    committed_ = staged_.size();
  }

 private:
  struct Staged {
    std::filesystem::path tmp, target, given;
  };
  std::vector<std::pair<std::filesystem::path, std::string>> files_;
  std::vector<Staged> staged_;
  std::vector<std::size_t> special_;
  std::size_t committed_ = 0;
};

/// Writes a set of output files so that a failure leaves none of the regular files changed
/// (StagedFiles: staged, then devices written, then renamed into place). Returns the path
/// that could not be written, or an empty path.
inline std::filesystem::path write_files_atomically(
    std::vector<std::pair<std::filesystem::path, std::string>> files) {
  StagedFiles out(std::move(files));
  if (auto failed = out.stage(); !failed.empty()) return failed;
  if (auto failed = out.write_special(); !failed.empty()) return failed;
  return out.commit();
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
