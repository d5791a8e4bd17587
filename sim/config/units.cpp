#include "config/units.hpp"

#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <string>
#include <utility>

namespace trainsim::config {

namespace {

struct Unit {
  std::string_view name;
  double factor;
};

std::optional<double> parse_with(std::string_view text, const Unit* units, std::size_t n) {
  std::size_t i = 0;
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i])) != 0) ++i;
  std::size_t j = i;
  while (j < text.size() && (std::isdigit(static_cast<unsigned char>(text[j])) != 0 ||
                             text[j] == '.' || text[j] == 'e' || text[j] == 'E' ||
                             text[j] == '+' || text[j] == '-')) {
    ++j;
  }
  if (j == i) return std::nullopt;
  double value = 0;
  const std::string num(text.substr(i, j - i));
  std::size_t used = 0;
  try {
    value = std::stod(num, &used);
  } catch (...) {
    return std::nullopt;
  }
  if (used != num.size() || !std::isfinite(value) || value < 0) return std::nullopt;
  while (j < text.size() && std::isspace(static_cast<unsigned char>(text[j])) != 0) ++j;
  std::size_t k = text.size();
  while (k > j && std::isspace(static_cast<unsigned char>(text[k - 1])) != 0) --k;
  const std::string_view unit = text.substr(j, k - j);
  for (std::size_t u = 0; u < n; ++u) {
    if (units[u].name == unit) return value * units[u].factor;
  }
  return std::nullopt;
}

}  // namespace

std::optional<double> parse_bandwidth(std::string_view text) {
  static constexpr std::array<Unit, 10> units = {{{"B/s", 1.0},
                                                  {"KB/s", 1e3},
                                                  {"MB/s", 1e6},
                                                  {"GB/s", 1e9},
                                                  {"TB/s", 1e12},
                                                  {"bps", 1.0 / 8},
                                                  {"Kbps", 1e3 / 8},
                                                  {"Mbps", 1e6 / 8},
                                                  {"Gbps", 1e9 / 8},
                                                  {"Tbps", 1e12 / 8}}};
  return parse_with(text, units.data(), units.size());
}

std::optional<double> parse_duration(std::string_view text) {
  static constexpr std::array<Unit, 5> units = {
      {{"ps", 1e-12}, {"ns", 1e-9}, {"us", 1e-6}, {"ms", 1e-3}, {"s", 1.0}}};
  return parse_with(text, units.data(), units.size());
}

std::optional<double> parse_bytes(std::string_view text) {
  static constexpr std::array<Unit, 9> units = {{{"B", 1.0},
                                                 {"KB", 1e3},
                                                 {"MB", 1e6},
                                                 {"GB", 1e9},
                                                 {"TB", 1e12},
                                                 {"KiB", 1024.0},
                                                 {"MiB", 1024.0 * 1024},
                                                 {"GiB", 1024.0 * 1024 * 1024},
                                                 {"TiB", 1024.0 * 1024 * 1024 * 1024}}};
  return parse_with(text, units.data(), units.size());
}

}  // namespace trainsim::config
