// Reading and writing measured hardware profiles (profile_version = 1) with TOML++.
//
// File layout (every time in seconds, every size in bytes or elements, see docs/calibration.md):
//   profile_version = 1
//   base_gpu = "h200_sxm"            # built-in GPU whose datasheet prices what was not measured
//   attention_impl = "..."           # the attention kernel that was measured
//   [provenance]                     # gpu_name, sm_count, compute_capability, sm_clock_mhz,
//                                    # mem_clock_mhz, hbm_bytes, device_count, driver,
//                                    # cuda_runtime, cublas, nccl, date, command, host
//   [[gemm]]        dtype, m, n, k, seconds, (tflops: written for readers, ignored)
//   [[attention]]   causal, head_dim, batch, heads, kv_heads, seq, fwd_seconds, bwd_seconds,
//                   (fwd_tflops, bwd_tflops: written, ignored)
//   [[memory]]      op, bytes, seconds, (gbps: written, ignored)
//   [[collective]]  op, ranks, nodes (default 1), bytes, seconds,
//                   (algbw_gbps, busbw_gbps: written, ignored)
//   [[fit]]         kind ("gemm" | "memory" | "collective"), family, alpha_s, rate,
//                   max_rel_err, points
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>

#include "core/error.hpp"
#include "hw/profile.hpp"

namespace trainsim::hw {

/// A bad profile file. what() is "file:line:column: message"; the message names the key.
class ProfileError : public FileError {
 public:
  using FileError::FileError;
};

/// Parses profile text; `name` is used in messages. Rejects unknown keys, wrong types, a
/// profile_version other than 1, an unknown base_gpu, non-positive sizes or times, unknown
/// dtypes, memory ops and collective ops. Throws ProfileError.
HardwareProfile parse_profile(std::string_view text, const std::string& name);
/// Reads a profile file (path recorded in HardwareProfile::path). Throws ProfileError.
HardwareProfile read_profile(const std::filesystem::path& file);
/// The TOML text of a profile, deterministic (same profile, same bytes); doubles round-trip.
std::string profile_to_toml(const HardwareProfile& p);
/// Writes the profile to `file` through a temporary name and a rename, so a failure leaves
/// nothing half-written. Throws std::runtime_error naming the file.
void write_profile(const std::filesystem::path& file, const HardwareProfile& p);

}  // namespace trainsim::hw
