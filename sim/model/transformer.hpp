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
#include <string_view>
#include <vector>

namespace trainsim::model {

enum class Activation { GeLU, SwiGLU };
enum class Norm { LayerNorm, RMSNorm };
enum class Recompute { None, Selective, Full };

/// What selective recompute re-runs in backward instead of keeping for it: Megatron-Core's
/// `--recompute-modules` (TransformerConfig.recompute_modules, core_r0.13; default
/// ["core_attn"], Korthikanti et al. 2022's selective recompute). core_attn: the attention
/// core; mlp: the dense layers' MLP (its TP collectives included); moe: the MoE layers' whole
/// MLP block (router, dispatch and combine all-to-alls, experts, shared experts); moe_act: the
/// routed experts' activation function; layernorm: the two norms; shared_experts: the shared
/// experts; mla_up_proj: multi-head latent attention's up projections (Q from the q latent,
/// K and V from the kv latent), re-run from the kept latents (DeepSeek-V3 report §3.2.3,
/// "Recomputation of RMSNorm and MLA Up-Projection").
struct RecomputeModules {
  bool core_attn = true, mlp = false, moe = false, moe_act = false, layernorm = false,
       shared_experts = false, mla_up_proj = false;
  bool operator==(const RecomputeModules&) const = default;
};

/// The flag of `modules` that Megatron-Core's module `name` sets ("core_attn", "mlp", "moe",
/// "moe_act", "layernorm", "shared_experts", "mla_up_proj"); nullptr for any other name.
bool* recompute_module_flag(RecomputeModules& modules, std::string_view name);

const char* activation_name(Activation a);
const char* norm_name(Norm n);
const char* recompute_name(Recompute r);

/// How tokens are routed to experts (sim/model/routing.hpp draws the counts).
/// Balanced: every expert gets exactly tokens x top_k / experts (remainder spread in order).
/// Uniform: each of the tokens x top_k choices picks an expert with probability 1/E (seeded).
/// Zipf: expert of popularity rank r is picked with probability proportional to r^-zipf_exponent,
/// the ranks shuffled per layer (seeded).
/// Imbalance: deterministic; the first EP rank's experts get `imbalance` x the mean load and
/// the rest share what is left equally.
enum class Routing { Balanced, Uniform, Zipf, Imbalance };
const char* routing_name(Routing r);

/// Mixture-of-experts MLP (Shazeer et al. 2017; Fedus et al. 2021 Switch Transformer for the
/// capacity factor; DeepSeek-V3 report for shared experts and dense first layers).
/// `experts` == 0 means a dense model.
struct MoeSpec {
  int experts = 0;              ///< routed experts E
  int top_k = 1;                ///< experts per token k
  int expert_ffn_hidden = 0;    ///< intermediate size of one routed expert
  int shared_experts = 0;       ///< always-active experts
  int shared_ffn_hidden = 0;    ///< intermediate size of all shared experts together (0: shared x expert_ffn_hidden)
  double capacity_factor = 0;   ///< 0: dropless; else per-expert capacity ceil(cf x T x k / E) per source rank
  int layer_freq = 1;           ///< every layer_freq-th layer (after the dense ones) is MoE
  int first_dense_layers = 0;   ///< leading dense layers (DeepSeek-V3: first_k_dense_replace)
  Routing routing = Routing::Balanced;
  double zipf_exponent = 1.0;
  double imbalance = 1.0;       ///< for Routing::Imbalance: max / mean tokens per EP rank
  /// Token permutation kernels: false (Megatron-Core's default) runs moe_utils.permute /
  /// unpermute as PyTorch ops (index_select, zeros + index_copy_, multiply by the routing
  /// probabilities, sum over k); true uses fused permute / unpermute kernels
  /// (`--moe-permute-fusion`, Transformer Engine; DeepSeek's own kernels) that move each row
  /// once.
  bool permute_fusion = false;

