// Network tasks for the executor: each one runs collective flow plans on a shared
// FlowNetwork, so that concurrent traffic (TP, DP, PP, EP of any ranks) contends on the
// links it shares, and the task ends when its last flow does.
#pragma once

#include <cstdint>
#include <vector>

#include "core/task_graph.hpp"
#include "hw/topology.hpp"
#include "net/collective.hpp"
#include "net/flow_network.hpp"

namespace trainsim::net {

class CollectiveTasks final : public ExternalTaskHandler {
 public:
  /// Keeps references; `net` and `topo` must outlive the run.
  CollectiveTasks(FlowNetwork& net, const hw::Topology& topo) : net_(net), topo_(topo) {}

  /// Registers one network operation: `plans` start together when the task starts (e.g.
  /// the same collective in every symmetric group a simulated rank stands for), and the
  /// task ends when all of them have finished. Returns the id for TaskGraph::set_external.
  std::uint32_t add(std::vector<CollectivePlan> plans);

  void start_external(Simulator& sim, Executor& ex, TaskId t, std::uint32_t id) override;

  [[nodiscard]] std::size_t size() const { return ops_.size(); }

 private:
  FlowNetwork& net_;
  const hw::Topology& topo_;
  std::vector<std::vector<CollectivePlan>> ops_;
};

}  // namespace trainsim::net
