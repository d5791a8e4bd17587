#include "net/collective_tasks.hpp"

#include <memory>
#include <stdexcept>
#include <string>

#include "net/plan_runner.hpp"

namespace trainsim::net {

std::uint32_t CollectiveTasks::add(std::vector<CollectivePlan> plans) {
  const auto id = static_cast<std::uint32_t>(ops_.size());
  if (id == kNoId) throw std::length_error("CollectiveTasks: too many operations");
  ops_.push_back(std::move(plans));
  return id;
}

void CollectiveTasks::start_external(Simulator& sim, Executor& ex, TaskId t,
                                     std::uint32_t id) {
  if (id >= ops_.size()) {
    throw InternalError("CollectiveTasks: unknown network operation " + std::to_string(id));
  }
  const auto& plans = ops_[id];
  if (plans.empty()) {
    net_.call_after(Time::zero(), [&ex, t](Simulator& s) { ex.complete(s, t); });
    return;
  }
  auto left = std::make_shared<std::size_t>(plans.size());
  for (const CollectivePlan& p : plans) {
    run_plan(net_, topo_, p, [&ex, t, left](Simulator& s) {
      if (--*left == 0) ex.complete(s, t);
    });
  }
  (void)sim;
}

}  // namespace trainsim::net
