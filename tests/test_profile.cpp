// Measured hardware profiles: interpolation, fits, TOML round trip, bad files, and a
// synthetic profile driving the cost model and a whole simulation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <sys/wait.h>

#include "config/scenario.hpp"
#include "config/scenario_writer.hpp"
#include "core/error.hpp"
#include "cost/cost_model.hpp"
#include "hw/profile.hpp"
#include "hw/profile_io.hpp"
#include "net/profiled.hpp"
#include "test_util.hpp"
#include "workload/step_ops.hpp"

using namespace trainsim;
using hw::Dtype;

namespace {

const hw::GpuSpec& h200() { return *hw::find_builtin_gpu("h200_sxm"); }

std::filesystem::path scenario(const std::string& name) {
  return test::source_dir() / "scenarios" / name;
}

// A profile with one of everything, values chosen so that fits are exact.
hw::HardwareProfile sample_profile() {
  hw::HardwareProfile p;
  p.base_gpu = "h200_sxm";
  p.attention_impl = "trainsim kernels/flash_attention.cu (FA2-style)";
  p.provenance.gpu_name = "NVIDIA H200";
  p.provenance.sm_count = 132;
  p.provenance.compute_capability = 90;
  p.provenance.sm_clock_mhz = 1980;
  p.provenance.mem_clock_mhz = 3201;
  p.provenance.hbm_bytes = 150754820096.0;
  p.provenance.device_count = 8;
  p.provenance.driver = "13.0";
  p.provenance.cuda_runtime = "13.0";
  p.provenance.cublas = "13.0.0";
  p.provenance.nccl = "2.27.7";
  p.provenance.date = "2026-12-01T01:00:00Z";
  p.provenance.command = "trainsim-calibrate --out p.toml";
  p.provenance.host = "node0";
  for (std::int64_t m : {1024, 4096, 16384}) {
    // t = 5 us + flops / 600 TFLOP/s
    const double flops = 2.0 * double(m) * 4096 * 4096;
    p.gemm.push_back({Dtype::BF16, m, 4096, 4096, 5e-6 + flops / 600e12});
  }
  p.attention.push_back({true, 128, 4, 32, 8, 1024, 1e-4, 3e-4});
  p.attention.push_back({true, 128, 4, 32, 8, 4096, 1.2e-3, 3.1e-3});
  for (double bytes : {1e6, 1e8, 1e9}) p.memory.push_back({"copy", bytes, 3e-6 + bytes / 4e12});
  for (double bytes : {1024.0, 1048576.0, 1073741824.0}) {
    const double t = 20e-6 + bytes / 400e9;
    p.collectives.push_back({"all_reduce", 8, 1, bytes, t, bytes / t, bytes / t * 2 * 7 / 8});
  }
  p.refit();
  return p;
}

}  // namespace

TEST(ProfileInterp, ExactAtPointsPowerLawBetweenNothingOutside) {
  const std::vector<double> xs = {1, 4, 16}, ys = {1, 16, 256};  // y = x^2
  EXPECT_DOUBLE_EQ(*hw::interp_loglog(xs, ys, 4), 16);
  EXPECT_NEAR(*hw::interp_loglog(xs, ys, 2), 4, 1e-12);  // a power law is a line in log-log
  EXPECT_NEAR(*hw::interp_loglog(xs, ys, 8), 64, 1e-9);
  EXPECT_FALSE(hw::interp_loglog(xs, ys, 0.5));
  EXPECT_FALSE(hw::interp_loglog(xs, ys, 17));
  EXPECT_FALSE(hw::interp_loglog({}, {}, 1));
}

TEST(ProfileFit, RecoversAlphaAndRateOfExactData) {
  std::vector<double> x, t;
  for (double b = 1e3; b <= 1e10; b *= 10) {
    x.push_back(b);
    t.push_back(20e-6 + b / 400e9);
  }
  const hw::LinearFit f = hw::fit_alpha_rate(x, t);
  EXPECT_NEAR(f.alpha_s / 20e-6, 1, 1e-9);
  EXPECT_NEAR(f.rate / 400e9, 1, 1e-9);
  EXPECT_LT(f.max_rel_err, 1e-9);
  EXPECT_EQ(f.points, 8);
}

TEST(ProfileFit, RelativeWeightsKeepSmallSizesAccurateUnderNoise) {
  // +-5% alternating noise: the fit stays within ~5% at the smallest and largest sizes,
  // which an unweighted fit (dominated by the large times) would not do for the latency.
  std::vector<double> x, t;
  int i = 0;
  for (double b = 1e3; b <= 1e10; b *= 4, ++i) {
    x.push_back(b);
    t.push_back((10e-6 + b / 200e9) * (i % 2 == 0 ? 1.05 : 0.95));
  }
  const hw::LinearFit f = hw::fit_alpha_rate(x, t);
  EXPECT_NEAR(f.alpha_s / 10e-6, 1, 0.08);
  EXPECT_NEAR(f.rate / 200e9, 1, 0.08);
  EXPECT_LT(f.max_rel_err, 0.12);
}

