// Cluster topology on Boost.Graph: see topology.hpp for the public contract and
// ../shared/reference/hardware.md §2.5 for the rail-optimized fat tree it models.
//
// Graph layout (vertex ids are contiguous ranges, in this order, so they are deterministic):
//   [0, G)                      GPU g                        (vertex id == GPU index)
//   [nvsw_base, +N)             NVSwitch of node n           (one logical switch per node)
//   [nic_base, +N*R)            NIC r of node n              (R = nics_per_node = rails)
//   [leaf_base, +L)             edge switches: rail fat tree: leaf of rail r in SU u (L = U*R);
//                               leaf_spine: one leaf per nodes_per_su nodes; torus: one
//                               router per node (L = N)
//   [spine_base, +P)            spines (3 tiers: P per pod, pods of sus_per_pod SUs)
//   [core_base, +C)             core switches (3 tiers only)
// Kinds (TopologySpec::kind): "rail_optimized_fat_tree" (tiers 2 or 3), "leaf_spine" (all
// NICs of a node on one leaf), "torus" (routers in a 2D/3D wrap-around grid, links of
// torus_link_bw). A GB200 NVL72 rack is a node of 72 GPUs (one NVLink domain).
// Every cable is two directed links (one per direction) with the same bandwidth and latency:
//   GPU <-> NVSwitch   nvlink_bw,                   nvlink_latency / 2 (so GPU->sw->GPU is
//                                                   nvlink_latency, the spec's definition)
//   GPU <-> NIC        max(nic_bw, 64 GB/s), 0 s    (PCIe Gen5 x16 class, hardware.md §2.4;
//                                                   chosen so it never limits a route)
//   NIC <-> leaf       nic_bw * nic_efficiency,     link_latency
//   leaf <-> spine     nodes_per_su * nic_bw * nic_efficiency / oversubscription / P,
//                      link_latency (leaf downlink capacity, split over the P spines)
// GPU i of a node uses NIC (i % nics_per_node); NIC r of every node of SU u plugs into leaf
// (u, r) (rail optimization). Every leaf connects to every spine (two-tier Clos).
//
// Spine count (hw::spine_count): spec.spines when > 0, else nics_per_node (as many as leaves
// per SU; with one SU that is the non-blocking 2-tier SuperPOD shape of hardware.md §2.5,
// where leaf->spine cables = node->leaf cables), but never more than a leaf's uplink cables
// (nodes_per_su / oversubscription): a leaf of 2 nodes reaches 2 spines, not 8 quarter-port
// ones. With 3 tiers the default core count is the pod's spines, at most a spine's uplink
// ports (hw::spine_uplink_ports); a spine-core link carries its share of what the spine
// receives, so no more cores than ports keeps every link at least one port wide.
// Spines are created whenever the cluster has more than one leaf, also for a single SU:
// cross-rail traffic (GPU i -> GPU j, i != j mod rails, on different nodes) needs them,
// because this model does not forward through GPUs (NCCL's PXN would hop over NVLink first;
// that is a software choice made by the collective model).
//
// Routing: GPUs and NICs are endpoints, never transit vertices; only leaf and spine switches
// forward. A cross-node route is therefore GPU -> own NIC -> own leaf -> (switches) ->
// destination leaf -> destination NIC -> GPU, and only the switch part has choices. That
// part is a fewest-hops path found with Boost's breadth_first_search over the fabric graph
// (a second Boost graph holding only the switch-to-switch links, with the same link ids),
// from the destination leaf (links come in symmetric pairs, so distances from the
// destination equal distances to it). The distance tables are cached lazily per destination
// leaf (at 16,384 GPUs: 512 leaves x 520 switches x 2 bytes, ~0.5 MB when all are used).
// The walk from the source leaf picks, among neighbours one hop closer, the one at index
// hash(src, dst, hop) % count in link-id order: deterministic ECMP.
#include "hw/topology.hpp"

#include <boost/graph/adjacency_list.hpp>
#include <boost/graph/breadth_first_search.hpp>
#include <boost/graph/visitors.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace trainsim::hw {

