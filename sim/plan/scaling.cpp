#include "plan/scaling.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace trainsim::plan {

std::string_view law_name(Law l) {
  switch (l) {
    case Law::Chinchilla: return "chinchilla";
    case Law::Epoch: return "epoch";
    case Law::Kaplan: return "kaplan";
  }
  return "?";
}

Law parse_law(std::string_view name) {
  for (Law l : {Law::Chinchilla, Law::Epoch, Law::Kaplan}) {
    if (law_name(l) == name) return l;
  }
  throw InputError("--law", "--law: unknown law \"" + std::string(name) +
                                "\" (valid: chinchilla, epoch, kaplan)");
}

LossFit loss_fit(Law l) {
  switch (l) {
    case Law::Chinchilla: return {1.69, 406.4, 410.7, 0.34, 0.28};
    case Law::Epoch: return {1.8172, 482.01, 2085.43, 0.3478, 0.3658};
    case Law::Kaplan: break;
  }
  throw std::invalid_argument("the Kaplan law has no Chinchilla-form loss fit");
}

double loss(const LossFit& f, double params, double tokens) {
  if (!(params > 0) || !(tokens > 0)) {
    throw std::invalid_argument("loss: parameters and tokens must be positive");
  }
  return f.E + f.A / std::pow(params, f.alpha) + f.B / std::pow(tokens, f.beta);
}

double optimal_batch_tokens(double flops) {
  if (!(flops > 0) || !std::isfinite(flops)) {
    throw std::invalid_argument("optimal_batch_tokens: flops must be finite and > 0");
  }
  return 0.2920 * std::pow(flops, 0.3271);
}

std::int64_t optimal_global_batch(double flops, int seq_len) {
  if (seq_len < 1) throw std::invalid_argument("optimal_global_batch: seq_len must be >= 1");
  const double sequences = optimal_batch_tokens(flops) / seq_len;
  const double e = std::round(std::log2(std::max(1.0, sequences)));
  return std::int64_t{1} << static_cast<int>(std::min(e, 40.0));  // 2^40: kMaxGlobalBatch
}

Allocation compute_optimal(Law l, double flops) {
  if (!(flops > 0)) throw std::invalid_argument("compute_optimal: flops must be positive");
  Allocation a;
  a.flops = flops;
  if (l == Law::Kaplan) {
    constexpr double kPfDay = 1e15 * 86400.0;  // 8.64e19 FLOP
    a.params = 1.3e9 * std::pow(flops / kPfDay, 0.73);
  } else {
    const LossFit f = loss_fit(l);
    const double g = std::pow(f.alpha * f.A / (f.beta * f.B), 1.0 / (f.alpha + f.beta));
    a.params = g * std::pow(flops / 6.0, f.beta / (f.alpha + f.beta));
  }
  a.tokens = flops / (6.0 * a.params);
  return a;
}

Allocation compute_optimal_numeric(const LossFit& f, double flops) {
  if (!(flops > 0)) throw std::invalid_argument("compute_optimal_numeric: flops must be positive");
  auto objective = [&](double log_n) {
    const double n = std::exp(log_n);
    return loss(f, n, flops / (6.0 * n));
  };
  double lo = std::log(1e3), hi = std::log(1e16);
  const double phi = (std::sqrt(5.0) - 1.0) / 2.0;
  double x1 = hi - phi * (hi - lo), x2 = lo + phi * (hi - lo);
  double f1 = objective(x1), f2 = objective(x2);
  for (int i = 0; i < 200 && hi - lo > 1e-12; ++i) {
    if (f1 < f2) {
      hi = x2;
      x2 = x1;
      f2 = f1;
      x1 = hi - phi * (hi - lo);
      f1 = objective(x1);
    } else {
      lo = x1;
      x1 = x2;
      f1 = f2;
      x2 = lo + phi * (hi - lo);
      f2 = objective(x2);
    }
  }
  Allocation a;
  a.flops = flops;
  a.params = std::exp(0.5 * (lo + hi));
  a.tokens = flops / (6.0 * a.params);
  return a;
}

ParamCount param_count(Law l) {
  return l == Law::Kaplan ? ParamCount::NonEmbedding : ParamCount::Total;
}

double counted_params(const model::ModelSpec& m, ParamCount c) {
  if (c == ParamCount::Total) return m.total_params();
  const double untied_head = m.tied_embeddings ? 0.0 : m.embedding_params();
  return m.total_params() - m.embedding_params() - untied_head;
}