TEST(ProfileFit, RejectsTooFewPointsAndFlatTimesClampsNegativeLatency) {
  EXPECT_THROW((void)hw::fit_alpha_rate({1e6}, {1e-3}), std::invalid_argument);
  EXPECT_THROW((void)hw::fit_alpha_rate({1e6, 1e6}, {1e-3, 2e-3}), std::invalid_argument);
  EXPECT_THROW((void)hw::fit_alpha_rate({1e6, 1e7}, {1e-3, 0.0}), std::invalid_argument);
  EXPECT_THROW((void)hw::fit_alpha_rate({1e6, 1e7}, {2e-3, 1e-3}), std::invalid_argument);
  // Times proportional to size minus a bit: the unconstrained latency is negative.
  const hw::LinearFit f = hw::fit_alpha_rate({1e6, 2e6, 4e6}, {0.9e-3, 1.9e-3, 3.9e-3});
  EXPECT_EQ(f.alpha_s, 0);
  EXPECT_GT(f.rate, 0);
}

TEST(Profile, LookupsInterpolateWithinFamiliesOnly) {
  const hw::HardwareProfile p = sample_profile();
  EXPECT_DOUBLE_EQ(*p.gemm_seconds(Dtype::BF16, 4096, 4096, 4096), p.gemm[1].seconds);
  const double mid = *p.gemm_seconds(Dtype::BF16, 2048, 4096, 4096);
  EXPECT_GT(mid, p.gemm[0].seconds);
  EXPECT_LT(mid, p.gemm[1].seconds);
  EXPECT_NEAR(mid, std::sqrt(p.gemm[0].seconds * p.gemm[1].seconds), 1e-15);  // log midpoint
  EXPECT_FALSE(p.gemm_seconds(Dtype::BF16, 512, 4096, 4096));     // below the range
  EXPECT_FALSE(p.gemm_seconds(Dtype::BF16, 32768, 4096, 4096));   // above
  EXPECT_FALSE(p.gemm_seconds(Dtype::FP16, 4096, 4096, 4096));    // other dtype
  EXPECT_FALSE(p.gemm_seconds(Dtype::BF16, 4096, 4096, 1024));    // other family
  EXPECT_NEAR(*p.attention_tflops(true, 128, 1024, false), p.attention[0].fwd_tflops(), 1e-9);
  EXPECT_FALSE(p.attention_tflops(true, 64, 1024, false));
  EXPECT_FALSE(p.attention_tflops(false, 128, 1024, false));
  EXPECT_FALSE(p.attention_tflops(true, 128, 8192, true));
  EXPECT_TRUE(p.memory_seconds("copy", 5e7));
  EXPECT_FALSE(p.memory_seconds("adam", 5e7));
  EXPECT_NEAR(*p.collective_seconds("all_reduce", 8, 1, 1048576.0), 20e-6 + 1048576.0 / 400e9,
              1e-15);
  EXPECT_FALSE(p.collective_seconds("all_reduce", 4, 1, 1048576.0));
  EXPECT_FALSE(p.collective_seconds("all_reduce", 8, 2, 1048576.0));  // other node count
}

TEST(Profile, RefitFindsTheGeneratingCurves) {
  const hw::HardwareProfile p = sample_profile();
  ASSERT_EQ(p.gemm_fits.size(), 1u);
  EXPECT_EQ(p.gemm_fits[0].family, "bf16");
  EXPECT_NEAR(p.gemm_fits[0].fit.rate / 600e12, 1, 1e-9);
  EXPECT_NEAR(p.gemm_fits[0].fit.alpha_s / 5e-6, 1, 1e-6);
  ASSERT_EQ(p.memory_fits.size(), 1u);
  EXPECT_NEAR(p.memory_fits[0].fit.rate / 4e12, 1, 1e-9);
  ASSERT_EQ(p.collective_fits.size(), 1u);
  EXPECT_EQ(p.collective_fits[0].family, "all_reduce/8");
  EXPECT_NEAR(p.collective_fits[0].fit.alpha_s / 20e-6, 1, 1e-9);
}