namespace {

struct VertexProps {
  VertexKind kind = VertexKind::Gpu;
};
struct EdgeProps {
  std::uint32_t link = 0;  ///< index into Impl::links
};
using Graph = boost::adjacency_list<boost::vecS, boost::vecS, boost::directedS, VertexProps,
                                    EdgeProps>;
using Vertex = Graph::vertex_descriptor;

/// Bandwidth of the GPU <-> NIC attachment: PCIe Gen5 x16 is ~63 GB/s raw per direction
/// (hardware.md §2.4); the link is made at least as fast as the NIC so it never limits.
constexpr double kPcieClassBw = 64e9;

/// Upper bound on the GPU count, so vertex and link ids stay well inside 32 bits.
constexpr int kMaxGpus = 1 << 24;

/// Upper bound on directed links (ids are uint32).
constexpr std::uint64_t kMaxLinks = std::numeric_limits<std::uint32_t>::max() / 2;

constexpr std::uint16_t kUnreachable = std::numeric_limits<std::uint16_t>::max();

std::string num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

[[noreturn]] void bad(const std::string& what) {
  throw std::invalid_argument("topology: " + what);
}

void require_positive(const char* name, double v, const char* unit) {
  if (!(v > 0.0) || !std::isfinite(v)) {
    bad(std::string(name) + " must be > 0" + unit + " (got " + num(v) + ")");
  }
}

void require_non_negative(const char* name, double v, const char* unit) {
  if (!(v >= 0.0) || !std::isfinite(v)) {
    bad(std::string(name) + " must be >= 0" + unit + " (got " + num(v) + ")");
  }
}

enum class Kind : std::uint8_t { RailFatTree, LeafSpine, Torus };

Kind parse_kind(const std::string& kind) {
  if (kind == "rail_optimized_fat_tree") return Kind::RailFatTree;
  if (kind == "leaf_spine") return Kind::LeafSpine;
  if (kind == "torus") return Kind::Torus;
  bad("unknown kind \"" + kind + "\" (supported: rail_optimized_fat_tree, leaf_spine, torus)");
}

}  // namespace

int leaf_uplinks(const TopologySpec& s) {
  const double down_ports = s.kind == "leaf_spine"
                                ? static_cast<double>(s.nodes_per_su) * s.nics_per_node
                                : static_cast<double>(s.nodes_per_su);
  return std::max(1, static_cast<int>(std::min(down_ports / s.oversubscription, 1e9)));
}

int spine_count(const TopologySpec& s) {
  return s.spines > 0 ? s.spines : std::min(s.nics_per_node, leaf_uplinks(s));
}

int spine_uplink_ports(const TopologySpec& s) {
  const double ports = static_cast<double>(s.sus_per_pod) * s.nics_per_node * leaf_uplinks(s) /
                       std::max(1, spine_count(s));
  return std::max(1, static_cast<int>(std::min(ports, 1e9)));
}

