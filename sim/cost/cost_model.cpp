#include "cost/cost_model.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>

namespace trainsim::cost {

namespace {

// Output tile shapes of common CUTLASS/cuBLAS tensor-core kernels.
constexpr std::array<GemmTile, 6> kTiles = {{{256, 128}, {128, 256}, {128, 128},
                                             {128, 64}, {64, 128}, {64, 64}}};

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

}  // namespace

double CostModel::gemm_seconds(std::int64_t m, std::int64_t n, std::int64_t k, hw::Dtype dtype,
                               std::int64_t batch, Epilogue epilogue, GemmTile* best) const {
  if (m <= 0 || n <= 0 || k <= 0 || batch <= 0) {
    throw std::invalid_argument("gemm: sizes must be > 0 (m=" + std::to_string(m) +
                                " n=" + std::to_string(n) + " k=" + std::to_string(k) + ")");
  }
  const double sms = gpu_.sm_count;
  const double rate = gpu_.peak_flops(dtype) * gpu_.gemm_efficiency(dtype);
  const double rate_per_sm = rate / sms;
  const double hbm = gpu_.hbm_bw * gpu_.hbm_efficiency;
  const double in_bytes = hw::dtype_bytes(dtype);
  // Operand bandwidth per SM: the L2 share, but never below what the largest tile needs to
  // run at the best-shape rate, since that rate (MAMF) was measured on such tiles (Hopper
  // feeds them with TMA multicast across CTA clusters, beyond plain L2 reads).
  const GemmTile& big = kTiles.front();
  const double feed_big =
      (big.tm + big.tn) * in_bytes * rate_per_sm / (2.0 * big.tm * big.tn);
  const double l2_per_sm =
      std::max((gpu_.l2_bw > 0 ? gpu_.l2_bw : 1.6 * gpu_.hbm_bw) / sms, feed_big);
  // Bytes of C moved per output element: a 16-bit store, an fp32 store, or a
  // read-modify-write when accumulating into fp32 or 16-bit main gradients.
  const double out_bytes = epilogue == Epilogue::AccumulateFp32 ? 8.0
                           : epilogue == Epilogue::Accumulate16 ? 4.0
                           : dtype == hw::Dtype::FP32          ? 4.0
                                                                : 2.0;
  double best_t = 0;
  for (const GemmTile& tile : kTiles) {
    const std::int64_t tiles = ceil_div(m, tile.tm) * ceil_div(n, tile.tn) * batch;
    const double waves = std::ceil(static_cast<double>(tiles) / sms);
    // The main loop is bound by the tensor cores or by feeding the A and B tiles from L2,
    // whichever is slower: small tiles have little reuse and starve on L2 bandwidth.
    const double mainloop =
        std::max(2.0 * tile.tm * tile.tn * static_cast<double>(k) / rate_per_sm,
                 (tile.tm + tile.tn) * static_cast<double>(k) * in_bytes / l2_per_sm);
    const double store = tile.tm * tile.tn * out_bytes / (hbm / sms);
    const double t = waves * (mainloop + store);
    if (best_t == 0 || t < best_t) {
      best_t = t;
      if (best != nullptr) *best = tile;
    }
  }
  const double md = static_cast<double>(m), nd = static_cast<double>(n), kd = static_cast<double>(k);
  const double roofline =
      static_cast<double>(batch) * ((md * kd + kd * nd) * in_bytes + md * nd * out_bytes) / hbm;
  return std::max({best_t, roofline, gpu_.kernel_launch_floor_s});
}

Time CostModel::gemm(std::int64_t m, std::int64_t n, std::int64_t k, hw::Dtype dtype,
                     std::int64_t batch, Epilogue epilogue) const {
  if (profile_ != nullptr && batch == 1) {
    if (auto t = profile_->gemm_seconds(dtype, m, n, k)) {
      ++pricing_.gemm.profile;
      // Profiles measure plain stores; an accumulating epilogue scales the measured time by
      // the built-in model's ratio for that shape.
      if (epilogue != Epilogue::Store) {
        *t *= gemm_seconds(m, n, k, dtype, batch, epilogue, nullptr) /
              gemm_seconds(m, n, k, dtype, batch, Epilogue::Store, nullptr);
      }
      return Time::from_seconds(*t);
    }
  }
  if (profile_ != nullptr) ++pricing_.gemm.builtin;
  return Time::from_seconds(gemm_seconds(m, n, k, dtype, batch, epilogue, nullptr));
}

GemmTile CostModel::gemm_tile(std::int64_t m, std::int64_t n, std::int64_t k,
                              hw::Dtype dtype) const {
  GemmTile t;
  (void)gemm_seconds(m, n, k, dtype, 1, Epilogue::Store, &t);
  return t;
}

double CostModel::attention_tflops(int seq, int head_dim, bool causal, bool backward) const {
  const hw::AttentionCurve* curve = nullptr;
  for (const auto& c : gpu_.attention) {
    if (c.causal != causal) continue;
    // The measured head dims are 64 and 128: take the nearest.
    if (curve == nullptr ||
        std::abs(c.head_dim - head_dim) < std::abs(curve->head_dim - head_dim)) {
      curve = &c;
    }
  }
  if (curve == nullptr || curve->seq.empty()) {
    throw std::invalid_argument("GPU " + gpu_.display_name + " has no attention measurements");
  }
  const auto& rates = backward ? curve->bwd_tflops : curve->fwd_tflops;
  const double x = std::log2(static_cast<double>(seq));
  if (seq <= curve->seq.front()) return rates.front();
  if (seq >= curve->seq.back()) return rates.back();
  for (std::size_t i = 1; i < curve->seq.size(); ++i) {
    if (seq <= curve->seq[i]) {
      const double x0 = std::log2(curve->seq[i - 1]), x1 = std::log2(curve->seq[i]);
      const double w = (x - x0) / (x1 - x0);
      return rates[i - 1] + w * (rates[i] - rates[i - 1]);
    }
  }
  return rates.back();
}

Time CostModel::attention(std::int64_t batch, int heads, int seq, int head_dim, bool causal,
                          bool backward) const {
  if (batch <= 0 || heads <= 0 || seq <= 0 || head_dim <= 0) {
    throw std::invalid_argument("attention: sizes must be > 0");
  }
  double flops = 4.0 * static_cast<double>(batch) * heads * static_cast<double>(seq) * seq *
                 head_dim;
  if (causal) flops /= 2;
  if (backward) flops *= 2.5;
  std::optional<double> measured;
  if (profile_ != nullptr) {
    // The full-wave rate of the measured points (their own wave quantization divided out),
    // so that the shape of a measured point is priced at its measured time.
    measured = profile_->attention_tflops(causal, head_dim, seq, backward, gpu_.sm_count);
    ++(measured ? pricing_.attention.profile : pricing_.attention.builtin);
  }
  const double rate = measured.value_or(attention_tflops(seq, head_dim, causal, backward)) * 1e12;
  // Wave quantization: one thread block per (sequence, head, 128-query block).
  const double wave_eff = hw::attention_wave_efficiency(batch, heads, seq, gpu_.sm_count);
  return Time::from_seconds(std::max(flops / (rate * wave_eff), gpu_.kernel_launch_floor_s));
}

Time CostModel::unfused_attention(std::int64_t batch, int heads, int seq, int head_dim,
                                  bool backward) const {
  // Scores and probabilities are [batch * heads, s, s] 16-bit tensors; masks are 1 byte.
  const std::int64_t bh = batch * heads;
  const double elems = static_cast<double>(bh) * seq * static_cast<double>(seq);
  const hw::Dtype dt = hw::Dtype::BF16;
  if (!backward) {
    // Q·K^T, scale-mask-softmax (read 2 + write 2 bytes), dropout (read 2, write 2 + mask 1),
    // P·V.
    return gemm(seq, seq, head_dim, dt, bh) + memory_bound(4 * elems) +
           memory_bound(5 * elems) + gemm(seq, head_dim, seq, dt, bh);
  }
  // dP = dO·V^T, dV = P^T·dO, dropout backward (read dP, mask; write), softmax backward (read
  // P, dP; write dS), dQ = dS·K, dK = dS^T·Q.
  return gemm(seq, seq, head_dim, dt, bh) + gemm(seq, head_dim, seq, dt, bh) +
         memory_bound(5 * elems) + memory_bound(6 * elems) + gemm(seq, head_dim, seq, dt, bh) +
         gemm(seq, head_dim, seq, dt, bh);
}

Time CostModel::attention_fwd(std::int64_t batch, int heads, int seq, int head_dim,
                              bool causal, AttentionImpl impl) const {
  if (impl == AttentionImpl::Unfused) return unfused_attention(batch, heads, seq, head_dim, false);
  return attention(batch, heads, seq, head_dim, causal, false);
}

Time CostModel::attention_bwd(std::int64_t batch, int heads, int seq, int head_dim,
                              bool causal, AttentionImpl impl) const {
  if (impl == AttentionImpl::Unfused) return unfused_attention(batch, heads, seq, head_dim, true);
  return attention(batch, heads, seq, head_dim, causal, true);
}

Time CostModel::memory_bound(double bytes) const {
  if (bytes < 0) throw std::invalid_argument("memory_bound: negative bytes");
  if (profile_ != nullptr) {
    // The measured copy kernel's time at this size (every memory-bound kernel streams).
    if (auto t = profile_->memory_seconds("copy", bytes)) {
      ++pricing_.memory_bound.profile;
      return Time::from_seconds(*t);
    }
    ++pricing_.memory_bound.builtin;
  }
  // Measured latency plus bytes at the streaming rate (GpuSpec::memory_kernel_latency_s); the
  // latency replaces the launch floor for memory-bound kernels.
  return Time::from_seconds(gpu_.memory_kernel_latency_s +
                            bytes / (gpu_.hbm_bw * gpu_.hbm_efficiency));
}

}  // namespace trainsim::cost
