// Collective cost model: NCCL's tuning model (latency + bytes / bandwidth per algorithm and
// protocol, cheapest wins) on the group's placement in the topology.
//
// Sources: ../shared/reference/hardware.md §3.1 (algbw/busbw, nccl-tests), §3.2 (measured
// busbw, hierarchical and all-to-all models), §3.3 (NCCL src/graph/tuning.cc,
// src/enqueue.cc); ../shared/reference/hardware.toml [nccl_model*].
//
// What is modelled, per group (n ranks, nNodes nodes, ppn = most ranks on one node):
//   intra  = min(GpuSpec::nccl_nvlink_bw, topology nvlink_bw)            bus B/s over NVLink
//   nic    = bottleneck of the topology route between group members on different nodes
//            (min over the ring's node-to-node hops; includes nic_efficiency)
//   inter  = (distinct NICs the group uses on a node, min over nodes) x nic
//            (= min(ppn, nics_per_node) x nic for the usual contiguous placement)
//   Ring        bus = min(intra if ppn > 1, inter if nNodes > 1); algbw = bus x n / nsteps
//   Tree        all_reduce only, nNodes > 1 (NCCL also allows one node; this model keeps
//               Ring there, as the brief asks): bus = 0.92 x min(intra if ppn > 1,
//               inter x (2 if nNodes == 2 else 1)); algbw = 0.5 x bus. The x2 on two nodes
//               is NCCL's use of bwIntra for nNodes <= 2: a double binary tree over two nodes
//               moves only S per direction through the network, not 2S (§3.1 caveat:
//               "two-node Tree busbw can exceed the NIC limit").
//   Hierarchical all_reduce, nNodes > 1 and ppn > 1: ring reduce_scatter on NVLink (ppn
//               ranks, size S) + ring all_reduce across nodes (nNodes ranks, size S / ppn,
//               each rank's share of its node's NICs) + ring all_gather on NVLink; phases
//               serialized (§3.2 "Hierarchical model"), one protocol for all three phases.
//   Pairwise    all_to_all (§3.2 "All-to-all"; NCCL runs it as grouped send/recv).
//   P2P         send_recv over route(src, dst).
// Protocols: LL, LL128 and Simple are all enabled. NCCL enables LL128 by default on NVLink
// paths and on network paths whose NIC sits on the GPU's PCIe switch (tuning.cc: typeInter
// <= PATH_PXB), which is how GPUs attach to NICs in this topology (DGX layout).
//
// Not modelled (documented simplifications): channels and the per-channel caps
// (perChMaxRingLL128Bw, perChMaxTreeBw, ...), the size-dependent tree correction factor,
// the 1.4x multi-node Ring Simple latency "plateau" (enqueue.cc; it depends on the channel
// count and makes time non-monotone in size), NVLS/NVLSTree, CollNet, PAT, and the graph
// net latency (the IB plugin reports 0, so the Simple "flush" doubling adds nothing).
#include "net/collective.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace trainsim::net {

