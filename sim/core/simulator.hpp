// The discrete-event engine: one clock, one event queue, no global state.
//
// Models register an EventHandler and schedule events on the Simulator they are given by
// reference; the Simulator owns the only clock. Each test or run builds its own Simulator.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <vector>

#include "core/event_queue.hpp"
#include "core/time.hpp"

namespace trainsim {

class Simulator;

/// Receives the events scheduled with its handler id.
class EventHandler {
 public:
  virtual ~EventHandler() = default;
  virtual void on_event(Simulator& sim, const Event& event) = 0;
};

/// Thrown when the engine's own invariants break (an event in the past, a bad handler).
class InternalError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

class Simulator {
 public:
  /// Registers `h` (not owned; must outlive the run) and returns its handler id.
  std::uint32_t add_handler(EventHandler* h);

  /// Schedules an event at absolute time `t`. Throws InternalError when t < now().
  void schedule_at(Time t, std::uint32_t handler, std::uint64_t payload,
                   std::int32_t priority = 0);
  /// Schedules an event `delay` after now().
  void schedule_in(Time delay, std::uint32_t handler, std::uint64_t payload,
                   std::int32_t priority = 0) {
    schedule_at(now_ + delay, handler, payload, priority);
  }

  /// Processes events in (time, priority, seq) order until the queue is empty.
  void run();
  /// Processes one event; returns false when there was none.
  bool step();

  [[nodiscard]] Time now() const { return now_; }
  [[nodiscard]] std::uint64_t events_processed() const { return processed_; }
  [[nodiscard]] std::size_t pending() const { return queue_.size(); }
  void reserve(std::size_t events) { queue_.reserve(events); }

 private:
  Time now_;
  EventQueue queue_;
  std::vector<EventHandler*> handlers_;
  std::uint64_t processed_ = 0;
};

}  // namespace trainsim
