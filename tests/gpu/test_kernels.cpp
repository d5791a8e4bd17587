// GPU tests (ctest label "gpu"): the kernels/ attention against the naive reference, the
// memory-bound kernels against host references, the cuBLASLt runner and trainsim-calibrate
// end to end. Every test GTEST_SKIPs when no CUDA device is present, so CI without a GPU
// passes; the one CPU-side check (no device: message, exit 1, nothing written) skips when a
// device IS present.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gemm.hpp"
#include "harness.hpp"
#include "hw/profile_io.hpp"
#include "kernels.hpp"

using namespace trainsim;
using calib::check;
using calib::DeviceBuffer;

namespace {

#define REQUIRE_DEVICE()                                               \
  do {                                                                 \
    if (auto why = calib::no_device_reason()) GTEST_SKIP() << *why;    \
  } while (0)

std::vector<float> to_host_bf16(const DeviceBuffer& b, std::size_t n) {
  DeviceBuffer f(n * sizeof(float));
  check(kernels::bf16_to_float(b.get(), f.as<float>(), std::int64_t(n), nullptr), "convert");
  std::vector<float> h(n);
  check(cudaMemcpy(h.data(), f.get(), n * sizeof(float), cudaMemcpyDeviceToHost), "copy");
  return h;
}

std::vector<float> to_host_f32(const DeviceBuffer& b, std::size_t n) {
  std::vector<float> h(n);
  check(cudaMemcpy(h.data(), b.get(), n * sizeof(float), cudaMemcpyDeviceToHost), "copy");
  return h;
}

// Largest |a - b| relative to max(1, max |b|).
double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 1;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, double(std::abs(a[i] - b[i])));
    scale = std::max(scale, double(std::abs(b[i])));
  }
  return diff / scale;
}

struct AttnCase {
  int batch, heads, kv_heads, seq, head_dim;
  bool causal;
};

/// "b2h4kv4s200d64causal": the test name suffix, and what gtest prints for the parameter
/// (without PrintTo it dumps the struct's bytes, padding included, which differ run to run).
std::string case_name(const AttnCase& c) {
  std::ostringstream os;
  os << "b" << c.batch << "h" << c.heads << "kv" << c.kv_heads << "s" << c.seq << "d"
     << c.head_dim << (c.causal ? "causal" : "full");
  return os.str();
}
void PrintTo(const AttnCase& c, std::ostream* os) { *os << case_name(c); }

class AttentionKernel : public ::testing::TestWithParam<AttnCase> {};

TEST_P(AttentionKernel, ForwardAndBackwardMatchTheNaiveReference) {
  REQUIRE_DEVICE();
  const auto c = GetParam();
  kernels::AttentionShape s{c.batch, c.heads, c.kv_heads, c.seq, c.head_dim, c.causal};
  const std::size_t nq = s.q_elems(), nk = s.kv_elems(), nl = s.lse_elems();
  DeviceBuffer q(nq * 2), k(nk * 2), v(nk * 2), o(nq * 2), d_o(nq * 2), dq(nq * 2), dk(nk * 2),
      dv(nk * 2), lse(nl * 4), delta(nl * 4);
  DeviceBuffer ro(nq * 4), rlse(nl * 4), rdq(nq * 4), rdk(nk * 4), rdv(nk * 4);
  check(kernels::fill_random(q.get(), std::int64_t(nq), kernels::Elem::BF16, 1, 2.0f, nullptr), "fill");
  check(kernels::fill_random(k.get(), std::int64_t(nk), kernels::Elem::BF16, 2, 2.0f, nullptr), "fill");
  check(kernels::fill_random(v.get(), std::int64_t(nk), kernels::Elem::BF16, 3, 1.0f, nullptr), "fill");
  check(kernels::fill_random(d_o.get(), std::int64_t(nq), kernels::Elem::BF16, 4, 1.0f, nullptr), "fill");
  check(kernels::attention_fwd(s, q.get(), k.get(), v.get(), o.get(), lse.as<float>(), nullptr), "fwd");
  check(kernels::attention_fwd_reference(s, q.get(), k.get(), v.get(), ro.as<float>(), rlse.as<float>(), nullptr), "ref fwd");
  check(kernels::attention_bwd(s, q.get(), k.get(), v.get(), o.get(), d_o.get(), lse.as<float>(),
                               delta.as<float>(), dq.get(), dk.get(), dv.get(), nullptr), "bwd");
  check(kernels::attention_bwd_reference(s, q.get(), k.get(), v.get(), d_o.get(), rdq.as<float>(),
                                         rdk.as<float>(), rdv.as<float>(), nullptr), "ref bwd");
  check(cudaDeviceSynchronize(), "sync");
  // bf16 outputs carry ~0.4% rounding; the backward also differs by using the bf16 O in Delta.
  EXPECT_LT(rel_err(to_host_bf16(o, nq), to_host_f32(ro, nq)), 1e-2);
  EXPECT_LT(rel_err(to_host_f32(lse, nl), to_host_f32(rlse, nl)), 1e-3);
  EXPECT_LT(rel_err(to_host_bf16(dq, nq), to_host_f32(rdq, nq)), 3e-2);
  EXPECT_LT(rel_err(to_host_bf16(dk, nk), to_host_f32(rdk, nk)), 3e-2);
  EXPECT_LT(rel_err(to_host_bf16(dv, nk), to_host_f32(rdv, nk)), 3e-2);
  // Not trivially zero.
  const auto h = to_host_bf16(dk, nk);
  EXPECT_GT(*std::max_element(h.begin(), h.end()), 1e-3f);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionKernel,
    ::testing::Values(AttnCase{2, 4, 4, 200, 64, true}, AttnCase{2, 4, 4, 200, 64, false},
                      AttnCase{1, 8, 2, 333, 128, true}, AttnCase{1, 8, 2, 333, 128, false},
                      AttnCase{3, 4, 1, 64, 128, true}, AttnCase{1, 2, 2, 1, 64, true}),
    [](const auto& param_info) { return case_name(param_info.param); });

