// Measured hardware profiles (profile_version = 1): what trainsim-calibrate measured on a real
// GPU, the curves fitted to it, and where it came from. The TOML reader and writer are in
// hw/profile_io.hpp; this header holds the data and the lookups the cost models use.
//
// Lookups interpolate piecewise-linearly in log-log space (log time against log size) between
// measured points of one family, and return std::nullopt outside the measured range or for an
// unmeasured family, so that the caller falls back to the built-in roofline model:
//  - GEMM: family (dtype, n, k), interpolated over m (the token dimension, which is what
//    microbatch and sequence length change);
//  - attention: family (causal, head_dim), TFLOP/s interpolated over the sequence length;
//  - memory-bound kernels: family (op), time over bytes;
//  - collectives: family (op, ranks), time over bytes (nccl-tests size convention).
// Fits are weighted least squares of t = alpha + x / rate with weights 1/t^2 (minimising the
// relative error), the alpha-beta (Hockney) form used for collectives and kernel launch floors.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "hw/gpu.hpp"

namespace trainsim::hw {

inline constexpr int kProfileVersion = 1;

/// Where a profile comes from.
struct Provenance {
  std::string gpu_name;       ///< cudaDeviceProp::name
  int sm_count = 0;
  int compute_capability = 0; ///< major*10 + minor
  double sm_clock_mhz = 0;    ///< max SM clock
  double mem_clock_mhz = 0;
  double hbm_bytes = 0;
  int device_count = 0;
  std::string driver;         ///< e.g. "13.0" (cudaDriverGetVersion)
  std::string cuda_runtime;
  std::string cublas;
  std::string nccl;           ///< empty when NCCL was not measured
  std::string date;           ///< ISO 8601 UTC
  std::string command;        ///< command line of the calibration run
  std::string host;
};

/// One cuBLASLt GEMM: C[m x n] = A[m x k] * B[k x n], median time.
struct GemmPoint {
  Dtype dtype = Dtype::BF16;
  std::int64_t m = 0, n = 0, k = 0;
  double seconds = 0;
  [[nodiscard]] double flops() const { return 2.0 * double(m) * double(n) * double(k); }
};

/// One attention case: `batch` sequences of `seq` tokens, `heads` query heads and `kv_heads`
/// key/value heads of `head_dim`. FLOPs follow the FlashAttention convention:
/// fwd = 4*b*s^2*heads*d (halved when causal), bwd = 2.5 x fwd.
/// Wave quantization of an attention kernel with one thread block per (sequence, head,
/// 128-query block) on `sm_count` SMs: blocks / (waves x sm_count), in (0, 1].
double attention_wave_efficiency(std::int64_t batch, int heads, int seq, int sm_count);

struct AttentionPoint {
  bool causal = true;
  int head_dim = 128;
  int batch = 1, heads = 1, kv_heads = 1, seq = 0;
  double fwd_seconds = 0, bwd_seconds = 0;
  [[nodiscard]] double fwd_flops() const;
  [[nodiscard]] double fwd_tflops() const { return fwd_flops() / fwd_seconds / 1e12; }
  [[nodiscard]] double bwd_tflops() const { return 2.5 * fwd_flops() / bwd_seconds / 1e12; }
};

/// One memory-bound kernel ("copy", "layernorm", "rmsnorm", "gelu", "swiglu", "softmax",
/// "adam") moving `bytes` to and from HBM.
struct MemoryPoint {
  std::string op;
  double bytes = 0;
  double seconds = 0;
};

/// One NCCL collective ("all_reduce", "all_gather", "reduce_scatter", "all_to_all",
/// "send_recv") on `ranks` GPUs spread over `nodes` nodes (1: one NVLink domain; more: an
/// mpirun sweep with one GPU per rank), `bytes` in the nccl-tests convention.
/// algbw = bytes / seconds, busbw = algbw x nccl-tests' factor (net::busbw_factor).
struct CollectivePoint {
  std::string op;
  int ranks = 0;
  int nodes = 1;
  double bytes = 0;
  double seconds = 0;
  double algbw = 0, busbw = 0;
};

/// t = alpha_s + x / rate, fitted with weights 1/t^2 (minimises relative error).
struct LinearFit {
  double alpha_s = 0;
  double rate = 0;        ///< x per second (FLOP/s, B/s)
  double max_rel_err = 0; ///< largest |fit - measured| / measured over the points
  int points = 0;
  [[nodiscard]] double seconds(double x) const { return alpha_s + x / rate; }
};

/// A fit for one family of points.
struct FamilyFit {
  std::string family;  ///< "bf16", "copy", "all_reduce/8", ...
  LinearFit fit;
};

/// How many cost queries of one kind a measured profile answered, and how many fell back to
/// the built-in (roofline / datasheet) model.
struct SourceCount {
  std::int64_t profile = 0;
  std::int64_t builtin = 0;
};

struct HardwareProfile {
  int profile_version = kProfileVersion;
  /// Built-in GPU key whose datasheet numbers (peaks, HBM, SMs) price what was not measured.
  std::string base_gpu;
  std::string attention_impl;  ///< which attention kernel was measured
  Provenance provenance;
  std::vector<GemmPoint> gemm;
  std::vector<AttentionPoint> attention;
  std::vector<MemoryPoint> memory;
  std::vector<CollectivePoint> collectives;
  std::vector<FamilyFit> gemm_fits;        ///< per dtype, x = FLOPs
  std::vector<FamilyFit> memory_fits;      ///< per op, x = bytes
  std::vector<FamilyFit> collective_fits;  ///< per op/ranks[/nodes], x = bytes
  std::string path;                        ///< file it was read from (not written)