namespace {

void validate(const TopologySpec& s, int num_gpus) {
  const Kind kind = parse_kind(s.kind);
  if (s.gpus_per_node <= 0) {
    bad("gpus_per_node must be > 0 (got " + std::to_string(s.gpus_per_node) + ")");
  }
  if (num_gpus <= 0) bad("num_gpus must be > 0 (got " + std::to_string(num_gpus) + ")");
  if (num_gpus > kMaxGpus) {
    bad("num_gpus " + std::to_string(num_gpus) + " exceeds the supported maximum " +
        std::to_string(kMaxGpus));
  }
  if (num_gpus % s.gpus_per_node != 0) {
    bad("num_gpus " + std::to_string(num_gpus) + " is not a multiple of gpus_per_node " +
        std::to_string(s.gpus_per_node));
  }
  require_positive("nvlink_bw", s.nvlink_bw, " B/s");
  require_non_negative("nvlink_latency", s.nvlink_latency, " s");
  if (s.nics_per_node <= 0) {
    bad("nics_per_node must be > 0 (got " + std::to_string(s.nics_per_node) + ")");
  }
  require_positive("nic_bw", s.nic_bw, " B/s");
  if (!(s.nic_efficiency > 0.0 && s.nic_efficiency <= 1.0)) {
    bad("nic_efficiency must be in (0, 1] (got " + num(s.nic_efficiency) + ")");
  }
  require_non_negative("link_latency", s.link_latency, " s");
  if (s.nodes_per_su <= 0) {
    bad("nodes_per_su must be > 0 (got " + std::to_string(s.nodes_per_su) + ")");
  }
  if (s.spines < 0) bad("spines must be >= 0 (got " + std::to_string(s.spines) + ")");
  if (!(s.oversubscription >= 1.0) || !std::isfinite(s.oversubscription)) {
    bad("oversubscription must be >= 1 (got " + num(s.oversubscription) + ")");
  }
  // A leaf has (downlink ports) / oversubscription uplink cables and needs one to each spine.
  const int down_ports = kind == Kind::LeafSpine ? s.nodes_per_su * s.nics_per_node
                                                 : s.nodes_per_su;
  if (s.spines > std::max(1, static_cast<int>(down_ports / s.oversubscription))) {
    bad("spines (" + std::to_string(s.spines) + ") exceeds the uplink cables of a leaf (" +
        "downlink ports / oversubscription)");
  }
  if (s.tiers != 2 && s.tiers != 3) {
    bad("tiers must be 2 or 3 (got " + std::to_string(s.tiers) + ")");
  }
  if (s.tiers == 3 && kind != Kind::RailFatTree) {
    bad("tiers = 3 is only supported for kind rail_optimized_fat_tree");
  }
  if (s.sus_per_pod <= 0) {
    bad("sus_per_pod must be > 0 (got " + std::to_string(s.sus_per_pod) + ")");
  }
  if (s.cores < 0) bad("cores must be >= 0 (got " + std::to_string(s.cores) + ")");
  if (s.tiers == 3 && s.cores > 0) {
    const int ports = spine_uplink_ports(s);
    if (s.cores > ports) {
      bad("cores (" + std::to_string(s.cores) + ") exceeds the uplink ports of a spine (" +
          std::to_string(ports) + ": its downlink ports from the pod's leaves)");
    }
  }
  require_non_negative("torus_link_bw", s.torus_link_bw, " B/s");
  if (kind == Kind::Torus) {
    if (s.dims.size() != 2 && s.dims.size() != 3) {
      bad("torus dims must have 2 or 3 entries (got " + std::to_string(s.dims.size()) + ")");
    }
    std::int64_t product = 1;
    for (const int d : s.dims) {
      if (d <= 0) bad("torus dims must be > 0 (got " + std::to_string(d) + ")");
      product *= d;
    }
    const std::int64_t nodes = num_gpus / s.gpus_per_node;
    if (product != nodes) {
      bad("torus dims multiply to " + std::to_string(product) + " nodes but the cluster has " +
          std::to_string(nodes) + " (num_gpus / gpus_per_node)");
    }
  }
}

/// splitmix64 finaliser (Steele et al., "Fast splittable pseudorandom number generators",
/// 2014): a well-mixed, platform-independent hash for ECMP choices.
std::uint64_t mix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30U)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27U)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31U);
}

/// Validated sizes and the vertex-id ranges of the graph (see the layout at the top).
/// A base of Impl so that the graph can be constructed with its final vertex count.
struct Layout {
  TopologySpec spec;
  Kind kind = Kind::RailFatTree;
  int num_gpus = 0;
  int num_nodes = 0;
  int gpn = 0;    ///< gpus_per_node
  int rails = 0;  ///< nics_per_node
  int num_sus = 0;
  int num_pods = 1;         ///< 3 tiers: groups of sus_per_pod SUs with their own spines
  int spines_per_pod = 0;   ///< spines of one pod (all spines when tiers = 2)
  int num_spines = 0;       ///< all spines
  int num_cores = 0;
  std::uint64_t num_nics = 0;
  std::uint64_t num_leaves = 0;  ///< edge switches: leaves, or one torus router per node
  std::uint64_t fabric_cables = 0;
  std::uint64_t link_count = 0;
  std::uint32_t nvsw_base = 0, nic_base = 0, leaf_base = 0, spine_base = 0, core_base = 0,
                num_vertices = 0;

