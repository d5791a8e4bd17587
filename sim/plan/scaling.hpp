// Compute-optimal model size and token count for a FLOP budget (scaling laws), and a model
// shape for a parameter count.
//
// Laws (C = training FLOPs, N = parameters, D = tokens, C = 6·N·D):
//  - Chinchilla (Hoffmann et al. 2022, arXiv:2203.15556, §3.3 "Approach 3", Eq. 2 and 4):
//    L(N, D) = E + A/N^α + B/D^β with E = 1.69, A = 406.4, B = 410.7, α = 0.34, β = 0.28.
//    Minimising L subject to C = 6ND gives N_opt = G·(C/6)^a, D_opt = (C/6)^b / G with
//    G = (αA / (βB))^(1/(α+β)), a = β/(α+β), b = α/(α+β).
//  - Epoch (Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt",
//    arXiv:2404.10102, Eq. 2 / Table 1): the same form refitted on Hoffmann et al.'s data,
//    E = 1.8172, A = 482.01, B = 2085.43, α = 0.3478, β = 0.3658.
//  - Kaplan (Kaplan et al. 2020, arXiv:2001.08361, Eq. 6.1 / Fig. 14 / Table 6):
//    N_opt = 1.3·10^9 · C_min^0.73 with C_min in PF-days (8.64·10^19 FLOP) and N the
//    non-embedding parameters; D = C / (6N). Kaplan's loss surface is not of the Chinchilla
//    form, so `loss` is not defined for it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "model/transformer.hpp"

namespace trainsim::plan {

enum class Law { Chinchilla, Epoch, Kaplan };

std::string_view law_name(Law l);  ///< "chinchilla", "epoch", "kaplan"
/// Parses a law name. Throws InputError (key "--law") naming the valid choices.
Law parse_law(std::string_view name);

/// Constants of a Chinchilla-form law L = E + A/N^alpha + B/D^beta.
struct LossFit {
  double E = 0, A = 0, B = 0, alpha = 0, beta = 0;
};
/// The published constants (see the header comment). Throws std::invalid_argument for Kaplan.
LossFit loss_fit(Law l);

/// L(N, D) of a Chinchilla-form law, in nats per token. Throws std::invalid_argument for
/// N <= 0 or D <= 0.
double loss(const LossFit& f, double params, double tokens);

struct Allocation {
  double flops = 0;   ///< C
  double params = 0;  ///< N
  double tokens = 0;  ///< D = C / (6N)
};

/// Closed-form compute-optimal allocation of `flops` under law `l`. Throws
/// std::invalid_argument for flops <= 0.
Allocation compute_optimal(Law l, double flops);

/// Batch size (tokens per optimizer step) that trains best for a compute budget: DeepSeek
/// LLM's fit B_opt = 0.2920 * C^0.3271 tokens (Bi et al. 2024, arXiv:2401.02954, Eq. 1,
/// from IsoFLOP grids of 1e17-3e20 FLOPs and checked on their 7B and 67B runs: 1e24 FLOPs
/// gives 19M tokens, the 67B model's 4608 x 4096 = 18.9M). Throws std::invalid_argument for
/// flops <= 0.
double optimal_batch_tokens(double flops);

/// optimal_batch_tokens(flops) in sequences of `seq_len` tokens, rounded to the nearest power
/// of two (in log2; the most divisible choice for DP x micro batch), at least 1. Throws
/// std::invalid_argument for flops <= 0 or seq_len < 1.
std::int64_t optimal_global_batch(double flops, int seq_len);

/// The same optimum found numerically: golden-section search of L(N, C/(6N)) over log N in
/// [1e3, 1e16] parameters (the function is unimodal in log N). For tests of the closed form.
Allocation compute_optimal_numeric(const LossFit& f, double flops);

/// What a law's N counts. Hoffmann et al. 2022 (Chinchilla, and Epoch's refit of their data)
/// count every parameter, embeddings included; Kaplan et al. 2020 (§1.3, Eq. 2.1) count the
/// non-embedding ones: the layers and the final norm, without the token embedding and an
/// untied output projection. Pearce & Song 2024 ("Reconciling Kaplan and Chinchilla scaling
/// laws", arXiv:2406.12907) trace much of the two laws' difference to this choice.
enum class ParamCount { Total, NonEmbedding };
[[nodiscard]] ParamCount param_count(Law l);
/// The parameters of `m` as `c` counts them.
[[nodiscard]] double counted_params(const model::ModelSpec& m, ParamCount c);

/// A GPT-style shape for about `params` parameters (12·l·h² per the layers of Kaplan et al.
/// 2020 Eq. 2.1, plus the 2·V·h embedding and head; ModelSpec::total_params): head dimension
/// 128; hidden a multiple of 1024 from 1024 up (of 128 below, and 1536), so heads are a
/// multiple of 8 from 2048 and TP 8 divides them; layers 2-12 or a multiple of 4 from 16 up
/// (PP 2 and 4 divide them); hidden / layers within [32, 200] below hidden 4096, [64, 200]
/// below 8192 and [96, 160] above (Kaplan et al. 2020 §3.1, Fig. 5: the loss is within a few
/// percent over aspect ratios 20-200; GPT-3 12288 / 96 = 128, Chinchilla 8192 / 80 = 102,
/// Gopher 16384 / 80 = 205). Of those shapes, the one whose parameters, counted as `count`
/// says (counted_params), are nearest `params` in ratio: so the shape's size never decreases
/// as `params` grows. ffn_hidden = 4·hidden;
/// vocab 51200; seq_len 2048; GeLU; LayerNorm. GPT-3 175B comes back exactly; within 10% of
/// N from 1e9 up and 35% below (tested). Throws std::invalid_argument for params < 1e6 or
/// > kMaxShapeParams.
constexpr double kMaxShapeParams = 1e14;
model::ModelSpec model_for_params(double params, const std::string& name,
                                  ParamCount count = ParamCount::Total);

/// Published models for the seed table (Hoffmann et al. 2022 Table 1 and the papers cited in
/// docs/planner.md): name, parameters, training tokens and shape.
struct PublishedModel {
  std::string name;
  double params = 0;
  double tokens = 0;
  model::ModelSpec shape;
};
const std::vector<PublishedModel>& published_models();

}  // namespace trainsim::plan
