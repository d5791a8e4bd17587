// Content hashes for reproducibility: reports name the exact input bytes they came from.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

namespace trainsim {

/// FNV-1a, 64-bit (Fowler, Noll, Vo; offset basis 14695981039346656037, prime
/// 1099511628211, as specified in draft-eastlake-fnv-21 §2 and the reference at
/// http://www.isthe.com/chongo/tech/comp/fnv/). Not cryptographic: it identifies an input
/// file's exact bytes in a report, it does not authenticate them.
[[nodiscard]] constexpr std::uint64_t fnv1a64(std::string_view bytes) {
  std::uint64_t h = 14695981039346656037ULL;
  for (const char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ULL;
  }
  return h;
}

/// fnv1a64 of a file's bytes. Returns 0 when the file cannot be read (the loaders have
/// already rejected a missing file by then).
[[nodiscard]] inline std::uint64_t fnv1a64_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return 0;
  const std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  return fnv1a64(bytes);
}

/// 16 lower-case hex digits.
[[nodiscard]] inline std::string hex64(std::uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace trainsim
