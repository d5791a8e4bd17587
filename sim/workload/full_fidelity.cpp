#include "workload/full_fidelity.hpp"

#include <algorithm>
#include <map>
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
                           const net::AlphaBetaModel& model, std::vector<Straggler> stragglers,
                           const net::CollectiveModel* pricing)
    : layout_(layout),
      topo_(topo),
      model_(model),
      stragglers_(std::move(stragglers)),
      recorder_(pricing != nullptr ? *pricing : model) {
  bool links = false;
  for (const Straggler& s : stragglers_) {
    // The job's GPUs, not the topology's (its last node may be partly used).
    if (s.gpu < 0 || s.gpu >= layout.world_size()) {
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

std::vector<std::vector<int>> FullFidelity::symmetric_groups(const std::vector<int>& group) const {
  // Ranks of a stage are (t, x) with x = c + cp * d in [0, dp * cp) (Layout::ep_group's
  // flattening). A group's copies are its translates by (dt, dx) that stay in range and do
  // not overlap a copy already taken, in lexicographic order: a TP group repeats over every
  // (c, d), a DP x CP group over every t, an EP block over every t and every other block,
  // an expert-DP group over every t and EP index, a CP group over every (t, d), a pipeline
  // transfer over every (t, c, d). The group is first moved to its origin (least t and x 0):
  // the stage's priced group is its slowest copy, which need not be the first.
  const int tp = layout_.tp;
  const int xs = layout_.dp * layout_.cp;
  std::vector<Coord> cs;
  int min_t = tp, min_x = xs;
  for (const int g : group) {
    cs.push_back(coord_of(layout_, g));
    min_t = std::min(min_t, cs.back().t);
    min_x = std::min(min_x, cs.back().c + layout_.cp * cs.back().d);
  }
  int max_t = 0, max_x = 0;
  for (Coord& k : cs) {
    const int x = k.c + layout_.cp * k.d - min_x;
    k.t -= min_t;
    k.c = x % layout_.cp;
    k.d = x / layout_.cp;
    max_t = std::max(max_t, k.t);
    max_x = std::max(max_x, x);
  }
  const auto index = [&](int t, int x, int p) {
    return (static_cast<std::size_t>(p) * static_cast<std::size_t>(xs) +
            static_cast<std::size_t>(x)) * static_cast<std::size_t>(tp) + static_cast<std::size_t>(t);
  };
  std::vector<std::uint8_t> covered(static_cast<std::size_t>(tp) * static_cast<std::size_t>(xs) *
                                        static_cast<std::size_t>(layout_.pp),
                                    0);
  std::vector<std::vector<int>> out;
  std::vector<int> shifted(group.size());
  for (int dt = 0; dt + max_t < tp; ++dt) {
    for (int dx = 0; dx + max_x < xs; ++dx) {
      bool free = true;
      for (std::size_t i = 0; i < cs.size() && free; ++i) {
        free = covered[index(cs[i].t + dt, cs[i].c + layout_.cp * cs[i].d + dx, cs[i].p)] == 0U;
      }
      if (!free) continue;
      for (std::size_t i = 0; i < cs.size(); ++i) {
        const int t = cs[i].t + dt;
        const int x = cs[i].c + layout_.cp * cs[i].d + dx;
        covered[index(t, x, cs[i].p)] = 1;
        shifted[i] = layout_.rank(t, x % layout_.cp, x / layout_.cp, cs[i].p);
      }
      out.push_back(shifted);
    }
  }
  return out;
}

bool FullFidelity::fits(Category category, const RecordingModel::Query& q) const {
  // Pipeline transfers and the pipeline-wide sync span stages, and so do the DP-category
  // embedding and DualPipe mirror syncs; TP, EP and CP collectives stay in one stage.
  const int p0 = coord_of(layout_, q.group.front()).p;
  bool cross = false;
  for (const int g : q.group) cross = cross || coord_of(layout_, g).p != p0;
  switch (category) {
    case Category::PpComm: return cross;
    case Category::EpComm: return !cross && q.op == net::CollectiveOp::AllToAll;
    case Category::CpComm: return !cross && q.op != net::CollectiveOp::AllToAll;
    case Category::TpComm: return !cross && q.op != net::CollectiveOp::AllToAll && !is_cp_hop(q);
    case Category::DpComm: return q.op != net::CollectiveOp::AllToAll && !is_cp_hop(q);
    case Category::Compute:
    case Category::Optimizer: return false;
  }
  return false;
}

bool FullFidelity::is_tp_group(const std::vector<int>& group) const {
  // A TP group, or (expert TP below TP) an expert-TP group: etp consecutive TP ranks from a
  // multiple of etp, as Layout::etp_groups.
  const int n = static_cast<int>(group.size());
  if (layout_.tp < 2 || (n != layout_.tp && n != layout_.expert_tp()) || n < 2) return false;
  const Coord a = coord_of(layout_, group.front());
  if (a.t % n != 0) return false;
  for (int t = 0; t < n; ++t) {
    const Coord b = coord_of(layout_, group[static_cast<std::size_t>(t)]);
    if (b.t != a.t + t || b.c != a.c || b.d != a.d || b.p != a.p) return false;
  }
  return true;
}

bool FullFidelity::is_cp_hop(const RecordingModel::Query& q) const {
  if (q.op != net::CollectiveOp::SendRecv || q.group.size() != 2 || layout_.cp < 2) return false;
  const Coord a = coord_of(layout_, q.group[0]);
  const Coord b = coord_of(layout_, q.group[1]);
  return a.t == b.t && a.d == b.d && a.p == b.p && a.c != b.c;
}

std::vector<net::CollectivePlan> FullFidelity::copies(const RecordingModel::Query& q) const {
  std::vector<net::CollectivePlan> out = plan_copies(q);
  // A priced time other than the plan's (a measured collective): scale the plan to it.
  const Time planned = model_.cost(q.op, q.bytes, q.group).time;
  if (planned > Time::zero() && planned != q.time) {
    const double k = q.time.seconds() / planned.seconds();
    for (net::CollectivePlan& p : out) {
      for (net::FlowPhase& ph : p.phases) {
        ph.latency_s *= k;
        ph.bw_time_s *= k;
        for (net::Flow& f : ph.flows) f.max_rate /= k;
      }
    }
  }
  return out;
}

std::vector<net::CollectivePlan> FullFidelity::plan_copies(const RecordingModel::Query& q) const {
  std::vector<net::CollectivePlan> out;
  if (is_cp_hop(q)) {
    // A context-parallel ring step: every rank of every CP ring sends to the next one at
    // once (the builder's task lasts as long as the ring's slowest hop).
    const Coord a = coord_of(layout_, q.group[0]);
    std::vector<int> ring;
    for (int c = 0; c < layout_.cp; ++c) ring.push_back(layout_.rank(a.t, c, a.d, a.p));
    for (const auto& r : symmetric_groups(ring)) {
      for (std::size_t i = 0; i < r.size(); ++i) {
        const std::vector<int> hop{r[i], r[(i + 1) % r.size()]};
        out.push_back(model_.plan(q.op, q.bytes, hop));
      }
    }
    return out;
  }
  if (layout_.expert_tp() < layout_.tp) {
    // Expert TP below TP: an EP or expert-DP group runs over the stage's ranks in the expert
    // order (Layout::ep_group), which need not be a rectangle in (t, x) — translating it
    // would give copies that are not groups of the layout. Take the layout's own groups.
    const int p = coord_of(layout_, q.group.front()).p;
    for (const auto& family : {layout_.ep_groups(p), layout_.expert_dp_groups(p)}) {
      if (std::find(family.begin(), family.end(), q.group) == family.end()) continue;
      for (const auto& g : family) out.push_back(model_.plan(q.op, q.bytes, g));
      return out;
    }
  }
  for (const auto& g : symmetric_groups(q.group)) out.push_back(model_.plan(q.op, q.bytes, g));
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
    const bool tp_task = task.category == Category::TpComm;
    for (const std::size_t i : it->second) {
      const auto& q = *uniq[i];
      // A query of one of this stage's groups of the task's kind: the builder prices each
      // kind on the stage's slowest copy (net::slowest_group), and a CP ring task lasts as
      // long as the slowest hop of any ring; symmetric_groups expands any copy to all.
      if (coord_of(layout_, q.group.front()).p != stage) continue;
      // (An all-to-all is never a TP collective, though with expert TP 1 and ep = tp its
      // group can be a TP group.)
      if (task.category != Category::EpComm && tp_task != is_tp_group(q.group)) continue;
      if (!fits(task.category, q)) continue;
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
  // The flows the run will start. The flow network re-solves the max-min shares of the flows
  // that share links at every start and end; all-to-alls start n(n-1) flows per group at once
  // across the network, where the groups of every stage meet on the same spine links, so
  // their cost grows with the square of their count (EP 32 on 512 H800-class GPUs: 7.7M
  // all-to-all flows, 22 s on a 2-core machine; DeepSeek-V3's 2,048-GPU scenario about 225M,
  // hours). Over kMaxFullAllToAllFlows the run is refused up front.
  std::vector<std::uint64_t> op_flows(ops_.size(), 0);
  for (std::size_t i = 0; i < ops_.size(); ++i) {
    for (const net::CollectivePlan& p : ops_[i]) {
      for (const net::FlowPhase& ph : p.phases) op_flows[i] += ph.flows.size();
    }
  }
  for (TaskId t = 0; t < g.num_tasks(); ++t) {
    const std::uint32_t e = g.task(t).external;
    if (e == kNoId) continue;
    stats_.planned_flows += op_flows[e];
    if (g.task(t).category == Category::EpComm) stats_.planned_all_to_all_flows += op_flows[e];
  }
  if (stats_.planned_all_to_all_flows > kMaxFullAllToAllFlows) {
    throw InputError("simulation.fidelity",
                     "simulation.fidelity = \"full\": this step would run " +
                         std::to_string(stats_.planned_all_to_all_flows) +
                         " all-to-all flows (limit " + std::to_string(kMaxFullAllToAllFlows) +
                         "; the flow model's cost grows with their square: 7.7M take about 20 "
                         "s on 2 cores); use fidelity = \"stage\", or fewer GPUs or microbatches");
  }
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