TEST(ProfileIo, RoundTripIsExactAndDeterministic) {
  const hw::HardwareProfile p = sample_profile();
  const std::string text = hw::profile_to_toml(p);
  EXPECT_NE(text.find("profile_version = 1"), std::string::npos);
  const hw::HardwareProfile q = hw::parse_profile(text, "mem.toml");
  EXPECT_EQ(hw::profile_to_toml(q), text);
  EXPECT_EQ(q.base_gpu, p.base_gpu);
  EXPECT_EQ(q.attention_impl, p.attention_impl);
  EXPECT_EQ(q.provenance.nccl, "2.27.7");
  EXPECT_EQ(q.provenance.hbm_bytes, p.provenance.hbm_bytes);
  ASSERT_EQ(q.gemm.size(), p.gemm.size());
  for (std::size_t i = 0; i < p.gemm.size(); ++i) {
    EXPECT_EQ(q.gemm[i].m, p.gemm[i].m);
    EXPECT_EQ(q.gemm[i].seconds, p.gemm[i].seconds);  // bit-exact doubles
  }
  ASSERT_EQ(q.attention.size(), 2u);
  EXPECT_EQ(q.attention[1].bwd_seconds, p.attention[1].bwd_seconds);
  EXPECT_EQ(q.attention[1].kv_heads, 8);
  ASSERT_EQ(q.collectives.size(), 3u);
  EXPECT_EQ(q.collectives[2].seconds, p.collectives[2].seconds);
  EXPECT_EQ(q.collectives[2].nodes, 1);
  EXPECT_NEAR(q.collectives[2].busbw, p.collectives[2].busbw, 1e-3);
  ASSERT_EQ(q.collective_fits.size(), 1u);
  EXPECT_EQ(q.collective_fits[0].fit.rate, p.collective_fits[0].fit.rate);

  const auto dir = test::temp_dir("profile-io");
  hw::write_profile(dir / "p.toml", p);
  EXPECT_EQ(test::read(dir / "p.toml"), text);
  EXPECT_EQ(hw::read_profile(dir / "p.toml").path, (dir / "p.toml").string());
  for (const auto& e : std::filesystem::directory_iterator(dir)) {  // no temporary file left
    EXPECT_EQ(e.path().filename(), "p.toml") << e.path();
  }
  // Through a symlink (e.g. --out latest.toml -> h200-2026-12-01.toml) the link stays a link
  // and its target gets the profile; renaming onto the link used to replace it.
  std::filesystem::create_symlink(dir / "p.toml", dir / "link.toml");
  hw::write_profile(dir / "link.toml", p);
  EXPECT_TRUE(std::filesystem::is_symlink(dir / "link.toml"));
  EXPECT_EQ(test::read(dir / "p.toml"), text);
}

struct BadProfile {
  const char* name;
  std::string text;
  const char* where;    // "line:column"
  const char* message;  // part of the message
};

// gtest prints a parameter without PrintTo as its raw bytes: pointers and std::string
// internals, different on every run (non-deterministic test listings).
void PrintTo(const BadProfile& b, std::ostream* os) { *os << b.name; }

TEST(ProfileBadInputParam, PrintsAsItsName) {
  EXPECT_EQ(::testing::PrintToString(BadProfile{"base gpu", "x", "1:1", "m"}), "base gpu");
}

class ProfileBadInput : public ::testing::TestWithParam<BadProfile> {};

TEST_P(ProfileBadInput, NamesFileLineAndKey) {
  const auto& c = GetParam();
  try {
    (void)hw::parse_profile(c.text, "bad.toml");
    FAIL() << "accepted " << c.name;
  } catch (const hw::ProfileError& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.rfind(std::string("bad.toml:") + c.where + ": ", 0), 0u) << what;
    EXPECT_NE(what.find(c.message), std::string::npos) << what;
  }
}

const std::string kHead = "profile_version = 1\nbase_gpu = \"h200_sxm\"\n";

