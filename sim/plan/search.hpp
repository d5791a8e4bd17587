// Layout search: enumerate every parallel layout of a scenario's model on its cluster, prune
// by divisibility and memory, pre-screen analytically, and rank the best by the
// discrete-event simulation (workload::simulate_step).
//
// Phases (docs/planner.md):
//  1. Enumerate: tp, cp (divisors of gpus/tp with seq_len divisible by 2 cp), pp,
//     dp = gpus/(tp·cp·pp), ep (MoE models: divisors of dp·cp dividing the expert count; 1
//     otherwise), micro_batch, schedule (+ virtual stages), sequence parallel, recompute,
//     ZeRO stage, overlap flags. Each is checked by Layout::validate; a failure is a
//     rejection with the key at fault. CP layouts use the ring (cp_comm "p2p").
//  2. Analytic pre-screen (per layout, microseconds): a memory lower bound (each stage's model
//     states + the schedule program's peak of live (microbatch, chunk) slots x the smallest
//     chunk's activations; a layout whose bound exceeds HBM is rejected: the simulation would
//     find at least that much), a step-time lower bound (per stage, the kernels its in-order
//     compute stream must run for all microbatches (MoE layers: FLOP floors of the balanced
//     share of expert rows, which the busiest EP rank the simulation times does at least;
//     CP: this rank's seq_len/cp tokens and cp attention blocks), the TP-collective waits the builder's
//     chaining forces, the optimizer step, plus the pipeline fill and drain that data
//     dependencies force), and an estimate (bound + modelled bubble and exposed communication)
//     used only for ordering. docs/planner.md gives each term and why it is a bound.
//  3. Simulation in rounds of `des_round` layouts in order of the estimate (layouts whose
//     estimated memory exceeds HBM last). Before each round, layouts whose lower bound is not
//     below the best simulated step time are pruned: they cannot win. The search stops when
//     nothing is left to simulate (the ranking is then exact for the space: "proven") or
//     after `des_max` simulations (the remaining layouts are reported as not simulated).
// The final ranking holds simulated layouts that fit in memory, by step time, ties broken by
// the canonical layout key, so every process count and thread count gives the same output.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "plan/distributed.hpp"
#include "workload/builder.hpp"

