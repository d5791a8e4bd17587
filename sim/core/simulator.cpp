#include "core/simulator.hpp"

#include <string>

namespace trainsim {

std::uint32_t Simulator::add_handler(EventHandler* h) {
  if (h == nullptr) throw InternalError("Simulator::add_handler: null handler");
  handlers_.push_back(h);
  return static_cast<std::uint32_t>(handlers_.size() - 1);
}

void Simulator::schedule_at(Time t, std::uint32_t handler, std::uint64_t payload,
                            std::int32_t priority) {
  if (t < now_) {
    throw InternalError("event scheduled in the past: t=" + std::to_string(t.count_ps()) +
                        " ps < now=" + std::to_string(now_.count_ps()) + " ps");
  }
  if (handler >= handlers_.size()) {
    throw InternalError("event for unknown handler " + std::to_string(handler));
  }
  queue_.push(t, priority, handler, payload);
}

bool Simulator::step() {
  if (queue_.empty()) return false;
  const Event e = queue_.pop();
  now_ = e.time;
  ++processed_;
  handlers_[e.handler]->on_event(*this, e);
  return true;
}

void Simulator::run() {
  while (step()) {
  }
}

}  // namespace trainsim
