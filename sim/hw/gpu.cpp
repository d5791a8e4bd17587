#include "hw/gpu.hpp"

#include <stdexcept>

namespace trainsim::hw {

int dtype_bytes(Dtype d) {
  switch (d) {
    case Dtype::FP8: return 1;
    case Dtype::BF16:
    case Dtype::FP16: return 2;
    case Dtype::FP32: return 4;
  }
  throw std::invalid_argument("dtype_bytes: bad dtype");
}

std::string_view dtype_name(Dtype d) {
  switch (d) {
    case Dtype::BF16: return "bf16";
    case Dtype::FP16: return "fp16";
    case Dtype::FP8: return "fp8";
    case Dtype::FP32: return "fp32";
  }
  return "?";
}

double GpuSpec::peak_flops(Dtype d) const {
  double v = 0;
  switch (d) {
    case Dtype::BF16: v = peak_bf16; break;
    case Dtype::FP16: v = peak_fp16; break;
    case Dtype::FP8: v = peak_fp8; break;
    case Dtype::FP32: v = peak_fp32; break;
  }
  if (v <= 0) {
    throw std::invalid_argument("GPU " + display_name + " has no dense " +
                                std::string(dtype_name(d)) + " tensor-core peak");
  }
  return v;
}

double GpuSpec::gemm_efficiency(Dtype d) const {
  return d == Dtype::FP8 ? gemm_efficiency_fp8 : gemm_efficiency_16bit;
}

namespace {

constexpr double kT = 1e12;  // TFLOP/s or TB/s
constexpr double kG = 1e9;   // GB, GB/s
constexpr double kMiB = 1024.0 * 1024.0;  // HBM capacities as nvidia-smi reports them

const std::vector<double> kSeq = {512, 1024, 2048, 4096, 8192, 16384};

// FlashAttention-2 forward+backward on A100 80GB SXM4 (TFLOP/s), read from the
// flash-attention README benchmark figures (hardware.md §4.2). The figures give the combined
// rate only, so forward and backward share it.
std::vector<AttentionCurve> a100_attention() {
  auto same = [](bool causal, int d, const std::vector<double>& r) {
    return AttentionCurve{causal, d, kSeq, r, r};
  };
  return {same(false, 64, {132, 153, 162, 171, 175, 176}),
          same(false, 128, {151, 173, 187, 196, 201, 203}),
          same(true, 64, {88, 119, 140, 156, 165, 171}),
          same(true, 128, {99, 133, 155, 173, 182, 189})};
}

// Hopper: FlashAttention-3 forward (flash-attention assets/flash3_fp16_fwd.png) and a backward
// rate of FA2's fwd+bwd rate x 1.6 (FA3 paper: backward 1.5-1.75x FA2; hardware.md §4.2, no
// per-shape backward table was sourced).
std::vector<AttentionCurve> hopper_attention(double scale) {
  auto curve = [scale](bool causal, int d, const std::vector<double>& fwd,
                       const std::vector<double>& fa2) {
    AttentionCurve c{causal, d, kSeq, {}, {}};
    for (double v : fwd) c.fwd_tflops.push_back(v * scale);
    for (double v : fa2) c.bwd_tflops.push_back(v * 1.6 * scale);
    return c;
  };
  return {curve(false, 64, {333, 392, 460, 476, 496, 497}, {215, 254, 274, 288, 294, 296}),
          curve(false, 128, {467, 565, 625, 638, 646, 648}, {248, 294, 320, 326, 335, 338}),
          curve(true, 64, {197, 265, 371, 420, 460, 473}, {141, 192, 232, 257, 273, 284}),
          curve(true, 128, {292, 423, 521, 579, 602, 616}, {163, 221, 265, 294, 308, 328})};
}

std::vector<GpuSpec> make_builtins() {
  std::vector<GpuSpec> v;
  const std::string ref = "../shared/reference/hardware.toml";

  GpuSpec a100;
  a100.key = "a100_sxm4_80gb";
  a100.display_name = "NVIDIA A100-SXM4-80GB";
  a100.arch = 80;
  a100.sm_count = 108;
  a100.hbm_bytes = 81920 * kMiB;      // "80GB" = 80 GiB (nvidia-smi: 81920 MiB)
  a100.hbm_bw = 2.039 * kT;
  a100.hbm_efficiency = 0.90;
  a100.l2_bw = 1.6 * a100.hbm_bw;      // assumed H100 ratio (no A100 measurement sourced)
  a100.peak_bf16 = a100.peak_fp16 = 312 * kT;
  a100.peak_fp32 = 19.5 * kT;
  a100.gemm_efficiency_16bit = 0.869;  // MAMF 271.2 TFLOP/s (ml-engineering mamf-finder)
  a100.gemm_efficiency_fp8 = 0;
  a100.kernel_launch_floor_s = 2e-6;   // pytorch/ao roofline_utils
  a100.comm_sms = 24;                 // 24 NCCL ring channels (nccl-tests issue #100)
  a100.nvlink_bw = 300 * kG;
  a100.nccl_nvlink_bw = 240 * kG;      // NCCL topo.h SM80 20 GB/s x 12 links
  // 8 x A100 all_reduce sweep (hardware.md §3.2: 171.5 / 194 / 229 / 234.9 GB/s busbw at
  // 64 MiB / 256 MiB / 1 GiB / 16 GiB) against the model's Simple ring (56 µs, 240 GB/s):
  // derivation in docs/hardware.md.
  a100.nvlink_ramp_bus_bytes = {1.174e8, 4.698e8, 1.879e9, 3.006e10};
  a100.nvlink_ramp_efficiency = {0.795, 0.845, 0.981, 1.0};
  a100.attention = a100_attention();
  a100.attention_impl = "FlashAttention-2 (fwd+bwd rate, flash-attention README)";
  a100.sources = {ref + " [gpu.a100_sxm_80gb]: NVIDIA A100 datasheet (peak, HBM, SMs)",
                  "GEMM efficiency: ml-engineering MAMF (torch 2.6, cu126)",
                  "attention: Dao-AILab/flash-attention README benchmark figures"};
  v.push_back(a100);

  GpuSpec a100_40 = a100;
  a100_40.key = "a100_sxm4_40gb";
  a100_40.display_name = "NVIDIA A100-SXM4-40GB";
  a100_40.hbm_bytes = 40960 * kMiB;   // nvidia-smi: 40960 MiB
  a100_40.hbm_bw = 1.555 * kT;
  a100_40.l2_bw = a100.l2_bw;          // same L2 as the 80 GB part
  a100_40.sources[0] = ref + " [gpu.a100_sxm_40gb]: NVIDIA A100 datasheet";
  v.push_back(a100_40);

  GpuSpec h100;
  h100.key = "h100_sxm";
  h100.display_name = "NVIDIA H100-SXM5-80GB";
  h100.arch = 90;
  h100.sm_count = 132;
  h100.hbm_bytes = 81559 * kMiB;      // nvidia-smi: 81559 MiB
  h100.hbm_bw = 3.35 * kT;
  h100.hbm_efficiency = 0.92;          // pytorch/ao pointwise
  h100.l2_bw = 5.5 * kT;               // measured (chipsandcheese via scaling-book)
  h100.peak_bf16 = h100.peak_fp16 = 989.4 * kT;
  h100.peak_fp8 = 1978.9 * kT;
  h100.peak_fp32 = 66.9 * kT;
  h100.gemm_efficiency_16bit = 0.803;  // MAMF 794.5
  h100.gemm_efficiency_fp8 = 0.709;    // MAMF 1402.6
  h100.kernel_launch_floor_s = 2e-6;
  h100.nvlink_bw = 450 * kG;
  h100.nccl_nvlink_bw = 370.8 * kG;    // SM90 20.6 GB/s x 18 links
  // 8 x H200 NVLS all_reduce sweep (hardware.md §3.2: 220 / 347 / 436 / 464 / 482 GB/s busbw
  // at 16 MiB .. 16 GiB) against the model's NVLS (25 µs, 517 GB/s); same NVLink 4 as H100.
  h100.nvlink_ramp_bus_bytes = {2.936e7, 1.174e8, 4.698e8, 1.879e9, 3.006e10};
  h100.nvlink_ramp_efficiency = {0.561, 0.777, 0.926, 0.968, 1.0};
  h100.attention = hopper_attention(1.0);
  h100.attention_impl = "FlashAttention-3 forward; backward = FA2 x 1.6 (FA3 paper)";
  h100.sources = {ref + " [gpu.h100_sxm]: NVIDIA H100 datasheet",
                  "GEMM efficiency: ml-engineering MAMF",
                  "attention: flash-attention README figures (FA2, FA3)"};
  v.push_back(h100);

  GpuSpec h200 = h100;
  h200.key = "h200_sxm";
  h200.display_name = "NVIDIA H200-SXM-141GB";
  h200.hbm_bytes = 143771 * kMiB;     // nvidia-smi: 143771 MiB (141 GB)
  h200.hbm_bw = 4.8 * kT;
  h200.hbm_efficiency = 0.90;
  h200.gemm_efficiency_fp8 = 0.734;    // MAMF 1453.4
  h200.sources[0] = ref + " [gpu.h200_sxm]: NVIDIA H200 datasheet";
  v.push_back(h200);

  GpuSpec b200;
  b200.key = "b200";
  b200.display_name = "NVIDIA B200 (HGX/DGX, 180GB, 1000W)";
  b200.arch = 100;
  b200.sm_count = 148;
  b200.hbm_bytes = 178.35 * 1024 * kMiB;  // usable 178.35 GiB (pytorch/ao PR #4002 device query)
  b200.hbm_bw = 8.0 * kT;
  b200.hbm_efficiency = 0.90;
  b200.l2_bw = 1.6 * b200.hbm_bw;      // assumed H100 ratio
  b200.peak_bf16 = b200.peak_fp16 = 2250 * kT;
  b200.peak_fp8 = 4500 * kT;
  b200.peak_fp32 = 75 * kT;
  b200.gemm_efficiency_16bit = 0.776;  // MAMF 1745
  b200.gemm_efficiency_fp8 = 0.763;    // MAMF 3432.5
  b200.kernel_launch_floor_s = 2e-6;
  b200.nvlink_bw = 900 * kG;
  b200.nccl_nvlink_bw = 721.8 * kG;    // SM100 40.1 GB/s x 18 links
  // No sourced attention measurement for B200: assume the same fraction of dense peak as
  // FlashAttention-3 reaches on H100 (documented assumption, docs/hardware.md).
  b200.attention = hopper_attention(2250.0 / 989.4);
  b200.attention_impl = "assumed: H100 FlashAttention-3 fraction of peak (no B200 measurement)";
  b200.sources = {ref + " [gpu.b200]: NVIDIA B200 datasheet; SM count from a device query",
                  "GEMM efficiency: ml-engineering MAMF"};
  v.push_back(b200);

  // GB200: the Blackwell GPU of an NVL72 rack, clocked higher than HGX B200 (hardware.toml
  // [gpu.gb200]); its SM count is not sourced and assumed equal to B200's.
  GpuSpec gb200 = b200;
  gb200.key = "gb200";
  gb200.display_name = "NVIDIA GB200 (NVL72 Blackwell GPU, 186GB)";
  gb200.hbm_bytes = 186e9;             // 186 GB HBM3e (no device query sourced)
  gb200.peak_bf16 = gb200.peak_fp16 = 2500 * kT;
  gb200.peak_fp8 = 5000 * kT;
  gb200.peak_fp32 = 80 * kT;
  gb200.gemm_efficiency_16bit = 0.729;  // MAMF 1822
  gb200.gemm_efficiency_fp8 = 0.723;    // MAMF 3615.6
  gb200.attention = hopper_attention(2500.0 / 989.4);
  gb200.sources = {ref + " [gpu.gb200]: per-GPU GB200 figures (secondary sources); SM count "
                         "assumed = B200",
                   "GEMM efficiency: ml-engineering MAMF"};
  v.push_back(gb200);
  return v;
}

}  // namespace

const std::vector<GpuSpec>& builtin_gpus() {
  static const std::vector<GpuSpec> gpus = make_builtins();
  return gpus;
}

const GpuSpec* find_builtin_gpu(std::string_view key) {
  for (const auto& g : builtin_gpus()) {
    if (g.key == key) return &g;
  }
  return nullptr;
}

}  // namespace trainsim::hw
