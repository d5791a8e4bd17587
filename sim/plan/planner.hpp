// Planner: from a FLOP budget to model size, tokens, parallel layout, days and cost on one or
// more candidate clusters; the seed table of published models; IsoFLOP pictures.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "hw/gpu.hpp"
#include "hw/topology.hpp"
#include "plan/scaling.hpp"
#include "plan/search.hpp"

namespace trainsim::plan {

/// A cluster to plan on: its topology (from topologies/*.toml), GPU profile and GPU count.
struct ClusterChoice {
  std::string name;  ///< as given on the command line
  hw::TopologySpec topology;
  hw::GpuSpec gpu;
  int gpus = 0;
};

struct PlanInputs {
  double budget_flops = 0;
  Law law = Law::Chinchilla;
  std::optional<double> gpu_hour_usd;
  std::optional<double> max_days;
  /// Sequences per step (of 2048 tokens). `trainsim plan --budget` without --global-batch
  /// takes optimal_global_batch(budget) (DeepSeek LLM's batch-size law) and sets
  /// global_batch_from_law; the default 1024 = 2M tokens, between GPT-3 175B's 3.2M (Brown et
  /// al. 2020 Table 2.1) and Chinchilla's 1.5M-3M (Hoffmann et al. 2022 Table 4), serves the
  /// seed table, whose published models each had a batch of that order.
  std::int64_t global_batch = 1024;
  bool global_batch_from_law = false;
  SearchOptions search;  ///< reduced_space, simulation budget, threads
};

/// The best layout of one model on one cluster and what it predicts for `tokens`.
struct ClusterPlan {
  std::string cluster;
  int gpus = 0;
  std::string gpu;
  Candidate layout;
  double step_time_s = 0, mfu = 0, days = 0, gpu_hours = 0;
  std::optional<double> cost_usd;
  bool within_max_days = true;
  std::size_t layouts_searched = 0, simulations = 0;
  bool proven = false;  ///< the search's bound closed: no layout of the space can be faster
  bool fits = true;     ///< false: no layout of the space fits in HBM (the other fields unset)
  std::string why;      ///< when !fits: the search's message
};

struct PlanResult {
  PlanInputs inputs;
  Allocation allocation;      ///< the law's compute-optimal N and D
  model::ModelSpec model;     ///< shape for N (model_for_params)
  std::vector<ClusterPlan> clusters;
};

/// The scenario of training `model` with `global_batch` sequences on a cluster (bf16,
/// FlashAttention, no layout yet).
workload::Scenario scenario_for(const model::ModelSpec& model, std::int64_t global_batch,
                                const ClusterChoice& cluster);

/// Searches the best layout of `model` on `cluster` and predicts the time to train `tokens`:
/// days = tokens / (global_batch · seq_len) · step_time / 86400, GPU-hours = days · 24 ·
/// gpus, cost = GPU-hours · gpu_hour_usd. Throws InputError when no layout fits.
ClusterPlan plan_on_cluster(const model::ModelSpec& model, double tokens,
                            const ClusterChoice& cluster, const PlanInputs& in,
                            const Communicator& comm = Communicator::world());

/// The whole plan: allocation, shape, and one ClusterPlan per cluster (!fits for a cluster
/// with no layout that fits in HBM). Throws InputError when the model fits on none.
PlanResult make_plan(const PlanInputs& in, const std::vector<ClusterChoice>& clusters,
                     const Communicator& comm = Communicator::world());

/// How far the shape's parameter count may stray from the law's N before the plan says so.
inline constexpr double kShapeTolerance = 0.10;
/// When the shape (model_for_params) has more than kShapeTolerance more or fewer parameters
/// than the law's N (tiny budgets: the smallest shape is 2 layers of hidden 128 beside the
/// embeddings), a sentence saying by how much and that days and cost are for that shape;
/// nullopt otherwise. plan_text prints it as "note:", plan_json as shape_note (with
/// shape_params_vs_n = shape / N - 1).
std::optional<std::string> shape_note(const PlanResult& p);

/// Text (side by side when several clusters) and JSON (keys of issue 8: budget_flops, law,
/// params, tokens, model {layers, hidden, heads}, layout, mfu, step_time_s, days, gpu_hours,
/// cost_usd; one object per cluster under "clusters" when several are given).
std::string plan_text(const PlanResult& p);
std::string plan_json(const PlanResult& p);

/// One row of the seed table: a published model, its FLOPs 6ND, the optimum of each law for
/// those FLOPs, and predicted days of the actual model and of the optimal one under
/// `in.law` (shape by model_for_params), each with its best layout on `cluster`.
struct TableRow {
  PublishedModel published;
  double flops = 0;
  Allocation chinchilla, epoch, kaplan;
  ClusterPlan actual, optimal;  ///< on the table's cluster
  double optimal_params = 0;    ///< parameters of the shape built for the law's optimum
};
std::vector<TableRow> seed_table(const ClusterChoice& cluster, const PlanInputs& in,
                                 const Communicator& comm = Communicator::world());
std::string table_text(const std::vector<TableRow>& rows, const ClusterChoice& cluster, Law law);
std::string table_json(const std::vector<TableRow>& rows, const ClusterChoice& cluster, Law law);

/// Predicted days to spend the plan's budget with N x {1/4, 1/2, 1, 2, 4} parameters (shape by
/// model_for_params, D = C / 6N) on `cluster`, each with its own best layout: (N, days)
/// points; sizes with no fitting layout are left out.
std::vector<std::pair<double, double>> days_vs_params(
    const PlanResult& p, const ClusterChoice& cluster, const PlanInputs& in,
    const Communicator& comm = Communicator::world());

/// IsoFLOP curves (loss vs N at budgets C/100 .. 100C under the plan's law; the Chinchilla fit
/// for Kaplan, whose loss is not of that form) with each optimum marked, and the `days`
/// points of days_vs_params. Self-contained SVG.
std::string isoflop_svg(const PlanResult& p, const std::vector<std::pair<double, double>>& days);

}  // namespace trainsim::plan
