// Full fidelity: the stage graph's communication tasks become network tasks whose flows run
// on the topology graph with max-min link sharing (net::FlowNetwork), for every group the
// simulated stage rank stands for.
//
// How: while the stage graph is built, a RecordingModel answers the builder's collective
// cost queries (with the alpha-beta model) and remembers each (op, bytes, representative
// group, time). Afterwards every comm task of positive duration is matched to the query that
// produced it (same stage representative GPU as the group's first member, same time, TP
// tasks to TP groups and other tasks to other groups); the matching query's collective is
// expanded into the plans of all symmetric copies of its group: a TP group of stage s
// repeated over every (CP, DP) index, a DP x CP group over every TP index, an EP group over
// every TP index and every other EP block, an expert-DP group over every TP and EP index, a
// pipeline transfer or a cross-stage sync over every (TP, CP, DP) index; a CP ring step
// (matched by whichever hop of the representative's ring is the slowest) runs every hop of
// every CP ring. All those flows start when the task starts
// and share links with every other flow in flight: TP rings on NVLink with the intra-node
// edges of DP rings, DP rings with PP transfers on the NICs, ECMP collisions at the spines.
// Only the first member's task of a cross-stage rendezvous (the sender of a pipeline
// transfer) carries the flows; the others keep their alpha-beta duration, so a rendezvous
// never ends before the uncontended time.
//
// Compute stays symmetric per stage (the stage rank's kernels), which is exact when GPUs are
// identical. Without contention the step time equals stage fidelity's up to picosecond
// rounding of flow completions (tests hold it within 1%).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "core/simulator.hpp"
#include "core/task_graph.hpp"
#include "hw/topology.hpp"
#include "net/collective.hpp"
#include "net/collective_tasks.hpp"
#include "net/flow_network.hpp"
#include "parallel/layout.hpp"
#include "workload/straggler.hpp"

namespace trainsim::workload {

/// A CollectiveModel that forwards to another and records every query.
class RecordingModel final : public net::CollectiveModel {
 public:
  struct Query {
    net::CollectiveOp op;
    std::uint64_t bytes;
    std::vector<int> group;
    Time time;
  };
  explicit RecordingModel(const net::CollectiveModel& inner) : inner_(inner) {}
  [[nodiscard]] net::CollectiveCost cost(net::CollectiveOp op, std::uint64_t bytes,
                                         std::span<const int> group) const override;
  [[nodiscard]] const std::vector<Query>& queries() const { return queries_; }

 private:
  const net::CollectiveModel& inner_;
  mutable std::vector<Query> queries_;
};

/// Counters of a full-fidelity run.
struct FullStats {
  std::size_t network_tasks = 0;       ///< comm tasks turned into network tasks
  /// Comm tasks of positive duration that stay fixed: receivers and non-first members of
  /// cross-stage rendezvous (their partner carries the flows), and any task no recorded
  /// query explains (none in the shipped scenarios; tests assert it).
  std::size_t fixed_comm_tasks = 0;
  std::size_t network_ops = 0;         ///< distinct collectives (each with its group copies)
  std::uint64_t planned_flows = 0;     ///< flows the network tasks will start (convert)
  std::uint64_t planned_all_to_all_flows = 0;  ///< of them, the EP all-to-alls' (convert)
  std::uint64_t flows = 0;             ///< flows started
  std::uint64_t recomputations = 0;    ///< max-min component solves
};

/// The most all-to-all flows a full-fidelity step may start (FullFidelity::convert refuses
/// more): about 6 minutes on a 2-core machine by the measured growth (docs/network.md).
inline constexpr std::uint64_t kMaxFullAllToAllFlows = 16'000'000;

/// Turns a built stage graph into a full-fidelity one and runs it.
class FullFidelity {
 public:
  /// `stragglers` (GPU indices < topo.num_gpus()): a slow GPU slows its stage's compute
  /// tasks by 1 / speed (the stage rank stands for all its GPUs, and every TP/DP collective
  /// waits for the slowest member, so the stage runs at its slowest GPU's pace); NIC and
  /// NVLink factors scale the capacity of that GPU's links in the flow model.
  ///
  /// `pricing` (default: `model`) prices the builder's queries, e.g. a
  /// net::ProfiledCollectiveModel with measured collectives. The flows always follow
  /// `model`'s plan; where `pricing` gives another time than `model`, every phase's latency
  /// and bandwidth time are scaled by their ratio (flow rate bounds divided by it), so that a
  /// collective alone on the network takes the priced time (as long as the links can carry
  /// the scaled rates).
  FullFidelity(const parallel::Layout& layout, const hw::Topology& topo,
               const net::AlphaBetaModel& model, std::vector<Straggler> stragglers = {},
               const net::CollectiveModel* pricing = nullptr);

  /// The model to hand to the graph builder (records its queries).
  [[nodiscard]] const net::CollectiveModel& model() const { return recorder_; }

  /// Marks the comm tasks of `g` as network tasks (call after building, before Executor).
  /// Throws InputError (key simulation.fidelity) when the step would start more than
  /// kMaxFullAllToAllFlows all-to-all flows.
  void convert(TaskGraph& g);

  /// Runs `ex` on `sim` with the flows on the topology. Fills stats().
  void run(Simulator& sim, Executor& ex);

  [[nodiscard]] const FullStats& stats() const { return stats_; }
  /// The plans network task `external_id` runs (between convert() and run(); for tests).
  [[nodiscard]] const std::vector<net::CollectivePlan>& plans(std::uint32_t external_id) const {
    return ops_.at(external_id);
  }
  /// The straggler with the lowest factor and its pipeline stage (none without stragglers).
  [[nodiscard]] std::optional<std::pair<Straggler, int>> slowest() const;

 private:
  [[nodiscard]] std::vector<net::CollectivePlan> copies(const RecordingModel::Query& q) const;
  [[nodiscard]] std::vector<net::CollectivePlan> plan_copies(const RecordingModel::Query& q) const;
  /// `group`, moved to the origin, and its disjoint translates over the TP and flattened
  /// (CP, DP) coordinates.
  [[nodiscard]] std::vector<std::vector<int>> symmetric_groups(const std::vector<int>& group) const;
  /// Whether a comm task of `category` can be the query's collective: pipeline transfers
  /// (and the pipeline-wide sync) span stages, EP tasks are all-to-alls, CP ring hops are
  /// CP tasks (a transfer and a ring step of equal time must not swap flows).
  [[nodiscard]] bool fits(Category category, const RecordingModel::Query& q) const;
  /// A whole TP group (tp > 1): ranks t = 0..tp-1 of one (CP, DP, PP) position, in order; or
  /// an expert-TP group (Layout::etp_groups, etp > 1).
  [[nodiscard]] bool is_tp_group(const std::vector<int>& group) const;
  /// A send/recv between two CP ranks of one (TP, DP, PP) position: a ring-attention hop.
  [[nodiscard]] bool is_cp_hop(const RecordingModel::Query& q) const;

  const parallel::Layout& layout_;
  const hw::Topology& topo_;
  const net::AlphaBetaModel& model_;
  std::vector<Straggler> stragglers_;
  std::vector<double> link_factor_;
  RecordingModel recorder_;
  std::vector<std::vector<net::CollectivePlan>> ops_;
  FullStats stats_;
};

}  // namespace trainsim::workload
