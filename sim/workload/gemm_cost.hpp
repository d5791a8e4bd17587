// The three passes of one rank's GEMM op as every pricing path of the workload prices them
// (the step builder, MoE layers, the one-GPU step of trainsim-calibrate --validate).
#pragma once

#include "core/time.hpp"
#include "cost/cost_model.hpp"
#include "hw/gpu.hpp"
#include "model/transformer.hpp"

namespace trainsim::workload {

/// The dtype gradients are accumulated and data-parallel reduced in: fp32 for bf16 (and
/// FP8, whose parameters are bf16) training — Megatron-LM forces
/// accumulate_allreduce_grads_in_fp32 with --bf16 (megatron/training/arguments.py) and NeMo
/// 2.0's recipes set grad_reduce_in_fp32 — and Megatron's default fp16 gradients for fp16.
hw::Dtype gradient_dtype(hw::Dtype training);

/// Forward, input-gradient and weight-gradient times of one GEMM.
struct GemmTimes {
  Time fwd, dgrad, wgrad;
};

/// How the training software runs the kernels around a GEMM (from workload::TrainingSpec).
struct GemmKernels {
  hw::Dtype dtype = hw::Dtype::BF16;  ///< training dtype
  /// Bias add and bias gradient in the GEMM epilogues (TrainingSpec::bias_in_epilogue).
  bool bias_in_epilogue = true;
  /// Weight gradients accumulated into the main gradients by the wgrad GEMM's epilogue
  /// (TrainingSpec::fused_wgrad_accumulation).
  bool fused_wgrad_accumulation = true;
  /// Frozen base weights (LoRA fine-tuning, TrainingSpec::lora): no weight gradient, no bias
  /// gradient, and FP8's incoming gradient is cast for dgrad only (no transposed copy).
  bool frozen_weights = false;
};

/// One rank's GEMM `op` (model::Op as workload::rank_op shards it: Y[m x n] = X[m x k] W),
/// run as `kernels` says:
///  - fwd Y = X W, dgrad dX = dY W^T, wgrad dW = X^T dY accumulated into the main gradient
///    (workload::gradient_dtype: fp32, or fp16 for fp16 training). Fused (Megatron-LM's
///    gradient-accumulation fusion, apex fused_weight_gradient_mlp_cuda since early 2022;
///    Transformer Engine's fuse_wgrad_accumulation): the GEMM's epilogue reads and writes the
///    main gradient (cost::Epilogue::AccumulateFp32 / Accumulate16). Separate (2021
///    Megatron-LM, `--no-gradient-accumulation-fusion`, frameworks without the fusion): the
///    GEMM stores a 16-bit gradient and a memory-bound add, `main_grad.add_(grad)` in
///    Megatron's DDP hook or autograd's accumulation into `.grad`, reads it and the main
///    gradient and writes the main gradient: k·n·(2 + 2·g) bytes per microbatch, g the main
///    gradient's bytes;
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
GemmTimes gemm_times(const cost::CostModel& cost, const model::Op& op, const GemmKernels& kernels,
                     int row_output_split = 1);

/// The LoRA adapter of one rank's GEMM `op` (Y[m x n] = X[m x k] W) with rank `r`: forward
/// X A [m x r] then (X A) B [m x n] and the add into Y (read 2 + write 1 tensors of m x n);
/// backward dY B^T [m x r], then (dY B^T) A^T [m x k] and its add into dX (3 tensors of
/// m x k); weight gradients dB = (X A)^T dY and dA = X^T (dY B^T), accumulated into fp32 (or
/// fp16) main gradients like every weight gradient. Adapters are plain 16-bit layers (NeMo's
/// ParallelLinearAdapter, also under FP8 training); their TP collectives of m x r elements are
/// not priced. Throws std::invalid_argument for r < 1.
GemmTimes lora_adapter_times(const cost::CostModel& cost, const model::Op& op, int r,
                             hw::Dtype training);

}  // namespace trainsim::workload
