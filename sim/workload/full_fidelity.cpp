#include "workload/full_fidelity.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>

#include "core/error.hpp"

#include "net/plan_runner.hpp"

namespace trainsim::workload {

net::CollectiveCost RecordingModel::cost(net::CollectiveOp op, std::uint64_t bytes,
                                         std::span<const int> group) const {
  net::CollectiveCost c = inner_.cost(op, bytes, group);
  queries_.push_back(Query{op, bytes, std::vector<int>(group.begin(), group.end()), c.time});
  return c;
}

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

FullFidelity::FullFidelity(const parallel::Layout& layout, const hw::Topology& topo,
                           const net::AlphaBetaModel& model, std::vector<Straggler> stragglers)
    : layout_(layout),
      topo_(topo),
      model_(model),
      stragglers_(std::move(stragglers)),
      recorder_(model) {
  bool links = false;
  for (const Straggler& s : stragglers_) {
    if (s.gpu < 0 || s.gpu >= topo.num_gpus()) {
      throw InputError("simulation.stragglers", "simulation.stragglers: GPU " +
                                                    std::to_string(s.gpu) + " out of range");
    }
    links = links || s.nic_bandwidth != 1.0 || s.nvlink_bandwidth != 1.0;
  }
  if (!links) return;
  // A GPU's NVLink links join it to its NVSwitch; its NIC links are GPU <-> NIC and
  // NIC <-> leaf (or router) of the NIC it uses.
  const std::size_t n = topo.num_links();
  link_factor_.assign(n, 1.0);
  for (const Straggler& s : stragglers_) {
    const auto g = static_cast<std::uint32_t>(s.gpu);
    std::vector<std::uint32_t> nics;
    for (std::uint32_t l = 0; l < n; ++l) {
      const hw::LinkInfo& li = topo.link(l);
      if (li.src != g && li.dst != g) continue;
      const std::uint32_t other = li.src == g ? li.dst : li.src;
      const hw::VertexKind k = topo.vertex_kind(other);
      if (k == hw::VertexKind::NvSwitch) link_factor_[l] *= s.nvlink_bandwidth;
      if (k == hw::VertexKind::Nic) {
        link_factor_[l] *= s.nic_bandwidth;
        if (li.src == g) nics.push_back(other);
      }
    }
    for (std::uint32_t l = 0; l < n; ++l) {
      const hw::LinkInfo& li = topo.link(l);
      for (const std::uint32_t nic : nics) {
        const bool touches = li.src == nic || li.dst == nic;
        const std::uint32_t other = li.src == nic ? li.dst : li.src;
        if (touches && topo.vertex_kind(other) != hw::VertexKind::Gpu) {
          link_factor_[l] *= s.nic_bandwidth;
        }
      }
    }
  }
}

std::optional<std::pair<Straggler, int>> FullFidelity::slowest() const {
  std::optional<std::pair<Straggler, int>> best;
  for (const Straggler& s : stragglers_) {
    if (!best || s.worst() < best->first.worst()) {
      best = std::make_pair(s, coord_of(layout_, s.gpu).p);
    }
  }
  return best;
}

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
    if (it == by_time.end()) {
      ++stats_.fixed_comm_tasks;
      continue;
    }
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
    if (g.task(t).external == kNoId) ++stats_.fixed_comm_tasks;
  }
  stats_.network_ops = ops_.size();
  // Stragglers: a stage runs its kernels at its slowest GPU's speed.
  std::vector<double> speed(static_cast<std::size_t>(layout_.pp), 1.0);
  for (const Straggler& s : stragglers_) {
    auto& v = speed[static_cast<std::size_t>(coord_of(layout_, s.gpu).p)];
    v = std::min(v, s.speed);
  }
  for (TaskId t = 0; t < g.num_tasks(); ++t) {
    const Task& task = g.task(t);
    if (is_comm(task.category) || task.external != kNoId) continue;
    const auto stage = static_cast<std::size_t>(g.stream(task.stream).rank);
    if (stage < speed.size() && speed[stage] != 1.0) {
      g.set_duration(t, Time::from_seconds(task.duration.seconds() / speed[stage]));
    }
  }
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
