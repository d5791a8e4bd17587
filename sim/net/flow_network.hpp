// Flow-level network model: flows on routed paths share link bandwidth max-min fairly.
//
// Model (Bertsekas & Gallager, "Data Networks", 2nd ed., §6.5.2, max-min fairness and the
// progressive-filling algorithm; the same shape as SimGrid's lmm solver, see
// ../shared/STYLE.md item 8): every active flow f has a path of directed links and an upper
// bound max_rate_f (the rate its algorithm can drive it at). Rates are the max-min fair
// allocation: no link carries more than its capacity, no flow exceeds its bound, and no
// flow's rate can grow without lowering the rate of a flow that is not faster. Progressive
// filling raises all unfrozen flows together; a flow freezes when it reaches its bound or
// when one of its links saturates.
//
// Incremental recomputation: flows that share no link (directly or through other flows)
// cannot affect each other, so when a flow starts or ends only its connected component
// (flows linked through shared links) is re-solved. Starts and ends at the same instant
// are batched: they mark components dirty, and one recompute event at that instant (at a
// later priority than completions) solves each dirty component once.
//
// Time: the engine's integer picoseconds. A flow's completion is scheduled at
// ceil(remaining / rate) picoseconds after its last rate change; progress between events is
// integrated in double bytes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "core/simulator.hpp"
#include "core/time.hpp"

namespace trainsim::net {

using FlowId = std::uint32_t;

/// Called when a flow has moved all its bytes (at the simulator's current time).
using FlowDone = std::function<void(Simulator&, FlowId)>;

class MaxMinSolver;  // progressive filling, flow_network.cpp

class FlowNetwork final : public EventHandler {
 public:
  /// `capacity[l]` is link l's bandwidth, B/s. Throws std::invalid_argument when a capacity
  /// is not finite and > 0. Registers itself with `sim` (which must outlive it).
  FlowNetwork(Simulator& sim, std::vector<double> capacity);
  ~FlowNetwork() override;
  FlowNetwork(const FlowNetwork&) = delete;
  FlowNetwork& operator=(const FlowNetwork&) = delete;
  FlowNetwork(FlowNetwork&&) = delete;
  FlowNetwork& operator=(FlowNetwork&&) = delete;

  /// Starts a flow of `bytes` over `links` (directed link ids, any order; duplicates are
  /// not allowed) at sim.now(), with rate bound `max_rate` (B/s, > 0; infinity for none).
  /// `done` is called when it finishes. A flow of 0 bytes finishes at once (done is called
  /// from the recompute event at the same instant). A flow with no links must have a finite
  /// max_rate. Throws std::invalid_argument for a bad link id, negative bytes or a bad bound.
  FlowId start(std::span<const std::uint32_t> links, double bytes, double max_rate,
               FlowDone done);

  /// Calls `fn` at sim.now() + delay, on this network's handler (a timer, e.g. for the
  /// latency of a collective phase before its flows start).
  void call_after(Time delay, std::function<void(Simulator&)> fn);

  /// Ids of finished flows are reused by later start() calls.
  /// Current rate of an active flow, B/s (0 once finished). Rates are current after the
  /// recompute event of the instant the flow started; before it they read 0.
  [[nodiscard]] double rate(FlowId f) const;
  [[nodiscard]] bool active(FlowId f) const;
  [[nodiscard]] Simulator& simulator() const { return sim_; }
  [[nodiscard]] std::uint64_t flows_started() const { return flows_started_; }
  [[nodiscard]] std::size_t num_active() const { return active_count_; }
  /// Component solves so far (each start or end re-solves its component once per instant).
  [[nodiscard]] std::uint64_t recomputations() const { return recomputations_; }
  /// Flows whose rate was (re)computed, summed over all solves.
  [[nodiscard]] std::uint64_t flow_updates() const { return flow_updates_; }

  void on_event(Simulator& sim, const Event& event) override;

  /// Solves max-min fair rates for flows given by their link lists and bounds on links of
  /// the given capacities (no time involved): the solver on its own, for tests and for
  /// callers that need one allocation. Returns one rate per flow, B/s.
  static std::vector<double> max_min_rates(const std::vector<double>& capacity,
                                           const std::vector<std::vector<std::uint32_t>>& paths,
                                           const std::vector<double>& max_rate);

 private:
  struct FlowState {
    std::vector<std::uint32_t> links;
    double remaining = 0;   ///< bytes left at `since`
    double rate = 0;        ///< B/s
    double max_rate = 0;
    Time since;             ///< time of the last rate change
    Time finish = Time::max();  ///< scheduled completion (stale events carry another time)
    FlowDone done;
    bool active = false;
  };

  void mark_dirty(FlowId f);
  void recompute(Simulator& sim);
  void finish(Simulator& sim, FlowId f);

  Simulator& sim_;
  std::uint32_t handler_ = 0;
  std::vector<double> capacity_;
  std::vector<std::vector<FlowId>> on_link_;  ///< active flows per link
  std::vector<FlowState> flows_;
  std::vector<FlowId> dirty_;                 ///< seeds of components to re-solve
  std::vector<std::uint32_t> dirty_links_;    ///< links freed by finished flows
  std::vector<std::function<void(Simulator&)>> timers_;
  std::vector<FlowId> free_flows_;            ///< finished slots, reused by start()
  std::vector<std::uint64_t> free_timers_;
  std::uint64_t flows_started_ = 0;
  bool recompute_pending_ = false;
  std::uint32_t stamp_ = 0;
  std::vector<std::uint32_t> link_mark_;
  std::vector<std::uint32_t> flow_mark_;      ///< component-search stamp per flow slot
  std::vector<std::uint32_t> link_local_;     ///< local index of a marked link in a solve
  // Scratch of one component solve, kept between solves.
  std::vector<FlowId> seeds_;
  std::vector<FlowId> component_;
  std::vector<FlowId> sort_scratch_;
  std::vector<std::uint32_t> comp_links_;
  std::vector<double> comp_cap_;
  std::vector<std::uint32_t> path_off_;
  std::vector<std::uint32_t> path_;
  std::vector<double> bound_;
  std::vector<double> rates_;
  std::unique_ptr<MaxMinSolver> solver_;
  std::size_t active_count_ = 0;
  std::uint64_t recomputations_ = 0;
  std::uint64_t flow_updates_ = 0;
};

}  // namespace trainsim::net
