// The ordered kernel list of one training step on one GPU, built from the same per-op shapes
// the simulator prices (model::layer_ops / embedding_op / head_ops through rank_op), for
// trainsim-calibrate: the GEMM, attention and memory-bound shapes a scenario produces
// (--scenario) and the real single-GPU step it runs and times (--validate).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cost/cost_model.hpp"
#include "model/transformer.hpp"
#include "workload/builder.hpp"

namespace trainsim::workload {

/// Which pass of an op a kernel belongs to.
enum class StepPass { Forward, Recompute, BackwardInput, BackwardWeight, Optimizer };
const char* step_pass_name(StepPass p);

/// One kernel of the step. kind is the op's kind; GEMMs give the (m, n, k) this pass runs
/// ([m x k]·[k x n]: forward (m, n, k), dgrad (m, k, n), wgrad (k, n, m)); attention gives
/// batch, heads, kv_heads, seq, head_dim, causal of the rank; memory-bound kernels give bytes.
struct StepKernel {
  std::string name;        ///< op name ("qkv", "attention", "gelu", "optimizer", ...)
  int layer = -1;          ///< transformer layer, -1 for embedding / head / optimizer
  StepPass pass = StepPass::Forward;
  model::Op op;            ///< the rank's op (rank_op), for its kind and attention shape
  std::int64_t m = 0, n = 0, k = 0;
  double bytes = 0;        ///< memory-bound HBM bytes of this pass
};

/// The kernels of one microbatch (forward over every layer, then backward in reverse with
/// the scenario's recompute) on a rank that holds all layers (pp = 1), embedding and head
/// included, as one TP rank runs them (rank_op). Throws InputError (key "parallel.pp") when
/// pp > 1 or virtual stages > 1, and (keys "model.moe", "model.hf_config", "model.mtp_layers")
/// for MoE, MLA or MTP models, whose layers it does not list.
std::vector<StepKernel> microbatch_kernels(const Scenario& sc);

/// The optimizer kernel of the step: Adam over the rank's parameters, 28 bytes each (fp32
/// master, m, v read and written, 16-bit gradient read, 16-bit weight written: the builder's
/// constant).
StepKernel optimizer_kernel(const Scenario& sc);

/// Distinct GEMM shapes (m, n, k) the simulator prices for the scenario on every stage
/// (forward, dgrad and wgrad of each GEMM op, any pp), sorted.
struct GemmShape {
  std::int64_t m = 0, n = 0, k = 0;
  auto operator<=>(const GemmShape&) const = default;
};
std::vector<GemmShape> scenario_gemm_shapes(const Scenario& sc);
/// The shapes of scenario_gemm_shapes at the scenario's tokens per microbatch and at twice
/// and half of them (half the micro batch, or half the sequence when the micro batch is odd),
/// sorted: what calibration measures so that nearby micro batches and sequence lengths
/// interpolate (forward and dgrad GEMMs over m, weight gradients over k).
std::vector<GemmShape> scenario_gemm_shapes_around(const Scenario& sc);

/// Sum of the cost model's times of `kernels` run back to back on one stream (no overlap),
/// each priced as the step builder prices it under `training` (dtype, attention kernels,
/// bias kernels; GEMMs through workload::gemm_times).
Time serial_time(const std::vector<StepKernel>& kernels, const cost::CostModel& cost,
                 const TrainingSpec& training);

}  // namespace trainsim::workload
