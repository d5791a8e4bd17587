// Tests of hw::Topology: layout, routes and validation on a DGX A100 rail-optimized fat tree
// (hardware.md §2.2, §2.5).
#include <gtest/gtest.h>

#include "test_util.hpp"

#include <cstdint>
#include <limits>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "hw/topology.hpp"

namespace trainsim::hw {
namespace {

TopologySpec dgx_a100() { return test::dgx_a100_spec(); }

constexpr double kNicAchievable = 25e9 * 0.96;  // 24 GB/s

/// Vertex kinds along a route: the source of every link, then the destination of the last.
std::vector<VertexKind> kinds_along(const Topology& t, const Route& r) {
  std::vector<VertexKind> k;
  for (const std::uint32_t id : r.links) k.push_back(t.vertex_kind(t.link(id).src));
  if (!r.links.empty()) k.push_back(t.vertex_kind(t.link(r.links.back()).dst));
  return k;
}

/// The links of a route form a chain from GPU src to GPU dst (vertex id == GPU index).
void expect_chain(const Topology& t, const Route& r, int src, int dst) {
  ASSERT_FALSE(r.links.empty());
  EXPECT_EQ(t.link(r.links.front()).src, static_cast<std::uint32_t>(src));
  EXPECT_EQ(t.link(r.links.back()).dst, static_cast<std::uint32_t>(dst));
  for (std::size_t i = 1; i < r.links.size(); ++i) {
    EXPECT_EQ(t.link(r.links[i - 1]).dst, t.link(r.links[i]).src) << "link " << i;
  }
}

void expect_invalid(const TopologySpec& spec, int gpus, const std::string& needle) {
  try {
    const Topology t(spec, gpus);
    ADD_FAILURE() << "expected std::invalid_argument mentioning '" << needle << "'";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message '" << e.what() << "' lacks '" << needle << "'";
  }
}

TEST(TopologyTest, NodeOfAndLocalRank) {
  const Topology t(dgx_a100(), 32);
  EXPECT_EQ(t.num_gpus(), 32);
  EXPECT_EQ(t.num_nodes(), 4);
  EXPECT_EQ(t.gpus_per_node(), 8);
  EXPECT_EQ(t.node_of(0), 0);
  EXPECT_EQ(t.node_of(7), 0);
  EXPECT_EQ(t.node_of(8), 1);
  EXPECT_EQ(t.node_of(31), 3);
  EXPECT_EQ(t.local_rank(13), 5);
  EXPECT_EQ(t.local_rank(24), 0);
  EXPECT_THROW((void)t.node_of(-1), std::out_of_range);
  EXPECT_THROW((void)t.node_of(32), std::out_of_range);
  EXPECT_THROW((void)t.local_rank(32), std::out_of_range);
  EXPECT_THROW((void)t.route(0, 32), std::out_of_range);
  EXPECT_THROW((void)t.route(-1, 0), std::out_of_range);
  EXPECT_EQ(t.spec().name, "dgx_a100_test");
}

TEST(TopologyTest, VertexAndLinkCounts) {
  // 2 nodes, 1 SU: 16 GPUs, 2 NVSwitches, 16 NICs, 8 leaves, 8 spines (= nics_per_node).
  const Topology t(dgx_a100(), 16);
  EXPECT_EQ(t.num_vertices(), 16U + 2U + 16U + 8U + 8U);
  // Cables: GPU-NVSwitch 16, GPU-NIC 16, NIC-leaf 16, leaf-spine 8 x 8; two links each.
  EXPECT_EQ(t.num_links(), 2U * (16U + 16U + 16U + 64U));
  std::vector<int> per_kind(5, 0);
  for (std::uint32_t v = 0; v < t.num_vertices(); ++v) {
    ++per_kind[static_cast<std::size_t>(t.vertex_kind(v))];
  }
  EXPECT_EQ(per_kind[static_cast<std::size_t>(VertexKind::Gpu)], 16);
  EXPECT_EQ(per_kind[static_cast<std::size_t>(VertexKind::NvSwitch)], 2);
  EXPECT_EQ(per_kind[static_cast<std::size_t>(VertexKind::Nic)], 16);
  EXPECT_EQ(per_kind[static_cast<std::size_t>(VertexKind::Leaf)], 8);
  EXPECT_EQ(per_kind[static_cast<std::size_t>(VertexKind::Spine)], 8);
  // Every link has a reverse twin with the same bandwidth and latency.
  for (std::uint32_t id = 0; id < t.num_links(); id += 2) {
    const LinkInfo& a = t.link(id);
    const LinkInfo& b = t.link(id + 1);
    EXPECT_EQ(a.src, b.dst);
    EXPECT_EQ(a.dst, b.src);
    EXPECT_EQ(a.bandwidth, b.bandwidth);
    EXPECT_EQ(a.latency, b.latency);
  }
  EXPECT_THROW((void)t.link(static_cast<std::uint32_t>(t.num_links())), std::out_of_range);
  EXPECT_THROW((void)t.vertex_kind(static_cast<std::uint32_t>(t.num_vertices())),
               std::out_of_range);
}

TEST(TopologyTest, RouteWithinNodeIsTwoNvlinkHops) {
  const Topology t(dgx_a100(), 16);
  const Route r = t.route(9, 14);
  ASSERT_EQ(r.links.size(), 2U);
  expect_chain(t, r, 9, 14);
  EXPECT_EQ(kinds_along(t, r),
            (std::vector<VertexKind>{VertexKind::Gpu, VertexKind::NvSwitch, VertexKind::Gpu}));
  EXPECT_DOUBLE_EQ(r.bottleneck_bw, 300e9);
  EXPECT_NEAR(r.latency, 0.7e-6, 1e-15);  // GPU -> switch -> GPU = nvlink_latency
  EXPECT_FALSE(r.crosses_network);
}

TEST(TopologyTest, RouteToSelfIsEmpty) {
  const Topology t(dgx_a100(), 16);
  const Route r = t.route(3, 3);
  EXPECT_TRUE(r.links.empty());
  EXPECT_EQ(r.latency, 0.0);
  EXPECT_GT(r.bottleneck_bw, 1e300);  // infinite
  EXPECT_FALSE(r.crosses_network);
}

TEST(TopologyTest, SameRailAcrossNodesGoesThroughOneLeaf) {
  const Topology t(dgx_a100(), 32);
  const Route r = t.route(3, 27);  // local rank 3 on nodes 0 and 3: rail 3
  expect_chain(t, r, 3, 27);
  EXPECT_EQ(kinds_along(t, r),
            (std::vector<VertexKind>{VertexKind::Gpu, VertexKind::Nic, VertexKind::Leaf,
                                     VertexKind::Nic, VertexKind::Gpu}));
  EXPECT_DOUBLE_EQ(r.bottleneck_bw, kNicAchievable);
  EXPECT_NEAR(r.latency, 2 * 0.6e-6, 1e-15);  // NIC->leaf, leaf->NIC
  EXPECT_TRUE(r.crosses_network);
}

TEST(TopologyTest, CrossRailInsideOneSuGoesViaSpine) {
  const Topology t(dgx_a100(), 32);
  const Route r = t.route(0, 9);  // rail 0 on node 0 -> rail 1 on node 1
  expect_chain(t, r, 0, 9);
  EXPECT_EQ(kinds_along(t, r),
            (std::vector<VertexKind>{VertexKind::Gpu, VertexKind::Nic, VertexKind::Leaf,
                                     VertexKind::Spine, VertexKind::Leaf, VertexKind::Nic,
                                     VertexKind::Gpu}));
  EXPECT_NEAR(r.latency, 4 * 0.6e-6, 1e-15);
  // Leaf uplink per spine: 20 nodes x 24 GB/s / 8 spines = 60 GB/s, so the NIC limits.
  EXPECT_DOUBLE_EQ(r.bottleneck_bw, kNicAchievable);
}

TEST(TopologyTest, CrossSuRouteGoesThroughSpine) {
  // 21 nodes with 20 per SU: node 20 is alone in SU 1.
  const Topology t(dgx_a100(), 21 * 8);
  const Route r = t.route(2, 20 * 8 + 2);  // same rail, different SU
  expect_chain(t, r, 2, 20 * 8 + 2);
  const auto kinds = kinds_along(t, r);
  ASSERT_EQ(kinds.size(), 7U);
  EXPECT_EQ(kinds[3], VertexKind::Spine);
  const std::uint32_t leaf_a = t.link(r.links[1]).dst;
  const std::uint32_t leaf_b = t.link(r.links[3]).dst;
  EXPECT_EQ(t.vertex_kind(leaf_a), VertexKind::Leaf);
  EXPECT_EQ(t.vertex_kind(leaf_b), VertexKind::Leaf);
  EXPECT_NE(leaf_a, leaf_b);
  EXPECT_DOUBLE_EQ(r.bottleneck_bw, kNicAchievable);
  // Leaf->spine link: nodes_per_su x NIC achievable / spines = 20 x 24 / 8 = 60 GB/s.
  EXPECT_DOUBLE_EQ(t.link(r.links[2]).bandwidth, 20 * kNicAchievable / 8);
  // Within SU 0, the same rail needs no spine.
  EXPECT_EQ(t.route(2, 19 * 8 + 2).links.size(), 4U);
}

TEST(TopologyTest, OversubscriptionSetsLeafUplinkCapacity) {
  TopologySpec s = dgx_a100();
  s.nodes_per_su = 8;
  s.spines = 1;
  s.oversubscription = 4.0;
  const Topology t(s, 16 * 8);  // 16 nodes, 2 SUs
  // A leaf has 8 / 4 = 2 uplink cables, both to the one spine: 2 x 24 GB/s on that link.
  const Route r = t.route(0, 8 * 8);
  expect_chain(t, r, 0, 8 * 8);
  ASSERT_EQ(r.links.size(), 6U);
  EXPECT_DOUBLE_EQ(t.link(r.links[2]).bandwidth, 8 * kNicAchievable / 4.0);
  // A single flow is still NIC-limited: oversubscription only bites under contention.
  EXPECT_DOUBLE_EQ(r.bottleneck_bw, kNicAchievable);
  // Every spine needs an uplink cable from every leaf.
  s.spines = 3;
  EXPECT_THROW(Topology(s, 16 * 8), std::invalid_argument);
}

// The default spine count once ignored the leaves' uplinks: with 2 nodes per SU a leaf's
// capacity of 2 ports was split over 8 spines, and a non-blocking fabric carried a single
// cross-rail flow at a quarter of a NIC (6 GB/s of 24). Now a leaf reaches min(rails,
// uplinks) spines, each link at least a port.
TEST(TopologyTest, DefaultSpinesNeverOutnumberALeafsUplinks) {
  TopologySpec s = dgx_a100();
  s.nodes_per_su = 2;
  EXPECT_EQ(leaf_uplinks(s), 2);
  EXPECT_EQ(spine_count(s), 2);
  const Topology t(s, 4 * 8);  // 4 nodes, 2 SUs
  const Route r = t.route(0, 2 * 8 + 1);  // other SU, other rail: through a spine
  expect_chain(t, r, 0, 2 * 8 + 1);
  EXPECT_DOUBLE_EQ(r.bottleneck_bw, kNicAchievable);
  s.nodes_per_su = 20;
  EXPECT_EQ(spine_count(s), 8);  // the rails (SuperPOD shape)
  s.oversubscription = 4.0;
  EXPECT_EQ(spine_count(s), 5);  // 20 / 4 uplinks
  s.spines = 3;
  EXPECT_EQ(spine_count(s), 3);
}

// More core switches used to thin every spine-core link (the spine's capacity split over
// them): 16 cores behind spines of 8 uplink ports made a 64-GPU all-reduce slower than 2
// cores. A spine reaches at most its uplink ports; the default is the pod's spines, capped.
TEST(TopologyTest, CoresAreBoundedByASpinesUplinkPorts) {
  TopologySpec s = dgx_a100();
  s.nodes_per_su = 2;
  s.spines = 2;
  s.tiers = 3;
  s.sus_per_pod = 1;
  // A spine: 1 SU x 8 rail leaves x (2 uplinks / 2 spines) = 8 downlink ports, 8 uplinks.
  EXPECT_EQ(spine_uplink_ports(s), 8);
  s.cores = 8;
  EXPECT_NO_THROW(Topology(s, 8 * 8));
  s.cores = 16;
  expect_invalid(s, 8 * 8, "cores (16) exceeds the uplink ports of a spine (8");
  s.cores = 0;
  const Topology t(s, 8 * 8);  // 4 pods: default cores = the pod's 2 spines
  for (std::uint32_t id = 0; id < static_cast<std::uint32_t>(t.num_links()); ++id) {
    const LinkInfo& l = t.link(id);
    if (t.vertex_kind(l.src) == VertexKind::Spine && t.vertex_kind(l.dst) == VertexKind::Core) {
      EXPECT_GE(l.bandwidth, kNicAchievable);  // at least a port wide
    }
  }
}

TEST(TopologyTest, RoutesAreDeterministicAndSpreadOverSpines) {
  const Topology a(dgx_a100(), 40 * 8);  // 2 SUs
  const Topology b(dgx_a100(), 40 * 8);
  std::set<std::uint32_t> spines_used;
  for (int src = 0; src < 20 * 8; src += 3) {
    const int dst = 20 * 8 + (src * 7) % (20 * 8);
    const Route ra = a.route(src, dst);
    const Route rb = b.route(src, dst);
    EXPECT_EQ(ra.links, rb.links);
    EXPECT_EQ(ra.links, a.route(src, dst).links);  // cached tables give the same answer
    expect_chain(a, ra, src, dst);
    for (const std::uint32_t id : ra.links) {
      if (a.vertex_kind(a.link(id).dst) == VertexKind::Spine) spines_used.insert(a.link(id).dst);
    }
  }
  // ECMP: the hash spreads the flows over more than one of the 8 spines.
  EXPECT_GT(spines_used.size(), 1U);
}

TEST(TopologyTest, ConcurrentRouteQueriesAgree) {
  // const member functions may be called concurrently (the BFS cache is locked).
  const Topology t(dgx_a100(), 60 * 8);  // 3 SUs
  std::vector<std::vector<std::vector<std::uint32_t>>> seen(4);
  std::vector<std::thread> threads;
  for (std::size_t k = 0; k < seen.size(); ++k) {
    threads.emplace_back([&t, &out = seen[k]] {
      for (int src = 0; src < 480; src += 7) out.push_back(t.route(src, 479 - src).links);
    });
  }
  for (auto& th : threads) th.join();
  for (std::size_t k = 1; k < seen.size(); ++k) EXPECT_EQ(seen[k], seen[0]);
}

TEST(TopologyTest, MovedTopologyKeepsItsGraph) {
  Topology a(dgx_a100(), 16);
  const auto links = a.route(0, 9).links;
  Topology b(std::move(a));
  EXPECT_EQ(b.route(0, 9).links, links);
  Topology c(dgx_a100(), 8);
  c = std::move(b);
  EXPECT_EQ(c.num_gpus(), 16);
}

// Speed is measured in bench/ (bench_topology), not here: this checks that 16k GPUs work.
TEST(TopologyTest, SixteenThousandGpusBuildAndRoute) {
  // DGX H100 SuperPOD scale: 2,048 nodes x 8 GPUs, NDR 400 Gb/s, SU = 32 nodes (hardware.md
  // §2.5), 64 SUs.
  TopologySpec s = dgx_a100();
  s.nvlink_bw = 450e9;
  s.nic_bw = 50e9;
  s.nodes_per_su = 32;
  const Topology t(s, 16384);
  EXPECT_EQ(t.num_nodes(), 2048);

  const Route far = t.route(0, 16383);
  expect_chain(t, far, 0, 16383);
  EXPECT_EQ(far.links.size(), 6U);
  EXPECT_DOUBLE_EQ(far.bottleneck_bw, 50e9 * 0.96);

  // 5,000 routes across the whole machine (cold caches: each new leaf runs one BFS).
  std::uint64_t x = 12345;
  std::size_t hops = 0;
  for (int i = 0; i < 5000; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    const auto src = static_cast<int>((x >> 33U) % 16384U);
    const auto dst = static_cast<int>((x >> 17U) % 16384U);
    hops += t.route(src, dst).links.size();
  }
  EXPECT_GT(hops, 0U);
}

TEST(TopologyTest, FewerNicsThanGpusShareNics) {
  TopologySpec s = dgx_a100();
  s.nics_per_node = 4;
  const Topology t(s, 16);
  // GPU 1 and GPU 5 of node 0 share NIC 1; both reach GPU 9 (rail 1 of node 1) via one leaf.
  const Route r1 = t.route(1, 9);
  const Route r5 = t.route(5, 9);
  EXPECT_EQ(r1.links.size(), 4U);
  EXPECT_EQ(r5.links.size(), 4U);
  EXPECT_EQ(t.link(r1.links[0]).dst, t.link(r5.links[0]).dst);  // same NIC
  // Within the node the route still uses the NVSwitch, never the shared NIC.
  const Route intra = t.route(1, 5);
  EXPECT_EQ(kinds_along(t, intra),
            (std::vector<VertexKind>{VertexKind::Gpu, VertexKind::NvSwitch, VertexKind::Gpu}));
}

TEST(TopologyTest, SingleNodeNeedsNoNetwork) {
  const Topology t(dgx_a100(), 8);
  EXPECT_EQ(t.num_nodes(), 1);
  EXPECT_FALSE(t.route(0, 7).crosses_network);
}

TEST(TopologyTest, BadSpecsThrowNamingTheParameter) {
  TopologySpec s = dgx_a100();
  expect_invalid(s, 12, "num_gpus 12 is not a multiple of gpus_per_node 8");
  expect_invalid(s, 0, "num_gpus");
  s.gpus_per_node = 0;
  expect_invalid(s, 8, "gpus_per_node must be > 0 (got 0)");
  s = dgx_a100();
  s.kind = "mesh";
  expect_invalid(s, 8, "unknown kind \"mesh\"");
  s = dgx_a100();
  s.oversubscription = 0.5;
  expect_invalid(s, 8, "oversubscription");
  s = dgx_a100();
  s.nvlink_bw = 0;
  expect_invalid(s, 8, "nvlink_bw");
  s = dgx_a100();
  s.nic_bw = -1;
  expect_invalid(s, 8, "nic_bw");
  s = dgx_a100();
  s.nic_efficiency = 1.5;
  expect_invalid(s, 8, "nic_efficiency");
  s = dgx_a100();
  s.nics_per_node = 0;
  expect_invalid(s, 8, "nics_per_node");
  s = dgx_a100();
  s.nodes_per_su = 0;
  expect_invalid(s, 8, "nodes_per_su");
  s = dgx_a100();
  s.spines = -2;
  expect_invalid(s, 8, "spines");
  s = dgx_a100();
  s.link_latency = -1e-6;
  expect_invalid(s, 8, "link_latency");
  s = dgx_a100();
  s.nvlink_latency = std::numeric_limits<double>::quiet_NaN();
  expect_invalid(s, 8, "nvlink_latency");
}

}  // namespace
}  // namespace trainsim::hw