  /// Measured GEMM time, interpolated over m within the (dtype, n, k) family, else over k
  /// within the (dtype, m, n) family (a weight gradient's tokens are its k); nullopt when
  /// neither family holds the shape in its measured range.
  [[nodiscard]] std::optional<double> gemm_seconds(Dtype dtype, std::int64_t m, std::int64_t n,
                                                   std::int64_t k) const;
  /// Measured attention TFLOP/s for (causal, head_dim) at `seq`, interpolated in log-log
  /// space; nullopt outside the measured sequence range or for an unmeasured case. With
  /// `sm_count` > 0 each point's rate is first divided by its own wave efficiency
  /// (attention_wave_efficiency of its batch, heads and seq), giving the full-wave rate the
  /// cost model then scales by the priced shape's waves, so a measured shape is priced at its
  /// measured time exactly.
  [[nodiscard]] std::optional<double> attention_tflops(bool causal, int head_dim, int seq,
                                                       bool backward, int sm_count = 0) const;
  /// Measured time of memory-bound `op` moving `bytes`; nullopt outside the measured range.
  [[nodiscard]] std::optional<double> memory_seconds(const std::string& op, double bytes) const;
  /// Measured time of collective `op` on `ranks` GPUs over `nodes` nodes; nullopt outside
  /// the measured range or for an unmeasured (op, ranks, nodes).
  [[nodiscard]] std::optional<double> collective_seconds(const std::string& op, int ranks,
                                                         int nodes, double bytes) const;
  /// Recomputes gemm_fits, memory_fits and collective_fits from the measured points
  /// (families with at least two points of different x).
  void refit();
};

/// Piecewise-linear interpolation of log(y) against log(x) through (xs, ys) sorted by x
/// (duplicates of x take their first y). Exact at measured points; nullopt when x is outside
/// [xs.front(), xs.back()] or fewer than one point. All values must be > 0.
std::optional<double> interp_loglog(const std::vector<double>& xs, const std::vector<double>& ys,
                                    double x);

/// Weighted least squares of t = alpha + x / rate with weights 1/t^2 (closed form of the 2x2
/// normal equations). Throws std::invalid_argument with fewer than two distinct x, a
/// non-positive t, or a fit whose rate is not positive (times that do not grow with x).
LinearFit fit_alpha_rate(const std::vector<double>& x, const std::vector<double>& t);

}  // namespace trainsim::hw