TEST(AttentionKernel, ParameterPrintsAsItsName) {
  EXPECT_EQ(::testing::PrintToString(AttnCase{1, 8, 2, 333, 128, true}), "b1h8kv2s333d128causal");
}

TEST(AttentionKernel, RejectsUnsupportedShapes) {
  EXPECT_FALSE(kernels::attention_unsupported({1, 4, 4, 16, 96, true}).empty());
  EXPECT_FALSE(kernels::attention_unsupported({1, 6, 4, 16, 64, true}).empty());
  EXPECT_TRUE(kernels::attention_unsupported({1, 8, 2, 16, 128, false}).empty());
}

TEST(MemoryKernels, NormsActivationsSoftmaxAdamCopyMatchHostReferences) {
  REQUIRE_DEVICE();
  const int rows = 37, cols = 1000;
  const std::size_t n = std::size_t(rows) * cols;
  DeviceBuffer x(n * 4), y(n * 2), dy(n * 2), dx(n * 4), g(cols * 4), b(cols * 4), dg(cols * 4),
      db(cols * 4);
  check(kernels::fill_random(x.get(), std::int64_t(2 * n), kernels::Elem::BF16, 5, 3.0f, nullptr), "fill");
  check(kernels::fill_random(dy.get(), std::int64_t(n), kernels::Elem::BF16, 6, 1.0f, nullptr), "fill");
  check(kernels::fill_random(g.get(), cols, kernels::Elem::FP32, 7, 1.0f, nullptr), "fill");
  check(kernels::fill_random(b.get(), cols, kernels::Elem::FP32, 8, 1.0f, nullptr), "fill");
  const auto hx = to_host_bf16(x, 2 * n);
  const auto hg = to_host_f32(g, cols), hb = to_host_f32(b, cols);
  // LayerNorm forward.
  check(kernels::layernorm_fwd(x.get(), g.as<float>(), b.as<float>(), y.get(), rows, cols, nullptr), "ln");
  std::vector<float> ref(n);
  for (int r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int c = 0; c < cols; ++c) mean += hx[std::size_t(r) * cols + c];
    mean /= cols;
    for (int c = 0; c < cols; ++c) var += std::pow(hx[std::size_t(r) * cols + c] - mean, 2);
    var /= cols;
    for (int c = 0; c < cols; ++c) {
      ref[std::size_t(r) * cols + c] =
          float((hx[std::size_t(r) * cols + c] - mean) / std::sqrt(var + 1e-5) * hg[c] + hb[c]);
    }
  }
  EXPECT_LT(rel_err(to_host_bf16(y, n), ref), 1e-2);
  // RMSNorm forward.
  check(kernels::rmsnorm_fwd(x.get(), g.as<float>(), y.get(), rows, cols, nullptr), "rms");
  for (int r = 0; r < rows; ++r) {
    double ms = 0;
    for (int c = 0; c < cols; ++c) ms += std::pow(hx[std::size_t(r) * cols + c], 2);
    ms /= cols;
    for (int c = 0; c < cols; ++c) {
      ref[std::size_t(r) * cols + c] = float(hx[std::size_t(r) * cols + c] / std::sqrt(ms + 1e-5) * hg[c]);
    }
  }
  EXPECT_LT(rel_err(to_host_bf16(y, n), ref), 1e-2);
  // RMSNorm backward: dx is orthogonal to x/rms-weighted... check with a finite difference
  // of the loss sum(dy * y) along one coordinate.
  check(kernels::rmsnorm_bwd(x.get(), dy.get(), g.as<float>(), dx.get(), dg.as<float>(), rows, cols, nullptr), "rms bwd");
  {
    const auto hdy = to_host_bf16(dy, n);
    const auto hdx = to_host_bf16(dx, n);
    auto loss_row0 = [&](const std::vector<double>& xr) {
      double ms = 0;
      for (int c = 0; c < cols; ++c) ms += xr[c] * xr[c];
      ms /= cols;
      double l = 0;
      for (int c = 0; c < cols; ++c) l += hdy[c] * xr[c] / std::sqrt(ms + 1e-5) * hg[c];
      return l;
    };
    std::vector<double> xr(hx.begin(), hx.begin() + cols);
    for (int c : {0, 17, 999}) {
      auto xp = xr, xm = xr;
      xp[c] += 1e-3;
      xm[c] -= 1e-3;
      const double fd = (loss_row0(xp) - loss_row0(xm)) / 2e-3;
      EXPECT_NEAR(hdx[c], fd, 2e-2 * std::max(1.0, std::abs(fd))) << c;
    }
  }
  // GeLU (tanh) forward and backward.
  check(kernels::gelu_fwd(x.get(), y.get(), std::int64_t(n), nullptr), "gelu");
  for (std::size_t i = 0; i < n; ++i) {
    const double v = hx[i];
    ref[i] = float(0.5 * v * (1 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))));
  }
  EXPECT_LT(rel_err(to_host_bf16(y, n), ref), 1e-2);
  // SwiGLU: x as [rows, 2*cols].
  check(kernels::swiglu_fwd(x.get(), y.get(), rows, cols, nullptr), "swiglu");
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      const double a = hx[std::size_t(r) * 2 * cols + c], u = hx[std::size_t(r) * 2 * cols + cols + c];
      ref[std::size_t(r) * cols + c] = float(a / (1 + std::exp(-a)) * u);
    }
  }
  EXPECT_LT(rel_err(to_host_bf16(y, n), ref), 1e-2);
  // Softmax rows sum to one and match.
  check(kernels::softmax_fwd(x.get(), y.get(), rows, cols, nullptr), "softmax");
  const auto hs = to_host_bf16(y, n);
  for (int r = 0; r < rows; ++r) {
    double sum = 0;
    for (int c = 0; c < cols; ++c) sum += hs[std::size_t(r) * cols + c];
    EXPECT_NEAR(sum, 1.0, 1e-2);
  }
  // Copy is exact, including an unaligned tail.
  DeviceBuffer z(n * 2);
  check(kernels::copy(x.get(), z.get(), n * 2 - 6, nullptr), "copy");
  const auto hz = to_host_bf16(z, n - 3);
  EXPECT_TRUE(std::equal(hz.begin(), hz.end(), hx.begin()));
  check(kernels::copy(x.get(), z.get(), n * 2, nullptr), "copy");
  const auto hz2 = to_host_bf16(z, n);
  EXPECT_TRUE(std::equal(hz2.begin(), hz2.end(), hx.begin()));
}

