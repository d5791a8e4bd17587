#include "model/memory.hpp"

#include <stdexcept>

namespace trainsim::model {

double activation_bytes_per_layer(const ModelSpec& m, std::int64_t b,
                                  const ActivationOptions& opt) {
  const double s = m.seq_len, h = m.hidden, a = m.heads, bd = static_cast<double>(b);
  const double t = opt.tp;
  const double sbh = s * bd * h;
  const double kv_frac = static_cast<double>(m.kv_heads) / m.heads;  // K, V size vs Q
  // Tensors outside the TP region (replicated across TP ranks unless SP shards them).
  const double outside_div = opt.sequence_parallel ? t : 1.0;
  if (opt.recompute == Recompute::Full) return 2.0 * sbh / outside_div;

  const bool selective = opt.recompute == Recompute::Selective;
  // Outside the TP region, bytes per sbh:
  //   attention: QKV input 2, output dropout mask 1; MLP: fc1 input 2, dropout mask 1;
  //   two norms' inputs 2 + 2. Recomputed norms do not keep their outputs (the QKV and fc1
  //   inputs).
  const double norm_outputs = selective && opt.modules.layernorm ? 0.0 : 2 + 2;
  double outside = (norm_outputs + 1 + 1 + 2 + 2) * sbh;
  // Inside the TP region (split over t):
  //   Q and K for Q·K^T (2 + 2·kv), V (2·kv), projection input 2, MLP tensors.
  double inside = (2 + 2 * kv_frac + 2 * kv_frac + 2) * sbh;
  if (m.mla.enabled()) {
    // Multi-head latent attention (Megatron-Core MLASelfAttention): Q and K of heads x
    // (qk_nope + qk_rope), V and the projection input of heads x v_head_dim, 2 bytes each;
    // mla_up_proj recompute keeps the latents instead of Q, K and V. The latents come from
    // down projections that TP does not split (sharded with SP like the layer input): the
    // q latent before and after its norm (2 + 2 bytes x q_lora), the kv latent with the rope
    // key (2 x (kv_lora + qk_rope)) and the normed kv latent (2 x kv_lora).
    const auto& a_mla = m.mla;
    const double sb = s * bd, heads = a, qk = a_mla.qk_nope_head_dim + a_mla.qk_rope_head_dim;
    const bool up_recomputed = selective && opt.modules.mla_up_proj;
    inside = ((up_recomputed ? 0.0 : 2 * heads * (2 * qk + a_mla.v_head_dim)) +
              2 * heads * a_mla.v_head_dim) * sb;
    outside += (4.0 * a_mla.q_lora_rank + 2.0 * (a_mla.kv_lora_rank + a_mla.qk_rope_head_dim) +
                2.0 * a_mla.kv_lora_rank) * sb;
  }
  const double mlp = !opt.with_mlp || (selective && opt.modules.mlp)
                         ? 0.0
                         : mlp_activation_bytes(m, m.ffn_hidden, b, 1);
  // Attention core: softmax output 2as²b, dropout mask as²b, dropout output 2as²b.
  const bool keep_core = (opt.recompute == Recompute::None ||
                          (selective && !opt.modules.core_attn)) &&
                         !opt.flash_attention;
  const double core = keep_core ? 5.0 * a * s * s * bd : 0.0;
  return outside / outside_div + (inside + mlp + core) / t;
}

double mlp_activation_bytes(const ModelSpec& m, double ffn, std::int64_t b, int tp,
                            bool act_recomputed) {
  const double sb = static_cast<double>(m.seq_len) * static_cast<double>(b);
  const double act_output = act_recomputed ? 0.0 : 2.0;  // the down / fc2 input
  const double per = m.activation == Activation::SwiGLU ? 2 + 2 + act_output  // gate, up
                                                        : 2 + act_output;     // act input
  return per * ffn * sb / tp;
}

StateMemory model_state_bytes(double params, int dp, int zero_stage, double grad_bytes) {
  if (dp < 1) throw std::invalid_argument("model_state_bytes: dp must be >= 1");
  if (!(grad_bytes > 0)) throw std::invalid_argument("model_state_bytes: grad_bytes must be > 0");
  if (zero_stage < 0 || zero_stage > 3) {
    throw std::invalid_argument("model_state_bytes: zero stage must be 0..3");
  }
  StateMemory mem;
  mem.weights = 2.0 * params;
  mem.gradients = grad_bytes * params;
  mem.optimizer = 12.0 * params;
  if (zero_stage >= 1) mem.optimizer /= dp;
  if (zero_stage >= 2) mem.gradients /= dp;
  if (zero_stage >= 3) mem.weights /= dp;
  return mem;
}

}  // namespace trainsim::model
