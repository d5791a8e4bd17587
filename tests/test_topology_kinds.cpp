// Topology generators beyond the 2-tier rail fat tree: 3-tier fat tree with cores, plain
// leaf-spine, 2D/3D torus, and a 72-GPU NVLink domain (GB200 NVL72 style). Oracles: hop
// counts and link capacities solved by hand from the cabling rules in topology.cpp.
#include <gtest/gtest.h>

#include <set>
#include <stdexcept>
#include <vector>

#include "config/scenario.hpp"
#include "hw/gpu.hpp"
#include "hw/topology.hpp"
#include "test_util.hpp"

namespace trainsim::hw {
namespace {

constexpr double kNic = 25e9 * 0.96;  // dgx_a100_spec achievable NIC rate, B/s

/// The vertex kinds a route visits, from its source GPU to its destination GPU; also checks
/// that the links form a chain.
std::vector<VertexKind> kinds_along(const Topology& t, const Route& r, int src, int dst) {
  std::vector<VertexKind> out{t.vertex_kind(static_cast<std::uint32_t>(src))};
  std::uint32_t at = static_cast<std::uint32_t>(src);
  for (const std::uint32_t id : r.links) {
    EXPECT_EQ(t.link(id).src, at);
    at = t.link(id).dst;
    out.push_back(t.vertex_kind(at));
  }
  EXPECT_EQ(at, static_cast<std::uint32_t>(dst));
  return out;
}

TopologySpec three_tier() {
  TopologySpec s = test::dgx_a100_spec();
  s.nodes_per_su = 4;
  s.tiers = 3;
  s.sus_per_pod = 2;
  s.spines = 2;   // per pod
  s.cores = 2;
  return s;
}

TEST(TopologyKindsTest, ThreeTierFatTreeCrossesCoresBetweenPods) {
  // 16 nodes, 4 per SU, 2 SUs per pod: 4 SUs, 2 pods, 32 leaves, 4 spines, 2 cores.
  const Topology t(three_tier(), 16 * 8);
  std::vector<int> per_kind(6, 0);
  for (std::uint32_t v = 0; v < t.num_vertices(); ++v) {
    ++per_kind[static_cast<std::size_t>(t.vertex_kind(v))];
  }
  EXPECT_EQ(per_kind[static_cast<std::size_t>(VertexKind::Leaf)], 32);
  EXPECT_EQ(per_kind[static_cast<std::size_t>(VertexKind::Spine)], 4);
  EXPECT_EQ(per_kind[static_cast<std::size_t>(VertexKind::Core)], 2);
  // Cables: GPU-NVSwitch 128, GPU-NIC 128, NIC-leaf 128, leaf-spine 32 x 2, spine-core 4 x 2.
  EXPECT_EQ(t.num_links(), 2U * (128U + 128U + 128U + 64U + 8U));

  // Same pod, other SU, same rail: leaf -> spine -> leaf.
  const Route in_pod = t.route(0, 4 * 8);
  EXPECT_EQ(kinds_along(t, in_pod, 0, 4 * 8).size(), 7U);
  // Other pod: leaf -> spine -> core -> spine -> leaf.
  const Route cross = t.route(0, 8 * 8);
  const auto kinds = kinds_along(t, cross, 0, 8 * 8);
  ASSERT_EQ(kinds.size(), 9U);
  EXPECT_EQ(kinds[3], VertexKind::Spine);
  EXPECT_EQ(kinds[4], VertexKind::Core);
  EXPECT_EQ(kinds[5], VertexKind::Spine);
  // Leaf uplink: 4 nodes x NIC / 2 spines; spine -> core: 2 SUs x 8 leaves x uplink / 2 cores.
  EXPECT_DOUBLE_EQ(t.link(cross.links[2]).bandwidth, 4 * kNic / 2);
  EXPECT_DOUBLE_EQ(t.link(cross.links[3]).bandwidth, 16 * (4 * kNic / 2) / 2);
  EXPECT_DOUBLE_EQ(cross.bottleneck_bw, kNic);
  EXPECT_NEAR(cross.latency, 6 * 0.6e-6, 1e-15);
}

TEST(TopologyKindsTest, LeafSpinePutsAllNicsOfANodeOnOneLeaf) {
  TopologySpec s = test::dgx_a100_spec();
  s.kind = "leaf_spine";
  s.nodes_per_su = 2;  // nodes per leaf
  s.spines = 4;
  const Topology t(s, 4 * 8);  // 2 leaves
  // Cross-rail on the same leaf: one switch, no spine (unlike the rail-optimized tree).
  const Route same_leaf = t.route(0, 8 + 5);
  EXPECT_EQ(kinds_along(t, same_leaf, 0, 13),
            (std::vector<VertexKind>{VertexKind::Gpu, VertexKind::Nic, VertexKind::Leaf,
                                     VertexKind::Nic, VertexKind::Gpu}));
  const Route other_leaf = t.route(0, 2 * 8);
  const auto kinds = kinds_along(t, other_leaf, 0, 16);
  ASSERT_EQ(kinds.size(), 7U);
  EXPECT_EQ(kinds[3], VertexKind::Spine);
  // Leaf downlinks 2 nodes x 8 NICs; uplink per spine = 16 x NIC / 4.
  EXPECT_DOUBLE_EQ(t.link(other_leaf.links[2]).bandwidth, 16 * kNic / 4);
}

TopologySpec torus(std::vector<int> dims) {
  TopologySpec s = test::dgx_a100_spec();
  s.kind = "torus";
  s.gpus_per_node = 4;
  s.nics_per_node = 1;
  s.dims = std::move(dims);
  s.torus_link_bw = 50e9;
  return s;
}

/// Hops between routers on the route (fabric links).
int router_hops(const Topology& t, const Route& r) {
  int hops = 0;
  for (const std::uint32_t id : r.links) {
    if (t.vertex_kind(t.link(id).src) == VertexKind::Leaf &&
        t.vertex_kind(t.link(id).dst) == VertexKind::Leaf) {
      ++hops;
    }
  }
  return hops;
}

TEST(TopologyKindsTest, TorusRoutesTakeTheShortWayAround) {
  const Topology t(torus({4, 3}), 12 * 4);
  // Cables per axis: 12 along x (size 4), 12 along y (size 3).
  EXPECT_EQ(t.num_links(), 2U * (48U + 48U + 12U + 24U));
  const auto gpu = [](int x, int y) { return 4 * (x + 4 * y); };
  // Wrap-around: x 0 -> 3 is one hop, x 0 -> 2 is two; y 0 -> 2 is one (wrap).
  EXPECT_EQ(router_hops(t, t.route(gpu(0, 0), gpu(3, 0))), 1);
  EXPECT_EQ(router_hops(t, t.route(gpu(0, 0), gpu(2, 0))), 2);
  EXPECT_EQ(router_hops(t, t.route(gpu(0, 0), gpu(0, 2))), 1);
  EXPECT_EQ(router_hops(t, t.route(gpu(1, 0), gpu(3, 2))), 3);
  const Route r = t.route(gpu(0, 0), gpu(2, 1));
  (void)kinds_along(t, r, gpu(0, 0), gpu(2, 1));
  EXPECT_DOUBLE_EQ(r.bottleneck_bw, kNic);  // NIC slower than the 50 GB/s torus links
  // ECMP: from (0,0) to (2,1) there are several shortest paths; different sources in the
  // same node are hashed independently and use more than one first hop.
  std::set<std::uint32_t> first_hops;
  for (int g = 0; g < 4; ++g) {
    for (int d = 0; d < 4; ++d) first_hops.insert(t.route(g, gpu(2, 1) + d).links[2]);
  }
  EXPECT_GT(first_hops.size(), 1U);
}

TEST(TopologyKindsTest, ThreeDimensionalTorusAndSizeTwoAxes) {
  const Topology t(torus({2, 2, 3}), 12 * 4);
  // Axes of 2 have one cable per pair: 6 + 6 + 12 fabric cables.
  EXPECT_EQ(t.num_links(), 2U * (48U + 48U + 12U + 24U));
  const auto gpu = [](int x, int y, int z) { return 4 * (x + 2 * (y + 2 * z)); };
  EXPECT_EQ(router_hops(t, t.route(gpu(0, 0, 0), gpu(1, 1, 1))), 3);
  EXPECT_EQ(router_hops(t, t.route(gpu(0, 0, 0), gpu(0, 0, 2))), 1);
}

TEST(TopologyKindsTest, TorusDimsMustMatchTheNodeCount) {
  try {
    (void)Topology(torus({4, 4}), 12 * 4);
    FAIL() << "no throw";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("torus dims multiply to 16 nodes but the cluster has 12"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW((void)Topology(torus({12}), 12 * 4), std::invalid_argument);
  TopologySpec s = three_tier();
  s.kind = "leaf_spine";
  EXPECT_THROW((void)Topology(s, 16 * 8), std::invalid_argument);
}

TEST(TopologyKindsTest, Nvl72DomainKeepsTraffic72WideOnNvlink) {
  const TopologySpec s =
      config::load_topology(test::source_dir() / "topologies" / "gb200-nvl72.toml");
  EXPECT_EQ(s.gpus_per_node, 72);
  // The NVL72 part, not HGX B200: 2500 dense BF16 TFLOP/s, 186 GB (hardware.toml [gpu.gb200]).
  ASSERT_EQ(s.gpu, "gb200");
  const auto* gpu = hw::find_builtin_gpu(s.gpu);
  ASSERT_NE(gpu, nullptr);
  EXPECT_DOUBLE_EQ(gpu->peak_bf16, 2500e12);
  EXPECT_DOUBLE_EQ(gpu->hbm_bytes, 186e9);
  const Topology t(s, 2 * 72);
  const Route inside = t.route(0, 71);
  EXPECT_FALSE(inside.crosses_network);
  EXPECT_EQ(inside.links.size(), 2U);
  EXPECT_DOUBLE_EQ(inside.bottleneck_bw, 900e9);
  const Route across = t.route(5, 72 + 5);
  EXPECT_TRUE(across.crosses_network);
  EXPECT_EQ(across.links.size(), 4U);  // same rail: one leaf
}

TEST(TopologyKindsTest, TopologyFilesOfEveryKindLoad) {
  const auto dir = test::source_dir() / "topologies";
  const TopologySpec torus_spec = config::load_topology(dir / "torus-3d-h100.toml");
  EXPECT_EQ(torus_spec.kind, "torus");
  EXPECT_EQ(torus_spec.dims, (std::vector<int>{4, 4, 4}));
  const Topology tt(torus_spec, 64 * torus_spec.gpus_per_node);
  EXPECT_GT(tt.num_links(), 0U);
  const TopologySpec ls = config::load_topology(dir / "leaf-spine-h100.toml");
  EXPECT_EQ(ls.kind, "leaf_spine");
  const TopologySpec three = config::load_topology(dir / "dgx-h100-3tier.toml");
  EXPECT_EQ(three.tiers, 3);
  const Topology big(three, 8192);
  EXPECT_TRUE(big.route(0, 8191).crosses_network);
}

}  // namespace
}  // namespace trainsim::hw