INSTANTIATE_TEST_SUITE_P(
    All, ProfileBadInput,
    ::testing::Values(
        BadProfile{"version", "profile_version = 2\nbase_gpu = \"h200_sxm\"\n", "1:19",
                   "profile_version: must be 1"},
        BadProfile{"no version", "base_gpu = \"h200_sxm\"\n", "1:1", "profile_version: missing"},
        BadProfile{"base gpu", "profile_version = 1\nbase_gpu = \"h300\"\n", "2:12",
                   "unknown built-in GPU \"h300\""},
        BadProfile{"unknown top key", kHead + "gpu_name = \"x\"\n", "3:1", "gpu_name: unknown key"},
        BadProfile{"unknown gemm key",
                   kHead + "[[gemm]]\ndtype = \"bf16\"\nm = 1\nn = 1\nk = 1\nseconds = 1e-6\nmm = 2\n",
                   "9:1", "gemm[0].mm: unknown key"},
        BadProfile{"negative time",
                   kHead + "[[gemm]]\ndtype = \"bf16\"\nm = 1\nn = 1\nk = 1\nseconds = -1e-6\n",
                   "8:11", "gemm[0].seconds: must be a finite number > 0"},
        BadProfile{"zero m", kHead + "[[gemm]]\ndtype = \"bf16\"\nm = 0\nn = 1\nk = 1\nseconds = 1e-6\n",
                   "5:5", "gemm[0].m: must be >= 1"},
        BadProfile{"dtype", kHead + "[[gemm]]\ndtype = \"int4\"\nm = 1\nn = 1\nk = 1\nseconds = 1e-6\n",
                   "4:9", "gemm[0].dtype: unknown value \"int4\""},
        BadProfile{"missing", kHead + "[[memory]]\nop = \"copy\"\nbytes = 100\n", "3:1",
                   "memory[0].seconds: missing"},
        BadProfile{"memory op", kHead + "[[memory]]\nop = \"memset\"\nbytes = 1\nseconds = 1\n",
                   "4:6", "memory[0].op: unknown value"},
        BadProfile{"collective op",
                   kHead + "[[collective]]\nop = \"broadcast\"\nranks = 8\nbytes = 1\nseconds = 1\n",
                   "4:6", "collective[0].op: unknown value \"broadcast\""},
        BadProfile{"ranks", kHead + "[[collective]]\nop = \"all_reduce\"\nranks = 1\nbytes = 1\nseconds = 1\n",
                   "5:9", "collective[0].ranks: must be >= 2"},
        // Fuzzer find: a rank count past int wrapped negative, and the "more nodes than
        // ranks" check then dereferenced the missing nodes key.
        BadProfile{"huge ranks",
                   kHead + "[[collective]]\nop = \"all_reduce\"\nranks = 8843073741824\nbytes = 1\nseconds = 1\n",
                   "5:9", "collective[0].ranks: must be <= 2147483647"},
        BadProfile{"nodes", kHead + "[[collective]]\nop = \"all_reduce\"\nranks = 2\nnodes = 3\n"
                                    "bytes = 1\nseconds = 1\n",
                   "6:9", "collective[0].nodes: more nodes than ranks"},
        BadProfile{"type", kHead + "[[attention]]\ncausal = \"yes\"\n", "4:10",
                   "attention[0].causal: must be true or false"},
        BadProfile{"gqa", kHead + "[[attention]]\ncausal = true\nhead_dim = 64\nbatch = 1\n"
                                  "heads = 6\nkv_heads = 4\nseq = 128\nfwd_seconds = 1\n"
                                  "bwd_seconds = 1\n",
                   "8:12", "kv_heads: must divide heads"},
        BadProfile{"syntax", kHead + "[[gemm]\n", "3:8", "expected ']'"},
        // Faster than the datasheet allows (these priced a step at MFU 127%): a 4096^3 bf16
        // GEMM in 10 us is 13,744 TFLOP/s on a 989 TFLOP/s H200; an attention forward of
        // 4·1·4096²·32·128/2 FLOPs in 1 us and a backward of 2.5 times that in 2 us.
        BadProfile{"gemm above peak",
                   kHead + "[[gemm]]\ndtype = \"bf16\"\nm = 4096\nn = 4096\nk = 4096\n"
                           "seconds = 1e-5\n",
                   "8:11", "gemm[0].seconds: 1.374e+04 TFLOP/s is above the h200_sxm bf16 peak"},
        BadProfile{"attention above peak",
                   kHead + "[[attention]]\ncausal = true\nhead_dim = 128\nbatch = 1\nheads = 32\n"
                           "kv_heads = 8\nseq = 4096\nfwd_seconds = 1e-6\nbwd_seconds = 1\n",
                   "10:15", "attention[0].fwd_seconds: 1.374e+05 TFLOP/s is above the h200_sxm bf16"},
        BadProfile{"attention backward above peak",
                   kHead + "[[attention]]\ncausal = true\nhead_dim = 128\nbatch = 1\nheads = 32\n"
                           "kv_heads = 8\nseq = 4096\nfwd_seconds = 1\nbwd_seconds = 2e-6\n",
                   "11:15", "attention[0].bwd_seconds: 1.718e+05 TFLOP/s is above"},
        // A copy of 1 GiB in 1 us is 1,074 TB/s on an H200 of 4.8 TB/s HBM (it priced the
        // optimizer step at 0 ms).
        BadProfile{"memory above bandwidth",
                   kHead + "[[memory]]\nop = \"copy\"\nbytes = 1073741824\nseconds = 1e-6\n",
                   "6:11", "memory[0].seconds: 1.074e+06 GB/s is above the h200_sxm memory"},
        // A kernel of 1e8 s left the simulator's time range and was blamed on the scenario.
        BadProfile{"hours long kernel",
                   kHead + "[[gemm]]\ndtype = \"bf16\"\nm = 1\nn = 1\nk = 1\nseconds = 1e8\n",
                   "8:11", "gemm[0].seconds: 1e+08 s for one measurement (over an hour)"},
        // Two times for one GEMM shape: whichever came first priced it.
        BadProfile{"duplicate gemm shape",
                   kHead + "[[gemm]]\ndtype = \"bf16\"\nm = 2048\nn = 4096\nk = 4096\nseconds = 2e-4\n"
                           "[[gemm]]\ndtype = \"bf16\"\nm = 2048\nn = 4096\nk = 4096\nseconds = 1e-3\n",
                   "9:1", "gemm[1].m, n, k: the same bf16 GEMM shape as the point at line 3"}),
    [](const auto& param_info) {
      std::string n = param_info.param.name;
      for (char& ch : n) {
        if (ch == ' ') ch = '_';
      }
      return n;
    });

