// Layout search speed (issue 8): GPT-3 175B on 512 A100s, global batch 1536 (GPT-3's 3.2M
// tokens, Brown et al. 2020 Table 2.1). Items are enumerated layouts, so items_per_second is
// configurations per second. The reference point is Calculon's exhaustive search (2.3 ms
// per configuration, 1,476 s for 332,024 configurations on a 2-core machine).
#include <benchmark/benchmark.h>

#include <string>

#include "config/scenario.hpp"
#include "plan/search.hpp"

namespace {

trainsim::workload::Scenario gpt3_512() {
  auto sc = trainsim::config::load_scenario(std::string(TRAINSIM_SOURCE_DIR) +
                                            "/scenarios/gpt3-175b-a100.toml");
  sc.gpus = 512;
  sc.training.global_batch = 1536;
  return sc;
}

/// The whole search: enumeration, bounds, pre-screen and `des` discrete-event simulations.
void BM_SearchGpt3_512(benchmark::State& state) {
  const auto sc = gpt3_512();
  trainsim::plan::SearchOptions opt;
  opt.des_max = static_cast<int>(state.range(0));
  std::size_t layouts = 0, sims = 0, valid = 0;
  for (auto _ : state) {
    const auto r = trainsim::plan::search(sc, opt);
    layouts += r.all.size();
    sims = r.simulations;
    valid = 0;
    for (const auto& e : r.all) valid += e.status != trainsim::plan::Status::InvalidLayout;
    benchmark::DoNotOptimize(r.ranking.front());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(layouts));
  state.counters["layouts"] = static_cast<double>(layouts) / static_cast<double>(state.iterations());
  state.counters["valid_layouts"] = static_cast<double>(valid);
  state.counters["simulations"] = static_cast<double>(sims);
}

BENCHMARK(BM_SearchGpt3_512)->Arg(1)->Arg(1024)->Iterations(1)->Unit(benchmark::kSecond)
    ->UseRealTime();

}  // namespace
