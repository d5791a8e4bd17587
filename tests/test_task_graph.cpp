#include <gtest/gtest.h>

#include "core/task_graph.hpp"

using namespace trainsim;

namespace {
struct Harness {
  TaskGraph g;
  Simulator sim;
  std::unique_ptr<Executor> ex;
  void go() {
    ex = std::make_unique<Executor>(g);
    ex->run(sim);
  }
};
}  // namespace

TEST(TaskGraph, StreamRunsTasksBackToBackInIssueOrder) {
  Harness r;
  const auto s = r.g.add_stream(0, "compute");
  const auto l = r.g.intern("k");
  const auto a = r.g.add_task(s, Time::ns(10), Category::Compute, l);
  const auto b = r.g.add_task(s, Time::ns(20), Category::Compute, l);
  const auto c = r.g.add_task(s, Time::ns(5), Category::Compute, l);
  r.go();
  EXPECT_EQ(r.ex->start(a), Time::zero());
  EXPECT_EQ(r.ex->start(b), Time::ns(10));
  EXPECT_EQ(r.ex->start(c), Time::ns(30));
  EXPECT_EQ(r.ex->makespan(), Time::ns(35));
}

TEST(TaskGraph, DependenciesAcrossStreamsAndHeadOfLineBlocking) {
  Harness r;
  const auto comp = r.g.add_stream(0, "compute");
  const auto comm = r.g.add_stream(0, "comm");
  const auto l = r.g.intern("k");
  const auto a = r.g.add_task(comp, Time::ns(10), Category::Compute, l);
  const auto x = r.g.add_task(comm, Time::ns(7), Category::TpComm, l);   // after a
  const auto y = r.g.add_task(comm, Time::ns(1), Category::TpComm, l);   // no deps, behind x
  const auto b = r.g.add_task(comp, Time::ns(3), Category::Compute, l);  // after x
  r.g.add_dependency(a, x);
  r.g.add_dependency(x, b);
  r.go();
  EXPECT_EQ(r.ex->start(x), Time::ns(10));
  EXPECT_EQ(r.ex->start(y), Time::ns(17));  // the stream is in order, like a CUDA stream
  EXPECT_EQ(r.ex->start(b), Time::ns(17));
  EXPECT_EQ(r.ex->last_dependency(b), x);
  EXPECT_EQ(r.ex->makespan(), Time::ns(20));
}

TEST(TaskGraph, RendezvousStartsWhenTheLastMemberArrivesAndEndsTogether) {
  Harness r;
  const auto l = r.g.intern("k");
  std::vector<TaskId> members;
  std::vector<TaskId> before;
  for (std::uint32_t rank = 0; rank < 3; ++rank) {
    const auto s = r.g.add_stream(rank, "s");
    before.push_back(r.g.add_task(s, Time::ns(10 * (rank + 1)), Category::Compute, l));
    members.push_back(r.g.add_task(s, Time::ns(5 + rank), Category::TpComm, l));
  }
  r.g.add_rendezvous(members);
  r.go();
  for (TaskId m : members) {
    EXPECT_EQ(r.ex->start(m), Time::ns(30));  // rank 2 arrives last
    EXPECT_EQ(r.ex->end(m), Time::ns(37));    // longest member duration
  }
}

TEST(TaskGraph, CycleIsReportedAsDeadlockNamingTheTasks) {
  Harness r;
  const auto s0 = r.g.add_stream(0, "a");
  const auto s1 = r.g.add_stream(1, "b");
  const auto x = r.g.add_task(s0, Time::ns(1), Category::Compute, r.g.intern("op_x"));
  const auto y = r.g.add_task(s1, Time::ns(1), Category::Compute, r.g.intern("op_y"));
  r.g.add_dependency(x, y);
  r.g.add_dependency(y, x);
  try {
    r.go();
    FAIL() << "expected DeadlockError";
  } catch (const DeadlockError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("op_x"), std::string::npos) << msg;
    EXPECT_NE(msg.find("op_y"), std::string::npos) << msg;
  }
}