  Layout(const TopologySpec& s, int n) : spec(s), num_gpus(n) {
    validate(s, n);
    kind = parse_kind(s.kind);
    gpn = s.gpus_per_node;
    rails = s.nics_per_node;
    num_nodes = n / gpn;
    num_sus = (num_nodes + s.nodes_per_su - 1) / s.nodes_per_su;
    const int default_spines = spine_count(s);
    switch (kind) {
      case Kind::RailFatTree:
        num_leaves = static_cast<std::uint64_t>(num_sus) * static_cast<std::uint64_t>(rails);
        if (s.tiers == 3) {
          num_pods = (num_sus + s.sus_per_pod - 1) / s.sus_per_pod;
          const bool pod_has_many_leaves =
              std::min(num_sus, s.sus_per_pod) * rails > 1;
          spines_per_pod = pod_has_many_leaves || num_pods > 1 ? default_spines : 0;
          num_spines = num_pods * spines_per_pod;
          // A spine has as many uplink ports to the cores as it has downlink ports from its
          // pod's leaves; the default core count is the pod's spine count, at most that.
          num_cores = num_pods > 1 ? (s.cores > 0 ? s.cores
                                                  : std::min(spines_per_pod,
                                                             spine_uplink_ports(s)))
                                   : 0;
          fabric_cables =
              num_leaves * static_cast<std::uint64_t>(spines_per_pod) +
              static_cast<std::uint64_t>(num_spines) * static_cast<std::uint64_t>(num_cores);
        } else {
          spines_per_pod = num_leaves > 1 ? default_spines : 0;
          num_spines = spines_per_pod;
          fabric_cables = num_leaves * static_cast<std::uint64_t>(num_spines);
        }
        break;
      case Kind::LeafSpine:
        num_leaves = static_cast<std::uint64_t>(num_sus);
        spines_per_pod = num_leaves > 1 ? default_spines : 0;
        num_spines = spines_per_pod;
        fabric_cables = num_leaves * static_cast<std::uint64_t>(num_spines);
        break;
      case Kind::Torus:
        num_leaves = static_cast<std::uint64_t>(num_nodes);
        for (const int d : s.dims) {
          if (d >= 3) fabric_cables += static_cast<std::uint64_t>(num_nodes);
          if (d == 2) fabric_cables += static_cast<std::uint64_t>(num_nodes) / 2;
        }
        break;
    }

    const auto nodes = static_cast<std::uint64_t>(num_nodes);
    num_nics = nodes * static_cast<std::uint64_t>(rails);
    const std::uint64_t vertices = static_cast<std::uint64_t>(n) + nodes + num_nics +
                                   num_leaves + static_cast<std::uint64_t>(num_spines) +
                                   static_cast<std::uint64_t>(num_cores);
    link_count = 2 * (2 * static_cast<std::uint64_t>(n) + num_nics + fabric_cables);
    if (link_count > kMaxLinks || vertices > kMaxLinks) {
      bad("too large: " + std::to_string(link_count) + " links (spines " +
          std::to_string(num_spines) + ", nics_per_node " + std::to_string(rails) + ")");
    }
    nvsw_base = static_cast<std::uint32_t>(n);
    nic_base = nvsw_base + static_cast<std::uint32_t>(nodes);
    leaf_base = nic_base + static_cast<std::uint32_t>(num_nics);
    spine_base = leaf_base + static_cast<std::uint32_t>(num_leaves);
    core_base = spine_base + static_cast<std::uint32_t>(num_spines);
    num_vertices = core_base + static_cast<std::uint32_t>(num_cores);
  }

  [[nodiscard]] VertexKind kind_of_id(std::uint32_t v) const {
    if (v < nvsw_base) return VertexKind::Gpu;
    if (v < nic_base) return VertexKind::NvSwitch;
    if (v < leaf_base) return VertexKind::Nic;
    if (v < spine_base) return VertexKind::Leaf;
    if (v < core_base) return VertexKind::Spine;
    return VertexKind::Core;
  }

