#include <gtest/gtest.h>

#include <vector>

#include "core/event_queue.hpp"
#include "core/simulator.hpp"

using trainsim::Event;
using trainsim::EventQueue;
using trainsim::Simulator;
using trainsim::Time;

TEST(EventQueue, OrdersByTimeThenPriorityThenInsertion) {
  EventQueue q;
  q.push(Time::ns(5), 0, 0, 1);
  q.push(Time::ns(1), 1, 0, 2);
  q.push(Time::ns(1), 0, 0, 3);
  q.push(Time::ns(1), 0, 0, 4);  // same time and priority as 3: insertion order
  q.push(Time::ns(3), -1, 0, 5);
  std::vector<std::uint64_t> order;
  while (!q.empty()) order.push_back(q.pop().payload);
  EXPECT_EQ(order, (std::vector<std::uint64_t>{3, 4, 2, 5, 1}));
}

TEST(EventQueue, ManyTiesKeepFifoOrder) {
  EventQueue q;
  for (std::uint64_t i = 0; i < 1000; ++i) q.push(Time::us(1), 0, 0, i);
  for (std::uint64_t i = 0; i < 1000; ++i) EXPECT_EQ(q.pop().payload, i);
}

namespace {
struct Recorder : trainsim::EventHandler {
  std::vector<std::pair<std::int64_t, std::uint64_t>> seen;
  void on_event(Simulator& sim, const Event& e) override {
    seen.emplace_back(sim.now().count_ps(), e.payload);
    if (e.payload == 1) sim.schedule_in(Time::ps(10), e.handler, 2);
  }
};
}  // namespace

TEST(Simulator, DispatchesInOrderAndAdvancesTheClock) {
  Simulator sim;
  Recorder r;
  const auto h = sim.add_handler(&r);
  sim.schedule_at(Time::ps(100), h, 1);
  sim.schedule_at(Time::ps(50), h, 0);
  sim.run();
  ASSERT_EQ(r.seen.size(), 3U);
  EXPECT_EQ(r.seen[0], std::make_pair(std::int64_t{50}, std::uint64_t{0}));
  EXPECT_EQ(r.seen[1], std::make_pair(std::int64_t{100}, std::uint64_t{1}));
  EXPECT_EQ(r.seen[2], std::make_pair(std::int64_t{110}, std::uint64_t{2}));
  EXPECT_EQ(sim.now(), Time::ps(110));
  EXPECT_EQ(sim.events_processed(), 3U);
}

TEST(Simulator, RejectsEventsInThePastAndUnknownHandlers) {
  Simulator sim;
  Recorder r;
  const auto h = sim.add_handler(&r);
  sim.schedule_at(Time::ps(10), h, 0);
  sim.run();
  EXPECT_THROW(sim.schedule_at(Time::ps(5), h, 0), trainsim::InternalError);
  EXPECT_THROW(sim.schedule_at(Time::ps(20), h + 1, 0), trainsim::InternalError);
}

TEST(Simulator, InstancesAreIndependent) {
  Simulator a, b;
  Recorder ra, rb;
  a.schedule_at(Time::ps(5), a.add_handler(&ra), 0);
  b.schedule_at(Time::ps(7), b.add_handler(&rb), 0);
  a.run();
  EXPECT_EQ(a.now(), Time::ps(5));
  EXPECT_EQ(b.now(), Time::zero());
  b.run();
  EXPECT_EQ(b.now(), Time::ps(7));
}
