// Max-min fair flow model: hand-solved allocations (two flows on one link, a bottleneck
// shared by three, parking-lot lines, rate bounds), exact completion times in picoseconds,
// incremental recomputation, and collective plans run on the topology.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "core/simulator.hpp"
#include "hw/gpu.hpp"
#include "hw/topology.hpp"
#include "net/collective.hpp"
#include "net/flow_network.hpp"
#include "net/plan_runner.hpp"
#include "test_util.hpp"

namespace trainsim::net {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
using Paths = std::vector<std::vector<std::uint32_t>>;

TEST(MaxMinTest, TwoFlowsOnOneLinkSplitIt) {
  const auto r = FlowNetwork::max_min_rates({10.0}, Paths{{0}, {0}}, {kInf, kInf});
  EXPECT_DOUBLE_EQ(r[0], 5.0);
  EXPECT_DOUBLE_EQ(r[1], 5.0);
}

TEST(MaxMinTest, BottleneckSharedByThree) {
  // Link 0 (3 B/s) carries f0, f1, f2; f2 also crosses link 2 (0.5 B/s), f0 link 1 (10).
  // f2 is held to 0.5 by link 2; f0 and f1 split the remaining 2.5 of link 0.
  const auto r = FlowNetwork::max_min_rates({3.0, 10.0, 0.5}, Paths{{0, 1}, {0}, {0, 2}},
                                            {kInf, kInf, kInf});
  EXPECT_DOUBLE_EQ(r[2], 0.5);
  EXPECT_DOUBLE_EQ(r[0], 1.25);
  EXPECT_DOUBLE_EQ(r[1], 1.25);
  // Three equal flows on one link: a third each.
  const auto e = FlowNetwork::max_min_rates({3.0}, Paths{{0}, {0}, {0}}, {kInf, kInf, kInf});
  for (const double x : e) EXPECT_DOUBLE_EQ(x, 1.0);
}

TEST(MaxMinTest, ParkingLotLine) {
  // Links 0-1-2 in a line with capacities 1, 2, 3; the long flow crosses all three, one
  // short flow per link. Link 0 saturates first at 0.5 (long + short0); then short1 gets
  // 2 - 0.5 = 1.5 and short2 gets 3 - 0.5 = 2.5.
  const auto r = FlowNetwork::max_min_rates({1.0, 2.0, 3.0}, Paths{{0, 1, 2}, {0}, {1}, {2}},
                                            {kInf, kInf, kInf, kInf});
  EXPECT_DOUBLE_EQ(r[0], 0.5);
  EXPECT_DOUBLE_EQ(r[1], 0.5);
  EXPECT_DOUBLE_EQ(r[2], 1.5);
  EXPECT_DOUBLE_EQ(r[3], 2.5);
  // Equal capacities: every flow gets half a link.
  const auto eq = FlowNetwork::max_min_rates({1.0, 1.0, 1.0}, Paths{{0, 1, 2}, {0}, {1}, {2}},
                                             {kInf, kInf, kInf, kInf});
  for (const double x : eq) EXPECT_DOUBLE_EQ(x, 0.5);
}

TEST(MaxMinTest, RateBoundsFreeCapacityForOthers) {
  const auto r = FlowNetwork::max_min_rates({1.0}, Paths{{0}, {0}}, {0.2, kInf});
  EXPECT_DOUBLE_EQ(r[0], 0.2);
  EXPECT_DOUBLE_EQ(r[1], 0.8);
  EXPECT_THROW((void)FlowNetwork::max_min_rates({1.0}, Paths{{3}}, {kInf}),
               std::invalid_argument);
}

/// The textbook progressive filling (Bertsekas & Gallager §6.5.2), one scan of every link
/// and flow per round: the reference the heap-based solver must reproduce to the bit.
std::vector<double> plain_progressive_filling(std::vector<double> rem, const Paths& paths,
                                              const std::vector<double>& bound) {
  std::vector<std::uint32_t> count(rem.size(), 0);
  for (const auto& p : paths) {
    for (const std::uint32_t l : p) ++count[l];
  }
  std::vector<double> rate(paths.size(), 0.0);
  std::vector<bool> frozen(paths.size(), false);
  std::size_t left = paths.size();
  while (left > 0) {
    double level = kInf;
    for (std::size_t l = 0; l < rem.size(); ++l) {
      if (count[l] > 0) level = std::min(level, std::max(0.0, rem[l]) / count[l]);
    }
    for (std::size_t f = 0; f < paths.size(); ++f) {
      if (!frozen[f]) level = std::min(level, bound[f]);
    }
    const double threshold = level * (1.0 + 1e-12);
    std::vector<bool> saturated(rem.size());
    for (std::size_t l = 0; l < rem.size(); ++l) {
      saturated[l] = count[l] > 0 && std::max(0.0, rem[l]) / count[l] <= threshold;
    }
    std::vector<std::size_t> now;
    for (std::size_t f = 0; f < paths.size(); ++f) {
      if (frozen[f]) continue;
      bool stop = bound[f] <= threshold;
      for (const std::uint32_t l : paths[f]) stop = stop || saturated[l];
      if (stop) now.push_back(f);
    }
    for (const std::size_t f : now) {
      rate[f] = std::min(level, bound[f]);
      frozen[f] = true;
      for (const std::uint32_t l : paths[f]) {
        rem[l] -= rate[f];
        --count[l];
      }
    }
    left -= now.size();
  }
  return rate;
}

TEST(MaxMinTest, HeapSolverMatchesPlainProgressiveFillingBitForBit) {
  // Random instances with shared links, duplicate capacities (ties between links), equal and
  // distinct bounds and link-less bounded flows: same doubles as the plain algorithm, and a
  // max-min allocation (feasible; every flow is at its bound or crosses a saturated link on
  // which no flow is faster).
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 400; ++trial) {
    const std::size_t links = 1 + rng() % 12;
    const std::size_t flows = 1 + rng() % 40;
    std::vector<double> cap(links);
    std::uniform_real_distribution<double> real(0.3, 4.0);
    for (double& c : cap) c = rng() % 3 == 0 ? 2.0 : real(rng);  // 2.0: ties between links
    Paths paths(flows);
    std::vector<double> bound(flows);
    for (std::size_t f = 0; f < flows; ++f) {
      std::vector<std::uint32_t> all(links);
      for (std::size_t l = 0; l < links; ++l) all[l] = static_cast<std::uint32_t>(l);
      std::shuffle(all.begin(), all.end(), rng);
      all.resize(rng() % (std::min<std::size_t>(links, 4) + 1));
      paths[f] = all;
      const auto kind = rng() % 4;
      bound[f] = kind == 0 ? kInf : kind == 1 ? 0.25 : real(rng) / 2.0;
      if (paths[f].empty() && bound[f] == kInf) bound[f] = 1.5;
    }
    const auto got = FlowNetwork::max_min_rates(cap, paths, bound);
    const auto want = plain_progressive_filling(cap, paths, bound);
    ASSERT_EQ(got, want) << "trial " << trial;
    std::vector<double> load(links, 0.0);
    for (std::size_t f = 0; f < flows; ++f) {
      for (const std::uint32_t l : paths[f]) load[l] += got[f];
    }
    for (std::size_t l = 0; l < links; ++l) EXPECT_LE(load[l], cap[l] * (1 + 1e-9));
    for (std::size_t f = 0; f < flows; ++f) {
      if (got[f] >= bound[f] * (1 - 1e-9)) continue;
      bool bottleneck = false;
      for (const std::uint32_t l : paths[f]) {
        bool fastest = load[l] >= cap[l] * (1 - 1e-9);
        for (std::size_t g = 0; g < flows && fastest; ++g) {
          const bool on_l = std::find(paths[g].begin(), paths[g].end(), l) != paths[g].end();
          if (on_l && got[g] > got[f] * (1 + 1e-9)) fastest = false;
        }
        bottleneck = bottleneck || fastest;
      }
      EXPECT_TRUE(bottleneck) << "trial " << trial << " flow " << f;
    }
  }
}

