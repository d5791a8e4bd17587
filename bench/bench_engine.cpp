// Engine throughput: events per second of the discrete-event core.
#include <benchmark/benchmark.h>

#include "core/simulator.hpp"
#include "core/task_graph.hpp"

using namespace trainsim;

namespace {

/// Raw event queue: a handler that reschedules itself, `width` events in flight.
struct Ping final : EventHandler {
  std::uint64_t left = 0;
  void on_event(Simulator& sim, const Event& e) override {
    if (left == 0) return;
    --left;
    sim.schedule_in(Time::ps(1 + static_cast<std::int64_t>(e.payload % 97)), e.handler,
                    e.payload * 31 + 7);
  }
};

void BM_EventQueue(benchmark::State& state) {
  const auto width = static_cast<std::uint64_t>(state.range(0));
  std::uint64_t events = 0;
  for (auto _ : state) {
    Simulator sim;
    Ping p;
    p.left = 1'000'000;
    const auto h = sim.add_handler(&p);
    for (std::uint64_t i = 0; i < width; ++i) sim.schedule_at(Time::ps(static_cast<std::int64_t>(i)), h, i);
    sim.run();
    events += sim.events_processed();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(events));
  state.counters["events/s"] =
      benchmark::Counter(static_cast<double>(events), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_EventQueue)->Arg(16)->Arg(1024)->Unit(benchmark::kMillisecond);

/// Task DAG executor: `ranks` ranks of a compute stream and a comm stream, each compute task
/// followed by a collective rendezvous across all ranks every 8 tasks.
void BM_TaskGraph(benchmark::State& state) {
  const int ranks = static_cast<int>(state.range(0));
  const int per_rank = 200'000 / ranks;
  std::uint64_t events = 0;
  for (auto _ : state) {
    state.PauseTiming();
    TaskGraph g;
    const auto l = g.intern("op");
    std::vector<StreamId> comp, comm;
    for (int r = 0; r < ranks; ++r) {
      comp.push_back(g.add_stream(static_cast<std::uint32_t>(r), "compute"));
      comm.push_back(g.add_stream(static_cast<std::uint32_t>(r), "comm"));
    }
    std::vector<TaskId> last(static_cast<std::size_t>(ranks), kNoId);
    for (int i = 0; i < per_rank; ++i) {
      std::vector<TaskId> members;
      for (int r = 0; r < ranks; ++r) {
        const auto t = g.add_task(comp[r], Time::ns(100 + (i * 7 + r) % 13), Category::Compute, l);
        if (last[r] != kNoId) g.add_dependency(last[r], t);
        last[r] = t;
        if (i % 8 == 7) {
          const auto c = g.add_task(comm[r], Time::ns(50), Category::TpComm, l);
          g.add_dependency(t, c);
          members.push_back(c);
          last[r] = c;
        }
      }
      if (!members.empty()) g.add_rendezvous(members);
    }
    state.ResumeTiming();
    Simulator sim;
    Executor ex(g);
    ex.run(sim);
    events += sim.events_processed();
    benchmark::DoNotOptimize(ex.makespan());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(events));
  state.counters["events/s"] =
      benchmark::Counter(static_cast<double>(events), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_TaskGraph)->Arg(1)->Arg(16)->Unit(benchmark::kMillisecond);

}  // namespace