  [[nodiscard]] bool enabled() const { return experts > 0; }
  [[nodiscard]] int shared_ffn() const {
    return shared_ffn_hidden > 0 ? shared_ffn_hidden : shared_experts * expert_ffn_hidden;
  }
};

/// Multi-head latent attention (DeepSeek-V2/V3), approximated: the four low-rank projections
/// (q down/up, kv down/up) become one QKV GEMM with the same parameter count and FLOPs
/// (k = hidden, n = their parameters / hidden); the attention core runs at head dimension
/// (qk_nope + qk_rope + v) / 2, which gives its FLOPs 2·b·s²·heads·(qk + v) exactly.
/// `kv_lora_rank` == 0 means MLA is off.
struct MlaSpec {
  int q_lora_rank = 0, kv_lora_rank = 0, qk_nope_head_dim = 0, qk_rope_head_dim = 0,
      v_head_dim = 0;
  [[nodiscard]] bool enabled() const { return kv_lora_rank > 0; }
};

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
  /// The dense linear layers (QKV, projection, fc1, fc2) carry biases: GPT-2/3 and
  /// Megatron-LM's GPT (`add_bias_linear`, on by default); Llama-family models have none.
  /// MoE experts and the LM head never do here.
  bool bias = false;
  int head_size = 0;       ///< explicit head dimension (Qwen3: 128); 0: hidden / heads
  /// Multi-token prediction depth D (DeepSeek-V3 report §2.2, Eq. 21-25; Megatron-Core
  /// `mtp_num_layers`; Hugging Face `num_nextn_predict_layers`). MTP module k (1..D) embeds
  /// the tokens shifted by k with the shared embedding, normalises them and the previous
  /// depth's hidden state (two RMSNorms), projects their concatenation 2h -> h (eh_proj),
  /// runs one transformer layer of the last layer's kind and predicts with its own final
  /// norm and the shared output head. The modules sit after the last layer (on the last
  /// pipeline stage, as Megatron-Core places them); their layers have the indices
  /// layers .. layers + D - 1. 0: no MTP.
  int mtp_layers = 0;
  MoeSpec moe;
  MlaSpec mla;

  [[nodiscard]] int head_dim() const { return head_size > 0 ? head_size : hidden / heads; }
  /// Output width of the QKV GEMM: (heads + 2 kv_heads) x head_dim, or MLA's equivalent.
  [[nodiscard]] std::int64_t qkv_width() const;
  /// Input width of the output projection: heads x head_dim (MLA: heads x v_head_dim).
  [[nodiscard]] std::int64_t attn_out_width() const;
  /// Head dimension the attention core runs at (MLA: (qk_nope + qk_rope + v) / 2).
  [[nodiscard]] int core_head_dim() const;
  /// Whether layer `i` (0-based) has an MoE MLP. An MTP layer (i >= layers) is of the last
  /// layer's kind (Megatron-Core's FLOP count, `last_layer_is_moe`).
  [[nodiscard]] bool is_moe_layer(int i) const {
    if (i >= layers && layers > 0) i = layers - 1;
    return moe.enabled() && i >= moe.first_dense_layers &&
           (i - moe.first_dense_layers) % moe.layer_freq == 0;
  }
  /// MoE layers among the `layers` decoder layers (MTP layers not counted).
  [[nodiscard]] int moe_layers() const;
  /// Whether the MTP modules' layers are MoE layers (the last layer's kind).
  [[nodiscard]] bool mtp_is_moe() const { return is_moe_layer(layers); }
  /// Weights of one MTP module besides its transformer layer: the eh_proj matrix (2h x h)
  /// and three norms (enorm, hnorm, final norm). The embedding and output head are shared.
  [[nodiscard]] double mtp_extra_params() const;
  /// Attention and norm weights of one layer (no MLP).
  [[nodiscard]] double attention_params() const;
  /// Router, routed experts and shared experts of one MoE layer.
  [[nodiscard]] double moe_mlp_params() const;
  /// Routed experts of one MoE layer (the part expert parallelism shards).
  [[nodiscard]] double expert_params() const;
  /// Throws std::invalid_argument naming the first bad field (non-positive sizes, heads not
  /// dividing hidden, kv_heads not dividing heads).
  void validate() const;
  /// Weights of one dense transformer layer (QKV, projection, MLP, two norms); no biases.
  [[nodiscard]] double params_per_layer() const;
  /// Weights of layer `i` (MoE layers: attention, router, all experts).
  [[nodiscard]] double params_of_layer(int i) const;
  /// Input embedding (V·h).
  [[nodiscard]] double embedding_params() const;
  /// All weights of the MTP modules: D x (their layer + mtp_extra_params()).
  [[nodiscard]] double mtp_params() const;
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
  /// GEMMs: the layer has a bias on its n outputs (ModelSpec::bias). Without epilogue fusion
  /// its gradient is a separate column reduction over dY [m x n].
  bool bias = false;
  /// With `bias`: the forward adds it in a separate kernel (read + write [m x n]) unless fused
  /// into the GEMM epilogue. Megatron-LM hands the biases of fc1, proj and fc2 to its fused
  /// bias-GeLU and bias-dropout-add kernels instead, so only QKV sets this.
  bool bias_add_kernel = false;
};

