// The self-check every run ends with (verify_schedule, called by Executor::run): planted
// deadlocks give a diagnostic naming the ops, never a hang; corrupted results give an
// InternalError naming the op, never a plausible number.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "core/task_graph.hpp"

using namespace trainsim;

namespace {

struct GraphRun {
  TaskGraph g;
  Simulator sim;
  std::unique_ptr<Executor> ex;
  void go() {
    ex = std::make_unique<Executor>(g);
    ex->run(sim);
  }
};

/// The message of the InternalError (or subclass) `f` throws; fails when it throws none.
template <typename F>
std::string internal_error_of(F&& f) {
  try {
    f();
  } catch (const InternalError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an InternalError";
  return {};
}

bool has(const std::string& msg, const std::string& what) {
  return msg.find(what) != std::string::npos;
}

/// compute: fwd (10 ns) -> bwd (20 ns); comm: grad_reduce (5 ns) after bwd.
struct Small {
  GraphRun r;
  TaskId fwd = 0, bwd = 0, reduce = 0;
  Small() {
    const auto comp = r.g.add_stream(0, "compute");
    const auto comm = r.g.add_stream(0, "dp");
    fwd = r.g.add_task(comp, Time::ns(10), Category::Compute, r.g.intern("fwd_layer0"), 0);
    bwd = r.g.add_task(comp, Time::ns(20), Category::Compute, r.g.intern("bwd_layer0"), 0);
    reduce = r.g.add_task(comm, Time::ns(5), Category::DpComm, r.g.intern("grad_reduce"));
    r.g.add_dependency(bwd, reduce);
    r.go();
  }
};

}  // namespace

TEST(SelfCheck, ACorrectRunPassesAndKeepsItsTimes) {
  Small s;
  EXPECT_EQ(s.r.ex->end(s.reduce), Time::ns(35));
  const std::vector<Time> st{s.r.ex->start(0), s.r.ex->start(1), s.r.ex->start(2)};
  const std::vector<Time> en{s.r.ex->end(0), s.r.ex->end(1), s.r.ex->end(2)};
  EXPECT_NO_THROW(verify_schedule(s.r.g, st, en, {}, s.r.ex->makespan()));
}

TEST(SelfCheck, PlantedCycleOfThreeOpsIsADeadlockNamingThemNotAHang) {
  GraphRun r;
  std::vector<TaskId> ops;
  for (int i = 0; i < 3; ++i) {
    const auto s = r.g.add_stream(static_cast<std::uint32_t>(i), "compute");
    ops.push_back(r.g.add_task(s, Time::ns(1), Category::Compute,
                               r.g.intern("op_" + std::to_string(i))));
  }
  r.g.add_dependency(ops[0], ops[1]);
  r.g.add_dependency(ops[1], ops[2]);
  r.g.add_dependency(ops[2], ops[0]);
  const std::string msg = internal_error_of([&] { r.go(); });
  EXPECT_TRUE(has(msg, "deadlock: 3 of 3 tasks never ran")) << msg;
  for (const char* op : {"op_0", "op_1", "op_2"}) EXPECT_TRUE(has(msg, op)) << msg;
}

TEST(SelfCheck, CollectiveAMemberNeverReachesIsADeadlockNamingTheOps) {
  // A three-rank all-reduce; rank 2 first waits for an op that needs the all-reduce done.
  GraphRun r;
  const auto ar = r.g.intern("dp_all_reduce");
  std::vector<TaskId> members;
  TaskId blocker = kNoId;
  for (std::uint32_t rank = 0; rank < 3; ++rank) {
    const auto s = r.g.add_stream(rank, "dp");
    if (rank == 2) {
      blocker = r.g.add_task(s, Time::ns(1), Category::Optimizer, r.g.intern("optimizer_step"));
    }
    members.push_back(r.g.add_task(s, Time::ns(3), Category::DpComm, ar));
  }
  r.g.add_dependency(members[0], blocker);
  r.g.add_rendezvous(members);
  const std::string msg = internal_error_of([&] { r.go(); });
  EXPECT_TRUE(has(msg, "deadlock")) << msg;
  EXPECT_TRUE(has(msg, "'dp_all_reduce': rendezvous with 2 of 3 members arrived")) << msg;
  EXPECT_TRUE(has(msg, "rank 2 stream 'dp' stuck at 'optimizer_step'")) << msg;
  EXPECT_TRUE(has(msg, "waits for 1 unfinished dependencies, e.g. 'dp_all_reduce'")) << msg;
}

TEST(SelfCheck, TaskEndingBeforeItStartsIsAnInternalErrorNamingTheOp) {
  Small s;
  const std::string msg = internal_error_of(
      [&] { s.r.ex->corrupt_and_verify_for_test(s.fwd, Time::ns(5), Time::ns(4)); });
  EXPECT_TRUE(has(msg, "self-check failed: task ended before it started")) << msg;
  EXPECT_TRUE(has(msg, "'fwd_layer0' (task 0, rank 0, stream 'compute', microbatch 0)")) << msg;
}

TEST(SelfCheck, TaskStartingBeforeItsDependencyEndedIsAnInternalError) {
  Small s;
  const std::string msg = internal_error_of(
      [&] { s.r.ex->corrupt_and_verify_for_test(s.reduce, Time::ns(29), Time::ns(34)); });
  EXPECT_TRUE(has(msg, "task started before its dependency 'bwd_layer0'")) << msg;
  EXPECT_TRUE(has(msg, "'grad_reduce'")) << msg;
}

TEST(SelfCheck, OverlappingTasksOfOneStreamAreAnInternalError) {
  Small s;
  // bwd moved to overlap fwd: stream order broken (and still 20 ns long).
  const std::string msg = internal_error_of(
      [&] { s.r.ex->corrupt_and_verify_for_test(s.bwd, Time::ns(9), Time::ns(29)); });
  EXPECT_TRUE(has(msg, "stream order broken")) << msg;
  EXPECT_TRUE(has(msg, "'bwd_layer0'")) << msg;
}

TEST(SelfCheck, TaskShorterThanItsDurationOrPastTheMakespanIsAnInternalError) {
  Small s;
  std::string msg = internal_error_of(
      [&] { s.r.ex->corrupt_and_verify_for_test(s.bwd, Time::ns(10), Time::ns(25)); });
  EXPECT_TRUE(has(msg, "ran shorter than its duration 20000 ps")) << msg;
  Small s2;
  msg = internal_error_of(
      [&] { s2.r.ex->corrupt_and_verify_for_test(s2.reduce, Time::ns(30), Time::ns(36)); });
  EXPECT_TRUE(has(msg, "ended after the makespan")) << msg;
}

TEST(SelfCheck, RendezvousMembersApartAreAnInternalError) {
  GraphRun r;
  const auto l = r.g.intern("pp_send_recv");
  const auto a = r.g.add_task(r.g.add_stream(0, "send"), Time::ns(4), Category::PpComm, l);
  const auto b = r.g.add_task(r.g.add_stream(1, "recv"), Time::ns(2), Category::PpComm, l);
  r.g.add_rendezvous({a, b});
  r.go();
  EXPECT_EQ(r.ex->end(b), Time::ns(4));
  const std::string msg =
      internal_error_of([&] { r.ex->corrupt_and_verify_for_test(b, Time::ns(1), Time::ns(4)); });
  EXPECT_TRUE(has(msg, "rendezvous members did not start and end together")) << msg;
  EXPECT_TRUE(has(msg, "pp_send_recv")) << msg;
}

TEST(SelfCheck, UnfinishedTaskIsAnInternalError) {
  Small s;
  std::vector<Time> st(3, Time::zero()), en{Time::ns(10), Time::ns(30), Time::ns(35)};
  st[1] = Time::ns(10);
  st[2] = Time::ns(30);
  const std::vector<std::uint8_t> done{1, 1, 0};
  const std::string msg =
      internal_error_of([&] { verify_schedule(s.r.g, st, en, done, Time::ns(35)); });
  EXPECT_TRUE(has(msg, "task never finished: 'grad_reduce'")) << msg;
}
