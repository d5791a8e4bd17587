// Memory per GPU: activations (Korthikanti et al. 2022) and model states (mixed-precision
// Adam with ZeRO stages 0-3, Rajbhandari et al. 2020).
#pragma once

#include <cstdint>

#include "model/transformer.hpp"

namespace trainsim::model {

struct ActivationOptions {
  int tp = 1;                    ///< tensor-parallel size t
  bool sequence_parallel = false;
  Recompute recompute = Recompute::None;
  /// FlashAttention never stores the a·s²·b softmax tensors (as with selective recompute).
  bool flash_attention = false;
  /// With Recompute::Selective: what is recomputed (core_attn: the softmax tensors; mlp: the
  /// MLP's tensors; layernorm: the two norms' outputs, the QKV and fc1 inputs). The MoE
  /// modules are applied by the caller through mlp_activation_bytes.
  RecomputeModules modules;
  /// false: leave the MLP's tensors out (an MoE layer's, which the caller adds from its
  /// experts' rows with mlp_activation_bytes).
  bool with_mlp = true;
};

/// The bytes an MLP of width `ffn` keeps inside the TP region per micro-batch of b sequences
/// (split over tp; Korthikanti et al. 2022 §4): SwiGLU its gate and up outputs and the down
/// input (2 + 2 + 2 bytes per element), a two-matrix MLP the activation input and the fc2
/// input (2 + 2); with `act_recomputed` (Megatron-Core's moe_act) the fc2 / down input is not
/// kept.
double mlp_activation_bytes(const ModelSpec& m, double ffn, std::int64_t b, int tp,
                            bool act_recomputed = false);

/// Activation bytes one transformer layer keeps for the backward pass, per micro-batch of b
/// sequences, with 16-bit activations and 1-byte dropout masks. Computed tensor by tensor
/// after Korthikanti et al. 2022 §4 (attention 11sbh + 5as²b, MLP 19sbh, norms 4sbh for a GPT
/// shape); TP divides the tensors inside the TP region by t, SP divides the rest by t,
/// selective recompute drops the attention-core tensors (and what opt.modules names), full
/// recompute keeps the layer input only (2sbh, /t with SP). Generalised to GQA (K, V sized
/// by kv_heads) and SwiGLU.
/// For a GPT shape this equals sbh(34 + 5as/h) and the variants of their Table 2. MLA models
/// keep Q, K, V at their own widths and the latents (see the code; mla_up_proj recompute
/// drops Q, K and V).
double activation_bytes_per_layer(const ModelSpec& m, std::int64_t b,
                                  const ActivationOptions& opt);

/// Model-state bytes on one GPU holding `params` parameters (already divided by TP and PP).
struct StateMemory {
  double weights = 0, gradients = 0, optimizer = 0;
  [[nodiscard]] double total() const { return weights + gradients + optimizer; }
};

/// Mixed-precision Adam (ZeRO paper §3.1): 2 bytes of 16-bit weights, 2 of 16-bit gradients
/// and K = 12 of fp32 master weights, momentum and variance per parameter, i.e. 16 bytes.
/// ZeRO-1 shards the optimizer states over `dp` ranks, ZeRO-2 also the gradients, ZeRO-3 also
/// the weights (4Ψ + 12Ψ/N_d, 2Ψ + 14Ψ/N_d, 16Ψ/N_d). `grad_bytes` is the size of one
/// gradient: 2 in the ZeRO paper's fp16 setting, 4 for Megatron-LM's fp32 main gradients with
/// bf16 (its distributed-optimizer guide, docs/source/api-guide/dist_optimizer.md: 18 bytes
/// per parameter, 6 + 12/d sharded). Throws std::invalid_argument for zero_stage outside
/// 0..3, dp < 1 or grad_bytes <= 0.
StateMemory model_state_bytes(double params, int dp, int zero_stage, double grad_bytes = 2.0);

}  // namespace trainsim::model