TEST(ProfileIo, MissingFileIsAProfileError) {
  EXPECT_THROW((void)hw::read_profile("/nonexistent/p.toml"), hw::ProfileError);
}

TEST(ProfileCost, MeasuredInsideTheTablesRooflineOutside) {
  auto p = std::make_shared<const hw::HardwareProfile>(sample_profile());
  const cost::CostModel builtin(h200());
  const cost::CostModel measured(h200(), p);
  EXPECT_DOUBLE_EQ(measured.gemm(4096, 4096, 4096, Dtype::BF16).seconds(),
                   Time::from_seconds(p->gemm[1].seconds).seconds());
  EXPECT_EQ(measured.gemm(128, 4096, 4096, Dtype::BF16),
            builtin.gemm(128, 4096, 4096, Dtype::BF16));
  EXPECT_EQ(measured.gemm(4096, 4096, 4096, Dtype::BF16, 2),
            builtin.gemm(4096, 4096, 4096, Dtype::BF16, 2));  // batched: not measured
  // Attention: the measured rate replaces the built-in one inside the measured range. The
  // measured shape is priced at its measured time (its own wave quantization, 4 x 32 x
  // (1024/128) = 1024 blocks in 8 waves of 132 SMs, is in the measurement: it used to be
  // applied a second time, 1056/1024 slow); another shape is scaled by its waves relative to
  // the measured one: 1 x 4 heads = 32 blocks fill one wave to 32/132, against 1024/1056,
  // for 1/32 of the FLOPs: 1e-4 / 32 x (1024/1056) / (32/132) = 1.25e-5 s.
  EXPECT_NEAR(measured.attention_fwd(4, 32, 1024, 128, true).seconds(), 1e-4, 1e-12);
  EXPECT_NEAR(measured.attention_fwd(1, 4, 1024, 128, true).seconds(), 1.25e-5, 1e-12);
  EXPECT_EQ(measured.attention_fwd(4, 32, 8192, 128, true),
            builtin.attention_fwd(4, 32, 8192, 128, true));
  EXPECT_NEAR(measured.memory_bound(1e8).seconds(), 3e-6 + 1e8 / 4e12, 1e-12);
  EXPECT_EQ(measured.memory_bound(1e12), builtin.memory_bound(1e12));
  const auto& pr = measured.pricing();
  EXPECT_EQ(pr.gemm.profile, 1);
  EXPECT_EQ(pr.gemm.builtin, 2);
  EXPECT_EQ(pr.attention.profile, 2);  // two shapes, one measured sequence length
  EXPECT_EQ(pr.attention.builtin, 1);
  EXPECT_EQ(pr.memory_bound.profile, 1);
  EXPECT_EQ(pr.memory_bound.builtin, 1);
  EXPECT_EQ(builtin.pricing().gemm.builtin, 0);  // no profile: nothing counted
}

TEST(ProfileCost, CollectivesOfAMeasuredRankAndNodeCountFromTheProfile) {
  hw::HardwareProfile prof = sample_profile();
  // An mpirun sweep: 8 ranks over 2 nodes, all_gather only.
  for (double bytes : {1024.0, 1073741824.0}) {
    const double t = 30e-6 + bytes / 40e9;
    prof.collectives.push_back({"all_gather", 8, 2, bytes, t, bytes / t, bytes / t * 7 / 8});
  }
  auto p = std::make_shared<const hw::HardwareProfile>(prof);
  hw::TopologySpec spec = test::dgx_a100_spec();
  spec.gpu = "h200_sxm";
  const hw::Topology topo(spec, 16);
  const net::AlphaBetaModel ab(topo, h200());
  const net::ProfiledCollectiveModel pm(ab, topo, p);
  const std::vector<int> node0 = {0, 1, 2, 3, 4, 5, 6, 7};
  const net::CollectiveCost c = pm.cost(net::CollectiveOp::AllReduce, 1048576, node0);
  EXPECT_NEAR(c.time.seconds(), 20e-6 + 1048576.0 / 400e9, 1e-11);
  EXPECT_NEAR(c.busbw / c.algbw, 2.0 * 7 / 8, 1e-12);
  const std::vector<int> two_nodes = {0, 8, 1, 9, 2, 10, 3, 11};
  EXPECT_EQ(pm.cost(net::CollectiveOp::AllReduce, 1048576, two_nodes).time,
            ab.cost(net::CollectiveOp::AllReduce, 1048576, two_nodes).time);
  EXPECT_EQ(pm.cost(net::CollectiveOp::AllGather, 1048576, node0).time,
            ab.cost(net::CollectiveOp::AllGather, 1048576, node0).time);
  const std::vector<int> two_nodes_of_4 = {0, 1, 2, 3, 8, 9, 10, 11};
  EXPECT_NEAR(pm.cost(net::CollectiveOp::AllGather, 1 << 20, two_nodes_of_4).time.seconds(),
              std::exp(0.5 * (std::log(30e-6 + 1024.0 / 40e9) +
                              std::log(30e-6 + 1073741824.0 / 40e9))),  // log midpoint of 2^10, 2^30
              1e-9);
  EXPECT_EQ(pm.count().profile, 2);
  EXPECT_EQ(pm.count().builtin, 2);
}

