// Token routing of one MoE layer over one expert-parallel group: how many token rows each
// EP rank sends to each expert, from a seeded routing model.
#pragma once

#include <cstdint>
#include <vector>

#include "model/transformer.hpp"

namespace trainsim::model {

/// Routed token rows of one MoE layer in one EP group of `ep` ranks. Experts are placed
/// contiguously, E/ep per rank (Megatron-Core's expert placement: local experts
/// [r·E/ep, (r+1)·E/ep) on EP rank r).
struct RoutingResult {
  int ep = 1;
  int experts = 0;
  std::int64_t tokens_per_rank = 0;  ///< T: tokens each EP rank routes
  int top_k = 1;
  /// rows[src * experts + e]: rows EP rank `src` sends to expert e after capacity drops.
  std::vector<std::int64_t> rows;
  std::int64_t dropped = 0;          ///< rows dropped by the capacity factor, whole group

  [[nodiscard]] int local_experts() const { return experts / ep; }
  [[nodiscard]] int owner(int expert) const { return expert / local_experts(); }
  /// Rows EP rank `src` sends to EP rank `dst` (src == dst: kept locally).
  [[nodiscard]] std::int64_t rows_between(int src, int dst) const;
  /// Rows rank r sends to other ranks / receives from other ranks (self excluded).
  [[nodiscard]] std::int64_t rows_sent(int r) const;
  [[nodiscard]] std::int64_t rows_received(int r) const;
  /// Rows the experts of rank r process (received plus kept locally).
  [[nodiscard]] std::int64_t rows_processed(int r) const;
  /// Rows expert e processes (summed over the source ranks).
  [[nodiscard]] std::int64_t expert_rows(int e) const;
  /// max / mean over EP ranks of rows_processed (1 = perfectly balanced).
  [[nodiscard]] double imbalance() const;
  /// The EP rank with the most rows to process (lowest index on ties).
  [[nodiscard]] int busiest_rank() const;
};

/// Draws the routing of one MoE layer. Each of the `ep` ranks routes `tokens_per_rank`
/// tokens to `moe.top_k` experts each (T·k choices per rank):
///  - Balanced: T·k/E rows per expert exactly, the remainder spread round-robin starting at
///    an offset that rotates with the source rank (so ranks stay within one row).
///  - Uniform / Zipf: the T·k choices of each rank are a multinomial draw over the experts
///    (probability 1/E, or proportional to rank^-zipf_exponent with the popularity ranks
///    shuffled per layer), drawn by chained binomials from std::mt19937_64 seeded with
///    (seed, layer). The top-k choices of one token are treated as independent draws (the
///    distinct-experts constraint is not modelled).
///  - Imbalance: deterministic; the experts of EP rank 0 get `imbalance` x the mean load,
///    the other ranks' experts share the rest equally (rows apportioned by largest remainder).
/// With capacity_factor > 0 each rank keeps at most ceil(cf·T·k/E) rows per expert
/// (Fedus et al. 2021 §2.1; Megatron's per-rank drop before dispatch) and counts the rest as
/// dropped. Throws std::invalid_argument when ep does not divide the expert count, T < 1 or
/// the imbalance is outside [1, ep].
RoutingResult route_tokens(const MoeSpec& moe, std::int64_t tokens_per_rank, int ep,
                           std::uint64_t seed, int layer);

}  // namespace trainsim::model
