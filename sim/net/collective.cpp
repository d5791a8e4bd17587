// Collective cost model: NCCL's tuning model (latency + bytes / bandwidth per algorithm and
// protocol, cheapest wins) on the group's placement in the topology.
//
// Sources: ../shared/reference/hardware.md §3.1 (algbw/busbw, nccl-tests), §3.2 (measured
// busbw, hierarchical and all-to-all models), §3.3 (NCCL src/graph/tuning.cc,
// src/enqueue.cc); ../shared/reference/hardware.toml [nccl_model*].
//
// What is modelled, per group (n ranks, nNodes nodes, ppn = most ranks on one node):
//   intra  = GpuSpec::nccl_nvlink_bw x min(1, topology nvlink_bw / GpuSpec::nvlink_bw)
//            (NCCL's per-link rate on the links the topology gives each GPU)  bus B/s over NVLink
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
// count and makes time non-monotone in size), multi-node NVLSTree, CollNet, and the graph
// net latency (the IB plugin reports 0, so the Simple "flush" doubling adds nothing).
// NVLS (one node, > 4 GPUs, Hopper+) and PAT (one GPU per node) are modelled: see below.
#include "net/collective.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <set>
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

/// Alpha and bandwidth term of one phase, seconds.
struct Part {
  double lat = 0;
  double bw = 0;
  [[nodiscard]] double total() const { return lat + bw; }
};

/// A ring collective (all_reduce, all_gather, reduce_scatter) on an abstract group: n ranks
/// over `nodes` nodes, `ppn` ranks per node, bus bandwidth `bus` (B/s), protocol index p.
/// Returns the time in seconds for `bytes` (nccl-tests size convention).
/// Latency (tuning.cc, hardware.md §3.3): base + (nsteps - nInter) x max(intraLat,
/// netOverhead) + nInter x interLat, interLat = Tree NET value when ppn == 1.
Part ring_time(CollectiveOp op, double bytes, int n, int nodes, int ppn, double bus,
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
  return Part{lat_us * kUs, bytes / algbw};
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
  /// Per node: the most of its ranks on one NIC (GPU i uses NIC i mod nics; a partly used
  /// node or nics not dividing its GPUs binds them unevenly).
  std::vector<int> most_per_nic;
  /// Per node (ascending node index): its members' GPU indices, by local rank.
  std::vector<std::vector<int>> members;
  /// Per node: the first member on each NIC (rail) it uses, in rail order.
  std::vector<std::vector<int>> rail_heads;
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
    int most = 0;
    int run = 0;
    while (j < members.size() && members[j].node == members[i].node) {
      if (heads.empty() || heads.back().rail != members[j].rail) {
        heads.push_back(members[j]);
        run = 0;
      }
      most = std::max(most, ++run);
      ++j;
    }
    s.most_per_nic.push_back(most);
    const int count = static_cast<int>(j - i);
    const int rails = static_cast<int>(heads.size());
    std::vector<int> gpus;
    for (std::size_t k = i; k < j; ++k) gpus.push_back(members[k].gpu);
    std::sort(gpus.begin(), gpus.end());
    s.members.push_back(std::move(gpus));
    s.per_node.emplace_back(count, rails);
    s.ppn = std::max(s.ppn, count);
    s.min_rails = std::min(s.min_rails, rails);
    s.rail_heads.emplace_back();
    for (const Member& h : heads) s.rail_heads.back().push_back(h.gpu);
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
  std::vector<Part> parts;  ///< per phase
};

/// Keeps the cheaper of `best` and (t, a, p); on equal Time the earlier candidate stays, so
/// ties go to the enum order in which candidates are offered.
void offer(Candidate& best, double seconds, Algorithm a, Protocol p, std::vector<Part> parts) {
  const Time t = Time::from_seconds(seconds);
  if (t < best.time) best = Candidate{t, a, p, std::move(parts)};
}
void offer(Candidate& best, Part part, Algorithm a, Protocol p) {
  offer(best, part.total(), a, p, {part});
}