TEST(TaskGraph, RendezvousThatAMemberNeverReachesIsADeadlock) {
  Harness r;
  const auto s0 = r.g.add_stream(0, "a");
  const auto s1 = r.g.add_stream(1, "b");
  const auto l = r.g.intern("all_reduce");
  const auto blocker = r.g.add_task(s1, Time::ns(1), Category::Compute, r.g.intern("never"));
  const auto m0 = r.g.add_task(s0, Time::ns(1), Category::DpComm, l);
  const auto m1 = r.g.add_task(s1, Time::ns(1), Category::DpComm, l);
  r.g.add_dependency(m0, blocker);  // rank 1 waits for the collective before reaching it
  r.g.add_rendezvous({m0, m1});
  try {
    r.go();
    FAIL() << "expected DeadlockError";
  } catch (const DeadlockError& e) {
    EXPECT_NE(std::string(e.what()).find("rendezvous with 1 of 2 members"), std::string::npos)
        << e.what();
  }
}

TEST(TaskGraph, RejectsBadIds) {
  TaskGraph g;
  EXPECT_THROW(g.add_task(3, Time::ns(1), Category::Compute, 0), std::invalid_argument);
  const auto s = g.add_stream(0, "s");
  const auto t = g.add_task(s, Time::ns(1), Category::Compute, g.intern("x"));
  EXPECT_THROW(g.add_dependency(t, t), std::invalid_argument);
  EXPECT_THROW(g.add_dependency(t, 99), std::invalid_argument);
  EXPECT_THROW(g.add_rendezvous({}), std::invalid_argument);
}

// SM contention, hand-solved: 100 SMs, communication holds 20, so overlapped compute runs at
// 0.8 of its rate.
TEST(SmContention, OverlappedComputeRunsAtTheRemainingSmShare) {
  Harness r;
  const auto comp = r.g.add_stream(0, "compute");
  const auto comm = r.g.add_stream(0, "comm");
  const auto other = r.g.add_stream(1, "compute");
  const auto l = r.g.intern("k");
  // Rank 0: a 100 us kernel; its collective starts at 30 us (after rank 1's 30 us kernel)
  // and runs 50 us. Work done: 30 (alone) + 50 x 0.8 = 70, the last 30 alone: ends at 110.
  const auto a = r.g.add_task(comp, Time::us(100), Category::Compute, l);
  const auto x = r.g.add_task(other, Time::us(30), Category::Compute, l);
  const auto c = r.g.add_task(comm, Time::us(50), Category::TpComm, l);
  r.g.add_dependency(x, c);
  r.ex = std::make_unique<Executor>(r.g);
  r.ex->set_sm_contention(20, 100);
  r.ex->run(r.sim);
  EXPECT_EQ(r.ex->end(a), Time::us(110));
  EXPECT_EQ(r.ex->end(x), Time::us(30));  // rank 1 has no communication: not slowed
  EXPECT_EQ(r.ex->end(c), Time::us(80));  // communication itself is not slowed
}

TEST(SmContention, ComputeStartingUnderCommunicationAndExactRounding) {
  Harness r;
  const auto comp = r.g.add_stream(0, "compute");
  const auto comm = r.g.add_stream(0, "comm");
  const auto l = r.g.intern("k");
  // The collective (1 ms) covers the whole 7 ps kernel: 7 / (97/100) = 7.2165 -> 8 ps
  // (the kernel ends once all its work is done).
  const auto c = r.g.add_task(comm, Time::ms(1), Category::DpComm, l);
  const auto a = r.g.add_task(comp, Time::ps(7), Category::Compute, l);
  r.ex = std::make_unique<Executor>(r.g);
  r.ex->set_sm_contention(3, 100);
  r.ex->run(r.sim);
  EXPECT_EQ(r.ex->end(a), Time::ps(8));
  EXPECT_EQ(r.ex->end(c), Time::ms(1));
}

TEST(SmContention, OffByDefaultAndRejectsImpossibleShares) {
  Harness r;
  const auto comp = r.g.add_stream(0, "compute");
  const auto comm = r.g.add_stream(0, "comm");
  const auto l = r.g.intern("k");
  const auto a = r.g.add_task(comp, Time::us(100), Category::Compute, l);
  (void)r.g.add_task(comm, Time::us(50), Category::TpComm, l);
  r.go();
  EXPECT_EQ(r.ex->end(a), Time::us(100));
  Executor ex(r.g);
  EXPECT_THROW(ex.set_sm_contention(100, 100), std::invalid_argument);
  EXPECT_THROW(ex.set_sm_contention(-1, 100), std::invalid_argument);
  EXPECT_NO_THROW(ex.set_sm_contention(0, 100));
}
