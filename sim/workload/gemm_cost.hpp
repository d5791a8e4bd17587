// The three passes of one rank's GEMM op as every pricing path of the workload prices them
// (the step builder, MoE layers, the one-GPU step of trainsim-calibrate --validate).
#pragma once

#include "core/time.hpp"
#include "cost/cost_model.hpp"
#include "hw/gpu.hpp"
#include "model/transformer.hpp"

namespace trainsim::workload {

/// Forward, input-gradient and weight-gradient times of one GEMM.
struct GemmTimes {
  Time fwd, dgrad, wgrad;
};

/// One rank's GEMM `op` (model::Op as workload::rank_op shards it: Y[m x n] = X[m x k] W),
/// `dtype` the training dtype:
///  - fwd Y = X W, dgrad dX = dY W^T, wgrad dW = X^T dY accumulated into the fp32 main
///    gradient (cost::Epilogue::AccumulateFp32: Megatron's gradient-accumulation fusion);
///  - FP8, Transformer Engine's recipe (Micikevicius et al. 2022, arXiv:2209.05433; TE's
///    cast_transpose kernels): Hopper FP8 GEMMs take both operands K-major, so dY [m x n]
///    (16-bit) is cast to FP8 twice, plain and transposed, by one memory-bound kernel before
///    dgrad and wgrad (read 2 + write 1 + 1 bytes per element); QKV/fc1/fc2 get their inputs
///    in FP8 from the fused norm/activation kernels, the projection ("proj") casts its input
///    [m x k] the same way before its forward;
///  - op.bias without epilogue fusion (`bias_in_epilogue` false: PyTorch-era Megatron-LM), the
///    bias gradient is a column reduction reading dY once, on m / `row_output_split` rows for
///    a row-parallel op (tp under sequence parallelism, where the bias follows the
///    reduce-scatter; else 1), and op.bias_add_kernel adds a forward kernel reading and
///    writing Y.
GemmTimes gemm_times(const cost::CostModel& cost, const model::Op& op, hw::Dtype dtype,
                     bool bias_in_epilogue = true, int row_output_split = 1);

}  // namespace trainsim::workload
