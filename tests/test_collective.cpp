// Tests of net::AlphaBetaModel against closed forms of NCCL's tuning model
// (hardware.md §3.3) and the measured DGX A100 numbers of hardware.md §3.2.
#include <gtest/gtest.h>

#include "test_util.hpp"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "hw/gpu.hpp"
#include "hw/topology.hpp"
#include "net/collective.hpp"

namespace trainsim::net {
namespace {

constexpr std::uint64_t kKiB = 1024;
constexpr std::uint64_t kGiB = 1024ULL * 1024 * 1024;
constexpr double kNvlinkBus = 240e9;      // A100 NCCL-model NVLink bw (12 x 20 GB/s)
constexpr double kNic = 25e9 * 0.96;      // HDR 200 Gb/s x nic_efficiency = 24 GB/s
constexpr double kLLMaxAmpere = 87.7e9;   // llMaxBw, single node, Ampere
constexpr double kPs = 1e-12;             // Time resolution

hw::TopologySpec dgx_a100() { return test::dgx_a100_spec(); }

/// `count` GPU indices first, first + stride, ...
std::vector<int> ranks(int first, int count, int stride = 1) {
  std::vector<int> v;
  for (int i = 0; i < count; ++i) v.push_back(first + i * stride);
  return v;
}

class CollectiveTest : public ::testing::Test {
 protected:
  const hw::GpuSpec& gpu_ = *hw::find_builtin_gpu("a100_sxm4_80gb");
  hw::Topology topo_{dgx_a100(), 16 * 8};  // 16 DGX A100 nodes in one SU
  AlphaBetaModel model_{topo_, gpu_};