namespace {

constexpr double kGB = 1e9;   // GB/s -> B/s
constexpr double kUs = 1e-6;  // µs -> s
constexpr double kInf = std::numeric_limits<double>::infinity();

// Protocol indices into the latency tables (enum order of Protocol).
constexpr std::size_t kLL = 0, kLL128 = 1, kSimple = 2;
constexpr std::array<Protocol, 3> kProtocols = {Protocol::LL, Protocol::LL128,
                                                Protocol::Simple};
using LatRow = std::array<double, 3>;  // µs, [LL, LL128, Simple]

// NCCL ncclTunerConstantsDefaults (src/graph/tuning.cc); hardware.md §3.3 "Default constants";
// hardware.toml [nccl_model.base_latency_us] and [nccl_model.hw_latency_us.*].
constexpr LatRow kBaseLatRing = {6.6, 14.0, 8.4};    // baseLat[RING]
constexpr LatRow kBaseLatTree = {6.8, 14.0, 8.4};    // baseLat[TREE]
constexpr LatRow kNvlinkLatRing = {0.6, 1.9, 3.4};   // hwLat[NVLINK][RING]
constexpr LatRow kNvlinkLatTree = {0.6, 1.25, 4.0};  // hwLat[NVLINK][TREE]
constexpr LatRow kNetLatRing = {2.7, 4.0, 14.0};     // hwLat[NET][RING]
constexpr LatRow kNetLatTree = {5.0, 8.5, 14.0};     // hwLat[NET][TREE]

// getNetOverhead() in tuning.cc: 1 µs on Intel/ARM hosts (2 µs on AMD), x3 for Simple; the
// floor of every intra-node ring step of a multi-node ring (hardware.md §3.3 "Latency").
// Intel/ARM hosts assumed (DGX A100 uses AMD CPUs, DGX H100/B200 Intel; the model's own
// worked examples in hardware.md §3.3 use 1 µs).
constexpr double kNetOverheadUs = 1.0;
constexpr double kNetOverheadSimpleFactor = 3.0;

// Bandwidth adjustments (tuning.cc "Various model refinements"; hardware.md §3.3 table;
// hardware.toml [nccl_model]).
constexpr double kLLBwFactor = 0.5;          // ll_bw_factor: 4 B data + 4 B flag per 8 B
constexpr double kLL128BwFactor = 0.92;      // ll128_bw_factor: 120 of 128 bytes payload
constexpr double kTreeBwFactor = 0.92;       // tree_allreduce_bw_factor
constexpr double kTreeLLDivisor = 3.8;       // tree_ll_divisor
constexpr double kTreeLL128MultiNode = 120.0 / 128.0;  // tree_ll128_factor_multi_node
constexpr double kTreeAlgbwFactor = 0.5;     // tree_collnet_busbw_to_algbw

// llMaxBw, GB/s total (hardware.toml [nccl_model.bw_caps_gbps]): single node indexed by GPU
// arch; multi-node indexed by host CPU (Intel/ARM assumed, as for kNetOverheadUs).
constexpr double kLLMaxVolta = 39.0;
constexpr double kLLMaxAmpere = 87.7;
constexpr double kLLMaxHopper = 141.0;
constexpr double kLLMaxBlackwell = 282.0;
constexpr double kLLMaxTwoNodes = 39.0;
constexpr double kLLMaxManyNodes = 20.4;

/// llMaxBw in B/s for a group spanning `nodes` nodes of GPUs of compute capability `arch`x10.
double ll_max_bw(int arch, int nodes) {
  if (nodes > 2) return kLLMaxManyNodes * kGB;
  if (nodes == 2) return kLLMaxTwoNodes * kGB;
  if (arch >= 100) return kLLMaxBlackwell * kGB;
  if (arch >= 90) return kLLMaxHopper * kGB;
  if (arch >= 80) return kLLMaxAmpere * kGB;
  return kLLMaxVolta * kGB;
}

/// NCCL's log2i: floor(log2(v)) for v >= 1.
int log2i(int v) {
  int r = 0;
  while (v > 1) {
    v >>= 1;
    ++r;
  }
  return r;
}

/// A ring collective (all_reduce, all_gather, reduce_scatter) on an abstract group: n ranks
/// over `nodes` nodes, `ppn` ranks per node, bus bandwidth `bus` (B/s), protocol index p.
/// Returns the time in seconds for `bytes` (nccl-tests size convention).
/// Latency (tuning.cc, hardware.md §3.3): base + (nsteps - nInter) x max(intraLat,
/// netOverhead) + nInter x interLat, interLat = Tree NET value when ppn == 1.
double ring_time_s(CollectiveOp op, double bytes, int n, int nodes, int ppn, double bus,
                   std::size_t p, int arch) {
  const bool all_reduce = op == CollectiveOp::AllReduce;
  const int nsteps = all_reduce ? 2 * (n - 1) : n - 1;
  const int inter_steps = nodes == 1 ? 0 : (all_reduce ? 2 * (nodes - 1) : nodes - 1);
  double intra_lat = kNvlinkLatRing[p];
  if (nodes > 1) {
    const double overhead = kNetOverheadUs * (p == kSimple ? kNetOverheadSimpleFactor : 1.0);
    intra_lat = std::max(intra_lat, overhead);
  }
  const double inter_lat = ppn == 1 ? kNetLatTree[p] : kNetLatRing[p];
  const double lat_us = kBaseLatRing[p] + (nsteps - inter_steps) * intra_lat +
                        inter_steps * inter_lat;
  double proto_bus = bus;
  if (p == kLL) proto_bus = std::min(ll_max_bw(arch, nodes), bus * kLLBwFactor);
  if (p == kLL128) proto_bus = bus * kLL128BwFactor;
  // busBw -> algbw: x n / nsteps (the inverse of busbw_factor).
  const double algbw = proto_bus * static_cast<double>(n) / static_cast<double>(nsteps);
  return lat_us * kUs + bytes / algbw;
}

/// Placement of a group on the topology.
struct Shape {
  int n = 0;
  int nodes = 0;
  int ppn = 0;             ///< most ranks on one node
  int min_rails = 0;       ///< distinct NICs used on a node, min over nodes
  double nic_bw = kInf;    ///< per-NIC route bottleneck between nodes, B/s (kInf: one node)
  /// Per node: (ranks on it, distinct NICs they use).
  std::vector<std::pair<int, int>> per_node;
};

/// Member of a node, with the NIC (rail) it uses.
struct Member {
  int node = 0;
  int rail = 0;
  int gpu = 0;
  auto operator<=>(const Member&) const = default;
};

Shape analyse(const hw::Topology& topo, std::span<const int> group) {
  const int rails_per_node = topo.spec().nics_per_node;
  std::vector<Member> members;
  members.reserve(group.size());
  for (const int g : group) {
    members.push_back(Member{topo.node_of(g), topo.local_rank(g) % rails_per_node, g});
  }
  std::sort(members.begin(), members.end());  // by node, then rail, then GPU

  Shape s;
  s.n = static_cast<int>(group.size());
  s.min_rails = std::numeric_limits<int>::max();
  // Per node: first member on each rail (sorted by rail), for picking same-rail pairs.
  std::vector<std::vector<Member>> rail_heads;
  for (std::size_t i = 0; i < members.size();) {
    std::size_t j = i;
    std::vector<Member> heads;
    while (j < members.size() && members[j].node == members[i].node) {
      if (heads.empty() || heads.back().rail != members[j].rail) heads.push_back(members[j]);
      ++j;
    }
    const int count = static_cast<int>(j - i);
    const int rails = static_cast<int>(heads.size());
    s.per_node.emplace_back(count, rails);
    s.ppn = std::max(s.ppn, count);
    s.min_rails = std::min(s.min_rails, rails);
    rail_heads.push_back(std::move(heads));
    i = j;
  }
  s.nodes = static_cast<int>(s.per_node.size());
  if (s.nodes > 1) {
    // The ring visits nodes in ascending order and wraps around (with two nodes the wrap is
    // the same node pair). For each node-to-node hop, route between members on the same rail
    // when there are any (NCCL's rings keep a channel on one rail), else between the first
    // members; the per-NIC bandwidth is the smallest bottleneck of those routes.
    const int hops = s.nodes == 2 ? 1 : s.nodes;
    for (int k = 0; k < hops; ++k) {
      const auto& a = rail_heads[static_cast<std::size_t>(k)];
      const auto& b = rail_heads[static_cast<std::size_t>((k + 1) % s.nodes)];
      int src = a.front().gpu;
      int dst = b.front().gpu;
      for (std::size_t x = 0, y = 0; x < a.size() && y < b.size();) {
        if (a[x].rail == b[y].rail) {
          src = a[x].gpu;
          dst = b[y].gpu;
          break;
        }
        if (a[x].rail < b[y].rail) {
          ++x;
        } else {
          ++y;
        }
      }
      s.nic_bw = std::min(s.nic_bw, topo.route(src, dst).bottleneck_bw);
    }
  }
  return s;
}

struct Candidate {
  Time time = Time::max();
  Algorithm algorithm = Algorithm::None;
  Protocol protocol = Protocol::Simple;
};

/// Keeps the cheaper of `best` and (t, a, p); on equal Time the earlier candidate stays, so
/// ties go to the enum order in which candidates are offered.
void offer(Candidate& best, double seconds, Algorithm a, Protocol p) {
  const Time t = Time::from_seconds(seconds);
  if (t < best.time) best = Candidate{t, a, p};
}

[[noreturn]] void bad(const std::string& what) {
  throw std::invalid_argument("collective: " + what);
}

}  // namespace