TEST(MemoryKernels, AdamStepMatchesTheUpdateRule) {
  REQUIRE_DEVICE();
  const std::int64_t n = 4097;
  DeviceBuffer w(n * 4), m(n * 4), v(n * 4), grad(n * 2), out(n * 2);
  check(kernels::fill_random(w.get(), n, kernels::Elem::FP32, 1, 1.0f, nullptr), "fill");
  check(kernels::fill_random(grad.get(), n, kernels::Elem::BF16, 2, 0.5f, nullptr), "fill");
  check(cudaMemset(m.get(), 0, n * 4), "memset");
  check(cudaMemset(v.get(), 0, n * 4), "memset");
  const auto hw0 = to_host_f32(w, n);
  const auto hgr = to_host_bf16(grad, n);
  check(kernels::adam_step(w.as<float>(), m.as<float>(), v.as<float>(), grad.get(), out.get(), n,
                           1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f, 1, nullptr), "adam");
  const auto hw1 = to_host_f32(w, n);
  // First step, no decay: the bias-corrected update is lr * g / (|g| + eps) = lr * sign(g).
  for (std::int64_t i = 0; i < n; i += 97) {
    EXPECT_NEAR(hw1[i], hw0[i] - 1e-2f * (hgr[i] > 0 ? 1.f : -1.f), 1e-5) << i;
  }
}

