// Cluster topology on Boost.Graph: see topology.hpp for the public contract and
// ../shared/reference/hardware.md §2.5 for the rail-optimized fat tree it models.
//
// Graph layout (vertex ids are contiguous ranges, in this order, so they are deterministic):
//   [0, G)                      GPU g                        (vertex id == GPU index)
//   [nvsw_base, +N)             NVSwitch of node n           (one logical switch per node)
//   [nic_base, +N*R)            NIC r of node n              (R = nics_per_node = rails)
//   [leaf_base, +U*R)           leaf of rail r in SU u       (U = scalable units)
//   [spine_base, +P)            spine p                      (P = spines, see below)
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
// Spine count: spec.spines when > 0, else nics_per_node (the header's "as many as leaves per
// SU"; with one SU that is the non-blocking 2-tier SuperPOD shape of hardware.md §2.5, where
// leaf->spine cables = node->leaf cables). Spines are created whenever the cluster has more
// than one leaf, also for a single SU: cross-rail traffic (GPU i -> GPU j, i != j mod rails,
// on different nodes) needs them, because this model does not forward through GPUs (NCCL's
// PXN would hop over NVLink first; that is a software choice made by the collective model).
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

void validate(const TopologySpec& s, int num_gpus) {
  if (s.kind != "rail_optimized_fat_tree") {
    bad("unknown kind \"" + s.kind + "\" (supported: rail_optimized_fat_tree)");
  }
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
  // A leaf has nodes_per_su / oversubscription uplink cables and needs one to each spine.
  if (s.spines > std::max(1, static_cast<int>(s.nodes_per_su / std::max(1.0, s.oversubscription)))) {
    bad("spines (" + std::to_string(s.spines) + ") exceeds the uplink cables of a leaf (" +
        "nodes_per_su / oversubscription)");
  }
  if (!(s.oversubscription >= 1.0) || !std::isfinite(s.oversubscription)) {
    bad("oversubscription must be >= 1 (got " + num(s.oversubscription) + ")");
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
  int num_gpus = 0;
  int num_nodes = 0;
  int gpn = 0;    ///< gpus_per_node
  int rails = 0;  ///< nics_per_node
  int num_sus = 0;
  int num_spines = 0;
  std::uint64_t num_nics = 0;
  std::uint64_t num_leaves = 0;
  std::uint64_t link_count = 0;
  std::uint32_t nvsw_base = 0, nic_base = 0, leaf_base = 0, spine_base = 0, num_vertices = 0;

  Layout(const TopologySpec& s, int n) : spec(s), num_gpus(n) {
    validate(s, n);
    gpn = s.gpus_per_node;
    rails = s.nics_per_node;
    num_nodes = n / gpn;
    num_sus = (num_nodes + s.nodes_per_su - 1) / s.nodes_per_su;
    num_leaves = static_cast<std::uint64_t>(num_sus) * static_cast<std::uint64_t>(rails);
    num_spines = num_leaves > 1 ? (s.spines > 0 ? s.spines : rails) : 0;

    const auto nodes = static_cast<std::uint64_t>(num_nodes);
    num_nics = nodes * static_cast<std::uint64_t>(rails);
    const std::uint64_t vertices = static_cast<std::uint64_t>(n) + nodes + num_nics +
                                   num_leaves + static_cast<std::uint64_t>(num_spines);
    link_count = 2 * (2 * static_cast<std::uint64_t>(n) + num_nics +
                      num_leaves * static_cast<std::uint64_t>(num_spines));
    if (link_count > kMaxLinks || vertices > kMaxLinks) {
      bad("too large: " + std::to_string(link_count) + " links (spines " +
          std::to_string(num_spines) + ", nics_per_node " + std::to_string(rails) + ")");
    }
    nvsw_base = static_cast<std::uint32_t>(n);
    nic_base = nvsw_base + static_cast<std::uint32_t>(nodes);
    leaf_base = nic_base + static_cast<std::uint32_t>(num_nics);
    spine_base = leaf_base + static_cast<std::uint32_t>(num_leaves);
    num_vertices = spine_base + static_cast<std::uint32_t>(num_spines);
  }

  [[nodiscard]] VertexKind kind_of_id(std::uint32_t v) const {
    if (v < nvsw_base) return VertexKind::Gpu;
    if (v < nic_base) return VertexKind::NvSwitch;
    if (v < leaf_base) return VertexKind::Nic;
    if (v < spine_base) return VertexKind::Leaf;
    return VertexKind::Spine;
  }

  [[nodiscard]] std::uint32_t nic_vertex(int node, int rail) const {
    return nic_base + static_cast<std::uint32_t>(node) * static_cast<std::uint32_t>(rails) +
           static_cast<std::uint32_t>(rail);
  }
  [[nodiscard]] std::uint32_t leaf_vertex(int su, int rail) const {
    return leaf_base + static_cast<std::uint32_t>(su) * static_cast<std::uint32_t>(rails) +
           static_cast<std::uint32_t>(rail);
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
      const int su = node / s.nodes_per_su;
      for (int r = 0; r < rails; ++r) {
        const std::uint32_t nic = nic_vertex(node, r);
        const auto [up, down] = add_cable(nic, leaf_vertex(su, r), nic_eff_bw, s.link_latency);
        nic_up[nic - nic_base] = up;
        nic_down[nic - nic_base] = down;
      }
    }
    // Uplink capacity of a leaf = its downlink capacity / oversubscription, split evenly over
    // the spines (hardware.md §2.5: non-blocking = as many up as down cables). The downlink
    // capacity is the SU's design size (nodes_per_su ports), so a partially filled last SU is
    // cabled like a full one.
    const double uplink_bw = static_cast<double>(s.nodes_per_su) * nic_eff_bw /
                             s.oversubscription / static_cast<double>(std::max(num_spines, 1));
    for (int su = 0; su < num_sus && num_spines > 0; ++su) {
      for (int r = 0; r < rails; ++r) {
        for (int p = 0; p < num_spines; ++p) {
          add_cable(leaf_vertex(su, r), spine_base + static_cast<std::uint32_t>(p), uplink_bw,
                    s.link_latency);
        }
      }
    }
    dist_to_leaf.resize(static_cast<std::size_t>(num_leaves));
  }

  std::uint32_t add_link(std::uint32_t u, std::uint32_t v, double bw, double lat) {
    const auto id = static_cast<std::uint32_t>(links.size());
    links.push_back(LinkInfo{u, v, bw, lat});
    boost::add_edge(u, v, EdgeProps{id}, graph);
    // Switch-to-switch links also go into the fabric view, in link-id order (so out-edge
    // order, and with it the ECMP choice, is deterministic).
    if (u >= leaf_base && v >= leaf_base) {
      boost::add_edge(u - leaf_base, v - leaf_base, EdgeProps{id}, fabric);
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
      const std::uint32_t src_leaf = leaf_vertex(src_node / spec.nodes_per_su, src_rail);
      const std::uint32_t dst_leaf = leaf_vertex(dst_node / spec.nodes_per_su, dst_rail);
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
          for (const auto e : boost::make_iterator_range(boost::out_edges(u, fabric))) {
            const auto t = static_cast<std::uint32_t>(boost::target(e, fabric));
            if (dist_of[t] + 1 == du) next.emplace_back(t, fabric[e].link);
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