// NVLS (hardware.md §3.3 "NVLS and NVLSTree", §3.4): Simple only; latency = NVLS intraLat
// (25 µs, baseLat 0); bandwidth = bwIntra x nvlsEfficiency x (nCh - 1) / nCh, used as the
// algorithm bandwidth: each GPU sends and receives about S once (§3.4 theory, T = S / W).
// nvlsEfficiency: Hopper 0.85, Blackwell 0.74 (tuning.cc). nCh = 16 NVLS channels
// (NCCL_NVLS_NCHANNELS default; from NCCL's env documentation, not in hardware.md). NCCL's
// model additionally doubles the bandwidth ("two operations pipelined") and converts with
// n / nsteps, which puts 8-GPU H100 NVLS at ~590 GB/s busbw; measured is 473-482 (§3.2), so
// the physical one-pass form is used here (busbw 517 GB/s on H100, 877 on B200, vs 482 and 838
// measured). Only within one node of more than 4 GPUs: "partitions of 4 GPUs or fewer do not
// benefit from multicast" (§3.2, NVIDIA GB200 partition guide; measured H200 4 GPUs: Ring).
constexpr double kNvlsLatUs = 25.0;
constexpr double kNvlsEffHopper = 0.85;
constexpr double kNvlsEffBlackwell = 0.74;
constexpr double kNvlsChannels = 16.0;
constexpr int kNvlsMinGpus = 5;

// PAT (hardware.md §3.3): all_gather / reduce_scatter with one GPU per node, Simple only;
// latency = base 8.0 + log2(nNodes) x NET 14 / 3.5 + 2.8 µs x nRanks; bandwidth = 0.75 x
// busBw, used as algbw without the n / nsteps conversion.
constexpr double kPatBaseUs = 8.0;
constexpr double kPatNetLatUs = 14.0;
constexpr double kPatNetDivisor = 3.5;
constexpr double kPatPerRankUs = 2.8;
constexpr double kPatBwFactor = 0.75;

/// Appends ring flows over `nodes` (each a list of GPUs) with `channels` parallel rings.
/// Ring c enters node m at member (c - m) mod count, walks the node's members upwards and
/// leaves from the member before its entry point, so consecutive nodes are joined on the
/// same local rank (rail) whenever nodes have equal member counts. With `rail_heads` (per
/// node, the first member on each rail) and more than one channel, ring c enters node m at
/// rail head (c - m) mod channels and leaves from rail head (c - m - 1) mod channels, so the
/// channels of a node-to-node hop leave and enter on distinct NICs even when several GPUs
/// share a NIC (GPU i uses NIC i mod nics; with 8 GPUs and 3 NICs local ranks 7, 0, 1 are on
/// NICs 1, 0, 1).
void ring_flows(const std::vector<std::vector<int>>& nodes, int channels, double edge_bytes,
                std::vector<Flow>& out,
                const std::vector<std::vector<int>>* rail_heads = nullptr) {
  std::vector<int> order;
  const auto ch = static_cast<std::size_t>(channels);
  for (int c = 0; c < channels; ++c) {
    order.clear();
    for (std::size_t m = 0; m < nodes.size(); ++m) {
      const auto& g = nodes[m];
      const std::size_t cnt = g.size();
      if (rail_heads != nullptr && channels > 1) {
        const auto& h = (*rail_heads)[m];
        const int entry = h[(static_cast<std::size_t>(c) + ch - m % ch) % ch];
        const int exit = h[(static_cast<std::size_t>(c) + 2 * ch - m % ch - 1) % ch];
        const auto start = static_cast<std::size_t>(std::find(g.begin(), g.end(), entry) - g.begin());
        for (std::size_t i = 0; i < cnt; ++i) {
          const int gpu = g[(start + i) % cnt];
          if (gpu != exit) order.push_back(gpu);
        }
        order.push_back(exit);
        continue;
      }
      const std::size_t start = (static_cast<std::size_t>(c) + cnt - m % cnt) % cnt;
      for (std::size_t i = 0; i < cnt; ++i) order.push_back(g[(start + i) % cnt]);
    }
    if (order.size() < 2) continue;
    for (std::size_t i = 0; i < order.size(); ++i) {
      out.push_back(Flow{order[i], order[(i + 1) % order.size()], edge_bytes, 0});
    }
  }
}

/// Every ordered pair of `gpus`, `bytes` each.
void all_pairs(const std::vector<int>& gpus, double bytes, std::vector<Flow>& out) {
  for (const int a : gpus) {
    for (const int b : gpus) {
      if (a != b) out.push_back(Flow{a, b, bytes, 0});
    }
  }
}