model::ModelSpec model_for_params(double params, const std::string& name, ParamCount count) {
  if (!(params >= 1e6)) {
    throw std::invalid_argument("model_for_params: needs at least 1e6 parameters");
  }
  if (!(params <= kMaxShapeParams)) {
    throw std::invalid_argument("model_for_params: more than 1e14 parameters");
  }
  auto make = [&](int layers, int units) {
    model::ModelSpec m;
    m.name = name;
    m.layers = layers;
    m.hidden = units * 128;
    m.heads = units;
    m.kv_heads = m.heads;
    m.ffn_hidden = 4 * m.hidden;
    m.vocab = 51200;
    m.seq_len = 2048;
    m.activation = model::Activation::GeLU;
    m.norm = model::Norm::LayerNorm;
    return m;
  };
  // The candidates, the same whatever N is: hidden a multiple of 128 below 1024, 1536, and
  // a multiple of 1024 from 1024 up (heads = hidden / 128, a multiple of 8 from 2048, so TP
  // degrees up to 8 divide them); layers 2-12 or a multiple of 4 from 16 up (pipeline
  // degrees 2 and 4 divide them); hidden / layers within [64, 200] (Kaplan et al. 2020
  // Fig. 5: the loss is flat from 20 to 200; 64 keeps narrow-deep stacks out), from 32 below
  // hidden 4096 where the steps of 1024 are coarse (GPT-3 350M and 760M: 1024 / 24 = 43,
  // 1536 / 24 = 64), [96, 160] from 8192, or 2 layers for the narrowest hidden sizes. The
  // shape is the candidate nearest N in ratio: nearest on a fixed set is monotone, so a
  // larger N never gets a smaller model.
  constexpr double kMaxRatio = 200;
  auto layer_ok = [](long l) { return (l >= 2 && l <= 12) || (l >= 16 && l % 4 == 0); };
  model::ModelSpec best;
  double best_gap = std::numeric_limits<double>::infinity();
  // Heads: 1-8, 12 (hidden 1536, GPT-3 760M; TP 4 divides it), then multiples of 8.
  for (long u = 1; u <= 2048; u += u < 8 ? 1 : (u < 16 ? 4 : 8)) {
    const double h = static_cast<double>(u) * 128.0;
    // From hidden 8192 up, steps of 1024 are fine enough for a band around 128 (GPT-3 175B):
    // the shape keeps its aspect as N grows instead of jumping between the band's ends.
    const double min_ratio = h < 4096 ? 32 : (h < 8192 ? 64 : 96);
    const double max_ratio = h < 8192 ? kMaxRatio : 160;
    const long lo = std::max(2L, static_cast<long>(std::ceil(h / max_ratio)));
    const long hi = std::max(2L, static_cast<long>(std::floor(h / min_ratio)));
    // Parameters grow with the layers: the nearest of this hidden's are the allowed counts
    // on either side of the ideal one.
    const double embeddings = count == ParamCount::Total ? 2.0 * 51200.0 * h : 0.0;
    const double ideal = (params - embeddings) / (12.0 * h * h);
    long below = std::clamp(static_cast<long>(std::floor(ideal)), lo, hi);
    while (below > lo && !layer_ok(below)) --below;
    long above = below + 1;
    while (above < hi && !layer_ok(above)) ++above;
    for (long l : {below, above}) {
      if (l < lo || l > hi || !layer_ok(l)) continue;
      auto m = make(static_cast<int>(l), static_cast<int>(u));
      const double gap = std::abs(std::log(counted_params(m, count) / params));
      if (gap < best_gap) {
        best_gap = gap;
        best = std::move(m);
      }
    }
  }
  return best;
}

namespace {
model::ModelSpec shape(const char* name, int layers, int hidden, int heads, std::int64_t vocab) {
  model::ModelSpec m;
  m.name = name;
  m.layers = layers;
  m.hidden = hidden;
  m.heads = heads;
  m.kv_heads = heads;
  m.ffn_hidden = 4 * hidden;
  m.vocab = vocab;
  m.seq_len = 2048;
  return m;
}
}  // namespace

const std::vector<PublishedModel>& published_models() {
  // Parameters and tokens: Hoffmann et al. 2022 Table 1. Shapes: GPT-3 (Brown et al. 2020
  // Table 2.1, 50257-token vocabulary padded to 51200 as Megatron does), Jurassic-1 Jumbo
  // (Lieber et al. 2021: 76 layers, 13824, 96 heads, 256k vocabulary), Gopher (Rae et al.
  // 2021 Table 1: 80, 16384, 128 heads, 32k vocabulary), MT-NLG (Smith et al. 2022 §2: 105,
  // 20480, 128 heads), Chinchilla (Hoffmann et al. 2022 Table 4: 80, 8192, 64 heads, 32k).
  // LaMDA (Thoppilan et al. 2022 Table 27: 64 layers, d_model 8192, gated-GELU d_ff 65536,
  // 128 heads of 128) has attention wider than d_model, which ModelSpec cannot express; it is
  // modelled with 128 heads of 64 and a three-matrix (SwiGLU-cost) MLP: 120B of its 137B.
  // The table prints each shape's own parameter count next to the published one.
  static const std::vector<PublishedModel> v = [] {
    std::vector<PublishedModel> out = {
        {"LaMDA", 137e9, 168e9, shape("LaMDA 137B", 64, 8192, 128, 32000)},
        {"GPT-3", 175e9, 300e9, shape("GPT-3 175B", 96, 12288, 96, 51200)},
        {"Jurassic", 178e9, 300e9, shape("Jurassic-1 178B", 76, 13824, 96, 256000)},
        {"Gopher", 280e9, 300e9, shape("Gopher 280B", 80, 16384, 128, 32000)},
        {"MT-NLG 530B", 530e9, 270e9, shape("MT-NLG 530B", 105, 20480, 128, 51200)},
        {"Chinchilla", 70e9, 1.4e12, shape("Chinchilla 70B", 80, 8192, 64, 32000)},
    };
    out[0].shape.activation = model::Activation::SwiGLU;
    out[0].shape.ffn_hidden = 65536;
    return out;
  }();
  return v;
}

}  // namespace trainsim::plan