  [[nodiscard]] CollectiveCost cost(CollectiveOp op, std::uint64_t bytes,
                                    const std::vector<int>& group) const {
    return model_.cost(op, bytes, group);
  }
};

TEST(CollectiveNamesTest, BusbwFactorsFollowNcclTests) {
  EXPECT_EQ(busbw_factor(CollectiveOp::AllReduce, 1), 0.0);
  EXPECT_EQ(busbw_factor(CollectiveOp::AllGather, 1), 0.0);
  EXPECT_EQ(busbw_factor(CollectiveOp::ReduceScatter, 1), 0.0);
  EXPECT_EQ(busbw_factor(CollectiveOp::AllToAll, 1), 0.0);
  EXPECT_EQ(busbw_factor(CollectiveOp::SendRecv, 1), 1.0);
  EXPECT_DOUBLE_EQ(busbw_factor(CollectiveOp::AllReduce, 2), 1.0);
  EXPECT_DOUBLE_EQ(busbw_factor(CollectiveOp::AllGather, 2), 0.5);
  EXPECT_DOUBLE_EQ(busbw_factor(CollectiveOp::ReduceScatter, 2), 0.5);
  EXPECT_DOUBLE_EQ(busbw_factor(CollectiveOp::AllToAll, 2), 0.5);
  EXPECT_DOUBLE_EQ(busbw_factor(CollectiveOp::SendRecv, 2), 1.0);
  EXPECT_DOUBLE_EQ(busbw_factor(CollectiveOp::AllReduce, 8), 1.75);
  EXPECT_DOUBLE_EQ(busbw_factor(CollectiveOp::AllGather, 8), 0.875);
  EXPECT_DOUBLE_EQ(busbw_factor(CollectiveOp::ReduceScatter, 8), 0.875);
  EXPECT_DOUBLE_EQ(busbw_factor(CollectiveOp::AllToAll, 8), 0.875);
  EXPECT_DOUBLE_EQ(busbw_factor(CollectiveOp::SendRecv, 8), 1.0);
  EXPECT_THROW((void)busbw_factor(CollectiveOp::AllReduce, 0), std::invalid_argument);
}

TEST(CollectiveNamesTest, Names) {
  EXPECT_EQ(op_name(CollectiveOp::AllReduce), "all_reduce");
  EXPECT_EQ(op_name(CollectiveOp::AllGather), "all_gather");
  EXPECT_EQ(op_name(CollectiveOp::ReduceScatter), "reduce_scatter");
  EXPECT_EQ(op_name(CollectiveOp::AllToAll), "all_to_all");
  EXPECT_EQ(op_name(CollectiveOp::SendRecv), "send_recv");
  EXPECT_EQ(algorithm_name(Algorithm::Ring), "ring");
  EXPECT_EQ(algorithm_name(Algorithm::Tree), "tree");
  EXPECT_EQ(algorithm_name(Algorithm::Hierarchical), "hierarchical");
  EXPECT_EQ(algorithm_name(Algorithm::Pairwise), "pairwise");
  EXPECT_EQ(algorithm_name(Algorithm::P2P), "p2p");
  EXPECT_EQ(algorithm_name(Algorithm::None), "none");
  EXPECT_EQ(protocol_name(Protocol::LL), "LL");
  EXPECT_EQ(protocol_name(Protocol::LL128), "LL128");
  EXPECT_EQ(protocol_name(Protocol::Simple), "Simple");
}

TEST_F(CollectiveTest, LargeSingleNodeAllReduceRunsAtNvlinkBusbw) {
  // hardware.md §3.2: 8 x A100 all_reduce @16 GiB measures 234.9 GB/s busbw; the NCCL model
  // gives 240 GB/s, and at 16 GiB the 56 µs latency is negligible.
  const auto c = cost(CollectiveOp::AllReduce, 16 * kGiB, ranks(0, 8));
  EXPECT_EQ(c.algorithm, Algorithm::Ring);
  EXPECT_EQ(c.protocol, Protocol::Simple);
  EXPECT_NEAR(c.busbw, kNvlinkBus, 0.01 * kNvlinkBus);
  EXPECT_NEAR(c.algbw, c.busbw * 8.0 / (2.0 * 7.0), 1e-9 * c.busbw);
  // Closed form: 8.4 + 14 x 3.4 = 56 µs, then 2(n-1)/n x S / 240 GB/s.
  const double expected = 56e-6 + 16.0 * kGiB * 1.75 / kNvlinkBus;
  EXPECT_NEAR(c.time.seconds(), expected, kPs);
}

TEST_F(CollectiveTest, SmallSingleNodeAllReduceIsRingLLLatency) {
  // hardware.md §3.3: 1 node x 8 GPUs Ring LL = 6.6 + 14 x 0.6 = 15.0 µs, LL bandwidth =
  // min(llMaxBw 87.7, 0.5 x 240) GB/s as busbw, x n / (2(n-1)) as algbw.
  for (const std::uint64_t bytes : {std::uint64_t{8}, kKiB}) {
    const auto c = cost(CollectiveOp::AllReduce, bytes, ranks(0, 8));
    EXPECT_EQ(c.algorithm, Algorithm::Ring);
    EXPECT_EQ(c.protocol, Protocol::LL);
    const double expected = 15.0e-6 + static_cast<double>(bytes) / (kLLMaxAmpere * 8.0 / 14.0);
    EXPECT_NEAR(c.time.seconds(), expected, kPs) << bytes;
    EXPECT_NEAR(c.algbw, static_cast<double>(bytes) / c.time.seconds(), 1e-6 * c.algbw);
    EXPECT_NEAR(c.busbw, c.algbw * 1.75, 1e-6 * c.busbw);
  }
}

TEST_F(CollectiveTest, SmallSingleNodeAllGatherIsRingLLLatency) {
  // hardware.md §3.3: 1 node x 8 GPUs all_gather Ring LL = 6.6 + 7 x 0.6 = 10.8 µs.
  const auto c = cost(CollectiveOp::AllGather, kKiB, ranks(0, 8));
  EXPECT_EQ(c.algorithm, Algorithm::Ring);
  EXPECT_EQ(c.protocol, Protocol::LL);
  EXPECT_NEAR(c.time.seconds(), 10.8e-6 + 1024.0 / (kLLMaxAmpere * 8.0 / 7.0), kPs);
}

TEST_F(CollectiveTest, SmallMultiNodeAllReduceUsesTreeLL) {
  // hardware.md §3.3: 2 nodes x 8 Tree LL = 6.8 + 2(7 x 0.6 + 1 x 5.0) = 25.2 µs (Ring LL
  // would be ~40 µs); 16 nodes x 8 Tree LL = 6.8 + 2(7 x 0.6 + 4 x 5.0) = 55.2 µs.
  const auto two = cost(CollectiveOp::AllReduce, 8, ranks(0, 16));
  EXPECT_EQ(two.algorithm, Algorithm::Tree);
  EXPECT_EQ(two.protocol, Protocol::LL);
  // Tree LL bus bw: min(0.92 x min(240, 2 x 192) / 3.8, llMaxBw(2 nodes) 39) GB/s; algbw x0.5.
  const double two_bw = 0.5 * std::min(0.92 * kNvlinkBus / 3.8, 39e9);
  EXPECT_NEAR(two.time.seconds(), 25.2e-6 + 8.0 / two_bw, kPs);

  const auto sixteen = cost(CollectiveOp::AllReduce, 8, ranks(0, 128));
  EXPECT_EQ(sixteen.algorithm, Algorithm::Tree);
  EXPECT_EQ(sixteen.protocol, Protocol::LL);
  const double sixteen_bw = 0.5 * std::min(0.92 * 8 * kNic / 3.8, 20.4e9);
  EXPECT_NEAR(sixteen.time.seconds(), 55.2e-6 + 8.0 / sixteen_bw, kPs);
}

TEST_F(CollectiveTest, TimeIsMonotoneInSize) {
  const std::vector<std::vector<int>> groups = {ranks(0, 2),  ranks(0, 8),     ranks(0, 16),
                                                ranks(0, 128), ranks(0, 16, 8), ranks(3, 4, 9)};
  const CollectiveOp ops[] = {CollectiveOp::AllReduce, CollectiveOp::AllGather,
                              CollectiveOp::ReduceScatter, CollectiveOp::AllToAll};
  for (const auto& g : groups) {
    for (const CollectiveOp op : ops) {
      Time prev = Time::zero();
      for (std::uint64_t base = kKiB; base <= 16 * kGiB; base *= 2) {
        for (const std::uint64_t bytes : {base, base + base / 4, base + base / 2}) {
          if (bytes > 16 * kGiB) continue;
          const auto c = model_.cost(op, bytes, g);
          EXPECT_GE(c.time, prev) << op_name(op) << " n=" << g.size() << " bytes=" << bytes;
          EXPECT_GT(c.time, Time::zero());
          prev = c.time;
        }
      }
    }
  }
  Time prev = Time::zero();
  for (std::uint64_t bytes = kKiB; bytes <= 16 * kGiB; bytes *= 2) {
    const auto c = cost(CollectiveOp::SendRecv, bytes, {0, 8});
    EXPECT_GE(c.time, prev) << bytes;
    prev = c.time;
  }
}

TEST_F(CollectiveTest, TwoNodeRingUsesEveryNic) {
  // 2 nodes x 8 GPUs, 8 NICs each: inter bus bw = 8 x 24 GB/s = 192 GB/s < 240 NVLink.
  for (const CollectiveOp op : {CollectiveOp::AllGather, CollectiveOp::ReduceScatter}) {
    const auto c = cost(op, 16 * kGiB, ranks(0, 16));
    EXPECT_EQ(c.algorithm, Algorithm::Ring);
    EXPECT_NEAR(c.busbw, 8 * kNic, 0.01 * 8 * kNic) << op_name(op);
  }
}

TEST_F(CollectiveTest, TwoNodeAllReduceTreeExceedsNicLimit) {
  // hardware.md §3.1: "On two nodes, NCCL uses the tree ... which can go beyond the network
  // bottleneck". Tree algbw = 0.5 x 0.92 x min(240, 2 x 192) GB/s = 110.4 GB/s.
  const auto c = cost(CollectiveOp::AllReduce, 16 * kGiB, ranks(0, 16));
  EXPECT_EQ(c.algorithm, Algorithm::Tree);
  EXPECT_EQ(c.protocol, Protocol::Simple);
  EXPECT_NEAR(c.algbw, 0.5 * 0.92 * kNvlinkBus, 0.01 * 0.5 * 0.92 * kNvlinkBus);
  EXPECT_GT(c.busbw, 8 * kNic);
}

TEST_F(CollectiveTest, SixteenNodeAllReduceMatchesMeasuredDgxA100) {
  // hardware.md §3.2: DGX A100 with 8 x HDR measures 192 GB/s multi-node all_reduce busbw.
  const auto c = cost(CollectiveOp::AllReduce, 16 * kGiB, ranks(0, 128));
  EXPECT_EQ(c.algorithm, Algorithm::Ring);
  EXPECT_NEAR(c.busbw, 192e9, 0.01 * 192e9);
}

TEST_F(CollectiveTest, DataParallelOneRankPerNodeGetsOneNic) {
  // One rank per node over 16 nodes: ring bus bw = one NIC (24 GB/s), both on one rail
  // (local rank 0 everywhere) and across rails (local rank = node % 8, routed via spines).
  std::vector<int> cross_rail;
  for (int node = 0; node < 16; ++node) cross_rail.push_back(node * 8 + node % 8);
  for (const auto& g : {ranks(0, 16, 8), cross_rail}) {
    const auto c = cost(CollectiveOp::AllReduce, 16 * kGiB, g);
    EXPECT_EQ(c.algorithm, Algorithm::Ring);
    EXPECT_NEAR(c.busbw, kNic, 0.01 * kNic);
  }
}

TEST_F(CollectiveTest, NicCountFollowsPlacement) {
  // Two ranks per node on two nodes use two NICs per node: 48 GB/s.
  const auto two = cost(CollectiveOp::AllGather, 16 * kGiB, {0, 1, 8, 9});
  EXPECT_NEAR(two.busbw, 2 * kNic, 0.01 * 2 * kNic);
  // With 4 NICs per node, GPUs 0 and 4 share NIC 0: one NIC's worth per node.
  hw::TopologySpec s = dgx_a100();
  s.nics_per_node = 4;
  const hw::Topology shared(s, 16);
  const AlphaBetaModel m(shared, gpu_);
  const std::vector<int> g = {0, 4, 8, 12};
  const auto one = m.cost(CollectiveOp::AllGather, 16 * kGiB, g);
  EXPECT_NEAR(one.busbw, kNic, 0.01 * kNic);
}

TEST_F(CollectiveTest, AllGatherCostsHalfAnAllReduce) {
  for (const auto& g : {ranks(0, 8), ranks(0, 128), ranks(0, 16, 8)}) {
    const auto ar = cost(CollectiveOp::AllReduce, 16 * kGiB, g);
    const auto ag = cost(CollectiveOp::AllGather, 16 * kGiB, g);
    const auto rs = cost(CollectiveOp::ReduceScatter, 16 * kGiB, g);
    const double ratio = ag.time.seconds() / ar.time.seconds();
    EXPECT_NEAR(ratio, 0.5, 0.01) << "n=" << g.size();
    EXPECT_EQ(ag.time, rs.time);
  }
}

TEST_F(CollectiveTest, SendRecvInsideAndAcrossNodes) {
  const double s = static_cast<double>(kGiB);
  const auto intra = cost(CollectiveOp::SendRecv, kGiB, {0, 1});
  EXPECT_EQ(intra.algorithm, Algorithm::P2P);
  EXPECT_EQ(intra.protocol, Protocol::Simple);
  EXPECT_NEAR(intra.time.seconds(), (8.4 + 3.4) * 1e-6 + s / kNvlinkBus, kPs);
  const auto inter = cost(CollectiveOp::SendRecv, kGiB, {0, 8});
  EXPECT_EQ(inter.protocol, Protocol::Simple);
  EXPECT_NEAR(inter.time.seconds(), (8.4 + 14.0) * 1e-6 + s / kNic, kPs);
  EXPECT_NEAR(inter.busbw, kNic, 0.001 * kNic);
  EXPECT_GT(inter.time.seconds(), 9.0 * intra.time.seconds());
  // Small messages use LL: Ring LL base 6.6 + one hop (NVLink 0.6 / NET 2.7) µs.
  const auto small_intra = cost(CollectiveOp::SendRecv, kKiB, {3, 5});
  EXPECT_EQ(small_intra.protocol, Protocol::LL);
  EXPECT_NEAR(small_intra.time.seconds(), 7.2e-6 + 1024.0 / kLLMaxAmpere, kPs);
  const auto small_inter = cost(CollectiveOp::SendRecv, kKiB, {3, 11});
  EXPECT_EQ(small_inter.protocol, Protocol::LL);
  EXPECT_NEAR(small_inter.time.seconds(), 9.3e-6 + 1024.0 / (0.5 * kNic), kPs);
}

TEST_F(CollectiveTest, AllToAllIsPairwise) {
  const double s = static_cast<double>(kGiB);
  // One node: 7/8 of the data over NVLink; latency 8.4 + 3.4 µs (peers concurrent).
  const auto one = cost(CollectiveOp::AllToAll, kGiB, ranks(0, 8));
  EXPECT_EQ(one.algorithm, Algorithm::Pairwise);
  EXPECT_NEAR(one.time.seconds(), 11.8e-6 + s * 7.0 / 8.0 / kNvlinkBus, kPs);
  // Two nodes: half the data leaves the node through each rank's own NIC, which dominates;
  // latency 8.4 + 14 µs. busbw ~ 2 x NIC x (n-1)/n (hardware.md §3.2).
  const auto two = cost(CollectiveOp::AllToAll, kGiB, ranks(0, 16));
  EXPECT_NEAR(two.time.seconds(), 22.4e-6 + s / 2.0 / kNic, kPs);
  EXPECT_NEAR(two.busbw, 2 * kNic * 15.0 / 16.0, 0.01 * 2 * kNic);
}

TEST_F(CollectiveTest, ZeroBytesOrOneGpuCostsNothing) {
  const auto none = cost(CollectiveOp::AllReduce, 0, ranks(0, 8));
  EXPECT_EQ(none.time, Time::zero());
  EXPECT_EQ(none.algorithm, Algorithm::None);
  EXPECT_EQ(none.algbw, 0.0);
  const auto single = cost(CollectiveOp::AllGather, kGiB, {5});
  EXPECT_EQ(single.time, Time::zero());
  EXPECT_EQ(single.algorithm, Algorithm::None);
  EXPECT_EQ(cost(CollectiveOp::SendRecv, 0, {0, 9}).time, Time::zero());
}

TEST_F(CollectiveTest, InvalidGroupsThrow) {
  EXPECT_THROW((void)cost(CollectiveOp::AllReduce, kKiB, {}), std::invalid_argument);
  EXPECT_THROW((void)cost(CollectiveOp::AllReduce, kKiB, {0, 128}), std::invalid_argument);
  EXPECT_THROW((void)cost(CollectiveOp::AllReduce, kKiB, {-1, 0}), std::invalid_argument);
  EXPECT_THROW((void)cost(CollectiveOp::AllGather, kKiB, {0, 1, 0}), std::invalid_argument);
  EXPECT_THROW((void)cost(CollectiveOp::SendRecv, kKiB, {0, 1, 2}), std::invalid_argument);
  EXPECT_THROW((void)cost(CollectiveOp::SendRecv, kKiB, {0}), std::invalid_argument);
  EXPECT_THROW((void)cost(CollectiveOp::SendRecv, kKiB, {4, 4}), std::invalid_argument);
  try {
    (void)cost(CollectiveOp::AllReduce, kKiB, {0, 1, 1});
    ADD_FAILURE() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("GPU 1"), std::string::npos) << e.what();
  }
}

TEST_F(CollectiveTest, ResultsAreDeterministic) {
  const hw::Topology other(dgx_a100(), 16 * 8);
  const AlphaBetaModel m(other, gpu_);
  for (const std::uint64_t bytes : {kKiB, 64 * kKiB, 64 * kKiB * kKiB, 4 * kGiB}) {
    const auto g = ranks(0, 128);
    const auto a = cost(CollectiveOp::AllReduce, bytes, g);
    const auto b = m.cost(CollectiveOp::AllReduce, bytes, g);
    EXPECT_EQ(a.time, b.time);
    EXPECT_EQ(a.algorithm, b.algorithm);
    EXPECT_EQ(a.protocol, b.protocol);
  }
}

}  // namespace
}  // namespace trainsim::net