std::string_view op_name(CollectiveOp op) {
  switch (op) {
    case CollectiveOp::AllReduce: return "all_reduce";
    case CollectiveOp::AllGather: return "all_gather";
    case CollectiveOp::ReduceScatter: return "reduce_scatter";
    case CollectiveOp::AllToAll: return "all_to_all";
    case CollectiveOp::SendRecv: return "send_recv";
  }
  return "?";
}

std::string_view algorithm_name(Algorithm a) {
  switch (a) {
    case Algorithm::Ring: return "ring";
    case Algorithm::Tree: return "tree";
    case Algorithm::Hierarchical: return "hierarchical";
    case Algorithm::Pairwise: return "pairwise";
    case Algorithm::P2P: return "p2p";
    case Algorithm::None: return "none";
  }
  return "?";
}

std::string_view protocol_name(Protocol p) {
  switch (p) {
    case Protocol::LL: return "LL";
    case Protocol::LL128: return "LL128";
    case Protocol::Simple: return "Simple";
  }
  return "?";
}

double busbw_factor(CollectiveOp op, int n) {
  if (n < 1) bad("busbw_factor needs n >= 1 (got " + std::to_string(n) + ")");
  const double dn = n;
  switch (op) {
    case CollectiveOp::AllReduce: return 2.0 * (dn - 1.0) / dn;   // nccl-tests all_reduce.cu
    case CollectiveOp::AllGather:                                 // all_gather.cu
    case CollectiveOp::ReduceScatter:                             // reduce_scatter.cu
    case CollectiveOp::AllToAll: return (dn - 1.0) / dn;          // alltoall.cu
    case CollectiveOp::SendRecv: return 1.0;                      // sendrecv.cu
  }
  bad("busbw_factor: unknown op " + std::to_string(static_cast<int>(op)));
}

