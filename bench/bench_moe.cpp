// Wall time to simulate one step of the MoE / context-parallel scenarios (load + routing +
// build + run + metrics). The target: DeepSeek-V3 on 2,048 GPUs in stage fidelity
// under 2 s per step.
#include <benchmark/benchmark.h>

#include <string>

#include "config/scenario.hpp"
#include "workload/builder.hpp"

namespace {

void BM_MoeScenario(benchmark::State& state, const std::string& name) {
  const auto path = std::string(TRAINSIM_SOURCE_DIR) + "/scenarios/" + name + ".toml";
  std::uint64_t events = 0, tasks = 0;
  for (auto _ : state) {
    const auto sc = trainsim::config::load_scenario(path);
    const auto r = trainsim::workload::simulate_step(sc);
    events += r.events;
    tasks = r.tasks;
    benchmark::DoNotOptimize(r.step_time);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(events));
  state.counters["events/s"] =
      benchmark::Counter(static_cast<double>(events), benchmark::Counter::kIsRate);
  state.counters["tasks"] = static_cast<double>(tasks);
}

BENCHMARK_CAPTURE(BM_MoeScenario, deepseek_v3_h800_2048_gpus, std::string("deepseek-v3-h800"))
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_MoeScenario, mixtral_8x7b_h100_64_gpus, std::string("mixtral-8x7b-h100"))
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_MoeScenario, qwen3_30b_a3b_h100_8_gpus, std::string("qwen3-30b-a3b-h100"))
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_MoeScenario, llama3_8b_128k_cp8_64_gpus, std::string("llama3-8b-128k-cp8"))
    ->Unit(benchmark::kMillisecond);

}  // namespace
