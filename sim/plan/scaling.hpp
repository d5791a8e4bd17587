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

/// The same optimum found numerically: golden-section search of L(N, C/(6N)) over log N in
/// [1e3, 1e16] parameters (the function is unimodal in log N). For tests of the closed form.
Allocation compute_optimal_numeric(const LossFit& f, double flops);

/// A GPT-style shape for about `params` parameters (12·l·h² per the layers of Kaplan et al.
/// 2020 Eq. 2.1, plus V·h embeddings). Aspect rule: head dimension 128 and
/// hidden / layers = 128, as GPT-3 175B (12288 / 96, Brown et al. 2020 Table 2.1); Kaplan et
/// al. 2020 §3.1 (Fig. 5) find the loss within a few percent over aspect ratios 20-200, and
/// published models sit in that range (Chinchilla 8192 / 80 = 102, Gopher 16384 / 80 = 205).
/// So l0 = cbrt(N / (12·128²)); hidden = 128·l0 rounded to a multiple of 1024 (below 1024:
/// of 128, narrowed until two layers fit beside the 2·V·h embedding and head); layers =
/// (N - 2·V·hidden) / (12·hidden²) rounded to a multiple of 4 (below 14: to an integer, at
/// least 2); heads = hidden / 128; ffn_hidden = 4·hidden; vocab 51200; seq_len 2048;
/// GeLU; LayerNorm. The multiples keep TP 8 and PP 2/4 possible; ModelSpec::total_params
/// of the shape is within 10% of N from 1e9 up and 35% below (tested). Throws std::invalid_argument for
/// params < 1e6.
model::ModelSpec model_for_params(double params, const std::string& name);

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