AlphaBetaModel::AlphaBetaModel(const hw::Topology& topology, const hw::GpuSpec& gpu)
    : topo_(topology), gpu_(gpu) {
  if (!(gpu.nccl_nvlink_bw > 0.0) || !std::isfinite(gpu.nccl_nvlink_bw)) {
    bad("GPU " + gpu.key + " needs nccl_nvlink_bw > 0 B/s");
  }
}

CollectiveCost AlphaBetaModel::cost(CollectiveOp op, std::uint64_t bytes,
                                    std::span<const int> group) const {
  switch (op) {
    case CollectiveOp::AllReduce:
    case CollectiveOp::AllGather:
    case CollectiveOp::ReduceScatter:
    case CollectiveOp::AllToAll:
    case CollectiveOp::SendRecv: break;
    default: bad("unknown op " + std::to_string(static_cast<int>(op)));
  }
  if (group.empty()) bad(std::string(op_name(op)) + ": empty group");
  const int num_gpus = topo_.num_gpus();
  for (const int g : group) {
    if (g < 0 || g >= num_gpus) {
      bad(std::string(op_name(op)) + ": GPU index " + std::to_string(g) +
          " out of range [0, " + std::to_string(num_gpus) + ")");
    }
  }
  {
    std::vector<int> sorted(group.begin(), group.end());
    std::sort(sorted.begin(), sorted.end());
    const auto dup = std::adjacent_find(sorted.begin(), sorted.end());
    if (dup != sorted.end()) {
      bad(std::string(op_name(op)) + ": GPU " + std::to_string(*dup) +
          " appears more than once in the group");
    }
  }
  if (op == CollectiveOp::SendRecv && group.size() != 2) {
    bad("send_recv needs exactly 2 GPUs (sender, receiver), got " +
        std::to_string(group.size()));
  }

  CollectiveCost result;
  if (bytes == 0 || group.size() == 1) return result;  // nothing moves: zero, None

  const auto size = static_cast<double>(bytes);
  const int arch = gpu_.arch;
  const double intra = std::min(gpu_.nccl_nvlink_bw, topo_.spec().nvlink_bw);
  Candidate best;

  if (op == CollectiveOp::SendRecv) {
    // One NCCL p2p transfer: a single ring step. NCCL uses LL below NCCL_P2P_LL_THRESHOLD
    // (16 KiB) and Simple above; this model takes the cheaper of the two, with the Ring
    // base latency plus one hop's hw latency (NVLink inside a node, NET across).
    const hw::Route r = topo_.route(group[0], group[1]);
    const bool net = r.crosses_network;
    const double bw = net ? r.bottleneck_bw : std::min(intra, r.bottleneck_bw);
    for (const std::size_t p : {kLL, kSimple}) {
      const double hop_us = net ? kNetLatRing[p] : kNvlinkLatRing[p];
      const double proto_bw =
          p == kLL ? std::min(bw * kLLBwFactor, ll_max_bw(arch, net ? 2 : 1)) : bw;
      offer(best, (kBaseLatRing[p] + hop_us) * kUs + size / proto_bw, Algorithm::P2P,
            kProtocols[p]);
    }
  } else {
    const Shape s = analyse(topo_, group);
    const double inter = s.nodes > 1 ? s.min_rails * s.nic_bw : kInf;
    if (op == CollectiveOp::AllToAll) {
      // Pairwise exchange (hardware.md §3.2 "All-to-all"): every rank sends size/n to each
      // peer; same-node peers over NVLink, other nodes through the rank's share of its
      // node's NICs ("alltoall cannot aggregate the bandwidth of multiple NICs"). The two
      // parts overlap; the latency is Simple's Ring base (one kernel) plus one Simple hw
      // hop per peer (NVLink 3.4 µs, NET 14 µs, tuning.cc), since peers are served in turn.
      // The slowest node sets the completion time.
      double worst = 0.0;
      const double per_peer = size / static_cast<double>(s.n);
      for (const auto& [count, rails] : s.per_node) {
        const int local_peers = count - 1;
        const int remote_peers = s.n - count;
        const double t_local = local_peers * per_peer / intra;
        const double t_remote =
            remote_peers > 0 ? remote_peers * per_peer / (s.nic_bw * rails / count) : 0.0;
        const double lat_us = kBaseLatRing[kSimple] + local_peers * kNvlinkLatRing[kSimple] +
                              remote_peers * kNetLatRing[kSimple];
        worst = std::max(worst, lat_us * kUs + std::max(t_local, t_remote));
      }
      offer(best, worst, Algorithm::Pairwise, Protocol::Simple);
    } else {
      const double ring_bus = std::min(s.ppn > 1 ? intra : kInf, inter);
      for (const std::size_t p : {kLL, kLL128, kSimple}) {
        offer(best, ring_time_s(op, size, s.n, s.nodes, s.ppn, ring_bus, p, arch),
              Algorithm::Ring, kProtocols[p]);
      }
      if (op == CollectiveOp::AllReduce && s.nodes > 1) {
        const double tree_raw =
            std::min(s.ppn > 1 ? intra : kInf, inter * (s.nodes == 2 ? 2.0 : 1.0));
        const double tree_bus = kTreeBwFactor * tree_raw;
        const int depth = log2i(s.nodes);
        for (const std::size_t p : {kLL, kLL128, kSimple}) {
          double bus = tree_bus;
          if (p == kLL) bus = std::min(tree_bus / kTreeLLDivisor, ll_max_bw(arch, s.nodes));
          if (p == kLL128) bus = tree_bus * kTreeLL128MultiNode;
          // Tree all_reduce latency: base + 2((ppn-1) intraLat + log2i(nNodes) interLat);
          // interLat is the Tree NET value either way.
          const double lat_us = kBaseLatTree[p] +
                                2.0 * ((s.ppn - 1) * kNvlinkLatTree[p] + depth * kNetLatTree[p]);
          offer(best, lat_us * kUs + size / (kTreeAlgbwFactor * bus), Algorithm::Tree,
                kProtocols[p]);
        }
        if (s.ppn > 1) {
          // Each rank's share of its node's NICs for the per-rail all_reduce of S / ppn.
          const double rail_bus = inter / static_cast<double>(s.ppn);
          for (const std::size_t p : {kLL, kLL128, kSimple}) {
            const double t_rs = ring_time_s(CollectiveOp::ReduceScatter, size, s.ppn, 1, s.ppn,
                                            intra, p, arch);
            const double t_ar = ring_time_s(CollectiveOp::AllReduce, size / s.ppn, s.nodes,
                                            s.nodes, 1, rail_bus, p, arch);
            const double t_ag = ring_time_s(CollectiveOp::AllGather, size, s.ppn, 1, s.ppn,
                                            intra, p, arch);
            offer(best, t_rs + t_ar + t_ag, Algorithm::Hierarchical, kProtocols[p]);
          }
        }
      }
    }
  }

  result.time = best.time;
  result.algorithm = best.algorithm;
  result.protocol = best.protocol;
  if (best.time > Time::zero()) {
    result.algbw = size / best.time.seconds();
    result.busbw = result.algbw * busbw_factor(op, static_cast<int>(group.size()));
  }
  return result;
}

}  // namespace trainsim::net