namespace trainsim::plan {

/// One point of the search space: a layout plus the training knobs that go with it.
struct Candidate {
  parallel::Layout layout;
  std::int64_t micro_batch = 1;
  model::Recompute recompute = model::Recompute::None;
};

/// Canonical key, e.g. "tp8.pp8.dp8.cp1.ep1.sp1.v3.interleaved.mb1.rc-selective.z1.ogr1.opg0.tco0".
std::string candidate_key(const Candidate& c);

enum class Status : int {
  Ranked = 0,          ///< simulated, fits: in the ranking
  InvalidLayout = 1,   ///< Layout::validate rejected it (reason: the key)
  MemoryBound = 2,     ///< analytic memory lower bound exceeds HBM
  MemorySimulated = 3, ///< simulated, does not fit in HBM
  PrunedBound = 4,     ///< step-time lower bound >= best simulated step time
  NotSimulated = 5,    ///< fits the bounds, but the simulation budget ran out
  SimFailed = 6,       ///< the simulation refused it (InputError, e.g. size guard)
};
const char* status_name(Status s);

struct Evaluated {
  Candidate c;
  Status status = Status::NotSimulated;
  std::string reason;            ///< why rejected (key at fault, bytes vs capacity, ...)
  double lower_bound_s = 0;      ///< analytic step-time lower bound
  double estimate_s = 0;         ///< analytic estimate (ordering only)
  double memory_lb_bytes = 0;    ///< analytic memory lower bound per GPU
  double memory_est_bytes = 0;   ///< analytic memory estimate per GPU (ordering only)
  bool simulated = false;
  double step_time_s = 0, mfu = 0, memory_bytes = 0;  ///< simulated
  double bubble_s = 0, exposed_tp_s = 0, exposed_dp_s = 0, exposed_pp_s = 0, compute_s = 0,
         optimizer_s = 0;                            ///< simulated, mean over stages
};

struct SearchOptions {
  int threads = 0;        ///< worker threads per process; 0: std::thread::hardware_concurrency
  int des_max = 4096;     ///< most discrete-event simulations
  int des_round = 32;     ///< simulations per round (the pruning granularity)
  /// The planner's reduced space: 1F1B and interleaved only, overlaps on, ZeRO-1 when dp > 1.
  bool reduced_space = false;
  /// Called from the coordinating thread with (phase, done, total); may be empty.
  std::function<void(const char*, std::size_t, std::size_t)> progress;
};

struct SearchResult {
  std::vector<Evaluated> all;        ///< every enumerated layout, in enumeration order
  std::vector<std::size_t> ranking;  ///< indices into `all`: Ranked, best first
  std::map<std::string, std::int64_t> rejected;  ///< count by reason category
  /// Of the "invalid: training.global_batch" layouts, those refused by the simulator's size
  /// guard (more than its task limit: too many microbatches per step), not by divisibility.
  std::int64_t task_limited = 0;
  /// Layouts whose analysis left the simulator's time range (core::Time, about 106 days: a
  /// kernel of an enormous micro-batch), "invalid: training.micro_batch".
  std::int64_t time_range = 0;
  std::size_t simulations = 0;
  bool proven = false;               ///< no layout left unsimulated whose bound could win
  double capacity_bytes = 0;
};

/// The largest global batch (sequences per step) a search takes: 2^40, some 10^5 times the
/// largest published batches. Beyond it every layout needs more than the simulator's task
/// limit or time range, and 64-bit token counts come close to wrapping.
inline constexpr std::int64_t kMaxGlobalBatch = std::int64_t{1} << 40;

/// The divisors of n in increasing order (empty for n < 1), by trial division up to sqrt(n):
/// global batches up to int64 are enumerated in milliseconds, without narrowing.
std::vector<std::int64_t> divisors(std::int64_t n);

/// Enumerates the space for `base` (its model, cluster, GPU count and global batch; its own
/// layout and micro_batch are ignored). Enumeration order is the canonical one.
std::vector<Candidate> enumerate(const workload::Scenario& base, bool reduced_space);

/// Runs the search. Work is split over `comm`'s ranks (analytic phase by index, each
/// simulation round by position) and over threads; results are summed over ranks, so every
/// rank returns the same SearchResult. Throws InputError when the scenario itself is bad
/// (model), or when no layout is ranked: the message gives the actual reasons by count
/// (HBM, the simulator's task limit, simulation refusals, the simulation budget) with their
/// remedies; "no layout of this model fits in X GiB per GPU" only when memory is the reason.
SearchResult search(const workload::Scenario& base, const SearchOptions& opt,
                    const Communicator& comm = Communicator::world());

/// The scenario with a candidate's layout, micro_batch and recompute.
workload::Scenario apply(const workload::Scenario& base, const Candidate& c);

/// CSV of every enumerated layout with its status, reason (for invalid layouts the key and
/// Layout::validate's message), bounds and simulated metrics. `base` is the searched scenario.
std::string search_csv(const workload::Scenario& base, const SearchResult& r);
/// JSON: candidates_evaluated, simulations, proven, rejected {reason: count}, top [{layout,
/// step_time_s, mfu, memory_gib, ...}] (at most `top` entries).
std::string search_json(const workload::Scenario& base, const SearchResult& r, int top);

/// One layout as JSON (tp, pp, dp, ep, cp, sequence_parallel, virtual_stages, schedule,
/// micro_batch, recompute, zero, the overlap flags, key): shared by `search` and `plan`.
nlohmann::ordered_json layout_json(const Candidate& c);
/// Text report: counts, the top K table, and why each runner-up loses to the best.
std::string search_text(const workload::Scenario& base, const SearchResult& r, int top);

}  // namespace trainsim::plan
