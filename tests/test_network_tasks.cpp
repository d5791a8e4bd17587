// Network tasks: the executor hands comm tasks to net::CollectiveTasks, whose flows share
// the topology's links. Oracles: without contention the makespan equals the fixed-duration
// (alpha-beta) graph's; DP all-reduce and PP send/recv through the same NIC are slower
// together; rendezvous with a network member end when its flows do.
#include <gtest/gtest.h>

#include <vector>

#include "core/simulator.hpp"
#include "core/task_graph.hpp"
#include "hw/gpu.hpp"
#include "hw/topology.hpp"
#include "net/collective.hpp"
#include "net/collective_tasks.hpp"
#include "net/flow_network.hpp"
#include "net/plan_runner.hpp"
#include "test_util.hpp"

namespace trainsim::net {
namespace {

struct Net {
  hw::Topology topo{test::dgx_a100_spec(), 16};
  AlphaBetaModel model{topo, *hw::find_builtin_gpu("a100_sxm4_80gb")};
};

/// compute (1 ms) -> DP all_reduce of GPUs {0, 8} -> compute (1 ms) on one stream, and
/// optionally a PP send of GPU 0 -> GPU 8 (same rail-0 NIC) on another stream.
Time makespan(const Net& n, bool network, bool with_pp, std::uint64_t bytes) {
  TaskGraph g;
  const StreamId comp = g.add_stream(0, "compute");
  const StreamId dp = g.add_stream(0, "dp");
  const StreamId pp = g.add_stream(0, "pp");
  const std::vector<int> dp_group{0, 8};
  const CollectivePlan ar = n.model.plan(CollectiveOp::AllReduce, bytes, dp_group);
  const CollectivePlan p2p = n.model.plan(CollectiveOp::SendRecv, bytes, dp_group);
  const TaskId c1 = g.add_task(comp, Time::ms(1), Category::Compute, g.intern("fwd"));
  const TaskId a = g.add_task(dp, ar.cost.time, Category::DpComm, g.intern("dp_all_reduce"));
  const TaskId c2 = g.add_task(comp, Time::ms(1), Category::Compute, g.intern("bwd"));
  g.add_dependency(c1, a);
  g.add_dependency(a, c2);
  Simulator sim;
  FlowNetwork fnet(sim, link_capacities(n.topo));
  CollectiveTasks tasks(fnet, n.topo);
  if (network) g.set_external(a, tasks.add({ar}));
  if (with_pp) {
    const TaskId s = g.add_task(pp, p2p.cost.time, Category::PpComm, g.intern("send"));
    g.add_dependency(c1, s);
    if (network) g.set_external(s, tasks.add({p2p}));
  }
  Executor ex(g);
  ex.set_external_handler(&tasks);
  ex.run(sim);
  return ex.makespan();
}

TEST(NetworkTasksTest, WithoutContentionNetworkTasksMatchFixedDurations) {
  const Net n;
  for (const std::uint64_t bytes : {1ULL << 20, 1ULL << 26, 1ULL << 30}) {
    const Time fixed = makespan(n, false, false, bytes);
    const Time flows = makespan(n, true, false, bytes);
    EXPECT_NEAR(flows.seconds(), fixed.seconds(), 0.01 * fixed.seconds()) << bytes;
    EXPECT_NEAR(flows.seconds(), fixed.seconds(), 1e-9) << bytes;  // in fact to the ns
  }
}

TEST(NetworkTasksTest, DpAllReduceAndPpSendShareTheNic) {
  const Net n;
  const std::uint64_t bytes = 1ULL << 30;
  // Fixed durations ignore the shared NIC: the send runs beside the all-reduce for free.
  const Time fixed = makespan(n, false, true, bytes);
  const Time flows = makespan(n, true, true, bytes);
  EXPECT_GT(flows.seconds(), 1.2 * fixed.seconds());
  // By hand: the ring all_reduce of 2 ranks moves 1 GiB each way over the rail-0 NIC at
  // 24 GB/s; the send adds 1 GiB in one direction. Sharing the 0->8 direction max-min fair:
  // both at 12 GB/s until the send (1 GiB) ends at ~2 x 44.7 ms, then the all-reduce's
  // 0->8 flow has nothing left either: the 8->0 flow (bounded at 24 GB/s) was done at 44.7.
  const double s = static_cast<double>(bytes);
  const double nic = 24e9;
  EXPECT_NEAR(flows.seconds(), 2e-3 + 2 * s / nic, 0.01 * (2 * s / nic));
}

TEST(NetworkTasksTest, RendezvousWithANetworkMemberEndsWithItsFlows) {
  const Net n;
  TaskGraph g;
  const StreamId a = g.add_stream(0, "send");
  const StreamId b = g.add_stream(1, "recv");
  const std::vector<int> pair{0, 8};
  const CollectivePlan p = n.model.plan(CollectiveOp::SendRecv, 1ULL << 28, pair);
  const TaskId send = g.add_task(a, Time::zero(), Category::PpComm, g.intern("send"));
  const TaskId recv = g.add_task(b, Time::us(5), Category::PpComm, g.intern("recv"));
  g.add_rendezvous({send, recv});
  Simulator sim;
  FlowNetwork fnet(sim, link_capacities(n.topo));
  CollectiveTasks tasks(fnet, n.topo);
  g.set_external(send, tasks.add({p}));
  Executor ex(g);
  ex.set_external_handler(&tasks);
  ex.run(sim);
  EXPECT_EQ(ex.end(send), ex.end(recv));
  EXPECT_NEAR(ex.end(recv).seconds(), p.cost.time.seconds(), 1e-9);
  // No handler: a clear internal error.
  Simulator sim2;
  Executor bare(g);
  EXPECT_THROW(bare.run(sim2), InternalError);
}

}  // namespace
}  // namespace trainsim::net
