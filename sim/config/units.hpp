// Quantities with units in configuration files: "400 Gbps", "300 GB/s", "2 us", "80 GiB".
// Decimal prefixes are powers of 1000, binary ones (KiB, MiB, GiB, TiB) of 1024.
#pragma once

#include <optional>
#include <string_view>

namespace trainsim::config {

/// Bandwidth in bytes/s from "<number> <unit>" with unit B/s, KB/s, MB/s, GB/s, TB/s (bytes)
/// or bps, Kbps, Mbps, Gbps, Tbps (bits, divided by 8). nullopt when malformed.
std::optional<double> parse_bandwidth(std::string_view text);
/// Duration in seconds from "<number> <unit>", unit ps, ns, us, ms or s.
std::optional<double> parse_duration(std::string_view text);
/// Size in bytes from "<number> <unit>", unit B, KB, MB, GB, TB, KiB, MiB, GiB, TiB.
std::optional<double> parse_bytes(std::string_view text);

}  // namespace trainsim::config
