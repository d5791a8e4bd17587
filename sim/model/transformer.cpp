#include "model/transformer.hpp"

#include <cmath>
#include <stdexcept>

#include "core/error.hpp"

namespace trainsim::model {

const char* activation_name(Activation a) { return a == Activation::GeLU ? "gelu" : "swiglu"; }
const char* norm_name(Norm n) { return n == Norm::LayerNorm ? "layernorm" : "rmsnorm"; }
const char* routing_name(Routing r) {
  switch (r) {
    case Routing::Balanced: return "balanced";
    case Routing::Uniform: return "uniform";
    case Routing::Zipf: return "zipf";
    case Routing::Imbalance: return "imbalance";
  }
  return "?";
}
const char* recompute_name(Recompute r) {
  switch (r) {
    case Recompute::None: return "none";
    case Recompute::Selective: return "selective";
    case Recompute::Full: return "full";
  }
  return "?";
}

bool* recompute_module_flag(RecomputeModules& m, std::string_view name) {
  if (name == "core_attn") return &m.core_attn;
  if (name == "mlp") return &m.mlp;
  if (name == "moe") return &m.moe;
  if (name == "moe_act") return &m.moe_act;
  if (name == "layernorm") return &m.layernorm;
  if (name == "shared_experts") return &m.shared_experts;
  if (name == "mla_up_proj") return &m.mla_up_proj;
  return nullptr;
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
  if (head_size == 0 && hidden % heads != 0) {
    throw InputError("model.heads", "model.heads (" + std::to_string(heads) +
                                         ") must divide model.hidden (" +
                                         std::to_string(hidden) + ")");
  }
  if (heads % kv_heads != 0) {
    throw InputError("model.kv_heads", "model.kv_heads (" + std::to_string(kv_heads) +
                                            ") must divide model.heads (" +
                                            std::to_string(heads) + ")");
  }
  if (moe.enabled()) {
    positive("moe.top_k", moe.top_k);
    positive("moe.expert_ffn_hidden", moe.expert_ffn_hidden);
    positive("moe.layer_freq", moe.layer_freq);
    if (moe.top_k > moe.experts) {
      throw InputError("model.moe.top_k", "model.moe.top_k (" + std::to_string(moe.top_k) +
                                              ") exceeds model.moe.experts (" +
                                              std::to_string(moe.experts) + ")");
    }
    if (moe.first_dense_layers < 0 || moe.first_dense_layers >= layers) {
      throw InputError("model.moe.first_dense_layers",
                       "model.moe.first_dense_layers must be in [0, layers)");
    }
    if (moe.shared_experts < 0) {
      throw InputError("model.moe.shared_experts", "model.moe.shared_experts must be >= 0");
    }
    if (moe.shared_experts == 0 && moe.shared_ffn_hidden > 0) {
      throw InputError("model.moe.shared_ffn_hidden",
                       "model.moe.shared_ffn_hidden (" + std::to_string(moe.shared_ffn_hidden) +
                           ") sizes shared experts, but model.moe.shared_experts is 0");
    }
  }
  if (mtp_layers < 0) {
    throw InputError("model.mtp_layers", "model.mtp_layers must be >= 0 (got " +
                                             std::to_string(mtp_layers) + ")");
  }
  if (mla.enabled()) {
    positive("mla.kv_lora_rank", mla.kv_lora_rank);
    positive("mla.qk_nope_head_dim", mla.qk_nope_head_dim);
    positive("mla.qk_rope_head_dim", mla.qk_rope_head_dim);
    positive("mla.v_head_dim", mla.v_head_dim);
  }
}

std::int64_t ModelSpec::qkv_width() const {
  if (mla.enabled()) {
    // Parameters of q_down (h x q_lora) [or q (h x heads·qk) without q_lora], q_up, kv_down
    // (h x (kv_lora + rope)) and kv_up (kv_lora x heads·(nope + v)), expressed as a width.
    const double h = hidden, H = heads;
    const double qk = mla.qk_nope_head_dim + mla.qk_rope_head_dim;
    const double q = mla.q_lora_rank > 0 ? h * mla.q_lora_rank + mla.q_lora_rank * H * qk
                                         : h * H * qk;
    const double kv = h * (mla.kv_lora_rank + mla.qk_rope_head_dim) +
                      static_cast<double>(mla.kv_lora_rank) * H *
                          (mla.qk_nope_head_dim + mla.v_head_dim);
    return static_cast<std::int64_t>(std::llround((q + kv) / h));
  }
  return static_cast<std::int64_t>(heads + 2 * kv_heads) * head_dim();
}

std::int64_t ModelSpec::attn_out_width() const {
  return static_cast<std::int64_t>(heads) * (mla.enabled() ? mla.v_head_dim : head_dim());
}

int ModelSpec::core_head_dim() const {
  if (!mla.enabled()) return head_dim();
  return (mla.qk_nope_head_dim + mla.qk_rope_head_dim + mla.v_head_dim) / 2;
}

int ModelSpec::moe_layers() const {
  int n = 0;
  for (int i = 0; i < layers; ++i) n += is_moe_layer(i) ? 1 : 0;
  return n;
}

double ModelSpec::attention_params() const {
  const double h = hidden;
  const double norms = (norm == Norm::LayerNorm ? 4.0 : 2.0) * h;
  const double biases = bias ? static_cast<double>(qkv_width()) + h : 0.0;
  return h * static_cast<double>(qkv_width()) + static_cast<double>(attn_out_width()) * h +
         norms + biases;
}

double ModelSpec::expert_params() const {
  const double mats = activation == Activation::SwiGLU ? 3.0 : 2.0;
  return static_cast<double>(moe.experts) * mats * hidden * moe.expert_ffn_hidden;
}

double ModelSpec::moe_mlp_params() const {
  const double mats = activation == Activation::SwiGLU ? 3.0 : 2.0;
  const double router = moe.experts > 1 ? static_cast<double>(hidden) * moe.experts : 0.0;
  return router + expert_params() + mats * hidden * static_cast<double>(moe.shared_ffn());
}

double ModelSpec::params_of_layer(int i) const {
  return is_moe_layer(i) ? attention_params() + moe_mlp_params() : params_per_layer();
}

double ModelSpec::params_per_layer() const {
  const double mlp = (activation == Activation::SwiGLU ? 3.0 : 2.0) * hidden * ffn_hidden;
  const double mlp_biases =
      bias ? (activation == Activation::SwiGLU ? 2.0 : 1.0) * ffn_hidden + hidden : 0.0;
  return attention_params() + mlp + mlp_biases;
}

double ModelSpec::embedding_params() const { return static_cast<double>(vocab) * hidden; }

double ModelSpec::head_params() const {
  const double final_norm = (norm == Norm::LayerNorm ? 2.0 : 1.0) * hidden;
  return (tied_embeddings ? 0.0 : static_cast<double>(vocab) * hidden) + final_norm;
}

double ModelSpec::mtp_extra_params() const {
  const double norm_weights = (norm == Norm::LayerNorm ? 2.0 : 1.0) * hidden;
  return 2.0 * hidden * static_cast<double>(hidden) + 3.0 * norm_weights;
}

double ModelSpec::mtp_params() const {
  return mtp_layers * (params_of_layer(layers) + mtp_extra_params());
}

double ModelSpec::total_params() const {
  double p = 0;
  for (int i = 0; i < layers; ++i) p += params_of_layer(i);
  return p + embedding_params() + head_params() + mtp_params();
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
  std::vector<Op> ops;
  // Norm: read x, write y (+ stats); backward reads dy, x and writes dx.
  ops.push_back(elementwise("attn_norm", OpKind::Norm, Shard::Replicated, 2 * act, 3 * act));
  ops.push_back(gemm("qkv", Shard::Column, tokens, m.qkv_width(), m.hidden));
  ops.back().bias = m.bias;
  ops.back().bias_add_kernel = m.bias;
  Op attn;
  attn.name = "attention";
  attn.kind = OpKind::Attention;
  attn.shard = Shard::Heads;
  attn.batch = b;
  attn.heads = m.heads;
  attn.kv_heads = m.kv_heads;
  attn.seq = m.seq_len;
  attn.head_dim = m.core_head_dim();
  attn.causal = m.causal;
  // Q·K^T and P·V: 2 GEMMs of 2·b·s²·heads·d FLOPs each (heads·d = h for a GPT shape),
  // counted without causal halving.
  const double core = 4.0 * static_cast<double>(b) * m.seq_len * static_cast<double>(m.seq_len) *
                      static_cast<double>(m.heads) * m.core_head_dim();
  attn.flops = {core, 2 * core, 0};
  ops.push_back(attn);
  ops.push_back(gemm("proj", Shard::Row, tokens, m.hidden, m.attn_out_width()));
  ops.back().bias = m.bias;
  // Bias-dropout-add: read two tensors and the mask, write one. Backward: read the gradient
  // and the mask, write the branch's gradient (2.5), then autograd accumulates the two
  // gradients of the layer input, which feeds both the norm and this residual add (PyTorch's
  // engine sums them in one add kernel: read 2, write 1; torch/csrc/autograd/input_buffer.cpp).
  constexpr double kResidualBwd = 2.5 + 3.0;
  ops.push_back(elementwise("attn_residual", OpKind::Elementwise, Shard::Replicated, 3.5 * act,
                            kResidualBwd * act));
  ops.push_back(elementwise("mlp_norm", OpKind::Norm, Shard::Replicated, 2 * act, 3 * act));
  const std::int64_t fc1_out =
      m.activation == Activation::SwiGLU ? 2 * static_cast<std::int64_t>(m.ffn_hidden)
                                         : m.ffn_hidden;
  ops.push_back(gemm(m.activation == Activation::SwiGLU ? "mlp_gate_up" : "mlp_fc1",
                     Shard::Column, tokens, fc1_out, m.hidden));
  ops.back().bias = m.bias;
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
  ops.back().bias = m.bias;
  ops.push_back(elementwise("mlp_residual", OpKind::Elementwise, Shard::Replicated, 3.5 * act,
                            kResidualBwd * act));
  return ops;
}

std::vector<Op> moe_mlp_ops(const ModelSpec& m, std::int64_t b, int elem_bytes) {
  const std::int64_t tokens = b * m.seq_len;
  const double e = elem_bytes;
  const bool swiglu = m.activation == Activation::SwiGLU;
  std::vector<Op> ops;
  if (m.moe.experts > 1) ops.push_back(gemm("router", Shard::Replicated, tokens, m.moe.experts, m.hidden));
  auto mlp = [&](const std::string& prefix, std::int64_t rows, std::int64_t ffn) {
    ops.push_back(gemm(prefix + "_in", Shard::Column, rows, swiglu ? 2 * ffn : ffn, m.hidden));
    const double a = static_cast<double>(rows) * static_cast<double>(ffn) * e;
    ops.push_back(elementwise(prefix + "_act", OpKind::Activation, Shard::TpLocal,
                              (swiglu ? 3 : 2) * a, (swiglu ? 5 : 3) * a));
    ops.push_back(gemm(prefix + "_out", Shard::Row, rows, m.hidden, ffn));
  };
  if (m.moe.shared_ffn() > 0) mlp("shared", tokens, m.moe.shared_ffn());
  mlp("expert", tokens * m.moe.top_k, m.moe.expert_ffn_hidden);
  return ops;
}

std::vector<Op> layer_ops_at(const ModelSpec& m, int i, std::int64_t b, int elem_bytes) {
  std::vector<Op> ops = layer_ops(m, b, elem_bytes);
  if (!m.is_moe_layer(i)) return ops;
  // Keep attention_norm .. mlp_norm, replace the MLP, keep the final residual.
  const Op residual = ops.back();
  ops.resize(6);
  for (Op& op : moe_mlp_ops(m, b, elem_bytes)) ops.push_back(std::move(op));
  ops.push_back(residual);
  return ops;
}

std::vector<Op> mla_up_ops(const ModelSpec& m, std::int64_t b) {
  std::vector<Op> ops;
  if (!m.mla.enabled()) return ops;
  const std::int64_t tokens = b * m.seq_len;
  const std::int64_t H = m.heads;
  // Without a q latent Q comes straight from the layer input: its one projection re-runs.
  const std::int64_t q_in = m.mla.q_lora_rank > 0 ? m.mla.q_lora_rank : m.hidden;
  ops.push_back(gemm(m.mla.q_lora_rank > 0 ? "mla_q_up" : "mla_q_proj", Shard::Column, tokens,
                     H * (m.mla.qk_nope_head_dim + m.mla.qk_rope_head_dim), q_in));
  ops.push_back(gemm("mla_kv_up", Shard::Column, tokens,
                     H * (m.mla.qk_nope_head_dim + m.mla.v_head_dim), m.mla.kv_lora_rank));
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

std::vector<Op> mtp_ops(const ModelSpec& m, std::int64_t b, int elem_bytes) {
  const std::int64_t tokens = b * m.seq_len;
  const double act = static_cast<double>(tokens) * m.hidden * elem_bytes;
  std::vector<Op> ops;
  ops.push_back(elementwise("mtp_enorm", OpKind::Norm, Shard::Replicated, 2 * act, 3 * act));
  ops.push_back(elementwise("mtp_hnorm", OpKind::Norm, Shard::Replicated, 2 * act, 3 * act));
  ops.push_back(gemm("mtp_eh_proj", Shard::Column, tokens, m.hidden, 2 * static_cast<std::int64_t>(m.hidden)));
  return ops;
}

double cp_attention_fwd_flops(const ModelSpec& m, std::int64_t b, int cp, int rank,
                              bool load_balanced) {
  const int n = load_balanced ? 2 * cp : cp;
  if (cp < 1 || rank < 0 || rank >= cp || m.seq_len % n != 0) {
    throw std::invalid_argument("cp_attention_fwd_flops: need 0 <= rank < cp and seq_len "
                                "divisible by the chunk count");
  }
  const double c = static_cast<double>(m.seq_len) / n;
  const double pair = 4.0 * static_cast<double>(b) * c * c * m.heads * m.core_head_dim();
  std::vector<int> chunks{rank};
  if (load_balanced) chunks.push_back(2 * cp - 1 - rank);
  double blocks = 0;
  for (int i : chunks) blocks += m.causal ? i + 0.5 : n;
  return blocks * pair;
}

double model_flops_per_step(const ModelSpec& m, std::int64_t global_batch) {
  double dense = 0, moe = 0;
  for (const Op& op : layer_ops(m, global_batch)) dense += op.flops.total();
  if (m.moe.enabled()) {
    for (const Op& op : layer_ops_at(m, m.moe.first_dense_layers, global_batch)) {
      moe += op.flops.total();
    }
  }
  const int n_moe = m.moe_layers();
  double f = dense * (m.layers - n_moe) + moe * n_moe;
  double head = 0;
  for (const Op& op : head_ops(m, global_batch)) head += op.flops.total();
  f += head;
  if (m.mtp_layers > 0) {
    double module = m.mtp_is_moe() ? moe : dense;
    module += head;
    for (const Op& op : mtp_ops(m, global_batch)) module += op.flops.total();
    f += m.mtp_layers * module;
  }
  return f;
}

namespace {
/// Whether selective recompute with `mods` repeats `op` of a layer (MoE or dense) forward.
bool recomputed(const Op& op, bool moe_layer, const RecomputeModules& mods) {
  if (op.kind == OpKind::Attention) return mods.core_attn;
  const bool mlp_op = op.name.rfind("mlp_", 0) == 0 || op.kind == OpKind::Activation;
  const bool moe_op = op.name == "router" || op.name.rfind("expert_", 0) == 0 ||
                      op.name.rfind("shared_", 0) == 0;
  if (moe_layer && moe_op) {
    return mods.moe || (mods.shared_experts && op.name.rfind("shared_", 0) == 0);
  }
  return !moe_layer && mlp_op && mods.mlp;
}
}  // namespace

double hardware_flops_per_step(const ModelSpec& m, std::int64_t global_batch, Recompute r,
                               const RecomputeModules& modules) {
  double f = model_flops_per_step(m, global_batch);
  if (r == Recompute::None) return f;
  auto recompute_flops = [&](int layer) {
    double x = 0;
    const bool moe_layer = layer >= 0 && m.is_moe_layer(layer);
    for (const Op& op : layer_ops_at(m, layer, global_batch)) {
      if (r == Recompute::Full || recomputed(op, moe_layer, modules)) x += op.flops.fwd;
    }
    // mla_up_proj: the up projections again (full recompute repeated the whole QKV above).
    if (r == Recompute::Selective && modules.mla_up_proj) {
      for (const Op& op : mla_up_ops(m, global_batch)) x += op.flops.fwd;
    }
    return x;
  };
  const int n_moe = m.moe_layers();
  double extra = recompute_flops(m.moe.enabled() ? -1 : 0) * (m.layers - n_moe);
  if (n_moe > 0) extra += recompute_flops(m.moe.first_dense_layers) * n_moe;
  // MTP layers are recomputed like the decoder's (the builder runs them through the same
  // layer code).
  if (m.mtp_layers > 0) extra += recompute_flops(m.layers) * m.mtp_layers;
  return f + extra;
}

double causal_masked_flops_per_step(const ModelSpec& m, std::int64_t global_batch, Recompute r,
                                    const RecomputeModules& modules) {
  if (!m.causal) return 0;
  auto attention = [&](int layer) {
    double x = 0;
    for (const Op& op : layer_ops_at(m, layer, global_batch)) {
      if (op.kind != OpKind::Attention) continue;
      x += op.flops.total();
      if (r == Recompute::Full || (r == Recompute::Selective && modules.core_attn)) {
        x += op.flops.fwd;
      }
    }
    return x;
  };
  const int n_moe = m.moe_layers();
  double f = attention(m.moe.enabled() ? -1 : 0) * (m.layers - n_moe);
  if (n_moe > 0) f += attention(m.moe.first_dense_layers) * n_moe;
  f += attention(m.layers) * m.mtp_layers;
  return f / 2;
}

}  // namespace trainsim::model
