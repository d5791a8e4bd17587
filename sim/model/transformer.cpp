#include "model/transformer.hpp"

#include <stdexcept>

#include "core/error.hpp"

namespace trainsim::model {

const char* activation_name(Activation a) { return a == Activation::GeLU ? "gelu" : "swiglu"; }
const char* norm_name(Norm n) { return n == Norm::LayerNorm ? "layernorm" : "rmsnorm"; }
const char* recompute_name(Recompute r) {
  switch (r) {
    case Recompute::None: return "none";
    case Recompute::Selective: return "selective";
    case Recompute::Full: return "full";
  }
  return "?";
}

void ModelSpec::validate() const {
  auto positive = [](const char* field, std::int64_t v) {
    if (v <= 0) {
      throw InputError(std::string("model.") + field,
                       std::string("model.") + field + " must be > 0 (got " + std::to_string(v) +
                           ")");
    }
  };
  positive("layers", layers);
  positive("hidden", hidden);
  positive("heads", heads);
  positive("kv_heads", kv_heads);
  positive("ffn_hidden", ffn_hidden);
  positive("vocab", vocab);
  positive("seq_len", seq_len);
  if (hidden % heads != 0) {
    throw InputError("model.heads", "model.heads (" + std::to_string(heads) +
                                         ") must divide model.hidden (" +
                                         std::to_string(hidden) + ")");
  }
  if (heads % kv_heads != 0) {
    throw InputError("model.kv_heads", "model.kv_heads (" + std::to_string(kv_heads) +
                                            ") must divide model.heads (" +
                                            std::to_string(heads) + ")");
  }
}

double ModelSpec::params_per_layer() const {
  const double h = hidden;
  const double kv = static_cast<double>(kv_heads) * head_dim();
  const double attn = h * (h + 2 * kv) + h * h;
  const double mlp = (activation == Activation::SwiGLU ? 3.0 : 2.0) * h * ffn_hidden;
  const double norms = (norm == Norm::LayerNorm ? 4.0 : 2.0) * h;
  return attn + mlp + norms;
}

double ModelSpec::embedding_params() const { return static_cast<double>(vocab) * hidden; }

double ModelSpec::head_params() const {
  const double final_norm = (norm == Norm::LayerNorm ? 2.0 : 1.0) * hidden;
  return (tied_embeddings ? 0.0 : static_cast<double>(vocab) * hidden) + final_norm;
}

double ModelSpec::total_params() const {
  return layers * params_per_layer() + embedding_params() + head_params();
}

namespace {

Op gemm(std::string name, Shard shard, std::int64_t m, std::int64_t n, std::int64_t k) {
  Op op;
  op.name = std::move(name);
  op.kind = OpKind::Gemm;
  op.shard = shard;
  op.m = m;
  op.n = n;
  op.k = k;
  const double f = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  op.flops = {f, f, f};  // dgrad and wgrad each cost one forward
  return op;
}

Op elementwise(std::string name, OpKind kind, Shard shard, double fwd_bytes, double bwd_bytes) {
  Op op;
  op.name = std::move(name);
  op.kind = kind;
  op.shard = shard;
  op.fwd_bytes = fwd_bytes;
  op.bwd_bytes = bwd_bytes;
  return op;
}

}  // namespace

std::vector<Op> layer_ops(const ModelSpec& m, std::int64_t b, int elem_bytes) {
  const std::int64_t tokens = b * m.seq_len;
  const double e = elem_bytes;
  const double act = static_cast<double>(tokens) * m.hidden * e;  // one [b, s, h] tensor
  const std::int64_t kv = static_cast<std::int64_t>(m.kv_heads) * m.head_dim();
  std::vector<Op> ops;
  // Norm: read x, write y (+ stats); backward reads dy, x and writes dx.
  ops.push_back(elementwise("attn_norm", OpKind::Norm, Shard::Replicated, 2 * act, 3 * act));
  ops.push_back(gemm("qkv", Shard::Column, tokens, m.hidden + 2 * kv, m.hidden));
  Op attn;
  attn.name = "attention";
  attn.kind = OpKind::Attention;
  attn.shard = Shard::Heads;
  attn.batch = b;
  attn.heads = m.heads;
  attn.kv_heads = m.kv_heads;
  attn.seq = m.seq_len;
  attn.head_dim = m.head_dim();
  attn.causal = m.causal;
  // Q·K^T and P·V: 2 GEMMs of 2·b·s²·h FLOPs each, counted without causal halving.
  const double core = 4.0 * static_cast<double>(b) * m.seq_len * static_cast<double>(m.seq_len) *
                      m.hidden;
  attn.flops = {core, 2 * core, 0};
  ops.push_back(attn);
  ops.push_back(gemm("proj", Shard::Row, tokens, m.hidden, m.hidden));
  // Bias-dropout-add: read two tensors and the mask, write one.
  ops.push_back(elementwise("attn_residual", OpKind::Elementwise, Shard::Replicated, 3.5 * act,
                            2.5 * act));
  ops.push_back(elementwise("mlp_norm", OpKind::Norm, Shard::Replicated, 2 * act, 3 * act));
  const std::int64_t fc1_out =
      m.activation == Activation::SwiGLU ? 2 * static_cast<std::int64_t>(m.ffn_hidden)
                                         : m.ffn_hidden;
  ops.push_back(gemm(m.activation == Activation::SwiGLU ? "mlp_gate_up" : "mlp_fc1",
                     Shard::Column, tokens, fc1_out, m.hidden));
  const double ffn_act = static_cast<double>(tokens) * m.ffn_hidden * e;
  if (m.activation == Activation::SwiGLU) {
    // silu(gate) * up: read 2, write 1; backward reads 3, writes 2.
    ops.push_back(elementwise("swiglu", OpKind::Activation, Shard::TpLocal, 3 * ffn_act,
                              5 * ffn_act));
  } else {
    ops.push_back(elementwise("gelu", OpKind::Activation, Shard::TpLocal, 2 * ffn_act,
                              3 * ffn_act));
  }
  ops.push_back(gemm(m.activation == Activation::SwiGLU ? "mlp_down" : "mlp_fc2", Shard::Row,
                     tokens, m.hidden, m.ffn_hidden));
  ops.push_back(elementwise("mlp_residual", OpKind::Elementwise, Shard::Replicated, 3.5 * act,
                            2.5 * act));
  return ops;
}

Op embedding_op(const ModelSpec& m, std::int64_t b, int elem_bytes) {
  const double act = static_cast<double>(b) * m.seq_len * m.hidden * elem_bytes;
  // Forward gathers rows (read + write); backward scatter-adds into the table.
  return elementwise("embedding", OpKind::Embedding, Shard::Replicated, 2 * act, 3 * act);
}

std::vector<Op> head_ops(const ModelSpec& m, std::int64_t b, int elem_bytes) {
  const std::int64_t tokens = b * m.seq_len;
  const double act = static_cast<double>(tokens) * m.hidden * elem_bytes;
  std::vector<Op> ops;
  ops.push_back(elementwise("final_norm", OpKind::Norm, Shard::Replicated, 2 * act, 3 * act));
  ops.push_back(gemm("lm_head", Shard::Column, tokens, m.vocab, m.hidden));
  // Vocab-parallel cross entropy as Megatron-LM runs it, unfused (megatron/core/
  // tensor_parallel/cross_entropy.py _VocabParallelCrossEntropy, and GPTModel's
  // compute_language_model_loss), per logit element with e = activation bytes:
  //  forward: transpose to [b, s, V] (read e, write e), .float() (read e, write 4), max
  //  (read 4), subtract the max (read 4, write 4), exp (read 4, write 4), sum (read 4),
  //  normalise (read 4, write 4, kept for backward) = 3e + 36 bytes;
  //  backward: scale the saved softmax by the incoming gradient (read 4, write 4), cast to e
  //  (read 4, write e), transpose back (read e, write e) = 3e + 12 bytes.
  const double logits = static_cast<double>(tokens) * static_cast<double>(m.vocab);
  ops.push_back(elementwise("loss", OpKind::Loss, Shard::TpLocal, logits * (3 * elem_bytes + 36),
                            logits * (3 * elem_bytes + 12)));
  return ops;
}

double model_flops_per_step(const ModelSpec& m, std::int64_t global_batch) {
  double f = 0;
  for (const Op& op : layer_ops(m, global_batch)) f += op.flops.total();
  f *= m.layers;
  for (const Op& op : head_ops(m, global_batch)) f += op.flops.total();
  return f;
}

double hardware_flops_per_step(const ModelSpec& m, std::int64_t global_batch, Recompute r) {
  double f = model_flops_per_step(m, global_batch);
  if (r == Recompute::None) return f;
  double extra = 0;
  for (const Op& op : layer_ops(m, global_batch)) {
    if (r == Recompute::Full || op.kind == OpKind::Attention) extra += op.flops.fwd;
  }
  return f + extra * m.layers;
}

}  // namespace trainsim::model