TEST(StepOps, OneGpuKernelListSumsToTheSimulatedStep) {
  // One GPU, one stream, no communication: the simulated step is the serial sum of the
  // kernels the builder priced, so the list --validate runs is the simulator's list.
  for (const char* name : {"validate-gpt2-small-h200.toml", "validate-1b-h200.toml"}) {
    const workload::Scenario sc = config::load_scenario(scenario(name));
    const cost::CostModel cost(sc.gpu);
    const auto mb = workload::microbatch_kernels(sc);
    const std::int64_t m = sc.training.global_batch / sc.training.micro_batch;
    Time expect = workload::serial_time(mb, cost, sc.training) * m +
                  workload::serial_time({workload::optimizer_kernel(sc)}, cost, sc.training);
    EXPECT_EQ(workload::simulate_step(sc).step_time, expect) << name;
  }
}

TEST(StepOps, KernelListHasEveryPassOfEveryLayer) {
  workload::Scenario sc = config::load_scenario(scenario("validate-gpt2-small-h200.toml"));
  const auto k = workload::microbatch_kernels(sc);
  int gemms = 0, attn = 0;
  for (const auto& x : k) {
    gemms += x.op.kind == model::OpKind::Gemm;
    attn += x.op.kind == model::OpKind::Attention;
  }
  // 4 GEMMs per layer x 3 passes + LM head x 3; attention fwd + bwd per layer.
  EXPECT_EQ(gemms, 12 * 4 * 3 + 3);
  EXPECT_EQ(attn, 12 * 2);
  EXPECT_EQ(k.front().name, "embedding");
  sc.training.recompute = model::Recompute::Selective;
  EXPECT_EQ(workload::microbatch_kernels(sc).size(), k.size() + 12);
  sc.layout.pp = 2;
  EXPECT_THROW((void)workload::microbatch_kernels(sc), InputError);
}

TEST(StepOps, ScenarioGemmShapesArePerTpRank) {
  const workload::Scenario sc = config::load_scenario(scenario("llama3-70b-h100.toml"));
  const auto shapes = workload::scenario_gemm_shapes(sc);
  // Llama 3 70B, TP 8, micro_batch 1, seq 8192: QKV per rank (64/8 + 2*8/8) * 128 = 1280
  // wide, the fc2/down projection 28672/8 = 3584 deep.
  const std::int64_t tokens = sc.training.micro_batch * sc.model.seq_len;
  auto has = [&](std::int64_t m, std::int64_t n, std::int64_t k) {
    return std::find(shapes.begin(), shapes.end(), workload::GemmShape{m, n, k}) != shapes.end();
  };
  EXPECT_TRUE(has(tokens, 1280, 8192));
  EXPECT_TRUE(has(tokens, 8192, 3584));
  EXPECT_TRUE(has(8192, 1280, tokens));  // QKV wgrad
  EXPECT_TRUE(std::is_sorted(shapes.begin(), shapes.end()));
}

namespace {

// A profile that measured every GEMM the scenario asks for at `factor` x the built-in time.
hw::HardwareProfile scaled_gemm_profile(const workload::Scenario& sc, double factor) {
  hw::HardwareProfile p;
  p.base_gpu = sc.gpu.key;
  p.provenance.command = "synthetic (tests/test_profile.cpp)";
  const cost::CostModel builtin(sc.gpu);
  for (const auto& s : workload::scenario_gemm_shapes(sc)) {
    p.gemm.push_back({sc.training.dtype, s.m, s.n, s.k,
                      factor * builtin.gemm(s.m, s.n, s.k, sc.training.dtype).seconds()});
  }
  p.refit();
  return p;
}

}  // namespace