/// The ops of one transformer layer in forward order: norm, qkv, attention, proj, residual,
/// norm, mlp_in (fc1, or gate+up for SwiGLU), act, mlp_out (fc2), residual.
/// `b` = micro-batch size (sequences), `elem_bytes` = activation element size (2 for 16-bit).
std::vector<Op> layer_ops(const ModelSpec& m, std::int64_t b, int elem_bytes = 2);
/// The MLP ops of an MoE layer, unsharded, for a micro-batch of b sequences with every
/// token routed (dropless): router GEMM [T x h]·[h x E] (none with one expert: every token
/// goes to it), shared-expert MLP, routed-expert MLP over T·k token rows, in forward order:
/// router, shared_in, shared_act, shared_out, expert_in, expert_act, expert_out.
std::vector<Op> moe_mlp_ops(const ModelSpec& m, std::int64_t b, int elem_bytes = 2);
/// The ops of layer `i`: layer_ops with the MLP replaced by moe_mlp_ops on MoE layers.
std::vector<Op> layer_ops_at(const ModelSpec& m, int i, std::int64_t b, int elem_bytes = 2);
/// MLA's up projections, unsharded, for a micro-batch of b sequences (what mla_up_proj
/// recompute re-runs; their FLOPs are part of the "qkv" op's): q_up [b·s x q_lora]·[q_lora x
/// heads·(qk_nope + qk_rope)] (without a q latent, q_lora_rank 0, Q's own projection
/// "mla_q_proj" from the hidden size) and kv_up [b·s x kv_lora]·[kv_lora x
/// heads·(qk_nope + v)], both column-parallel. Empty without MLA.
std::vector<Op> mla_up_ops(const ModelSpec& m, std::int64_t b);
/// Embedding lookup (first pipeline stage).
Op embedding_op(const ModelSpec& m, std::int64_t b, int elem_bytes = 2);
/// Final norm, LM head GEMM (vocab-parallel) and cross-entropy loss (last stage).
std::vector<Op> head_ops(const ModelSpec& m, std::int64_t b, int elem_bytes = 2);
/// The ops of one MTP module besides its transformer layer and its head (which are
/// layer_ops_at(m, m.layers, b) and head_ops), in forward order: enorm on the shifted
/// tokens' embedding, hnorm on the previous depth's hidden state (memory-bound norms), and
/// eh_proj, the GEMM [b·s x 2h]·[2h x h] on their concatenation (Megatron-Core
/// MultiTokenPredictionLayer: a column-parallel linear). The shifted tokens' embedding
/// lookup is embedding_op.
std::vector<Op> mtp_ops(const ModelSpec& m, std::int64_t b, int elem_bytes = 2);

/// Forward attention-core FLOPs one context-parallel rank computes for a micro-batch of b
/// sequences (Q·K^T and P·V, 2 FLOPs per multiply-add, the causal mask honoured: a query
/// chunk attends to the earlier chunks in full and to its own chunk half). The sequence is
/// cut into 2·cp chunks and rank r holds chunks r and 2cp-1-r when `load_balanced`
/// (Megatron-Core / Transformer Engine causal load balancing), else into cp contiguous
/// chunks with rank r holding chunk r. Over all ranks the sum is the whole sequence's causal
/// attention, 2·b·s²·heads·d. Throws std::invalid_argument unless 0 <= rank < cp and the
/// chunk count divides seq_len.
double cp_attention_fwd_flops(const ModelSpec& m, std::int64_t b, int cp, int rank,
                              bool load_balanced);

/// Model FLOPs of one training step over `global_batch` sequences (Megatron convention).
/// MoE layers count the activated experts only (k routed + shared) and the router. Each MTP
/// module adds its layer, eh_proj and one more LM head (the GEMMs of mtp_ops and head_ops).
double model_flops_per_step(const ModelSpec& m, std::int64_t global_batch);
/// Hardware FLOPs: model FLOPs plus what recompute repeats. Full: one more forward of every
/// layer (not of the head): Narayanan et al. 2021 Eq. 3, 96·B·s·l·h²(1 + s/6h + V/16lh).
/// Selective: one more attention core forward (Korthikanti et al. 2022 §5).
/// Selective with `modules`: one more forward of each recomputed module's GEMMs and core
/// (mla_up_proj: MLA's up projections, mla_up_ops).
double hardware_flops_per_step(const ModelSpec& m, std::int64_t global_batch, Recompute r,
                               const RecomputeModules& modules = {});
/// The attention-core FLOPs that a causal mask skips in one step: half of Q·K^T and P·V in
/// forward, backward and a recomputed forward (selective or full recompute), which the
/// model-FLOP convention above counts in full (Megatron-LM, PaLM Appendix B) while causal
/// kernels (FlashAttention) skip the masked blocks. 0 when the model is not causal.
double causal_masked_flops_per_step(const ModelSpec& m, std::int64_t global_batch, Recompute r,
                                    const RecomputeModules& modules = {});

}  // namespace trainsim::model