TEST(GemmRunner, TimesABf16Gemm) {
  REQUIRE_DEVICE();
  calib::GemmRunner g;
  const double t = g.time(hw::Dtype::BF16, 1024, 1024, 1024, nullptr, {1, 3, 1.0});
  EXPECT_GT(t, 0);
  EXPECT_LT(t, 0.1);
}

std::string calibrate_exe() { return TRAINSIM_CALIBRATE_EXE; }

int run(const std::string& args, const std::filesystem::path& err) {
  const int st = std::system((calibrate_exe() + " " + args + " > /dev/null 2> " + err.string()).c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(CalibrateCli, NoDeviceSaysWhyExitsOneWritesNothing) {
  if (!calib::no_device_reason()) GTEST_SKIP() << "a CUDA device is present";
  const auto dir = std::filesystem::temp_directory_path() / "trainsim-calib-nodev";
  std::filesystem::create_directories(dir);
  const auto out = dir / "p.toml";
  std::filesystem::remove(out);
  EXPECT_EQ(run("--out " + out.string(), dir / "err"), 1);
  std::ifstream in(dir / "err");
  const std::string msg((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(msg.find("no CUDA device found"), std::string::npos) << msg;
  EXPECT_NE(msg.find("cudaGetDeviceCount"), std::string::npos) << msg;
  EXPECT_FALSE(std::filesystem::exists(out));
  std::filesystem::remove_all(dir);
}

TEST(CalibrateCli, BadInputIsReportedBeforeTheDeviceIsTouched) {
  // No device needed: inputs are checked first, so this runs on CPU-only CI too.
  const auto dir = std::filesystem::temp_directory_path() / "trainsim-calib-badinput";
  std::filesystem::create_directories(dir);
  const auto bad = dir / "bad.toml";
  std::ofstream(bad) << "version = 1\n[model]\nlayerz = 2\n";
  auto err_text = [&]() {
    std::ifstream in(dir / "err");
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  EXPECT_EQ(run("--out " + (dir / "p.toml").string() + " --scenario " + bad.string(), dir / "err"), 1);
  EXPECT_NE(err_text().find(bad.string() + ":3:1"), std::string::npos) << err_text();
  EXPECT_EQ(run("--out " + (dir / "p.toml").string() + " --ops gemm,tensor", dir / "err"), 1);
  EXPECT_NE(err_text().find("unknown sweep \"tensor\""), std::string::npos) << err_text();
  EXPECT_EQ(run("--out /nonexistent-dir/p.toml", dir / "err"), 1);
  EXPECT_NE(err_text().find("no such directory"), std::string::npos) << err_text();
  // These were checked only after a device was found (a different message with and without
  // a GPU, and on a GPU after the device had started).
  EXPECT_EQ(run("--out " + (dir / "p.toml").string() + " --base-gpu nonsense", dir / "err"), 1);
  EXPECT_NE(err_text().find("--base-gpu: unknown built-in GPU \"nonsense\""), std::string::npos)
      << err_text();
  EXPECT_EQ(run("--validate " + (std::filesystem::path(TRAINSIM_SOURCE_DIR) / "scenarios" /
                                 "gpt3-175b-a100.toml").string(),
                dir / "err"),
            1);
  EXPECT_NE(err_text().find("--validate runs one GPU"), std::string::npos) << err_text();
  EXPECT_EQ(run("--out " + dir.string(), dir / "err"), 1);
  EXPECT_NE(err_text().find("is a directory, not a file name"), std::string::npos) << err_text();
  EXPECT_FALSE(std::filesystem::exists(dir / "p.toml"));
  std::filesystem::remove_all(dir);
}

TEST(CalibrateCli, QuickMemorySweepWritesAReadableProfile) {
  REQUIRE_DEVICE();
  const auto dir = std::filesystem::temp_directory_path() / "trainsim-calib-quick";
  std::filesystem::create_directories(dir);
  const auto out = dir / "p.toml";
  ASSERT_EQ(run("--quick --ops memory,attention --out " + out.string(), dir / "err"), 0);
  const hw::HardwareProfile p = hw::read_profile(out);
  EXPECT_EQ(p.profile_version, 1);
  EXPECT_FALSE(p.memory.empty());
  EXPECT_FALSE(p.attention.empty());
  EXPECT_FALSE(p.provenance.gpu_name.empty());
  EXPECT_FALSE(p.attention_impl.empty());
  std::filesystem::remove_all(dir);
}

}  // namespace
