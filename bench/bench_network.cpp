// Network model speed: full-fidelity steps (flows on the topology with max-min sharing)
// and a collective's flows alone. Reports events/s and flow recomputations/s (issue 5).
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "config/scenario.hpp"
#include "core/simulator.hpp"
#include "hw/gpu.hpp"
#include "hw/topology.hpp"
#include "net/collective.hpp"
#include "net/flow_network.hpp"
#include "net/plan_runner.hpp"
#include "workload/builder.hpp"

namespace {

void BM_FullFidelityScenario(benchmark::State& state, const std::string& name) {
  const auto path = std::string(TRAINSIM_SOURCE_DIR) + "/scenarios/" + name + ".toml";
  std::uint64_t events = 0, recomputations = 0, flows = 0;
  for (auto _ : state) {
    auto sc = trainsim::config::load_scenario(path);
    sc.fidelity = trainsim::workload::Fidelity::Full;
    const auto r = trainsim::workload::simulate_step(sc);
    events += r.events;
    recomputations += r.flow_recomputations;
    flows += r.flows;
    benchmark::DoNotOptimize(r.step_time);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(events));
  state.counters["events/s"] =
      benchmark::Counter(static_cast<double>(events), benchmark::Counter::kIsRate);
  state.counters["recomputations/s"] =
      benchmark::Counter(static_cast<double>(recomputations), benchmark::Counter::kIsRate);
  state.counters["flows/s"] =
      benchmark::Counter(static_cast<double>(flows), benchmark::Counter::kIsRate);
}

BENCHMARK_CAPTURE(BM_FullFidelityScenario, gpt3_175b_2048_gpus_full,
                  std::string("gpt3-175b-2048-full"))
    ->Unit(benchmark::kSecond)
    ->Iterations(1);
BENCHMARK_CAPTURE(BM_FullFidelityScenario, gpt3_175b_a100_64_gpus_full,
                  std::string("gpt3-175b-a100"))
    ->Unit(benchmark::kMillisecond);

/// One all_reduce of 1 GiB over 1,024 A100 (128 nodes) as flows: 8 rings of 1,024 edges.
void BM_AllReduceFlows1024(benchmark::State& state) {
  const auto spec = trainsim::config::load_topology(std::string(TRAINSIM_SOURCE_DIR) +
                                                    "/topologies/dgx-a100.toml");
  const trainsim::hw::Topology topo(spec, 1024);
  const trainsim::net::AlphaBetaModel model(topo, *trainsim::hw::find_builtin_gpu(spec.gpu));
  std::vector<int> group(1024);
  for (int i = 0; i < 1024; ++i) group[static_cast<std::size_t>(i)] = i;
  const auto plan = model.plan(trainsim::net::CollectiveOp::AllReduce, 1ULL << 30, group);
  std::uint64_t events = 0, recomputations = 0;
  for (auto _ : state) {
    trainsim::Simulator sim;
    trainsim::net::FlowNetwork net(sim, trainsim::net::link_capacities(topo));
    trainsim::net::run_plan(net, topo, plan, nullptr);
    sim.run();
    events += sim.events_processed();
    recomputations += net.recomputations();
  }
  state.counters["events/s"] =
      benchmark::Counter(static_cast<double>(events), benchmark::Counter::kIsRate);
  state.counters["recomputations/s"] =
      benchmark::Counter(static_cast<double>(recomputations), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_AllReduceFlows1024)->Unit(benchmark::kMillisecond);

}  // namespace
