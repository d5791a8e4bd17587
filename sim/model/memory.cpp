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

  // Outside the TP region, bytes per sbh:
  //   attention: QKV input 2, output dropout mask 1; MLP: fc1 input 2, dropout mask 1;
  //   two norms' inputs 2 + 2.
  const double outside = (2 + 1 + 2 + 1 + 2 + 2) * sbh;
  // Inside the TP region (split over t):
  //   Q and K for Q·K^T (2 + 2·kv), V (2·kv), projection input 2, MLP tensors.
  const double ffn_ratio = static_cast<double>(m.ffn_hidden) / h;
  const double mlp_inside = m.activation == Activation::SwiGLU
                                ? (2 + 2 + 2) * ffn_ratio  // gate, up, down input
                                : (2 + 2) * ffn_ratio;     // GeLU input, fc2 input
  const double inside = (2 + 2 * kv_frac + 2 * kv_frac + 2 + mlp_inside) * sbh;
  // Attention core: softmax output 2as²b, dropout mask as²b, dropout output 2as²b.
  const bool keep_core = opt.recompute == Recompute::None && !opt.flash_attention;
  const double core = keep_core ? 5.0 * a * s * s * bd : 0.0;
  return outside / outside_div + (inside + core) / t;
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