TEST(ProfileEndToEnd, SlowerMeasuredGemmsMakeALongerStepAndTheReportSaysSo) {
  const auto dir = test::temp_dir("profile-e2e");
  const workload::Scenario base = config::load_scenario(scenario("schedules-teaching-4stage.toml"));
  hw::write_profile(dir / "slow.toml", scaled_gemm_profile(base, 1.5));
  hw::write_profile(dir / "same.toml", scaled_gemm_profile(base, 1.0));
  std::string text = test::read(scenario("schedules-teaching-4stage.toml"));
  const std::string topo = (test::source_dir() / "topologies" / "dgx-a100.toml").string();
  text.replace(text.find("../topologies/dgx-a100.toml"), 27, topo);
  test::write(dir / "slow-scn.toml", text + "profile = \"slow.toml\"\n");
  test::write(dir / "same-scn.toml", text + "profile = \"same.toml\"\n");

  const workload::Scenario slow = config::load_scenario(dir / "slow-scn.toml");
  ASSERT_TRUE(slow.profile);
  EXPECT_EQ(slow.gpu.key, "a100_sxm4_80gb");
  const auto r_base = workload::simulate_step(base);
  const auto r_slow = workload::simulate_step(slow);
  const auto r_same = workload::simulate_step(config::load_scenario(dir / "same-scn.toml"));
  EXPECT_FALSE(r_base.pricing);
  ASSERT_TRUE(r_slow.pricing);
  EXPECT_GT(r_slow.pricing->gemm.profile, 0);
  EXPECT_EQ(r_slow.pricing->gemm.builtin, 0);  // every GEMM shape was measured
  EXPECT_EQ(r_slow.pricing->attention.profile, 0);
  EXPECT_GT(r_slow.pricing->attention.builtin, 0);
  // Same times as the built-in model: the same step to rounding of the stored seconds.
  EXPECT_NEAR(r_same.step_time.seconds() / r_base.step_time.seconds(), 1.0, 1e-8);
  // GEMMs 50% slower: compute grows, the step grows but by less than 50% (attention,
  // memory-bound kernels and communication are unchanged).
  EXPECT_GT(r_slow.breakdown.compute, 1.2 * r_base.breakdown.compute);
  EXPECT_GT(r_slow.step_time.seconds(), 1.2 * r_base.step_time.seconds());
  EXPECT_LT(r_slow.step_time.seconds(), 1.5 * r_base.step_time.seconds());
}

// Calibration measures the scenario's GEMMs at its tokens per microbatch and at half and
// twice them; a profile of those shapes prices every GEMM of the scenario with a doubled or
// halved micro batch, weight gradients included (their tokens are k: they used to fall back
// to the roofline, so a wgrad of twice the FLOPs could cost less than the measured one).
TEST(ProfileEndToEnd, NearbyMicroBatchesArePricedFromTheProfileWgradsIncluded) {
  workload::Scenario sc = config::load_scenario(scenario("validate-gpt2-small-h200.toml"));
  sc.training.micro_batch = 2;
  sc.training.global_batch = 8;
  hw::HardwareProfile p;
  p.base_gpu = sc.gpu.key;
  const cost::CostModel builtin(sc.gpu);
  for (const auto& s : workload::scenario_gemm_shapes_around(sc)) {
    // 400 TFLOP/s for every shape: each priced GEMM then takes exactly 2mnk / 4e14 s.
    p.gemm.push_back({sc.training.dtype, s.m, s.n, s.k, 2.0 * s.m * s.n * s.k / 4e14});
  }
  p.refit();
  const auto shared = std::make_shared<const hw::HardwareProfile>(p);
  for (std::int64_t mb : {1, 2, 4}) {
    workload::Scenario v = sc;
    v.training.micro_batch = mb;
    v.training.global_batch = 4 * mb;
    const cost::CostModel priced(v.gpu, shared);
    for (const auto& s : workload::scenario_gemm_shapes(v)) {
      EXPECT_NEAR(priced.gemm(s.m, s.n, s.k, v.training.dtype).seconds(),
                  2.0 * s.m * s.n * s.k / 4e14, 1e-12)
          << "mb " << mb << ": " << s.m << " x " << s.n << " x " << s.k;
    }
    EXPECT_EQ(priced.pricing().gemm.builtin, 0) << mb;
  }
  // Between measured token counts (micro batch 3: 1.5x the scenario's), the weight gradient
  // interpolates over k, linear in the FLOPs here.
  workload::Scenario three = sc;
  three.training.micro_batch = 3;
  const cost::CostModel priced(three.gpu, shared);
  for (const auto& s : workload::scenario_gemm_shapes(three)) {
    EXPECT_NEAR(priced.gemm(s.m, s.n, s.k, three.training.dtype).seconds(),
                2.0 * s.m * s.n * s.k / 4e14, 1e-12);  // times are whole picoseconds
  }
}