TEST(FlowNetworkTest, FinishingFlowReleasesBandwidthExactly) {
  // 1 GB/s link; flows of 1 GB and 2 GB start at 0: both at 0.5 GB/s until the first ends
  // at 2 s, then the second runs alone at 1 GB/s for its last 1 GB: ends at 3 s.
  Simulator sim;
  FlowNetwork net(sim, {1e9});
  std::vector<Time> ends(2);
  const std::vector<std::uint32_t> path{0};
  net.start(path, 1e9, kInf, [&](Simulator& s, FlowId) { ends[0] = s.now(); });
  net.start(path, 2e9, kInf, [&](Simulator& s, FlowId) { ends[1] = s.now(); });
  sim.run();
  EXPECT_EQ(ends[0], Time::ms(2000));
  EXPECT_EQ(ends[1], Time::ms(3000));
  EXPECT_EQ(net.num_active(), 0U);
}

TEST(FlowNetworkTest, LateStarterSlowsTheFirstFlow) {
  // Flow A (3 GB) alone at 1 GB/s for 1 s; B (1 GB) joins at 1 s: both at 0.5 GB/s, B ends
  // at 3 s, A has 2 - 1 = 1 GB left and ends at 4 s.
  Simulator sim;
  FlowNetwork net(sim, {1e9});
  const std::vector<std::uint32_t> path{0};
  Time a_end, b_end;
  net.start(path, 3e9, kInf, [&](Simulator& s, FlowId) { a_end = s.now(); });
  net.call_after(Time::ms(1000), [&](Simulator&) {
    EXPECT_DOUBLE_EQ(net.rate(0), 1e9);
    net.start(path, 1e9, kInf, [&](Simulator& s, FlowId) { b_end = s.now(); });
  });
  sim.run();
  EXPECT_EQ(b_end, Time::ms(3000));
  EXPECT_EQ(a_end, Time::ms(4000));
}

