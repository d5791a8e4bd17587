// Decoder-only transformer: shapes, parameters, per-op FLOPs and bytes moved.
//
// FLOP convention (Narayanan et al. 2021, SC'21, §5.1; Korthikanti et al. 2022): only matrix
// multiplies are counted, 2 FLOPs per multiply-add; the attention core (Q·K^T and P·V) is
// counted in full, without halving for the causal mask; backward = 2 x forward, split into
// backward-input (dgrad) and backward-weight (wgrad) halves for GEMMs with weights. For a GPT
// shape (MHA, GeLU MLP with ffn = 4h) this reproduces Megatron's
//   F = 72·B·s·l·h²·(1 + s/(6h) + V/(12·l·h))   (model FLOPs per step)
// Every function here is unsharded: the parallel layer divides ops among TP ranks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace trainsim::model {

enum class Activation { GeLU, SwiGLU };
enum class Norm { LayerNorm, RMSNorm };
enum class Recompute { None, Selective, Full };

const char* activation_name(Activation a);
const char* norm_name(Norm n);
const char* recompute_name(Recompute r);

/// Model shape. Sizes are element counts.
struct ModelSpec {
  std::string name;
  int layers = 0;
  int hidden = 0;          ///< h
  int heads = 0;           ///< a (query heads)
  int kv_heads = 0;        ///< GQA key/value heads (== heads for MHA)
  int ffn_hidden = 0;      ///< MLP intermediate size
  std::int64_t vocab = 0;  ///< V
  int seq_len = 0;         ///< s
  Activation activation = Activation::GeLU;
  Norm norm = Norm::LayerNorm;
  bool tied_embeddings = false;
  bool causal = true;

  [[nodiscard]] int head_dim() const { return hidden / heads; }
  /// Throws std::invalid_argument naming the first bad field (non-positive sizes, heads not
  /// dividing hidden, kv_heads not dividing heads).
  void validate() const;
  /// Weights of one transformer layer (QKV, projection, MLP, two norms); no biases.
  [[nodiscard]] double params_per_layer() const;
  /// Input embedding (V·h).
  [[nodiscard]] double embedding_params() const;
  /// Output projection (V·h, 0 when tied) plus the final norm.
  [[nodiscard]] double head_params() const;
  [[nodiscard]] double total_params() const;
};

/// FLOPs of one op in each pass.
struct PassFlops {
  double fwd = 0, bwd_input = 0, bwd_weight = 0;
  [[nodiscard]] double total() const { return fwd + bwd_input + bwd_weight; }
  PassFlops& operator+=(const PassFlops& o) {
    fwd += o.fwd;
    bwd_input += o.bwd_input;
    bwd_weight += o.bwd_weight;
    return *this;
  }
};

enum class OpKind { Gemm, Attention, Norm, Activation, Elementwise, Embedding, Loss };

/// How tensor parallelism splits an op (Megatron-LM, Shoeybi et al. 2019):
/// Column: output features n split; Row: reduction dim k split; Heads: attention heads split;
/// TpLocal: elementwise work inside the TP region (split by t); Replicated: elementwise work
/// outside it (done whole by every TP rank, or split by t with sequence parallelism).
enum class Shard { Column, Row, Heads, TpLocal, Replicated };

/// One op of a layer for a micro-batch of b sequences.
/// GEMM forward is [m x k]·[k x n] with m = b·s tokens; dgrad is (m, k, n), wgrad (k, n, m).
/// Attention: batch b, heads, kv_heads, seq, head_dim, causal.
struct Op {
  std::string name;
  OpKind kind = OpKind::Gemm;
  Shard shard = Shard::Replicated;
  std::int64_t m = 0, n = 0, k = 0;
  std::int64_t batch = 0;
  int heads = 0, kv_heads = 0, seq = 0, head_dim = 0;
  bool causal = false;
  PassFlops flops;
  double fwd_bytes = 0;  ///< HBM bytes read + written in forward (memory-bound ops)
  double bwd_bytes = 0;  ///< HBM bytes read + written in backward
};

/// The ops of one transformer layer in forward order: norm, qkv, attention, proj, residual,
/// norm, mlp_in (fc1, or gate+up for SwiGLU), act, mlp_out (fc2), residual.
/// `b` = micro-batch size (sequences), `elem_bytes` = activation element size (2 for 16-bit).
std::vector<Op> layer_ops(const ModelSpec& m, std::int64_t b, int elem_bytes = 2);
/// Embedding lookup (first pipeline stage).
Op embedding_op(const ModelSpec& m, std::int64_t b, int elem_bytes = 2);
/// Final norm, LM head GEMM (vocab-parallel) and cross-entropy loss (last stage).
std::vector<Op> head_ops(const ModelSpec& m, std::int64_t b, int elem_bytes = 2);

/// Model FLOPs of one training step over `global_batch` sequences (Megatron convention).
double model_flops_per_step(const ModelSpec& m, std::int64_t global_batch);
/// Hardware FLOPs: model FLOPs plus what recompute repeats. Full: one more forward of every
/// layer (not of the head): Narayanan et al. 2021 Eq. 3, 96·B·s·l·h²(1 + s/6h + V/16lh).
/// Selective: one more attention core forward (Korthikanti et al. 2022 §5).
double hardware_flops_per_step(const ModelSpec& m, std::int64_t global_batch, Recompute r);

}  // namespace trainsim::model