  [[nodiscard]] std::uint32_t nic_vertex(int node, int rail) const {
    return nic_base + static_cast<std::uint32_t>(node) * static_cast<std::uint32_t>(rails) +
           static_cast<std::uint32_t>(rail);
  }
  /// The edge switch (leaf or torus router) that NIC `rail` of `node` plugs into.
  [[nodiscard]] std::uint32_t leaf_of(int node, int rail) const {
    switch (kind) {
      case Kind::RailFatTree: {
        const int su = node / spec.nodes_per_su;
        return leaf_base + static_cast<std::uint32_t>(su) * static_cast<std::uint32_t>(rails) +
               static_cast<std::uint32_t>(rail);
      }
      case Kind::LeafSpine: return leaf_base + static_cast<std::uint32_t>(node / spec.nodes_per_su);
      case Kind::Torus: return leaf_base + static_cast<std::uint32_t>(node);
    }
    return leaf_base;
  }
};

}  // namespace

struct Topology::Impl : Layout {
  Graph graph;  ///< the whole cluster
  /// The switch fabric alone (leaves and spines, vertex = id - leaf_base), with the same
  /// link ids on its edges: the only part of the graph where routes have choices.
  Graph fabric;
  std::vector<LinkInfo> links;
  // Structural link ids, so that the forced parts of a route need no search.
  std::vector<std::uint32_t> gpu_up;    ///< per GPU: GPU -> NVSwitch
  std::vector<std::uint32_t> gpu_down;  ///< per GPU: NVSwitch -> GPU
  std::vector<std::uint32_t> gpu_nic;   ///< per GPU: GPU -> NIC
  std::vector<std::uint32_t> nic_gpu;   ///< per GPU: NIC -> GPU
  std::vector<std::uint32_t> nic_up;    ///< per NIC: NIC -> leaf
  std::vector<std::uint32_t> nic_down;  ///< per NIC: leaf -> NIC

  /// Lazily filled BFS distance tables, one per destination leaf; entry i is the hop count
  /// from fabric vertex i (switch leaf_base + i) to that leaf. Guarded by cache_mutex.
  mutable std::mutex cache_mutex;
  mutable std::vector<std::shared_ptr<const std::vector<std::uint16_t>>> dist_to_leaf;
  /// Switch-to-switch links by (fabric u << 32 | fabric v), in out-edge order within a key:
  /// the last hop of a route (to the destination leaf) looks its cables up here instead of
  /// scanning a spine's thousands of out-edges.
  std::vector<std::pair<std::uint64_t, std::uint32_t>> fabric_edges;

