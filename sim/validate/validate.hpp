// Predictions against published measurements of real training runs.
//
// A runs file (format of ../shared/validation/published_runs.toml) has [[group]] tables
// (id, title, source, notes) and [[run]] rows (model shape, batch, layout, hardware and the
// measured metric). Each row becomes a scenario on a built-in GPU profile and topology, is
// simulated, and the same quantity the source reported is derived from the simulated step
// with that source's own FLOP formula. Rows that cannot be simulated yet are kept, with the
// reason, never dropped.
#pragma once

#include <filesystem>
#include <iosfwd>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "workload/builder.hpp"

namespace trainsim::validate {

struct RowResult {
  std::string id, group, model;
  std::string metric;           ///< "iteration_time_s" | "tflops_per_gpu" | "mfu" | "layer_ms"
  std::string formula;          ///< how the predicted metric was derived
  double published = 0, predicted = 0;
  double error = 0;             ///< signed relative error, predicted / published - 1
  bool ok = false;
  std::string reason;           ///< why a row was skipped
  std::string assumptions;      ///< defaults filled in for fields the row does not give
  /// Per-layer rows (metric "layer_ms" = forward + backward of one layer, ms): the parts.
  std::string detail;           ///< per-layer rows: forward and backward compared
  double published_fwd_ms = 0, published_bwd_ms = 0, predicted_fwd_ms = 0, predicted_bwd_ms = 0;
  /// The scenario the row was turned into, as a scenario file (config::scenario_toml; the
  /// topology by absolute path), for rows that were simulated (ok); empty otherwise. A
  /// per-layer row's scenario is the whole model (layer_pass_ms cuts it to one and two layers).
  std::string scenario_toml;
  int line = 0;                 ///< line of the row's id in the runs file (else of its [[run]])
  /// The built-in GPU profile and topology file the row's `gpu` matched (empty when none).
  std::string gpu_profile, topology;
  /// The simulated step's memory per GPU (fullest stage) did not fit the GPU: the published
  /// run must have used something the row does not say (recompute, ZeRO/FSDP, offloading).
  bool memory_exceeded = false;
};

struct GroupResult {
  std::string group, title;
  int rows_ok = 0, rows_skipped = 0;
  double mape = 0, median_ape = 0, max_ape = 0;
  std::optional<double> kendall_tau;  ///< over ok rows, when at least 2
};

struct Report {
  std::vector<RowResult> rows;
  std::vector<GroupResult> groups;
  /// The topology files the rows loaded (from the `topologies` folder), each once: inputs of
  /// the run that no output may overwrite.
  std::vector<std::filesystem::path> topology_files;
  /// The rows' hf_config files (as resolved, whether or not they loaded): inputs too.
  std::vector<std::filesystem::path> hf_config_files;
};

/// Reads, simulates and scores a runs file. `topologies` is the folder with dgx-a100.toml and
/// dgx-h100.toml. `only_group` limits the rows to one group (empty: all). Throws
/// config::ConfigError for a missing or malformed file (also: a `run` entry that is not a
/// table, a row without a string id, two rows with one id), InputError (key "--topologies")
/// when `topologies` is not a folder. Rows with impossible values (a published metric that is
/// not finite and > 0, a count that is not a whole number in [1, 2^31)) are skipped with the
/// reason.
Report run_validation(const std::filesystem::path& runs_file,
                      const std::filesystem::path& topologies, const std::string& only_group);

/// The files `validate --scenarios DIR` writes, in row order: DIR/<row id>.toml holding each
/// simulated row's scenario (RowResult::scenario_toml). Throws InputError (key "--scenarios")
/// naming the row's id and line when the id is not a plain file name (empty, "." or "..", a
/// '/', '\\' or NUL character, or longer than a file name may be: the file would land
/// outside DIR or not be written) or when two rows share an id (one file would overwrite the
/// other).
std::vector<std::pair<std::filesystem::path, std::string>> row_scenario_files(
    const Report& r, const std::filesystem::path& dir);

/// The per-row and per-group tables (text), the JSON object (`rows`, `groups`), a CSV of the
/// rows, and the Markdown page docs/validation.md.
void print_report(std::ostream& os, const Report& r);
std::string report_json(const Report& r);
std::string report_csv(const Report& r);
/// `command` is the validate command line that made the page, after "trainsim validate "
/// (e.g. "RUNS --markdown docs/validation.md"): the page says how to make it again.
std::string report_markdown(const Report& r, const std::string& command);

/// Forward and backward time (ms) of one transformer layer as the simulator runs it: the
/// scenario is simulated with one and with two layers (one microbatch, the other settings
/// kept) and the forward and backward pass spans are differenced, so embedding, logits, loss
/// and optimizer cancel and the layer's own collectives and overlaps are included.
/// Returns {fwd_ms, bwd_ms}. Throws as workload::simulate_step does.
std::pair<double, double> layer_pass_ms(workload::Scenario scenario);

/// Kendall's tau-b between two equally long series (ties counted as neither); none (tau-b is
/// 0/0) when either series has no two distinct values.
std::optional<double> kendall_tau(const std::vector<double>& a, const std::vector<double>& b);

/// How a source counted the attention core (QK^T and PV) in its model FLOPs.
enum class AttentionFlops {
  /// In full, as if unmasked: Megatron-LM's num_floating_point_operations through 2024
  /// (core_r0.8-r0.10) and NeMo's flops formulas of that time (NeMo 24.07's published
  /// tokens/s and TFLOP/s agree only with this count; tests/test_validate.cpp).
  Full,
  /// Halved for a causal mask (later Megatron-LM / NeMo code; hardware.md §5.1).
  CausalHalf,
};

/// Model FLOPs per step as Megatron-LM counts them (megatron/training/training.py
/// num_floating_point_operations; NeMo's flops_formulas agree): 3 passes x 2 FLOPs per MAC
/// of QKV (GQA-sized), projection, MLP (2 or 3 GEMMs), the attention core (in full or
/// halved for a causal model, per `attention`), and the logits (6 h V per token). MoE layers
/// count the k routed experts and the shared experts per token (no router GEMM). MLA models
/// count their down/up projections, the rope key, the output projection from heads x v_dim
/// and a core over nope + rope (QK^T) and v (AV) dims. Each MTP module counts one more
/// layer of the last layer's kind, its eh_proj and norms (2h^2 + 3h) and one more logit GEMM.
double megatron_core_model_flops(const model::ModelSpec& m, std::int64_t global_batch,
                                 AttentionFlops attention);

}  // namespace trainsim::validate
