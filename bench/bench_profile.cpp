// Cost of measured hardware profiles on the CPU side: reading a full-size profile, one GEMM
// lookup, and simulating a scenario priced from a profile (against bench_scenarios' built-in
// run of the same scenario).
#include <benchmark/benchmark.h>

#include <filesystem>
#include <memory>
#include <string>

#include "config/scenario.hpp"
#include "cost/cost_model.hpp"
#include "hw/profile.hpp"
#include "hw/profile_io.hpp"
#include "workload/builder.hpp"
#include "workload/step_ops.hpp"

namespace {

using namespace trainsim;

workload::Scenario llama70b() {
  return config::load_scenario(std::string(TRAINSIM_SOURCE_DIR) + "/scenarios/llama3-70b-h100.toml");
}

// A profile of the size a default calibration plus one scenario writes: the default GEMM grid
// (16 families x 4 m) in 3 dtypes, the scenario's shapes at m/2, m, 2m, 20 attention cases,
// 7 memory ops x 6 sizes, 5 collectives x 12 sizes; times from the built-in model.
hw::HardwareProfile full_profile(const workload::Scenario& sc) {
  hw::HardwareProfile p;
  p.base_gpu = sc.gpu.key;
  const cost::CostModel c(sc.gpu);
  for (hw::Dtype dt : {hw::Dtype::BF16, hw::Dtype::FP16, hw::Dtype::FP8}) {
    for (std::int64_t n : {1024, 2048, 4096, 8192}) {
      for (std::int64_t k : {1024, 2048, 4096, 8192}) {
        for (std::int64_t m : {256, 1024, 4096, 16384}) {
          p.gemm.push_back({dt, m, n, k, c.gemm(m, n, k, dt).seconds()});
        }
      }
    }
    for (const auto& s : workload::scenario_gemm_shapes(sc)) {
      for (std::int64_t m : {s.m / 2, s.m, s.m * 2}) {
        p.gemm.push_back({dt, m, s.n, s.k, c.gemm(m, s.n, s.k, dt).seconds()});
      }
    }
  }
  for (bool causal : {true, false}) {
    for (int d : {64, 128}) {
      for (int s : {512, 1024, 2048, 4096, 8192}) {
        const int b = 16384 / s;
        p.attention.push_back({causal, d, b, 16, 4, s,
                               c.attention_fwd(b, 16, s, d, causal).seconds(),
                               c.attention_bwd(b, 16, s, d, causal).seconds()});
      }
    }
  }
  for (const char* op : {"copy", "layernorm", "rmsnorm", "gelu", "swiglu", "softmax", "adam"}) {
    for (double bytes = 1 << 20; bytes <= 8.0 * (1u << 30); bytes *= 8) {
      p.memory.push_back({op, bytes, c.memory_bound(bytes).seconds()});
    }
  }
  for (const char* op : {"all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv"}) {
    for (double bytes = 1024; bytes <= 4.0 * (1u << 30); bytes *= 4) {
      const double t = 20e-6 + bytes / 300e9;
      p.collectives.push_back({op, 8, 1, bytes, t, bytes / t, bytes / t});
    }
  }
  p.refit();
  return p;
}

void BM_ReadProfile(benchmark::State& state) {
  const auto sc = llama70b();
  const std::string text = hw::profile_to_toml(full_profile(sc));
  for (auto _ : state) benchmark::DoNotOptimize(hw::parse_profile(text, "bench.toml"));
  state.counters["points"] = static_cast<double>(full_profile(sc).gemm.size());
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_ReadProfile)->Unit(benchmark::kMillisecond);

void BM_GemmLookup(benchmark::State& state) {
  const auto sc = llama70b();
  const auto p = full_profile(sc);
  std::int64_t m = 8192;
  for (auto _ : state) {
    benchmark::DoNotOptimize(p.gemm_seconds(hw::Dtype::BF16, m, 1280, 8192));
    m = m == 8192 ? 6000 : 8192;  // exact point, then an interpolation
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_GemmLookup);

void BM_SimulateWithProfile(benchmark::State& state) {
  auto sc = llama70b();
  sc.profile = std::make_shared<const hw::HardwareProfile>(full_profile(sc));
  for (auto _ : state) benchmark::DoNotOptimize(workload::simulate_step(sc).step_time);
}
BENCHMARK(BM_SimulateWithProfile)->Unit(benchmark::kMillisecond);

void BM_SimulateBuiltin(benchmark::State& state) {
  const auto sc = llama70b();
  for (auto _ : state) benchmark::DoNotOptimize(workload::simulate_step(sc).step_time);
}
BENCHMARK(BM_SimulateBuiltin)->Unit(benchmark::kMillisecond);

}  // namespace