[[noreturn]] void bad(const std::string& what) {
  throw std::invalid_argument("collective: " + what);
}

}  // namespace

double nvlink_ramp_efficiency(const hw::GpuSpec& gpu, double bus_bytes) {
  const auto& x = gpu.nvlink_ramp_bus_bytes;
  const auto& e = gpu.nvlink_ramp_efficiency;
  if (x.empty() || x.size() != e.size()) return 1.0;
  if (bus_bytes <= x.front()) return e.front();
  if (bus_bytes >= x.back()) return e.back();
  for (std::size_t i = 1; i < x.size(); ++i) {
    if (bus_bytes <= x[i]) {
      const double w = std::log(bus_bytes / x[i - 1]) / std::log(x[i] / x[i - 1]);
      return e[i - 1] + w * (e[i] - e[i - 1]);
    }
  }
  return e.back();
}

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
    case Algorithm::NVLS: return "nvls";
    case Algorithm::PAT: return "pat";
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

CollectivePlan AlphaBetaModel::choose(CollectiveOp op, std::uint64_t bytes,
                                      std::span<const int> group, bool with_flows) const {
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

  CollectivePlan out;
  CollectiveCost& result = out.cost;
  if (bytes == 0 || group.size() == 1) return out;  // nothing moves: zero, None

  const auto size = static_cast<double>(bytes);
  const int arch = gpu_.arch;
  // NCCL's NVLink bandwidth is a per-link rate times the GPU's links (topo.h: SM90 20.6 GB/s
  // x 18); a topology with fewer links per GPU than the datasheet (H800: 8 of the H100's 18,
  // 200 of 450 GB/s per direction) keeps the per-link rate for the links it has.
  // (A GPU without a datasheet NVLink rate keeps NCCL's rate, capped by the topology.)
  const double intra =
      gpu_.nvlink_bw > 0.0
          ? gpu_.nccl_nvlink_bw * std::min(1.0, topo_.spec().nvlink_bw / gpu_.nvlink_bw)
          : std::min(gpu_.nccl_nvlink_bw, topo_.spec().nvlink_bw);
  Candidate best;
  Shape s;

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
      offer(best, Part{(kBaseLatRing[p] + hop_us) * kUs, size / proto_bw}, Algorithm::P2P,
            kProtocols[p]);
    }
  } else {
    s = analyse(topo_, group);
    const double inter = s.nodes > 1 ? s.min_rails * s.nic_bw : kInf;
    if (op == CollectiveOp::AllToAll) {
      // Pairwise exchange (hardware.md §3.2 "All-to-all"): every rank sends size/n to each
      // peer; same-node peers over NVLink, other nodes through the rank's share of its
      // node's NICs ("alltoall cannot aggregate the bandwidth of multiple NICs"). The two
      // parts overlap; the latency is Simple's Ring base (one kernel) plus one Simple hw
      // hop (NVLink 3.4 µs, NET 14 µs when any peer is remote; tuning.cc): a grouped
      // send/recv keeps all peers in flight at once on the p2p channels. (Serving peers in
      // turn, 14 µs each, would cost 0.8 ms of latency at 64 ranks and put 64-rank EP at
      // 40 GB/s per NIC, against DeepEP's measured 50-51, hardware.md §3.2.)
      // The slowest node sets the completion time.
      Part worst;
      // A rank's share of its NIC: the NIC's rate over the node's ranks on the busiest NIC
      // (count / rails when they spread evenly).
      const double per_peer = size / static_cast<double>(s.n);
      for (std::size_t node = 0; node < s.per_node.size(); ++node) {
        const int count = s.per_node[node].first;
        const int local_peers = count - 1;
        const int remote_peers = s.n - count;
        const double t_local = local_peers * per_peer / intra;
        const double t_remote =
            remote_peers > 0 ? remote_peers * per_peer / (s.nic_bw / s.most_per_nic[node]) : 0.0;
        const double lat_us = kBaseLatRing[kSimple] + (remote_peers > 0 ? kNetLatRing[kSimple]
                                                                         : kNvlinkLatRing[kSimple]);
        const Part part{lat_us * kUs, std::max(t_local, t_remote)};
        if (part.total() > worst.total()) worst = part;
      }
      offer(best, worst, Algorithm::Pairwise, Protocol::Simple);
    } else {
      // Measured ramp of NCCL's bandwidth inside an NVLink domain (GpuSpec::nvlink_ramp_*,
      // docs/network.md): a ring or NVLS kernel reaches its asymptotic bandwidth only for
      // large messages, so inside one node the bandwidth term of each pipelined candidate
      // (LL128, Simple, NVLS) is divided by the efficiency measured at the collective's bus
      // bytes before the cheapest is taken; LL, the small-message protocol, keeps NCCL's
      // model. The choice thus stays the cheapest of the priced candidates, which keeps the
      // time monotone in bandwidth and in size (docs/trust.md).
      const double ramp =
          s.nodes == 1 ? nvlink_ramp_efficiency(gpu_, size * busbw_factor(op, s.n)) : 1.0;
      const double ring_bus = std::min(s.ppn > 1 ? intra : kInf, inter);
      for (const std::size_t p : {kLL, kLL128, kSimple}) {
        Part part = ring_time(op, size, s.n, s.nodes, s.ppn, ring_bus, p, arch);
        if (p != kLL) part.bw /= ramp;
        offer(best, part, Algorithm::Ring, kProtocols[p]);
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
          offer(best, Part{lat_us * kUs, size / (kTreeAlgbwFactor * bus)}, Algorithm::Tree,
                kProtocols[p]);
        }
        if (s.ppn > 1) {
          // Each rank's share of its node's NICs for the per-rail all_reduce of S / ppn.
          const double rail_bus = inter / static_cast<double>(s.ppn);
          for (const std::size_t p : {kLL, kLL128, kSimple}) {
            const Part t_rs = ring_time(CollectiveOp::ReduceScatter, size, s.ppn, 1, s.ppn,
                                        intra, p, arch);
            const Part t_ar = ring_time(CollectiveOp::AllReduce, size / s.ppn, s.nodes,
                                        s.nodes, 1, rail_bus, p, arch);
            const Part t_ag = ring_time(CollectiveOp::AllGather, size, s.ppn, 1, s.ppn,
                                        intra, p, arch);
            offer(best, t_rs.total() + t_ar.total() + t_ag.total(), Algorithm::Hierarchical,
                  kProtocols[p], {t_rs, t_ar, t_ag});
          }
        }
      }
      const double nvls_eff = arch >= 100 ? kNvlsEffBlackwell : arch >= 90 ? kNvlsEffHopper : 0.0;
      if (op == CollectiveOp::AllReduce && s.nodes == 1 && s.n >= kNvlsMinGpus &&
          nvls_eff > 0.0) {
        const double algbw = intra * nvls_eff * (kNvlsChannels - 1.0) / kNvlsChannels;
        offer(best, Part{kNvlsLatUs * kUs, size / (algbw * ramp)}, Algorithm::NVLS,
              Protocol::Simple);
      }
      if (op != CollectiveOp::AllReduce && s.nodes > 1 && s.ppn == 1) {
        const double lat_us = kPatBaseUs + log2i(s.nodes) * kPatNetLatUs / kPatNetDivisor +
                              kPatPerRankUs * s.n;
        offer(best, Part{lat_us * kUs, size / (kPatBwFactor * inter)}, Algorithm::PAT,
              Protocol::Simple);
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
  if (!with_flows) return out;

  // Expand the winner into flows (see CollectivePlan for the patterns).
  for (const Part& part : best.parts) out.phases.push_back(FlowPhase{part.lat, part.bw, {}});
  auto& flows0 = out.phases.front().flows;
  const double n = s.n;
  switch (best.algorithm) {
    case Algorithm::P2P: flows0.push_back(Flow{group[0], group[1], size, 0}); break;
    case Algorithm::Pairwise:
    case Algorithm::NVLS: {
      std::vector<int> all;
      for (const auto& node : s.members) all.insert(all.end(), node.begin(), node.end());
      all_pairs(all, size / n, flows0);
      break;
    }
    case Algorithm::Ring:
    case Algorithm::PAT: {
      const double nsteps = op == CollectiveOp::AllReduce ? 2.0 * (n - 1.0) : n - 1.0;
      const int channels = s.nodes > 1 ? s.min_rails : 1;
      ring_flows(s.members, channels, nsteps * size / (n * channels), flows0, &s.rail_heads);
      break;
    }
    case Algorithm::Tree: {
      // Inter-node: two mirrored binary trees over node order, S/2 each, reduce up and
      // broadcast down every edge, spread over `channels` local ranks (one per rail).
      const int channels = s.min_rails;
      const auto nodes = static_cast<std::size_t>(s.nodes);
      for (int tree = 0; tree < 2; ++tree) {
        for (std::size_t m = 1; m < nodes; ++m) {
          const std::size_t child = tree == 0 ? m : nodes - 1 - m;
          const std::size_t parent = tree == 0 ? (m - 1) / 2 : nodes - 1 - (m - 1) / 2;
          for (int c = 0; c < channels; ++c) {
            const auto& a = s.members[child];
            const auto& b = s.members[parent];
            const int ga = a[static_cast<std::size_t>(c) % a.size()];
            const int gb = b[static_cast<std::size_t>(c) % b.size()];
            const double share = size / 2.0 / channels;
            flows0.push_back(Flow{ga, gb, share, 0});
            flows0.push_back(Flow{gb, ga, share, 0});
          }
        }
      }
      // Intra-node chain: reduce towards the first member, broadcast back.
      for (const auto& node : s.members) {
        for (std::size_t i = 0; i + 1 < node.size(); ++i) {
          flows0.push_back(Flow{node[i + 1], node[i], size, 0});
          flows0.push_back(Flow{node[i], node[i + 1], size, 0});
        }
      }
      break;
    }
    case Algorithm::Hierarchical: {
      const double ppn = s.ppn;
      for (const auto& node : s.members) {
        // Ring reduce_scatter (all_gather) of S over the node's c members: c - 1 steps of
        // S / c on every ring edge.
        const auto c = static_cast<double>(node.size());
        ring_flows({node}, 1, (c - 1.0) * size / c, out.phases[0].flows);
        ring_flows({node}, 1, (c - 1.0) * size / c, out.phases[2].flows);
      }
      const double nodes = s.nodes;
      for (std::size_t r = 0; r < static_cast<std::size_t>(s.ppn); ++r) {
        std::vector<std::vector<int>> rail;
        for (const auto& node : s.members) {
          if (r < node.size()) rail.push_back({node[r]});
        }
        ring_flows(rail, 1, 2.0 * (nodes - 1.0) / nodes * size / ppn, out.phases[1].flows);
      }
      break;
    }
    case Algorithm::None: break;
  }
  for (FlowPhase& phase : out.phases) {
    for (Flow& f : phase.flows) {
      f.max_rate = phase.bw_time_s > 0 ? f.bytes / phase.bw_time_s : kInf;
    }
  }
  return out;
}

CollectiveCost AlphaBetaModel::cost(CollectiveOp op, std::uint64_t bytes,
                                    std::span<const int> group) const {
  return choose(op, bytes, group, false).cost;
}

CollectivePlan AlphaBetaModel::plan(CollectiveOp op, std::uint64_t bytes,
                                    std::span<const int> group) const {
  return choose(op, bytes, group, true);
}

SlowestGroup slowest_group(const CollectiveModel& model, CollectiveOp op, std::uint64_t bytes,
                           const std::vector<std::vector<int>>& groups, int gpus_per_node) {
  if (groups.empty()) throw std::invalid_argument("slowest_group: no groups");
  // Groups placed alike (the same nodes and local ranks relative to their first member) cost
  // the same on a fabric whose nodes and rails are alike: one of each placement is priced.
  std::set<std::vector<std::pair<int, int>>> seen;
  auto first_of_its_placement = [&](const std::vector<int>& g) {
    if (gpus_per_node <= 0) return true;
    std::vector<std::pair<int, int>> key;
    key.reserve(g.size());
    for (const int r : g) {
      key.emplace_back(r / gpus_per_node - g.front() / gpus_per_node,
                       r % gpus_per_node - g.front() % gpus_per_node);
    }
    return seen.insert(std::move(key)).second;
  };
  (void)first_of_its_placement(groups.front());
  SlowestGroup out{groups.front(), model.cost(op, bytes, groups.front())};
  for (std::size_t i = 1; i < groups.size(); ++i) {
    if (!first_of_its_placement(groups[i])) continue;
    const CollectiveCost c = model.cost(op, bytes, groups[i]);
    if (c.time > out.cost.time) out = {groups[i], c};
  }
  return out;
}

}  // namespace trainsim::net
