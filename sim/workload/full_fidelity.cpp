#include "workload/full_fidelity.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>

#include "net/plan_runner.hpp"

namespace trainsim::workload {

net::CollectiveCost RecordingModel::cost(net::CollectiveOp op, std::uint64_t bytes,
                                         std::span<const int> group) const {
  net::CollectiveCost c = inner_.cost(op, bytes, group);
  queries_.push_back(Query{op, bytes, std::vector<int>(group.begin(), group.end()), c.time});
  return c;
}

FullFidelity::FullFidelity(const parallel::Layout& layout, const hw::Topology& topo,
                           const net::AlphaBetaModel& model,
                           const std::vector<double>& link_factor)
    : layout_(layout), topo_(topo), model_(model), link_factor_(link_factor), recorder_(model) {}

namespace {

/// (tp, cp, dp, pp) coordinates of a global rank (Layout::rank's inverse).
struct Coord {
  int t, c, d, p;
};
Coord coord_of(const parallel::Layout& L, int r) {
  Coord k{};
  k.t = r % L.tp;
  r /= L.tp;
  k.c = r % L.cp;
  r /= L.cp;
  k.d = r % L.dp;
  k.p = r / L.dp;
  return k;
}

}  // namespace

std::vector<net::CollectivePlan> FullFidelity::copies(const RecordingModel::Query& q) const {
  // The group spans TP (or DP) when its members differ in that coordinate; its copies vary
  // the coordinates it does not span.
  std::set<int> ts, ds;
  std::vector<Coord> cs;
  for (const int g : q.group) {
    cs.push_back(coord_of(layout_, g));
    ts.insert(cs.back().t);
    ds.insert(cs.back().d);
  }
  const int nt = ts.size() > 1 ? 1 : layout_.tp;
  const int nd = ds.size() > 1 ? 1 : layout_.dp;
  std::vector<net::CollectivePlan> out;
  std::vector<int> group(q.group.size());
  for (int dt = 0; dt < nt; ++dt) {
    for (int dd = 0; dd < nd; ++dd) {
      for (std::size_t i = 0; i < cs.size(); ++i) {
        const Coord& k = cs[i];
        group[i] = layout_.rank((k.t + dt) % layout_.tp, k.c, (k.d + dd) % layout_.dp, k.p);
      }
      out.push_back(model_.plan(q.op, q.bytes, group));
    }
  }
  return out;
}

void FullFidelity::convert(TaskGraph& g) {
  const auto& queries = recorder_.queries();
  // Distinct queries, indexed by time.
  std::map<std::tuple<int, std::uint64_t, std::vector<int>>, std::size_t> distinct;
  std::unordered_map<std::int64_t, std::vector<std::size_t>> by_time;
  std::vector<const RecordingModel::Query*> uniq;
  for (const auto& q : queries) {
    const auto key = std::make_tuple(static_cast<int>(q.op), q.bytes, q.group);
    if (distinct.count(key) != 0 || q.time == Time::zero()) continue;
    distinct.emplace(key, uniq.size());
    by_time[q.time.count_ps()].push_back(uniq.size());
    uniq.push_back(&q);
  }
  std::vector<std::uint32_t> external_of(uniq.size(), kNoId);
  for (TaskId t = 0; t < g.num_tasks(); ++t) {
    const Task& task = g.task(t);
    if (!is_comm(task.category) || task.duration == Time::zero()) continue;
    const auto it = by_time.find(task.duration.count_ps());
    if (it == by_time.end()) continue;
    const int stage = static_cast<int>(g.stream(task.stream).rank);
    const int rep = layout_.rank(0, 0, 0, stage);
    const bool tp_task = task.category == Category::TpComm;
    const auto tp_group = layout_.tp_group(0, stage);
    for (const std::size_t i : it->second) {
      const auto& q = *uniq[i];
      if (q.group.front() != rep) continue;
      if (tp_task != (q.group == tp_group && layout_.tp > 1)) continue;
      if (external_of[i] == kNoId) {
        external_of[i] = static_cast<std::uint32_t>(ops_.size());
        ops_.push_back(copies(q));
      }
      g.set_external(t, external_of[i]);
      ++stats_.network_tasks;
      break;
    }
  }
  stats_.network_ops = ops_.size();
}

void FullFidelity::run(Simulator& sim, Executor& ex) {
  net::FlowNetwork network(sim, net::link_capacities(topo_, link_factor_));
  net::CollectiveTasks tasks(network, topo_);
  for (auto& op : ops_) tasks.add(std::move(op));
  ops_.clear();
  ex.set_external_handler(&tasks);
  ex.run(sim);
  stats_.recomputations = network.recomputations();
  stats_.flows = network.flows_started();
}

}  // namespace trainsim::workload
