// Wall time to simulate one step of each shipped scenario (load + build + run + metrics).
#include <benchmark/benchmark.h>

#include <string>

#include "config/scenario.hpp"
#include "workload/builder.hpp"

namespace {

void BM_Scenario(benchmark::State& state, const std::string& name) {
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

BENCHMARK_CAPTURE(BM_Scenario, gpt3_175b_a100, std::string("gpt3-175b-a100"))
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Scenario, llama3_70b_h100, std::string("llama3-70b-h100"))
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Scenario, llama3_405b_h100_16k_gpus, std::string("llama3-405b-h100"))
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Scenario, megatron_1t_a100_3072_gpus, std::string("megatron-1t-a100"))
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Scenario, schedules_gpt3_96gpu, std::string("schedules-gpt3-96gpu"))
    ->Unit(benchmark::kMillisecond);
// MoE / context-parallel scenarios (load + routing + build + run + metrics). The MoE issue's
// target: DeepSeek-V3 on 2,048 GPUs in stage fidelity under 2 s per step.
BENCHMARK_CAPTURE(BM_Scenario, deepseek_v3_h800_2048_gpus, std::string("deepseek-v3-h800"))
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Scenario, mixtral_8x7b_h100_64_gpus, std::string("mixtral-8x7b-h100"))
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Scenario, qwen3_30b_a3b_h100_8_gpus, std::string("qwen3-30b-a3b-h100"))
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Scenario, llama3_8b_128k_cp8_64_gpus, std::string("llama3-8b-128k-cp8"))
    ->Unit(benchmark::kMillisecond);

}  // namespace
