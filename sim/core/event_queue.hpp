// The future-event set: a binary min-heap of events ordered by (time, priority, insertion
// sequence). The sequence number makes the order total, so ties never depend on heap or
// pointer order and runs reproduce byte for byte (as in ns-3, OMNeT++ and SST).
#pragma once

#include <cstdint>
#include <vector>

#include "core/time.hpp"

namespace trainsim {

/// One scheduled event. `handler` indexes the Simulator's handler table; `payload` is the
/// handler's own datum (a task id, say). Lower `priority` runs first among equal times.
struct Event {
  Time time;
  std::int32_t priority = 0;
  std::uint64_t seq = 0;
  std::uint32_t handler = 0;
  std::uint64_t payload = 0;
};

/// Strict weak order used by the heap: earlier time, then lower priority, then lower seq.
constexpr bool event_before(const Event& a, const Event& b) {
  if (a.time != b.time) return a.time < b.time;
  if (a.priority != b.priority) return a.priority < b.priority;
  return a.seq < b.seq;
}

/// Binary heap with O(log n) push/pop. Not thread-safe.
class EventQueue {
 public:
  /// Inserts an event; assigns and returns its insertion sequence number.
  std::uint64_t push(Time t, std::int32_t priority, std::uint32_t handler,
                     std::uint64_t payload) {
    const std::uint64_t seq = next_seq_++;
    heap_.push_back(Event{t, priority, seq, handler, payload});
    sift_up(heap_.size() - 1);
    return seq;
  }
  [[nodiscard]] bool empty() const { return heap_.empty(); }
  [[nodiscard]] std::size_t size() const { return heap_.size(); }
  /// The next event. Precondition: !empty().
  [[nodiscard]] const Event& top() const { return heap_.front(); }
  /// Removes and returns the next event. Precondition: !empty().
  Event pop() {
    Event e = heap_.front();
    heap_.front() = heap_.back();
    heap_.pop_back();
    if (!heap_.empty()) sift_down(0);
    return e;
  }
  void reserve(std::size_t n) { heap_.reserve(n); }

 private:
  void sift_up(std::size_t i) {
    Event e = heap_[i];
    while (i > 0) {
      const std::size_t parent = (i - 1) / 2;
      if (!event_before(e, heap_[parent])) break;
      heap_[i] = heap_[parent];
      i = parent;
    }
    heap_[i] = e;
  }
  void sift_down(std::size_t i) {
    const std::size_t n = heap_.size();
    Event e = heap_[i];
    for (;;) {
      std::size_t child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && event_before(heap_[child + 1], heap_[child])) ++child;
      if (!event_before(heap_[child], e)) break;
      heap_[i] = heap_[child];
      i = child;
    }
    heap_[i] = e;
  }

  std::vector<Event> heap_;
  std::uint64_t next_seq_ = 0;
};

}  // namespace trainsim