TEST(FlowNetworkTest, OnlyTheAffectedComponentIsRecomputed) {
  Simulator sim;
  FlowNetwork net(sim, {1e9, 1e9, 1e9});
  const std::vector<std::uint32_t> l0{0}, l1{1}, l12{1, 2};
  net.start(l0, 1e9, kInf, nullptr);   // component {link 0}
  net.start(l1, 4e9, kInf, nullptr);   // component {links 1, 2}
  net.start(l12, 2e9, kInf, nullptr);
  sim.step();  // the recompute event of t = 0
  EXPECT_EQ(net.recomputations(), 2U);  // two components, each solved once
  EXPECT_EQ(net.flow_updates(), 3U);
  EXPECT_DOUBLE_EQ(net.rate(0), 1e9);
  EXPECT_DOUBLE_EQ(net.rate(1), 0.5e9);
  sim.run();
  // Flow 0 ends alone on its link (no re-solve); flow 2 ends at 4 s and frees link 1: one
  // re-solve of flow 1's component. Flow 1 then ends alone.
  EXPECT_EQ(net.recomputations(), 3U);
  EXPECT_EQ(net.flow_updates(), 4U);
}

TEST(FlowNetworkTest, CompletionBeyondTimesRangeThrowsOverflow) {
  // 1e13 bytes at 1 B/s end after 1e25 ps: the cast to int64 was undefined and scheduled
  // the completion in the past (an internal error instead of the out-of-range message).
  Simulator sim;
  FlowNetwork net(sim, {1.0});
  const std::vector<std::uint32_t> path{0};
  net.start(path, 1e13, kInf, nullptr);
  EXPECT_THROW(sim.run(), std::overflow_error);
}

TEST(FlowNetworkTest, ZeroByteFlowsAndBadInput) {
  Simulator sim;
  FlowNetwork net(sim, {1e9});
  bool done = false;
  const std::vector<std::uint32_t> path{0};
  net.start(path, 0.0, kInf, [&](Simulator&, FlowId) { done = true; });
  sim.run();
  EXPECT_TRUE(done);
  EXPECT_EQ(sim.now(), Time::zero());
  const std::vector<std::uint32_t> bad{5};
  EXPECT_THROW(net.start(bad, 1.0, kInf, nullptr), std::invalid_argument);
  EXPECT_THROW(net.start(path, -1.0, kInf, nullptr), std::invalid_argument);
  EXPECT_THROW(net.start({}, 1.0, kInf, nullptr), std::invalid_argument);
  EXPECT_THROW(FlowNetwork(sim, {0.0}), std::invalid_argument);
}

/// Runs plans starting together on an empty network; returns each one's end time.
std::vector<Time> run_plans(const hw::Topology& topo, const std::vector<CollectivePlan>& plans) {
  Simulator sim;
  FlowNetwork net(sim, link_capacities(topo));
  std::vector<Time> ends(plans.size());
  for (std::size_t i = 0; i < plans.size(); ++i) {
    run_plan(net, topo, plans[i], [&ends, i](Simulator& s) { ends[i] = s.now(); });
  }
  sim.run();
  return ends;
}

TEST(PlanRunnerTest, UncontendedPlansEndAtTheAlphaBetaTime) {
  const hw::Topology topo(test::dgx_a100_spec(), 4 * 8);
  const auto& gpu = *hw::find_builtin_gpu("a100_sxm4_80gb");
  const AlphaBetaModel model(topo, gpu);
  std::vector<int> all(32), node0(8), pair{0, 8};
  for (int i = 0; i < 32; ++i) all[static_cast<std::size_t>(i)] = i;
  for (int i = 0; i < 8; ++i) node0[static_cast<std::size_t>(i)] = i;
  struct Case { CollectiveOp op; std::uint64_t bytes; std::vector<int> group; };
  const std::vector<Case> cases = {
      {CollectiveOp::AllReduce, 1ULL << 30, node0},   {CollectiveOp::AllGather, 1ULL << 30, all},
      {CollectiveOp::ReduceScatter, 1ULL << 28, all}, {CollectiveOp::AllToAll, 1ULL << 28, all},
      {CollectiveOp::SendRecv, 1ULL << 26, pair},      {CollectiveOp::AllReduce, 1ULL << 16, all}};
  for (const auto& c : cases) {
    const CollectivePlan p = model.plan(c.op, c.bytes, c.group);
    const Time t = run_plans(topo, {p})[0];
    EXPECT_NEAR(t.seconds(), p.cost.time.seconds(), 1e-6 * p.cost.time.seconds() + 1e-10)
        << op_name(c.op) << " " << algorithm_name(p.cost.algorithm);
  }
}

