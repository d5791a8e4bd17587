#include <gtest/gtest.h>

#include <cmath>

#include "cost/cost_model.hpp"
#include "hw/gpu.hpp"

using namespace trainsim;
using cost::CostModel;
using cost::Epilogue;
using hw::Dtype;

namespace {
const hw::GpuSpec& a100() { return *hw::find_builtin_gpu("a100_sxm4_80gb"); }
const hw::GpuSpec& h100() { return *hw::find_builtin_gpu("h100_sxm"); }
}  // namespace

TEST(BuiltinGpus, AllIssueProfilesExistWithSourcedPeaks) {
  for (const char* k : {"a100_sxm4_40gb", "a100_sxm4_80gb", "h100_sxm", "h200_sxm", "b200"}) {
    const auto* g = hw::find_builtin_gpu(k);
    ASSERT_NE(g, nullptr) << k;
    EXPECT_GT(g->sm_count, 0);
    EXPECT_GT(g->peak_bf16, 0);
    EXPECT_GT(g->hbm_bw, 0);
    EXPECT_FALSE(g->sources.empty());
  }
  EXPECT_DOUBLE_EQ(a100().peak_bf16, 312e12);
  EXPECT_DOUBLE_EQ(h100().peak_bf16, 989.4e12);
  EXPECT_EQ(hw::find_builtin_gpu("nope"), nullptr);
  EXPECT_THROW((void)a100().peak_flops(Dtype::FP8), std::invalid_argument);
}

TEST(GemmCost, LargeSquareGemmRunsAtTheMeasuredBestShapeRate) {
  const CostModel c(a100());
  const double flops = 2.0 * 8192.0 * 8192.0 * 8192.0;
  const double rate = flops / c.gemm(8192, 8192, 8192, Dtype::BF16).seconds();
  // MAMF 271.2 TFLOP/s; tiles fill 19 waves of 108 SMs to 99.8%, epilogue < 1%.
  EXPECT_NEAR(rate / 271.2e12, 1.0, 0.02);
}

// An independent measurement of H100 (sm_90) BF16 GEMMs: OpenXLA's default matmul
// performance table (openxla/xla, xla/service/gpu/model/matmul_interpolator_data.h, 2025;
// batch b, m, n, k, measured TFLOP/s). These are the shapes of at least 30 GFLOP with k >= 1024,
// the sizes of training GEMMs. The built-in model (MAMF rate, tile waves, epilogue after each
// tile) is 0.89-0.99 of them: slow, not fast, at these sizes. A model with Hopper's epilogue
// overlapped would match them at 0.97 but put the published H100 runs further off (docs/
// accuracy.md, "GEMM speed is not why"), and the table's GPU (its rates pass the H100 SXM MAMF)
// and clocks are not stated, so it is a cross-check here, not the profile.
TEST(GemmCost, H100BuiltinModelAgainstOpenXlaMeasuredSm90Gemms) {
  struct Row {
    std::int64_t b, m, n, k;
    double tflops;
  };
  const Row rows[] = {
      {1, 4096, 4096, 4096, 783.3}, {2, 4096, 4096, 4096, 807.7}, {4, 4096, 4096, 4096, 793.1},
      {1, 4096, 4096, 2048, 738.7}, {2, 4096, 4096, 2048, 763.0}, {4, 4096, 4096, 2048, 764.6},
      {1, 4096, 2048, 4096, 758.4}, {4, 4096, 2048, 4096, 808.7}, {1, 1024, 4096, 4096, 738.5},
      {1, 4096, 1024, 4096, 738.5}, {2, 2048, 2048, 2048, 717.7}, {4, 2048, 2048, 2048, 725.7},
      {2, 4096, 4096, 1024, 693.0}, {4, 4096, 1024, 1024, 673.8}, {2, 4096, 512, 4096, 729.7},
      {4, 1024, 2048, 2048, 712.7}};
  const CostModel c(h100());
  double log_sum = 0;
  for (const Row& r : rows) {
    const double flops = 2.0 * static_cast<double>(r.b * r.m) * static_cast<double>(r.n * r.k);
    const double ratio = flops / c.gemm(r.m, r.n, r.k, Dtype::BF16, r.b).seconds() / 1e12 / r.tflops;
    EXPECT_GT(ratio, 0.87) << r.b << "x" << r.m << "x" << r.n << "x" << r.k;
    EXPECT_LT(ratio, 1.02) << r.b << "x" << r.m << "x" << r.n << "x" << r.k;
    log_sum += std::log(ratio);
  }
  const double geomean = std::exp(log_sum / static_cast<double>(std::size(rows)));
  EXPECT_GT(geomean, 0.90);
  EXPECT_LT(geomean, 0.96);
}

TEST(GemmCost, WaveQuantizationMakesOneExtraWaveCostAFullWave) {
  const CostModel c(a100());
  // 108 output tiles of 256x128 fill one wave on 108 SMs; 109 need two.
  const std::int64_t k = 8192;
  const Time one_wave = c.gemm(256 * 108, 128, k, Dtype::BF16);
  const Time two_waves = c.gemm(256 * 108 + 1, 128, k, Dtype::BF16);
  EXPECT_GT(two_waves.seconds() / one_wave.seconds(), 1.3);
}

TEST(GemmCost, NeverFasterForALargerProblem) {
  const CostModel c(h100());
  Time prev;
  for (std::int64_t m = 64; m <= 16384; m += 448) {
    const Time t = c.gemm(m, 4096, 4096, Dtype::BF16);
    EXPECT_GE(t, prev) << "m=" << m;
    prev = t;
  }
}

