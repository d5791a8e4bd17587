// Built-in GPU hardware profiles: peak rates, memory, SM count and the efficiencies the
// roofline cost model needs. Every number comes from ../shared/reference/hardware.toml
// (datasheets, nccl tuning constants, published measurements); the source is recorded in
// GpuSpec::sources and in docs/hardware.md.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace trainsim::hw {

/// Numeric precision of GEMM inputs.
enum class Dtype { BF16, FP16, FP8, FP32 };

/// Bytes per element of a dtype (FP8: 1, BF16/FP16: 2, FP32: 4).
int dtype_bytes(Dtype d);
/// "bf16", "fp16", "fp8", "fp32".
std::string_view dtype_name(Dtype d);

/// Measured attention-kernel throughput (TFLOP/s) as a function of sequence length, for one
/// (causal, head_dim) case. FLOPs follow the FlashAttention benchmark convention:
/// forward = 4*b*s^2*heads*d (halved when causal), backward = 2.5 * forward.
struct AttentionCurve {
  bool causal = false;
  int head_dim = 128;
  std::vector<double> seq;           ///< sequence lengths, ascending
  std::vector<double> fwd_tflops;    ///< forward kernel rate at each seq
  std::vector<double> bwd_tflops;    ///< backward kernel rate at each seq
};

/// One GPU type. Rates in SI units (FLOP/s, bytes/s, bytes).
struct GpuSpec {
  std::string key;            ///< built-in name, e.g. "a100_sxm4_80gb"
  std::string display_name;   ///< e.g. "NVIDIA A100-SXM4-80GB"
  int arch = 80;              ///< compute capability x10 (80 Ampere, 90 Hopper, 100 Blackwell)
  int sm_count = 0;
  double hbm_bytes = 0;       ///< usable HBM capacity
  double hbm_bw = 0;          ///< peak HBM bandwidth, B/s
  double hbm_efficiency = 0;  ///< achievable fraction of hbm_bw for large streaming kernels
  /// L2 bandwidth, B/s: feeds GEMM tiles. Measured on H100 (~5.5 TB/s, chipsandcheese via
  /// scaling-book, about 1.6x HBM); other GPUs assume the same 1.6x HBM ratio.
  double l2_bw = 0;
  double peak_bf16 = 0, peak_fp16 = 0, peak_fp8 = 0, peak_fp32 = 0;  ///< dense FLOP/s
  double gemm_efficiency_16bit = 0;  ///< best-shape achievable fraction of peak (MAMF)
  double gemm_efficiency_fp8 = 0;
  double kernel_launch_floor_s = 0;  ///< minimum time of a GEMM or attention kernel
  /// Fixed time of a memory-bound kernel on top of its bytes at streaming bandwidth: launch,
  /// ramp-up and drain. Measured on H100 (scaling-book: a 65k-element fp32 add takes 1.5 us
  /// against a 0.23 us roofline, while 2^30 elements reach 94% of HBM bandwidth); assumed the
  /// same on the other GPUs. It is why memory-bound kernels of 1-100 MB run below the
  /// streaming rate (Calculon's size-dependent HBM efficiency: 0.9 at 100 MB, 0.75 at 10 MB,
  /// 0.6 at 1 MB).
  double memory_kernel_latency_s = 1.3e-6;
  /// SMs that communication kernels hold while a collective or transfer runs: NCCL runs one
  /// thread block per channel. Measured channel counts: 24 ring channels on an 8-GPU
  /// NVSwitch A100 node (NCCL debug log in NVIDIA/nccl-tests issue #100, "Channel 23/24");
  /// 16 collective channels on H800 (NVIDIA/nccl issue #892) and at most 16 for NVLS on
  /// Hopper (NCCL source comment quoted in NVIDIA/nccl issue #1041). DeepSeek-V3 reserves 20
  /// of 132 SMs for communication (arXiv:2412.19437 §3.2.2). Default 16; the A100 profiles
  /// set 24.
  int comm_sms = 16;
  double nvlink_bw = 0;              ///< datasheet NVLink bandwidth per GPU per direction, B/s
  double nccl_nvlink_bw = 0;         ///< NCCL model's effective NVLink bus bandwidth, B/s
  /// Measured ramp of NCCL bandwidth inside an NVLink domain: at these bus bytes (message
  /// size x busbw factor), the fraction of the collective model's bandwidth term that a
  /// measured all_reduce size sweep reached (after the model's latency; normalised to 1 at
  /// the largest message). Derived in docs/hardware.md from ../shared/reference/hardware.md
  /// §3.2 (ml-engineering sweeps). Empty: no ramp.
  std::vector<double> nvlink_ramp_bus_bytes, nvlink_ramp_efficiency;
  std::vector<AttentionCurve> attention;  ///< measured FlashAttention rates
  std::string attention_impl;             ///< which kernel the curves measure
  std::vector<std::string> sources;

  /// Dense peak FLOP/s for a dtype; throws std::invalid_argument when the GPU lacks it.
  [[nodiscard]] double peak_flops(Dtype d) const;
  /// Best-shape GEMM efficiency for a dtype.
  [[nodiscard]] double gemm_efficiency(Dtype d) const;
};

/// The built-in profiles: a100_sxm4_40gb, a100_sxm4_80gb, h100_sxm, h200_sxm, b200.
const std::vector<GpuSpec>& builtin_gpus();
/// Looks up a built-in profile by key (case-sensitive); nullptr when unknown.
const GpuSpec* find_builtin_gpu(std::string_view key);

}  // namespace trainsim::hw
