// Cluster topology: GPUs, NVSwitches, NICs and leaf/spine switches as a graph.
//
// The graph is a Boost.Graph adjacency list kept inside topology.cpp; the rest of the code
// sees only GPU indices, link ids and route queries. A cluster is a set of identical nodes
// (an NVLink domain each) joined by a rail-optimized fat tree, after NVIDIA's DGX SuperPOD
// reference architectures (../shared/reference/hardware.md §2.5): NIC i of every node in a
// scalable unit (SU) connects to the SU's leaf switch for rail i; leaves connect to spines.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace trainsim::hw {

/// What a topology file (topologies/*.toml) describes. Bandwidths are per direction, B/s;
/// latencies in seconds. The cluster size is not part of it: Topology takes the GPU count.
struct TopologySpec {
  std::string name;                 ///< display name
  /// "rail_optimized_fat_tree" (2 or 3 tiers), "leaf_spine" (every NIC of a node on one
  /// leaf, nodes_per_su nodes per leaf) or "torus" (one router per node, 2D/3D wrap-around
  /// grid of `dims`). A GB200 NVL72-style NVLink domain is a node of 72 GPUs (gpus_per_node).
  std::string kind = "rail_optimized_fat_tree";
  std::string gpu;                  ///< built-in GPU profile key (see gpu.hpp)
  int gpus_per_node = 8;            ///< GPUs in one NVLink domain
  double nvlink_bw = 0;             ///< GPU <-> NVSwitch bandwidth per GPU, B/s
  double nvlink_latency = 0;        ///< one GPU->switch->GPU traversal, s
  int nics_per_node = 8;            ///< one NIC per GPU when equal to gpus_per_node
  double nic_bw = 0;                ///< NIC line rate per direction, B/s
  double nic_efficiency = 1.0;      ///< achievable fraction of nic_bw (measured, per fabric)
  double link_latency = 0;          ///< per network hop (NIC->leaf, leaf->spine), s
  int nodes_per_su = 32;            ///< nodes under one set of rail leaves
  int spines = 0;                   ///< spine switches; 0 = spine_count's default
  double oversubscription = 1.0;    ///< leaf downlink : uplink bandwidth ratio (>= 1)
  int tiers = 2;                    ///< fat tree: 2 (leaf, spine) or 3 (leaf, spine, core)
  int sus_per_pod = 1;              ///< 3 tiers: SUs whose leaves share one group of spines
  int cores = 0;                    ///< 3 tiers: core switches; 0 = spines per pod (at most
                                    ///< spine_uplink_ports)
  std::vector<int> dims;            ///< torus: nodes along each axis (2 or 3 axes)
  double torus_link_bw = 0;         ///< torus: router <-> router B/s; 0 = the node's NICs
                                    ///< (nics_per_node x nic_bw x nic_efficiency)
  std::string source;               ///< where the numbers come from
};

/// Uplink cables of a leaf: its downlink ports (nodes_per_su on a rail leaf, nodes_per_su x
/// nics on a plain leaf) / oversubscription, at least 1; each is one port, and a non-blocking
/// leaf has as many up as down (hardware.md §2.5).
[[nodiscard]] int leaf_uplinks(const TopologySpec& s);
/// Spines of a fat tree (of one pod with 3 tiers): `spines` when given, else the rails
/// (nics_per_node, the SuperPOD shape) but never more than a leaf has uplinks to reach them.
[[nodiscard]] int spine_count(const TopologySpec& s);
/// GPUs of the topology a job of `gpus` GPUs runs on: whole nodes, the last one partly used
/// when `gpus` is not a multiple of gpus_per_node (a 128-GPU job on 72-GPU NVL72 racks: one
/// rack and 56 GPUs of the next; the job's ranks are GPUs 0 .. gpus-1). A torus exists only
/// whole, so for kind "torus" it is `gpus` itself (its loaders require the torus filled).
[[nodiscard]] int whole_node_gpus(const TopologySpec& s, int gpus);
/// Empty unless `s` is a torus that `gpus` does not fill; then "must fill the torus: N nodes
/// x G GPUs = T", for the caller to prefix with the key or option it checks.
[[nodiscard]] std::string torus_unfilled(const TopologySpec& s, int gpus);
/// Uplink ports of one spine to the cores (3 tiers): as many as its downlink ports from its
/// pod's sus_per_pod x nics leaves, each sending leaf_uplinks / spine_count of them. The
/// most cores a spine can reach; the default core count is at most this.
[[nodiscard]] int spine_uplink_ports(const TopologySpec& s);

/// Kind of a vertex in the topology graph.
/// Torus routers are reported as Leaf (they are the edge switch of their node).
enum class VertexKind : std::uint8_t { Gpu, NvSwitch, Nic, Leaf, Spine, Core };

/// One directed link (each cable is two links, one per direction).
struct LinkInfo {
  std::uint32_t src = 0, dst = 0;  ///< vertex ids
  double bandwidth = 0;            ///< B/s
  double latency = 0;              ///< s
};

/// A routed path between two GPUs.
struct Route {
  std::vector<std::uint32_t> links;  ///< directed link ids, source to destination
  double bottleneck_bw = 0;          ///< min bandwidth along the path, B/s
  double latency = 0;                ///< sum of link latencies, s
  bool crosses_network = false;      ///< true when the path leaves the NVLink domain
};

/// A cluster of `num_gpus` GPUs laid out per `spec`.
/// Thread-safety: const member functions may be called concurrently.
class Topology {
 public:
  /// Builds the graph. Throws std::invalid_argument naming the parameter when the spec is
  /// inconsistent (non-positive sizes or bandwidths, num_gpus not a multiple of
  /// gpus_per_node, unknown kind, oversubscription < 1).
  Topology(const TopologySpec& spec, int num_gpus);
  ~Topology();
  Topology(Topology&&) noexcept;
  Topology& operator=(Topology&&) noexcept;
  Topology(const Topology&) = delete;
  Topology& operator=(const Topology&) = delete;

  [[nodiscard]] const TopologySpec& spec() const;
  [[nodiscard]] int num_gpus() const;
  [[nodiscard]] int num_nodes() const;
  [[nodiscard]] int gpus_per_node() const;
  [[nodiscard]] int node_of(int gpu) const;        ///< throws std::out_of_range
  [[nodiscard]] int local_rank(int gpu) const;     ///< index within its node (= rail)
  [[nodiscard]] std::size_t num_vertices() const;
  [[nodiscard]] std::size_t num_links() const;
  [[nodiscard]] const LinkInfo& link(std::uint32_t id) const;
  [[nodiscard]] VertexKind vertex_kind(std::uint32_t v) const;

  /// Shortest path (fewest hops) from GPU `src` to GPU `dst`; among equal-cost next hops the
  /// choice is a deterministic hash of (src, dst) (ECMP). src == dst gives an empty route with
  /// infinite bottleneck. Throws std::out_of_range for bad GPU indices.
  [[nodiscard]] Route route(int src, int dst) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trainsim::hw