TEST(ProfileEndToEnd, CliReportsTheSourceAndRejectsABadProfile) {
  const auto dir = test::temp_dir("profile-cli");
  const workload::Scenario base = config::load_scenario(scenario("validate-gpt2-small-h200.toml"));
  hw::write_profile(dir / "p.toml", scaled_gemm_profile(base, 1.0));
  std::string text = test::read(scenario("validate-gpt2-small-h200.toml"));
  const std::string topo = (test::source_dir() / "topologies" / "single-h200.toml").string();
  text.replace(text.find("../topologies/single-h200.toml"), 30, topo);
  test::write(dir / "ok.toml", text + "profile = \"p.toml\"\n");
  auto run = [&](const std::string& args) {
    const std::string cmd = std::string(TRAINSIM_EXE) + " " + args + " > " +
                            (dir / "out").string() + " 2> " + (dir / "err").string();
    const int status = std::system(cmd.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  ASSERT_EQ(run("simulate " + (dir / "ok.toml").string()), 0) << test::read(dir / "err");
  const std::string out = test::read(dir / "out");
  // The profile by file name only (same bytes in any checkout), and a profile without
  // provenance prints no empty "on , , driver , CUDA" fields.
  EXPECT_NE(out.find("priced by measured profile p.toml (distinct"), std::string::npos) << out;
  EXPECT_EQ(out.find(dir.string()), std::string::npos) << out;
  EXPECT_EQ(out.find(", driver , CUDA"), std::string::npos) << out;
  EXPECT_NE(out.find("GEMMs"), std::string::npos);
  ASSERT_EQ(run("simulate --json " + (dir / "ok.toml").string()), 0);
  EXPECT_NE(test::read(dir / "out").find("\"pricing\""), std::string::npos);

  test::write(dir / "bad.toml", "profile_version = 1\nbase_gpu = \"h200_sxm\"\n[[gemm]]\n"
                                "dtype = \"bf16\"\nm = 1\nn = 1\nk = 1\nseconds = 0\n");
  test::write(dir / "uses-bad.toml", text + "profile = \"bad.toml\"\n");
  EXPECT_EQ(run("simulate " + (dir / "uses-bad.toml").string()), 1);
  const std::string err = test::read(dir / "err");
  EXPECT_NE(err.find("bad.toml:8:11"), std::string::npos) << err;
  EXPECT_NE(err.find("gemm[0].seconds"), std::string::npos) << err;
  test::write(dir / "uses-none.toml", text + "profile = \"none.toml\"\n");
  EXPECT_EQ(run("simulate " + (dir / "uses-none.toml").string()), 1);
  EXPECT_NE(test::read(dir / "err").find("cluster.profile: no such file"), std::string::npos);
}

// Writing a scenario that runs on a measured profile back as a scenario file keeps the
// profile: without the profile's path the writer refuses (it used to name the built-in GPU,
// a file that simulates another step); with it, the file reads back to the same step.
TEST(ProfileEndToEnd, ScenarioWriterKeepsTheMeasuredProfile) {
  const auto dir = test::temp_dir("profile-writer");
  const workload::Scenario base = config::load_scenario(scenario("schedules-teaching-4stage.toml"));
  hw::write_profile(dir / "slow.toml", scaled_gemm_profile(base, 1.5));
  std::string text = test::read(scenario("schedules-teaching-4stage.toml"));
  const auto topo = test::source_dir() / "topologies" / "dgx-a100.toml";
  text.replace(text.find("../topologies/dgx-a100.toml"), 27, topo.string());
  const workload::Scenario slow =
      config::load_scenario(test::write(dir / "slow-scn.toml", text + "profile = \"slow.toml\"\n"));
  ASSERT_TRUE(slow.profile);
  // Loaded from a file, the scenario knows its profile's path; built in code, it must be given.
  const auto by_inputs = config::load_scenario(
      test::write(dir / "by-inputs.toml", config::scenario_toml(slow, topo)));
  ASSERT_TRUE(by_inputs.profile);
  EXPECT_EQ(workload::simulate_step(by_inputs).step_time.count_ps(),
            workload::simulate_step(slow).step_time.count_ps());
  workload::Scenario in_code = slow;
  in_code.inputs.profile_path.clear();
  EXPECT_THROW((void)config::scenario_toml(in_code, topo), std::invalid_argument);
  EXPECT_THROW((void)config::scenario_toml(base, topo, dir / "slow.toml"), std::invalid_argument);
  EXPECT_THROW((void)config::scenario_toml(slow, topo, dir / "slow.json"), std::invalid_argument);
  const auto back = config::load_scenario(
      test::write(dir / "written.toml", config::scenario_toml(slow, topo, dir / "slow.toml")));
  ASSERT_TRUE(back.profile);
  EXPECT_EQ(workload::simulate_step(back).step_time.count_ps(),
            workload::simulate_step(slow).step_time.count_ps());
}