TEST(GemmCost, ThinGemmIsHbmBoundAndTinyGemmIsLaunchBound) {
  const CostModel c(a100());
  const double bytes = (8192.0 * 16 + 16.0 * 8192) * 2 + 8192.0 * 8192 * 2;
  const double roofline = bytes / (a100().hbm_bw * a100().hbm_efficiency);
  EXPECT_NEAR(c.gemm(8192, 8192, 16, Dtype::BF16).seconds() / roofline, 1.0, 0.15);
  EXPECT_EQ(c.gemm(8, 8, 8, Dtype::BF16), Time::from_seconds(a100().kernel_launch_floor_s));
  EXPECT_THROW((void)c.gemm(0, 8, 8, Dtype::BF16), std::invalid_argument);
}

// Accumulating into fp32 main gradients moves 8 bytes of C per element instead of 2: on an
// output-bound GEMM (k tiny) the time follows the HBM bytes.
TEST(GemmCost, Fp32AccumulateEpilogueMovesEightBytesPerOutputElement) {
  const CostModel c(a100());
  const double hbm = a100().hbm_bw * a100().hbm_efficiency;
  const double mn = 8192.0 * 8192, in = (8192.0 * 16 * 2) * 2;
  const double store = c.gemm(8192, 8192, 16, Dtype::BF16).seconds();
  const double acc = c.gemm(8192, 8192, 16, Dtype::BF16, 1, Epilogue::AccumulateFp32).seconds();
  EXPECT_NEAR(store / ((in + 2 * mn) / hbm), 1.0, 0.15);
  EXPECT_NEAR(acc / ((in + 8 * mn) / hbm), 1.0, 0.15);
  // A compute-bound GEMM notices little (the epilogue is a small part of each tile).
  const double big = c.gemm(8192, 8192, 8192, Dtype::BF16).seconds();
  const double big_acc = c.gemm(8192, 8192, 8192, Dtype::BF16, 1, Epilogue::AccumulateFp32).seconds();
  EXPECT_GT(big_acc, big);
  EXPECT_LT(big_acc / big, 1.08);
}

// fp16 training keeps fp16 main gradients: its accumulating epilogue reads and writes 2 bytes.
TEST(GemmCost, Fp16AccumulateEpilogueMovesFourBytesPerOutputElement) {
  const CostModel c(a100());
  const double hbm = a100().hbm_bw * a100().hbm_efficiency;
  const double mn = 8192.0 * 8192, in = (8192.0 * 16 * 2) * 2;
  const double acc = c.gemm(8192, 8192, 16, Dtype::FP16, 1, Epilogue::Accumulate16).seconds();
  EXPECT_NEAR(acc / ((in + 4 * mn) / hbm), 1.0, 0.15);
  EXPECT_LT(acc, c.gemm(8192, 8192, 16, Dtype::FP16, 1, Epilogue::AccumulateFp32).seconds());
  EXPECT_GT(acc, c.gemm(8192, 8192, 16, Dtype::FP16).seconds());
}

TEST(AttentionCost, UsesTheMeasuredFlashAttentionRate) {
  const CostModel c(a100());
  // FA2 A100 causal hd128 at 2k: 155 TFLOP/s (fwd+bwd); 8 x 16 heads x 16 blocks = 2048 CTAs.
  const double fwd_flops = 4.0 * 8 * 16 * 2048.0 * 2048 * 128 / 2;
  const double waves = std::ceil(2048.0 / 108);
  const double eff = 2048.0 / (waves * 108);
  EXPECT_NEAR(c.attention_fwd(8, 16, 2048, 128, true).seconds(),
              fwd_flops / (155e12 * eff), 1e-9);
  EXPECT_NEAR(c.attention_bwd(8, 16, 2048, 128, true).seconds(),
              2.5 * fwd_flops / (155e12 * eff), 1e-9);
  // Log-linear interpolation between measured sequence lengths.
  EXPECT_NEAR(c.attention_tflops(2896, 128, true, false), (155.0 + 173.0) / 2, 0.1);
  EXPECT_DOUBLE_EQ(c.attention_tflops(100000, 128, true, false), 189.0);
}

TEST(AttentionCost, UnfusedAttentionIsSlowerThanFlashAtLongSequences) {
  const CostModel c(a100());
  EXPECT_GT(c.attention_fwd(1, 12, 4096, 128, true, cost::AttentionImpl::Unfused),
            c.attention_fwd(1, 12, 4096, 128, true, cost::AttentionImpl::Flash));
}

TEST(MemoryBoundCost, BytesOverAchievableBandwidth) {
  const CostModel c(h100());
  // 1.3 us of latency plus the bytes at 92% of 3.35 TB/s.
  EXPECT_NEAR(c.memory_bound(1e9).seconds(), 1.3e-6 + 1e9 / (3.35e12 * 0.92), 1e-12);
  EXPECT_NEAR(c.memory_bound(10).seconds(), 1.3e-6, 1e-11);  // the latency alone
  // The scaling-book measurement the latency comes from: a 65,536-element fp32 add (read two,
  // write one: 786 kB) took 1.5 us on H100.
  EXPECT_NEAR(c.memory_bound(65536.0 * 4 * 3).seconds(), 1.5e-6, 0.3e-6);
  // Effective bandwidth falls with size as Calculon's table says: about 0.9 of the streaming
  // rate at 100 MB, 0.75 at 10 MB (within 0.1).
  const double rate = 3.35e12 * 0.92;
  EXPECT_NEAR(1e8 / rate / c.memory_bound(1e8).seconds(), 0.96, 0.1);
  EXPECT_NEAR(1e7 / rate / c.memory_bound(1e7).seconds(), 0.75, 0.1);
}