  Impl(const TopologySpec& s, int n)
      : Layout(s, n), graph(num_vertices), fabric(num_vertices - leaf_base) {
    for (std::uint32_t v = 0; v < num_vertices; ++v) graph[v].kind = kind_of_id(v);
    const std::uint64_t nics = num_nics;
    links.reserve(static_cast<std::size_t>(link_count));

    gpu_up.resize(static_cast<std::size_t>(n));
    gpu_down.resize(static_cast<std::size_t>(n));
    gpu_nic.resize(static_cast<std::size_t>(n));
    nic_gpu.resize(static_cast<std::size_t>(n));
    nic_up.resize(static_cast<std::size_t>(nics));
    nic_down.resize(static_cast<std::size_t>(nics));

    const double half_nvlink_latency = s.nvlink_latency / 2.0;
    const double pcie_bw = std::max(s.nic_bw, kPcieClassBw);
    const double nic_eff_bw = s.nic_bw * s.nic_efficiency;

    for (int g = 0; g < n; ++g) {
      const int node = g / gpn;
      const auto gv = static_cast<std::uint32_t>(g);
      const std::uint32_t sw = nvsw_base + static_cast<std::uint32_t>(node);
      const auto [up, down] = add_cable(gv, sw, s.nvlink_bw, half_nvlink_latency);
      gpu_up[gv] = up;
      gpu_down[gv] = down;
      const std::uint32_t nic = nic_vertex(node, (g % gpn) % rails);
      const auto [to_nic, from_nic] = add_cable(gv, nic, pcie_bw, 0.0);
      gpu_nic[gv] = to_nic;
      nic_gpu[gv] = from_nic;
    }
    for (int node = 0; node < num_nodes; ++node) {
      for (int r = 0; r < rails; ++r) {
        const std::uint32_t nic = nic_vertex(node, r);
        const auto [up, down] = add_cable(nic, leaf_of(node, r), nic_eff_bw, s.link_latency);
        nic_up[nic - nic_base] = up;
        nic_down[nic - nic_base] = down;
      }
    }
    if (kind == Kind::Torus) {
      build_torus();
    } else {
      build_tree();
    }
    dist_to_leaf.resize(static_cast<std::size_t>(num_leaves));
    // Stable: parallel cables between two switches keep their out-edge (link-id) order.
    std::stable_sort(fabric_edges.begin(), fabric_edges.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
  }

  /// Leaves to spines (and spines to cores with 3 tiers). Uplink capacity of a leaf = its
  /// downlink capacity / oversubscription, split evenly over the spines it reaches
  /// (hardware.md §2.5: non-blocking = as many up as down cables). The downlink capacity is
  /// the design size (nodes_per_su ports per rail leaf, nodes_per_su x nics ports per plain
  /// leaf), so a partially filled last SU is cabled like a full one. A spine forwards all it
  /// receives from its pod's leaves to the cores without further oversubscription.
  void build_tree() {
    const TopologySpec& s = spec;
    const double nic_eff_bw = s.nic_bw * s.nic_efficiency;
    const double down_ports =
        kind == Kind::LeafSpine ? static_cast<double>(s.nodes_per_su) * rails
                                : static_cast<double>(s.nodes_per_su);
    const double uplink_bw = down_ports * nic_eff_bw / s.oversubscription /
                             static_cast<double>(std::max(spines_per_pod, 1));
    const std::uint64_t leaves_per_pod =
        s.tiers == 3 ? static_cast<std::uint64_t>(s.sus_per_pod) * static_cast<std::uint64_t>(rails)
                     : num_leaves;
    for (std::uint64_t leaf = 0; leaf < num_leaves && spines_per_pod > 0; ++leaf) {
      const std::uint64_t pod = leaf / leaves_per_pod;
      for (int p = 0; p < spines_per_pod; ++p) {
        add_cable(leaf_base + static_cast<std::uint32_t>(leaf),
                  spine_base + static_cast<std::uint32_t>(pod * static_cast<std::uint64_t>(spines_per_pod)) +
                      static_cast<std::uint32_t>(p),
                  uplink_bw, s.link_latency);
      }
    }
    if (num_cores > 0) {
      const double core_bw = static_cast<double>(leaves_per_pod) * uplink_bw /
                             static_cast<double>(num_cores);
      for (int sp = 0; sp < num_spines; ++sp) {
        for (int c = 0; c < num_cores; ++c) {
          add_cable(spine_base + static_cast<std::uint32_t>(sp),
                    core_base + static_cast<std::uint32_t>(c), core_bw, s.link_latency);
        }
      }
    }
  }

  /// One router per node (its leaf), joined to the next router along each axis with
  /// wrap-around (an axis of 2 has a single cable per pair, an axis of 1 none). Node index
  /// = x + dims[0] * (y + dims[1] * z).
  void build_torus() {
    const TopologySpec& s = spec;
    // Default: the node's injection bandwidth (all its NICs), so that a torus without the
    // key is not a hidden bottleneck of one NIC's rate under eight rails.
    const double bw = s.torus_link_bw > 0 ? s.torus_link_bw
                                          : s.nic_bw * s.nic_efficiency * s.nics_per_node;
    for (int node = 0; node < num_nodes; ++node) {
      int stride = 1;
      for (const int d : s.dims) {
        const int coord = (node / stride) % d;
        if (d >= 3 || (d == 2 && coord == 0)) {
          const int next = node + ((coord + 1) % d - coord) * stride;
          add_cable(leaf_base + static_cast<std::uint32_t>(node),
                    leaf_base + static_cast<std::uint32_t>(next), bw, s.link_latency);
        }
        stride *= d;
      }
    }
  }

  std::uint32_t add_link(std::uint32_t u, std::uint32_t v, double bw, double lat) {
    const auto id = static_cast<std::uint32_t>(links.size());
    links.push_back(LinkInfo{u, v, bw, lat});
    boost::add_edge(u, v, EdgeProps{id}, graph);
    // Switch-to-switch links also go into the fabric view, in link-id order (so out-edge
    // order, and with it the ECMP choice, is deterministic).
    if (u >= leaf_base && v >= leaf_base) {
      boost::add_edge(u - leaf_base, v - leaf_base, EdgeProps{id}, fabric);
      fabric_edges.emplace_back(
          (static_cast<std::uint64_t>(u - leaf_base) << 32U) | (v - leaf_base), id);
    }
    return id;
  }
  /// Two directed links u->v and v->u; returns their ids in that order.
  std::pair<std::uint32_t, std::uint32_t> add_cable(std::uint32_t u, std::uint32_t v, double bw,
                                                    double lat) {
    const std::uint32_t a = add_link(u, v, bw, lat);
    const std::uint32_t b = add_link(v, u, bw, lat);
    return {a, b};
  }

  void check_gpu(int gpu, const char* what) const {
    if (gpu < 0 || gpu >= num_gpus) {
      throw std::out_of_range(std::string("topology: ") + what + ": GPU index " +
                              std::to_string(gpu) + " out of range [0, " +
                              std::to_string(num_gpus) + ")");
    }
  }

  /// Hop distances from every switch to leaf `leaf` (index relative to leaf_base), computed
  /// once with Boost BFS on the fabric graph and cached.
  std::shared_ptr<const std::vector<std::uint16_t>> distances_to(std::uint32_t leaf) const {
    const std::lock_guard<std::mutex> lock(cache_mutex);
    auto& slot = dist_to_leaf[leaf];
    if (slot) return slot;
    const std::size_t n = boost::num_vertices(fabric);
    std::vector<std::uint32_t> dist(n, std::numeric_limits<std::uint32_t>::max());
    const Vertex start = leaf;
    dist[start] = 0;
    boost::breadth_first_search(
        fabric, start,
        boost::visitor(boost::make_bfs_visitor(
            boost::record_distances(dist.data(), boost::on_tree_edge()))));
    auto table = std::make_shared<std::vector<std::uint16_t>>(n, kUnreachable);
    for (std::size_t v = 0; v < n; ++v) {
      if (dist[v] < kUnreachable) (*table)[v] = static_cast<std::uint16_t>(dist[v]);
    }
    slot = std::move(table);
    return slot;
  }

  [[nodiscard]] Route route(int src, int dst) const {
    check_gpu(src, "route source");
    check_gpu(dst, "route destination");
    Route r;
    if (src == dst) {
      r.bottleneck_bw = std::numeric_limits<double>::infinity();
      return r;
    }
    const auto s = static_cast<std::uint32_t>(src);
    const auto d = static_cast<std::uint32_t>(dst);
    const int src_node = src / gpn;
    const int dst_node = dst / gpn;
    if (src_node == dst_node) {
      r.links = {gpu_up[s], gpu_down[d]};
    } else {
      const int src_rail = (src % gpn) % rails;
      const int dst_rail = (dst % gpn) % rails;
      const std::uint32_t src_nic = nic_vertex(src_node, src_rail);
      const std::uint32_t dst_nic = nic_vertex(dst_node, dst_rail);
      const std::uint32_t src_leaf = leaf_of(src_node, src_rail);
      const std::uint32_t dst_leaf = leaf_of(dst_node, dst_rail);
      r.crosses_network = true;
      r.links.push_back(gpu_nic[s]);
      r.links.push_back(nic_up[src_nic - nic_base]);
      if (src_leaf != dst_leaf) {
        const auto table = distances_to(dst_leaf - leaf_base);
        const auto& dist_of = *table;  // indexed by fabric vertex
        if (dist_of[src_leaf - leaf_base] == kUnreachable) {
          throw std::logic_error("topology: no switch path between leaves " +
                                 std::to_string(src_leaf) + " and " + std::to_string(dst_leaf));
        }
        const std::uint64_t key = mix64((static_cast<std::uint64_t>(s) << 32U) | d);
        std::vector<std::pair<std::uint32_t, std::uint32_t>> next;  // (fabric vertex, link)
        std::uint32_t u = src_leaf - leaf_base;
        for (std::uint64_t hop = 0; u != dst_leaf - leaf_base; ++hop) {
          const std::uint16_t du = dist_of[u];
          next.clear();
          if (du == 1) {
            // The only switch at distance 0 is the destination leaf: its cables from u, in
            // out-edge order, are the candidates the scan below would find.
            const std::uint32_t t = dst_leaf - leaf_base;
            const std::uint64_t k = (static_cast<std::uint64_t>(u) << 32U) | t;
            auto it = std::lower_bound(fabric_edges.begin(), fabric_edges.end(), k,
                                       [](const auto& e, std::uint64_t x) { return e.first < x; });
            for (; it != fabric_edges.end() && it->first == k; ++it) next.emplace_back(t, it->second);
          } else {
            for (const auto e : boost::make_iterator_range(boost::out_edges(u, fabric))) {
              const auto t = static_cast<std::uint32_t>(boost::target(e, fabric));
              if (dist_of[t] + 1 == du) next.emplace_back(t, fabric[e].link);
            }
          }
          const auto& pick = next[mix64(key ^ hop) % next.size()];
          r.links.push_back(pick.second);
          u = pick.first;
        }
      }
      r.links.push_back(nic_down[dst_nic - nic_base]);
      r.links.push_back(nic_gpu[d]);
    }
    r.bottleneck_bw = std::numeric_limits<double>::infinity();
    for (const std::uint32_t id : r.links) {
      r.bottleneck_bw = std::min(r.bottleneck_bw, links[id].bandwidth);
      r.latency += links[id].latency;
    }
    return r;
  }
};

int whole_node_gpus(const TopologySpec& s, int gpus) {
  if (s.kind == "torus" || s.gpus_per_node <= 0 || gpus <= 0) return gpus;
  const std::int64_t nodes = (static_cast<std::int64_t>(gpus) + s.gpus_per_node - 1) /
                             s.gpus_per_node;
  return static_cast<int>(std::min<std::int64_t>(nodes * s.gpus_per_node, INT32_MAX));
}

std::string torus_unfilled(const TopologySpec& s, int gpus) {
  if (s.kind != "torus") return {};
  std::int64_t nodes = 1;
  for (const int d : s.dims) nodes *= d;
  const std::int64_t all = nodes * s.gpus_per_node;
  if (all == gpus) return {};
  return "must fill the torus: " + std::to_string(nodes) + " nodes x " +
         std::to_string(s.gpus_per_node) + " GPUs = " + std::to_string(all);
}

Topology::Topology(const TopologySpec& spec, int num_gpus)
    : impl_(std::make_unique<Impl>(spec, num_gpus)) {}
Topology::~Topology() = default;
Topology::Topology(Topology&&) noexcept = default;
Topology& Topology::operator=(Topology&&) noexcept = default;

const TopologySpec& Topology::spec() const { return impl_->spec; }
int Topology::num_gpus() const { return impl_->num_gpus; }
int Topology::num_nodes() const { return impl_->num_nodes; }
int Topology::gpus_per_node() const { return impl_->gpn; }

int Topology::node_of(int gpu) const {
  impl_->check_gpu(gpu, "node_of");
  return gpu / impl_->gpn;
}

int Topology::local_rank(int gpu) const {
  impl_->check_gpu(gpu, "local_rank");
  return gpu % impl_->gpn;
}

std::size_t Topology::num_vertices() const { return impl_->num_vertices; }
std::size_t Topology::num_links() const { return impl_->links.size(); }

const LinkInfo& Topology::link(std::uint32_t id) const {
  if (id >= impl_->links.size()) {
    throw std::out_of_range("topology: link id " + std::to_string(id) + " out of range [0, " +
                            std::to_string(impl_->links.size()) + ")");
  }
  return impl_->links[id];
}

VertexKind Topology::vertex_kind(std::uint32_t v) const {
  if (v >= impl_->num_vertices) {
    throw std::out_of_range("topology: vertex id " + std::to_string(v) + " out of range [0, " +
                            std::to_string(impl_->num_vertices) + ")");
  }
  return impl_->graph[v].kind;
}

Route Topology::route(int src, int dst) const { return impl_->route(src, dst); }

}  // namespace trainsim::hw
