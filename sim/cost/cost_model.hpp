// Kernel cost model: time of GEMMs, attention and memory-bound ops on one GPU.
//
// GEMM (roofline with tile and wave quantization, after NVIDIA's "Matrix Multiplication
// Background" guide and Anthony et al. 2024, arXiv:2401.14489): the output [m x n] is cut
// into tiles; tiles run in waves of one tile per SM; each tile costs its main loop at the
// GPU's best-shape achievable rate (peak x MAMF efficiency / SMs), or at the SM's share of L2
// bandwidth for loading its A and B panels if that is slower, plus an epilogue that writes
// the tile at the SM's share of HBM bandwidth. The best of a few CUTLASS-like tile shapes is
// taken, as cuBLAS heuristics do. The result is floored by the HBM roofline of the operands
// and by the kernel launch floor.
// Attention: FlashAttention FLOPs (fwd 4·b·s²·heads·d, halved when causal; bwd 2.5 x fwd)
// over the measured rate at that sequence length (interpolated in log2(s), clamped), divided
// by the wave efficiency of b·heads·ceil(s/128) thread blocks on the SMs.
// Memory-bound: bytes / (HBM bandwidth x achievable fraction), floored by the launch floor.
// With a measured hardware profile (hw/profile.hpp) GEMMs, FlashAttention rates and
// memory-bound kernels are priced from its measurements where they cover the case
// (log-log interpolation between measured points) and by the rules above outside them;
// pricing() counts which source priced each query.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/time.hpp"
#include "hw/gpu.hpp"
#include "hw/profile.hpp"

namespace trainsim::cost {

using hw::SourceCount;

/// Which source priced the queries of a simulation, per kind.
struct PricingSources {
  std::string profile_path;  ///< empty when no profile was given
  SourceCount gemm, attention, memory_bound, collective;
};

/// The output tile a GEMM would use.
struct GemmTile {
  int tm = 0, tn = 0;
};

/// What a GEMM's epilogue does with C.
/// Store: writes C in 16-bit (fp32 for Dtype::FP32 inputs).
/// AccumulateFp32: C += A·B into an fp32 buffer (reads and writes 4 bytes per element): the
/// weight-gradient GEMMs of mixed-precision training, which accumulate into fp32 main
/// gradients (Megatron-LM `main_grad` with gradient-accumulation fusion: the wgrad GEMM runs
/// with beta = 1 on the fp32 buffer, apex `fused_weight_gradient_mlp_cuda` /
/// Transformer Engine `fuse_wgrad_accumulation`).
/// Accumulate16: the same into a 16-bit buffer (reads and writes 2 bytes per element):
/// fp16 training's fp16 main gradients (apex `wgrad_gemm_accum_fp16`).
enum class Epilogue { Store, AccumulateFp32, Accumulate16 };

/// Which attention kernels run.
/// Flash: fused FlashAttention kernels (Dao 2022/2023), timed from measured rates.
/// Unfused: Megatron-LM's pre-FlashAttention core attention (as in Korthikanti et al. 2022):
/// batched GEMMs Q·K^T and P·V plus a fused scale-mask-softmax and a dropout kernel over the
/// [b, heads, s, s] scores, which are written to and read from HBM.
enum class AttentionImpl { Flash, Unfused };

class CostModel {
 public:
  /// Keeps a copy of the GPU spec.
  explicit CostModel(hw::GpuSpec gpu) : gpu_(std::move(gpu)) {}
  /// Prices from `profile` where it has measurements (nullptr: built-in model only).
  CostModel(hw::GpuSpec gpu, std::shared_ptr<const hw::HardwareProfile> profile)
      : gpu_(std::move(gpu)), profile_(std::move(profile)) {}

  /// Time of C[m x n] = A[m x k]·B[k x n] with inputs in `dtype` and 16-bit output
  /// (fp32 output for Dtype::FP32). Throws std::invalid_argument for non-positive sizes.
  [[nodiscard]] Time gemm(std::int64_t m, std::int64_t n, std::int64_t k, hw::Dtype dtype,
                          std::int64_t batch = 1, Epilogue epilogue = Epilogue::Store) const;
  /// The tile shape chosen for that GEMM.
  [[nodiscard]] GemmTile gemm_tile(std::int64_t m, std::int64_t n, std::int64_t k,
                                   hw::Dtype dtype) const;
  /// FlashAttention forward / backward time for `batch` sequences of length `seq` with
  /// `heads` query heads of `head_dim` on this GPU (GQA does not change the FLOPs).
  [[nodiscard]] Time attention_fwd(std::int64_t batch, int heads, int seq, int head_dim,
                                   bool causal, AttentionImpl impl = AttentionImpl::Flash) const;
  [[nodiscard]] Time attention_bwd(std::int64_t batch, int heads, int seq, int head_dim,
                                   bool causal, AttentionImpl impl = AttentionImpl::Flash) const;
  /// A memory-bound kernel moving `bytes` to/from HBM: GpuSpec::memory_kernel_latency_s +
  /// bytes / (hbm_bw x hbm_efficiency) (the measured latency stands in for the launch
  /// floor); with a profile, the
  /// measured copy kernel's time at that size. Throws std::invalid_argument for negative
  /// bytes.
  [[nodiscard]] Time memory_bound(double bytes) const;
  /// Measured attention rate (TFLOP/s) used for a case, fwd or bwd.
  [[nodiscard]] double attention_tflops(int seq, int head_dim, bool causal, bool backward) const;

  [[nodiscard]] const hw::GpuSpec& gpu() const { return gpu_; }
  [[nodiscard]] const hw::HardwareProfile* profile() const { return profile_.get(); }
  /// Counts of queries priced by the profile and by the built-in model so far (GEMM,
  /// attention, memory-bound; collective counts are the collective model's).
  [[nodiscard]] const PricingSources& pricing() const { return pricing_; }

 private:
  [[nodiscard]] double gemm_seconds(std::int64_t m, std::int64_t n, std::int64_t k,
                                    hw::Dtype dtype, std::int64_t batch, Epilogue epilogue,
                                    GemmTile* best) const;
  [[nodiscard]] Time unfused_attention(std::int64_t batch, int heads, int seq, int head_dim,
                                       bool backward) const;
  [[nodiscard]] Time attention(std::int64_t batch, int heads, int seq, int head_dim, bool causal,
                               bool backward) const;
  hw::GpuSpec gpu_;
  std::shared_ptr<const hw::HardwareProfile> profile_;
  mutable PricingSources pricing_;  // bookkeeping only; not thread-safe (one model per thread)
};

}  // namespace trainsim::cost