TEST(PlanRunnerTest, RingChannelsUseDistinctNicsWhenGpusShareThem) {
  // 3 NICs per 8-GPU node (GPU i on NIC i mod 3): the model's three ring channels each have
  // a NIC. The plan used to join nodes at local ranks 7, 0, 1 (NICs 1, 0, 1), so two
  // channels shared a NIC and the uncontended ring took twice the alpha-beta time.
  hw::TopologySpec spec = test::dgx_a100_spec();
  spec.nics_per_node = 3;
  const hw::Topology topo(spec, 4 * 8);
  const AlphaBetaModel model(topo, *hw::find_builtin_gpu("a100_sxm4_80gb"));
  std::vector<int> all(32);
  for (int i = 0; i < 32; ++i) all[static_cast<std::size_t>(i)] = i;
  for (const CollectiveOp op : {CollectiveOp::AllReduce, CollectiveOp::AllGather}) {
    const CollectivePlan p = model.plan(op, 1ULL << 30, all);
    ASSERT_EQ(p.cost.algorithm, Algorithm::Ring) << op_name(op);
    const Time t = run_plans(topo, {p})[0];
    EXPECT_NEAR(t.seconds(), p.cost.time.seconds(), 1e-6 * p.cost.time.seconds()) << op_name(op);
  }
}

TEST(PlanRunnerTest, TwoRingsThroughTheSameNicsTakeTwiceAsLong) {
  // Two all_gathers over the same 4 nodes but disjoint GPUs on the same rails would not
  // share NICs; two over the same GPUs do: each gets half of every NIC.
  const hw::Topology topo(test::dgx_a100_spec(), 4 * 8);
  const AlphaBetaModel model(topo, *hw::find_builtin_gpu("a100_sxm4_80gb"));
  std::vector<int> all(32);
  for (int i = 0; i < 32; ++i) all[static_cast<std::size_t>(i)] = i;
  const CollectivePlan p = model.plan(CollectiveOp::AllGather, 1ULL << 30, all);
  const double lat = p.phases[0].latency_s;
  const double bw = p.phases[0].bw_time_s;
  const auto ends = run_plans(topo, {p, p});
  EXPECT_NEAR(ends[0].seconds(), lat + 2 * bw, 1e-6 * bw);
  EXPECT_NEAR(ends[1].seconds(), lat + 2 * bw, 1e-6 * bw);
}

TEST(PlanRunnerTest, TwoJobsThroughOneOversubscribedSpine) {
  // 4 nodes, 2 per SU, one spine, 4:1 oversubscribed: a leaf's uplink to the spine carries
  // 2 nodes x 24 GB/s / 4 = 12 GB/s. Job A sends GPU 0 (SU 0) -> GPU 16 (SU 1), job B GPU 8
  // (SU 0) -> GPU 24 (SU 1), both on rail 0: alone a transfer runs at 12 GB/s (the route's
  // bottleneck, which the contention-free model also sees), together at 6 GB/s each, which
  // only the flow model sees.
  hw::TopologySpec spec = test::dgx_a100_spec();
  spec.nodes_per_su = 2;
  spec.spines = 1;
  spec.oversubscription = 4.0;
  const hw::Topology topo(spec, 4 * 8);
  const AlphaBetaModel model(topo, *hw::find_builtin_gpu("a100_sxm4_80gb"));
  const std::uint64_t bytes = 1ULL << 30;
  const std::vector<int> a{0, 16}, b{8, 24};
  const CollectivePlan pa = model.plan(CollectiveOp::SendRecv, bytes, a);
  const CollectivePlan pb = model.plan(CollectiveOp::SendRecv, bytes, b);
  const double lat = pa.phases[0].latency_s;
  const double s = static_cast<double>(bytes);
  const double uplink = 2 * 24e9 / 4;
  EXPECT_NEAR(pa.cost.time.seconds(), lat + s / uplink, 1e-9);  // contention-free model
  const Time alone = run_plans(topo, {pa})[0];
  EXPECT_NEAR(alone.seconds(), lat + s / uplink, 1e-9);
  const auto both = run_plans(topo, {pa, pb});
  EXPECT_NEAR(both[0].seconds(), lat + s / (uplink / 2), 1e-9);
  EXPECT_NEAR(both[1].seconds(), lat + s / (uplink / 2), 1e-9);
}

}  // namespace
}  // namespace trainsim::net
