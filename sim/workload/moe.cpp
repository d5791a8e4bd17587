#include "workload/moe.hpp"

#include <algorithm>

namespace trainsim::workload {

namespace {

/// An expert or router GEMM [m x k]·[k x n] (no bias), priced as the dense layer's GEMMs
/// (workload::gemm_times); nothing for an expert that receives no rows.
GemmTimes expert_gemm(const cost::CostModel& cost, std::int64_t m, std::int64_t n, std::int64_t k,
                      const GemmKernels& kernels) {
  if (m <= 0) return {};
  model::Op op;
  op.kind = model::OpKind::Gemm;
  op.m = m;
  op.n = n;
  op.k = k;
  return gemm_times(cost, op, kernels);
}

void add(GemmTimes& a, const GemmTimes& b) {
  a.fwd += b.fwd;
  a.dgrad += b.dgrad;
  a.wgrad += b.wgrad;
}

}  // namespace

MoeLayerCost moe_layer_cost(const model::ModelSpec& m, const parallel::Layout& L,
                            const GemmKernels& kernels, std::int64_t micro_batch,
                            const cost::CostModel& cost,
                            const net::CollectiveModel& comm, std::uint64_t seed, int layer,
                            int stage, int gpus_per_node) {
  const auto& moe = m.moe;
  MoeLayerCost c;
  c.layer = layer;
  const std::int64_t T = micro_batch * m.seq_len / L.cp;
  const std::int64_t h = m.hidden;
  const bool swiglu = m.activation == model::Activation::SwiGLU;
  const int tp = L.tp;
  // Megatron-Core's all-to-all dispatcher under sequence parallelism (ep > 1, or expert TP
  // below TP): each rank routes its own sequence shard, T/tp tokens, and an expert-TP group of
  // etp ranks T·etp/tp (Layout::validate: tp/etp divides T). Otherwise (no SP, or ep = 1 with
  // etp = tp: the all-gather dispatcher) the block runs on the TP group's gathered T tokens.
  const int etp = L.expert_tp();
  c.local_tokens = L.sequence_parallel && (L.ep > 1 || etp < tp);
  c.tokens_routed = c.local_tokens ? T / tp * etp : T;
  const hw::Dtype dt = kernels.dtype;
  const double elem = 2.0;  // 16-bit activations
  c.router = moe.experts > 1;
  if (c.router) c.router_gemm = expert_gemm(cost, c.local_tokens ? T / tp : T, moe.experts, h, kernels);
  const std::int64_t fs = moe.shared_ffn();
  c.shared = fs > 0;
  if (c.shared) {
    const std::int64_t f = std::max<std::int64_t>(1, fs / tp);
    c.shared_in = expert_gemm(cost, T, swiglu ? 2 * f : f, h, kernels);
    c.shared_out = expert_gemm(cost, T, h, f, kernels);
    const double a = static_cast<double>(T) * static_cast<double>(f) * elem;
    c.shared_act_fwd = cost.memory_bound((swiglu ? 3 : 2) * a);
    c.shared_act_bwd = cost.memory_bound((swiglu ? 5 : 3) * a);
  }
  const model::RoutingResult r = model::route_tokens(moe, c.tokens_routed, L.ep, seed, layer);
  const int busy = r.busiest_rank();
  c.imbalance = r.imbalance();
  c.rows_busiest = r.rows_processed(busy);
  c.dropped = r.dropped;
  const std::int64_t f = moe.expert_ffn_hidden / etp;
  const int le = r.local_experts();
  for (int e = busy * le; e < (busy + 1) * le; ++e) {
    const std::int64_t rows = r.expert_rows(e);
    add(c.expert_in, expert_gemm(cost, rows, swiglu ? 2 * f : f, h, kernels));
    add(c.expert_out, expert_gemm(cost, rows, h, f, kernels));
  }
  const double act = static_cast<double>(c.rows_busiest) * static_cast<double>(f) * elem;
  c.expert_act_fwd = cost.memory_bound((swiglu ? 3 : 2) * act);
  c.expert_act_bwd = cost.memory_bound((swiglu ? 5 : 3) * act);
  // A row as the rank's permutation and all-to-alls see it: h/tp of each of T tokens, or the
  // whole h of its own T/tp tokens (local_tokens), the same bytes per token; written h/etp of
  // each routed token.
  const double row = static_cast<double>(h) / etp * elem;
  if (moe.experts > 1) {
    const double t = static_cast<double>(c.tokens_routed);
    const double rk = t * moe.top_k;  // routed rows R
    const double accumulate = 3 * t;  // autograd: router + permutation input gradients
    if (moe.permute_fusion) {
      c.permute = cost.memory_bound((t + rk) * row);
      c.unpermute = c.permute;
      c.unpermute_bwd = c.permute;
      c.permute_bwd = cost.memory_bound((t + rk + accumulate) * row);
    } else {
      c.permute = cost.memory_bound(2 * rk * row);
      c.unpermute = cost.memory_bound((6 * rk + t) * row);
      c.unpermute_bwd = cost.memory_bound((4 * rk + 2 * t) * row);
      c.permute_bwd = cost.memory_bound((t + 3 * rk + accumulate) * row);
    }
    if (L.ep > 1 && le > 1) {
      c.sort_chunks = cost.memory_bound(2.0 * static_cast<double>(c.rows_busiest) * row);
      c.unsort_chunks = c.sort_chunks;
    }
  }
  if (c.local_tokens && etp > 1) {
    // Rows received by the expert-TP group are gathered over it before the experts and
    // reduce-scattered after them (Megatron-Core's all-to-all dispatcher with expert TP > 1,
    // megatron/core/transformer/moe/token_dispatcher.py: gather_from_sequence_parallel_region
    // over the expert-TP group after the all-to-all); their conjugates in backward.
    // nccl-tests size: the gathered buffer, the busiest EP rank's rows x h.
    const auto bytes = static_cast<std::uint64_t>(static_cast<double>(c.rows_busiest) *
                                                  static_cast<double>(h) * elem);
    const auto ag = net::slowest_group(comm, net::CollectiveOp::AllGather, bytes,
                                       L.etp_groups(stage), gpus_per_node);
    const auto rs = net::slowest_group(comm, net::CollectiveOp::ReduceScatter, bytes,
                                       L.etp_groups(stage), gpus_per_node);
    c.etp_ag = ag.cost.time;
    c.etp_rs = rs.cost.time;
  }
  // All-to-all size: the busiest rank's send or receive volume, self chunk included.
  std::int64_t worst_rows = 0, off_rank_rows = 0;
  for (int k = 0; k < L.ep; ++k) {
    c.rows_sent = std::max(c.rows_sent, r.rows_sent(k));
    worst_rows = std::max({worst_rows, r.rows_sent(k) + r.rows_between(k, k),
                           r.rows_processed(k)});
    off_rank_rows = std::max({off_rank_rows, r.rows_sent(k), r.rows_received(k)});
  }
  if (L.ep > 1) {
    const double row_bytes = static_cast<double>(h) / etp;
    // The stage's slowest EP group (all of them exchange at once).
    const auto group = net::slowest_group(comm, net::CollectiveOp::AllToAll,
                                          static_cast<std::uint64_t>(static_cast<double>(worst_rows) *
                                                                     row_bytes * elem),
                                          L.ep_groups(stage), gpus_per_node)
                           .group;
    const double dispatch_elem = hw::dtype_bytes(dt) < 2 ? hw::dtype_bytes(dt) : elem;
    c.a2a_bytes = static_cast<double>(worst_rows) * row_bytes * elem;
    c.a2a_dispatch_bytes = static_cast<double>(off_rank_rows) * row_bytes * dispatch_elem;
    c.a2a_combine_bytes = static_cast<double>(off_rank_rows) * row_bytes * elem;
    auto a2a = [&](double bytes_per_elem) {
      return comm.cost(net::CollectiveOp::AllToAll,
                       static_cast<std::uint64_t>(static_cast<double>(worst_rows) * row_bytes *
                                                  bytes_per_elem),
                       group)
          .time;
    };
    c.dispatch = a2a(dispatch_elem);
    c.combine = a2a(elem);
    c.combine_bwd = a2a(elem);
    c.dispatch_bwd = a2a(elem);
  }
  return c;
}

}  // namespace trainsim::workload
