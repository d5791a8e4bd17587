#include "plan/search.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <exception>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include "core/error.hpp"
#include "cost/cost_model.hpp"
#include "hw/topology.hpp"
#include "model/memory.hpp"
#include "net/collective.hpp"
#include "parallel/layout.hpp"
#include "parallel/schedule.hpp"
#include "workload/gemm_cost.hpp"
#include "workload/pipeline_sim.hpp"

namespace trainsim::plan {

using model::Recompute;
using parallel::ScheduleKind;

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

const char* rc_name(Recompute r) { return model::recompute_name(r); }

/// Work items of a thread pool over [0, n): calls f(i) for each i on `threads` threads.
template <class F>
void parallel_for(std::size_t n, int threads, F&& f) {
  if (n == 0) return;
  const int t = std::max(1, std::min<int>(threads, static_cast<int>(n)));
  std::atomic<std::size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mu;
  auto worker = [&] {
    for (;;) {
      const std::size_t i = next.fetch_add(1);
      if (i >= n) return;
      try {
        f(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mu);
        if (!error) error = std::current_exception();
        next = n;
        return;
      }
    }
  };
  std::vector<std::thread> pool;
  for (int k = 1; k < t; ++k) pool.emplace_back(worker);
  worker();
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

/// Per microbatch and layer, on one GPU: kernel times of one (tp, sp, micro_batch, recompute).
struct LayerTimes {
  double fwd = 0;        ///< GEMMs + attention core, forward
  double bwd = 0;        ///< GEMM dgrad + wgrad + attention backward
  double wgrad = 0;      ///< the wgrad part of bwd
  double recompute = 0;  ///< GEMM + attention forward repeated (full) or attention (selective)
  double head = 0;       ///< LM head GEMM fwd + dgrad + wgrad
  double mtp_proj = 0;   ///< one MTP module's eh_proj GEMM fwd + dgrad + wgrad
  double tp_fwd = 0, tp_bwd = 0;  ///< TP collectives per layer (blocking time, not overlapped)
  double mem_fwd = 0, mem_bwd = 0;  ///< memory-bound kernels (norms, activation, residuals)
  /// Time the compute stream must wait for TP collectives in one layer's forward / backward,
  /// given how the builder chains them (see serial_tp below).
  double tp_wait_fwd = 0, tp_wait_bwd = 0;
  double act_bytes = 0;  ///< activations kept per layer (model::activation_bytes_per_layer)
  double emb_act = 0, head_act = 0;
  /// The dense MLP's share of fwd / bwd / mem_fwd / mem_bwd (mlp_in, activation, mlp_out).
  double mlp_fwd = 0, mlp_bwd = 0, mlp_mem_fwd = 0, mlp_mem_bwd = 0;
  /// An MoE layer (MoE models only), per microbatch, with the same attention part: what its
  /// MoE MLP surely costs on the simulated (busiest) EP rank, forward and backward (FLOP
  /// floors of the router, shared and routed experts; see moe_floor), its TP waits and its
  /// activations (MLP sized by the balanced share of rows, a lower bound on the busiest
  /// rank's).
  double moe_fwd = 0, moe_bwd = 0;
  double moe_tp_wait_fwd = 0, moe_tp_wait_bwd = 0;
  double moe_act_bytes = 0;
  /// One attention block (of cp) forward / backward on this rank, for the CP ring's waits.
  double attn_blk_fwd = 0, attn_blk_bwd = 0;
  double p2p = 0;        ///< one activation between adjacent stages
};

class Analyzer {
 public:
  Analyzer(const workload::Scenario& base, const hw::Topology& topo)
      : base_(base), topo_(topo), comm_(topo, base.gpu), cost_(base.gpu) {}

  struct Result {
    double lower_bound = 0, estimate = 0, mem_lb = 0, mem_est = 0;
  };

  Result analyze(const Candidate& c) {
    const auto& m = base_.model;
    const auto& L = c.layout;
    const LayerTimes& lt = layer_times(L.tp, L.cp, L.sequence_parallel, c.micro_batch,
                                       c.recompute, L.tp_comm_overlap);
    const bool dual = L.schedule == ScheduleKind::DualPipe;
    const workload::PipelineShape shape{L.pp, L.virtual_stages, dual};
    const int v = dual ? 2 : L.virtual_stages;
    const auto layers = parallel::layers_per_virtual_stage(
        m.layers, L.pp, dual ? 1 : L.virtual_stages, L.first_stage_layers, L.last_stage_layers);
    // MoE layers of each chain position (as the builder's moe_layers_of).
    moe_of_.assign(layers.size(), 0);
    if (m.moe.enabled()) {
      int first = 0;
      for (std::size_t p = 0; p < layers.size(); ++p) {
        for (int l = 0; l < layers[p]; ++l) moe_of_[p] += m.is_moe_layer(first + l) ? 1 : 0;
        first += layers[p];
      }
    }
    // Per-rank parameters as the builder counts them (compute_costs): dense layers; MoE
    // layers without their routed experts; routed experts (E/ep of them, TP-split), which
    // join the dense weights when ep = 1.
    const double h = m.hidden;
    const double mats = m.activation == model::Activation::SwiGLU ? 3.0 : 2.0;
    const double attn_params = workload::attention_params_per_rank(m, L.tp);
    const double layer_params =
        attn_params + workload::dense_mlp_params_per_rank(m, L.tp, m.ffn_hidden);
    double moe_layer_params = 0, expert_params = 0;
    if (m.moe.enabled()) {
      moe_layer_params = attn_params + (m.moe.experts > 1 ? h * m.moe.experts : 0.0) +
                         mats * h * static_cast<double>(m.moe.shared_ffn()) / L.tp;
      const int local_experts = m.moe.experts / L.ep;  // ep divides the experts (validate)
      expert_params = static_cast<double>(local_experts) * mats * h *
                      m.moe.expert_ffn_hidden / L.expert_tp();
      if (L.ep == 1 && L.expert_tp() == L.tp) {
        moe_layer_params += expert_params;
        expert_params = 0;
      }
    }
    const bool tied_copy = workload::embedding_copy_on_last_stage(m, L);
    const double emb_params = m.embedding_params() / L.tp;
    const double head_params = (m.head_params() + (tied_copy ? m.embedding_params() : 0.0)) / L.tp;
    const std::int64_t mb_count = base_.training.global_batch / (c.micro_batch * L.dp);
    // Without TP comm overlap, each forward TP collective sits between two kernels of the
    // in-order compute stream (the next kernel waits for it), so it adds to the stage's
    // critical path; with full recompute the repeated forward has them too.
    const bool full = c.recompute == Recompute::Full;
    // CP ring (builder attention_forward / attention_backward): forward, the cp - 1 KV
    // transfers run one after another on the CP stream after QKV and block i waits for
    // transfer i - 1, so the last block starts at least (cp - 1) transfers after QKV:
    // + (cp - 1) max(0, X - A) over the cp blocks. Backward: block i + 2 waits for the
    // transfer issued after block i: + floor((cp - 1) / 2) max(0, X_b - B). The last dKV
    // transfer counts 0. Recompute repeats the forward's waits.
    double cpw_f = 0, cpw_b = 0;
    if (L.cp > 1) {
      const auto [xf, xb] = cp_kv(L, c.micro_batch);
      cpw_f = (L.cp - 1) * std::max(0.0, xf - lt.attn_blk_fwd);
      const int pairs = (L.cp - 1) / 2;  // floor: blocks i + 2 waiting on block i's transfer
      cpw_b = pairs * std::max(0.0, xb - lt.attn_blk_bwd);
    }
    const double cpw_rc = c.recompute == Recompute::None ? 0.0 : cpw_f;
    const double fwd_pass = lt.fwd + lt.mem_fwd + lt.tp_wait_fwd + cpw_f;
    const double bwd_pass = lt.bwd + lt.mem_bwd + lt.tp_wait_bwd + cpw_b;
    const double per_layer = fwd_pass + bwd_pass + lt.recompute + cpw_rc +
                             (full ? lt.mem_fwd + lt.tp_wait_fwd : 0.0);
    // An MoE layer: the dense MLP's kernels replaced by the MoE floor (moe_floor).
    const double moe_fwd_pass = lt.fwd - lt.mlp_fwd + lt.moe_fwd + lt.mem_fwd - lt.mlp_mem_fwd +
                                lt.moe_tp_wait_fwd + cpw_f;
    const double moe_bwd_pass = lt.bwd - lt.mlp_bwd + lt.moe_bwd + lt.mem_bwd - lt.mlp_mem_bwd +
                                lt.moe_tp_wait_bwd + cpw_b;
    const double moe_recompute =
        full ? moe_fwd_pass : lt.recompute + cpw_rc;  // selective: the attention core only
    const double per_moe_layer = moe_fwd_pass + moe_bwd_pass + moe_recompute;
    // MTP modules (last of the chain): a layer of the last layer's kind, one more head and
    // eh_proj; their weights besides the layer (eh_proj split by TP, three norms).
    const bool mtp_moe = m.mtp_is_moe();
    const double mtp_compute = m.mtp_layers * ((mtp_moe ? per_moe_layer : per_layer) + lt.head + lt.mtp_proj);
    const double mtp_params =
        m.mtp_layers * ((mtp_moe ? moe_layer_params : layer_params) +
                        workload::mtp_extra_params_per_rank(m, L.tp));
    const double mtp_act = m.mtp_layers * ((mtp_moe ? lt.moe_act_bytes : lt.act_bytes) + lt.head_act);
    const int dpc = L.dp_cp();

    Result r;
    double max_stage = 0, sum_stage = 0, params0 = 0;
    std::vector<double> stage_compute(static_cast<std::size_t>(L.pp), 0.0);
    std::vector<double> stage_tail(static_cast<std::size_t>(L.pp), 0.0);
    std::vector<double> stage_busy(static_cast<std::size_t>(L.pp), 0.0);
    for (int s = 0; s < L.pp; ++s) {
      double params = 0, experts = 0, compute = 0,
             min_chunk = std::numeric_limits<double>::infinity();
      for (int ch = 0; ch < v; ++ch) {
        const int vs = shape.vs_of(s, ch);
        const auto pos = static_cast<std::size_t>(shape.position(vs));
        const int nl = layers[pos];
        const int nm = moe_of_[pos];
        double chunk_params = (nl - nm) * layer_params + nm * moe_layer_params;
        double chunk_act = (nl - nm) * lt.act_bytes + nm * lt.moe_act_bytes;
        compute += (nl - nm) * per_layer + nm * per_moe_layer;
        experts += nm * expert_params;
        if (shape.first_of_chain(vs)) {
          chunk_params += emb_params;
          chunk_act += lt.emb_act;
        }
        if (shape.last_of_chain(vs)) {
          chunk_params += head_params + mtp_params;
          chunk_act += lt.head_act + mtp_act;
          compute += lt.head + mtp_compute;
          if (mtp_moe) experts += m.mtp_layers * expert_params;
        }
        params += chunk_params;
        min_chunk = std::min(min_chunk, chunk_act);
      }
      // DualPipe: microbatches 0..m/2-1 run chunk 0, the others chunk 1 (parallel::
      // dualpipe_schedule), so per microbatch a rank runs the mean of its two chunks.
      if (dual) compute *= 0.5;
      // Dense weights are replicated over DP x CP, routed experts over the expert-DP ranks;
      // ZeRO shards each over its own group (builder: simulate_step's memory).
      auto state = model::model_state_bytes(params, dpc, L.zero, grad_elem_bytes());
      if (experts > 0) {
        const auto es = model::model_state_bytes(experts, L.expert_dp(), L.zero, grad_elem_bytes());
        state.weights += es.weights;
        state.gradients += es.gradients;
        state.optimizer += es.optimizer;
      }
      // At least the program's peak of (microbatch, chunk) slots alive at once, each holding
      // at least the smallest chunk's activations.
      const int alive = peak_alive(L, static_cast<int>(mb_count))[static_cast<std::size_t>(s)];
      r.mem_lb = std::max(r.mem_lb, state.total() + std::max(1, alive) * min_chunk);
      stage_compute[static_cast<std::size_t>(s)] = compute;
      // After the stage's last backward: without overlap_grad_reduce, its dense gradient
      // buckets reduced one after another on the DP stream over DP x CP (at least one
      // collective of all of them: NCCL's cost is the cheapest of affine laws, so
      // subadditive; the expert buckets count 0), then the Adam step on the compute stream.
      const double local = L.zero >= 1 ? params / dpc + experts / L.expert_dp() : params + experts;
      const double buffer = L.zero >= 3 ? local : params + experts;
      double tail =
          cost_.memory_bound(workload::optimizer_step_bytes(local, buffer, base_.training.dtype))
              .seconds();
      if (!L.overlap_grad_reduce && dpc > 1 && L.zero <= 1) {
        tail += dp_cost(L.zero == 0 ? net::CollectiveOp::AllReduce : net::CollectiveOp::ReduceScatter,
                        grad_elem_bytes() * params, L);
      }
      // The gradient average's kernels (workload::GradScaling) on the compute stream: local
      // DDP's pass over the whole buffer runs after the last backward; Megatron-Core's
      // per-bucket passes may run inside it, so they only add to the stream's busy time
      // (one pass over all buckets is never slower than the buckets one by one).
      const double scale_bytes = 2.0 * grad_elem_bytes();
      if (L.zero < 3 && base_.training.grad_scaling == workload::GradScaling::Buffer) {
        tail += cost_.memory_bound(scale_bytes * (params + experts)).seconds();
      } else if (L.zero < 3 && dpc > 1 &&
                 base_.training.grad_scaling == workload::GradScaling::Bucket) {
        stage_busy[static_cast<std::size_t>(s)] = cost_.memory_bound(scale_bytes * params).seconds();
      }
      stage_tail[static_cast<std::size_t>(s)] = tail;
      max_stage = std::max(max_stage, compute);
      sum_stage += compute;
      if (s == 0) params0 = params + experts;
    }
    const double mb = static_cast<double>(mb_count);
    // Step-time lower bound: the compute stream of a stage runs its kernels one at a time.
    double lb = 0;
    for (int s = 0; s < L.pp; ++s) {
      lb = std::max(lb, mb * stage_compute[static_cast<std::size_t>(s)] +
                            stage_busy[static_cast<std::size_t>(s)] +
                            stage_tail[static_cast<std::size_t>(s)]);
    }
    if (!dual && L.pp > 1) {
      // The last rank's first forward waits for chunk 0 of microbatch 0 on ranks 0..p-2;
      // with an unsplit backward, rank 0's last backward waits for the last rank's.
      double fill = 0, drain = 0;
      for (int s = 0; s + 1 < L.pp; ++s) {
        const auto pos = static_cast<std::size_t>(shape.position(shape.vs_of(s, 0)));
        const int nl = layers[pos], nm = moe_of_[pos];
        fill += (nl - nm) * fwd_pass + nm * moe_fwd_pass;
        drain += (nl - nm) * bwd_pass + nm * moe_bwd_pass;
      }
      const bool split_w = L.schedule == ScheduleKind::ZbH1 || L.schedule == ScheduleKind::ZbH2;
      const double last = mb * stage_compute.back();
      const double end = split_w ? stage_tail.back()
                                 : std::max(stage_tail.back(), drain + stage_tail.front());
      lb = std::max(lb, fill + last + end);
    }
    r.lower_bound = lb;

    // Estimate, for ordering only.
    const double avg_stage = sum_stage / L.pp;
    double bubble_frac = 0;
    switch (L.schedule) {
      case ScheduleKind::GPipe:
      case ScheduleKind::OneFOneB: bubble_frac = L.pp - 1.0; break;
      case ScheduleKind::Interleaved: bubble_frac = (L.pp - 1.0) / L.virtual_stages; break;
      case ScheduleKind::ZbH1: bubble_frac = (L.pp - 1.0) / 3.0; break;
      case ScheduleKind::ZbH2: bubble_frac = 0.1 * (L.pp - 1.0); break;
      case ScheduleKind::DualPipe: bubble_frac = (L.pp / 2.0 - 1.0) / 2.0; break;
      default: bubble_frac = L.pp - 1.0; break;
    }
    const double bubble = bubble_frac * avg_stage;
    const double layers_per_stage = static_cast<double>(m.layers) / L.pp;
    const double tp_exposed =
        mb * layers_per_stage *
        std::max(0.0, (L.tp_comm_overlap ? 0.2 * lt.tp_fwd * (full ? 2 : 1) : 0.0) +
                          std::max(0.0, lt.tp_bwd - lt.wgrad) - lt.tp_wait_bwd);
    const double grad_bytes = grad_elem_bytes() * params0;
    const double param_bytes =
        (base_.training.dtype == hw::Dtype::FP8 ? 2.0 : hw::dtype_bytes(base_.training.dtype)) *
        params0;
    double dp_time = 0;
    if (dpc > 1) {
      if (L.zero == 0) {
        dp_time = dp_cost(net::CollectiveOp::AllReduce, grad_bytes, L);
      } else {
        dp_time = dp_cost(net::CollectiveOp::ReduceScatter, grad_bytes, L);
        if (!L.overlap_param_gather) dp_time += dp_cost(net::CollectiveOp::AllGather, param_bytes, L);
      }
      if (L.overlap_grad_reduce) {
        const double bucket = std::max(40e6, 1e6 * L.dp);  // Megatron's default bucket
        dp_time *= std::min(1.0, bucket / std::max(1.0, params0));
      }
    }
    const double opt =
        cost_.memory_bound(workload::optimizer_step_bytes(params0 / (L.zero >= 1 ? dpc : 1),
                                                          L.zero >= 3 ? params0 / dpc : params0,
                                                          base_.training.dtype))
            .seconds();
    const double pp_comm = L.pp > 1 ? 2.0 * (L.pp - 1) * lt.p2p : 0.0;
    // EP: four all-to-alls per MoE layer and microbatch (docs/moe.md) of the balanced share,
    // T x k rows of h 16-bit elements, taken as exposed except under DualPipe's overlap.
    double ep_comm = 0;
    if (m.moe.enabled() && L.ep > 1) {
      const int local_seq = m.seq_len / L.cp;  // 2 cp divides seq_len (validate)
      // Under SP each rank sends its own sequence shard's rows (moe_layer_cost: h/tp of T
      // tokens or h of T/tp, the same bytes).
      const double rows = static_cast<double>(c.micro_batch) * local_seq * m.moe.top_k / L.tp;
      const double a2a = ep_cost(rows * h * 2.0, L);
      ep_comm = mb * (static_cast<double>(m.moe_layers()) / L.pp) * 4.0 * a2a * (dual ? 0.2 : 1.0);
    }
    r.estimate = std::max(lb, mb * max_stage + bubble) + tp_exposed + dp_time + opt + pp_comm +
                 ep_comm + stage_busy.front();

    // Memory estimate: microbatches in flight on stage 0 (1F1B warm-up; Megatron's
    // interleaved warm-up 2(p-1) + (v-1)p + 1 chunks; GPipe all of them).
    double inflight_chunks = 0;
    switch (L.schedule) {
      case ScheduleKind::GPipe: inflight_chunks = mb * v; break;
      case ScheduleKind::Interleaved:
        // parallel::make_programs: all forwards first when m == pp.
        inflight_chunks = mb_count == L.pp ? mb * v
                                           : std::min(mb * v, 2.0 * (L.pp - 1) + (v - 1.0) * L.pp + 1.0);
        break;
      case ScheduleKind::ZbH2: inflight_chunks = std::min(mb, 2.0 * L.pp - 1.0) * v; break;
      default: inflight_chunks = std::min(mb, static_cast<double>(L.pp)) * v; break;
    }
    const double chunk_layers = layers_per_stage / v;
    const auto state0 = model::model_state_bytes(params0, dpc, L.zero, grad_elem_bytes());
    r.mem_est = std::max(r.mem_lb, state0.total() + inflight_chunks * chunk_layers * lt.act_bytes +
                                       lt.emb_act);
    return r;
  }

 private:
  /// Bytes of one gradient (fp32 for bf16/FP8 training: workload::gradient_dtype).
  [[nodiscard]] double grad_elem_bytes() const {
    return hw::dtype_bytes(workload::gradient_dtype(base_.training.dtype));
  }

  /// One TP rank's GEMM `op` of model `mdl` in its three passes, exactly as the builder
  /// prices it (workload::rank_op, workload::gemm_times).
  workload::GemmTimes gemm(const model::ModelSpec& mdl, const model::Op& op, int tp,
                           bool sp) const {
    return workload::gemm_times(cost_, workload::rank_op(mdl, tp, sp, op),
                                base_.training.gemm_kernels(), sp ? tp : 1);
  }

  /// FLOP floor of one GEMM's forward / dgrad+wgrad on this rank: FLOPs / (peak x the
  /// best-shape efficiency). The kernel model never beats it (cost::CostModel::gemm_seconds:
  /// every tile's main loop runs at most at that rate, and the tiles cover m x n).
  [[nodiscard]] double flop_floor(double flops) const {
    const double rate = base_.gpu.peak_flops(base_.training.dtype) *
                        base_.gpu.gemm_efficiency(base_.training.dtype);
    return rate > 0 ? flops / rate : 0.0;
  }

  const LayerTimes& layer_times(int tp, int cp, bool sp, std::int64_t b, Recompute rc, bool tco) {
    const std::uint64_t key = (static_cast<std::uint64_t>(cp) << 52) |
                              (static_cast<std::uint64_t>(tp) << 40) |
                              (static_cast<std::uint64_t>(b) << 8) |
                              (static_cast<std::uint64_t>(rc) << 2) | (sp ? 2u : 0u) |
                              (tco ? 1u : 0u);
    auto it = layer_cache_.find(key);
    if (it != layer_cache_.end()) return it->second;
    // Context parallelism: every per-token op works on this rank's seq_len / cp tokens, as
    // the builder's local model (workload/builder.cpp compute_costs); the attention core runs
    // cp kernels of (seq_len / cp)^2 blocks (ring steps or the all-gathered kernel).
    model::ModelSpec mdl = base_.model;
    mdl.seq_len = base_.model.seq_len / cp;
    LayerTimes t;
    const auto impl = base_.training.flash_attention ? cost::AttentionImpl::Flash
                                                     : cost::AttentionImpl::Unfused;
    double attn_fwd = 0;
    gf_.fill(0);
    gd_.fill(0);
    gw_.fill(0);
    const auto ops = model::layer_ops(mdl, b);
    for (std::size_t oi = 0; oi < ops.size(); ++oi) {
      const model::Op& op = ops[oi];
      // This rank's share of the op, as the builder runs it (workload::rank_op).
      const model::Op r = workload::rank_op(mdl, tp, sp, op);
      // layer_ops order: attn_norm, qkv, attention, proj, attn_residual, mlp_norm, then the
      // MLP (what an MoE layer replaces, model::layer_ops_at), then mlp_residual.
      const bool mlp = oi >= 6 && oi + 1 < ops.size();
      if (op.kind == model::OpKind::Gemm) {
        const workload::GemmTimes g = gemm(mdl, op, tp, sp);
        const double f = g.fwd.seconds(), w = g.wgrad.seconds();
        const double all = g.dgrad.seconds() + w;
        t.fwd += f;
        t.bwd += all;
        t.wgrad += w;
        if (mlp) {
          t.mlp_fwd += f;
          t.mlp_bwd += all;
        }
        // Forward order: qkv, proj, mlp in (fc1 / gate+up), mlp out (fc2 / down).
        const int k = op.name == "qkv" ? 0 : op.name == "proj" ? 1
                      : (op.name == "mlp_fc1" || op.name == "mlp_gate_up") ? 2 : 3;
        gf_[static_cast<std::size_t>(k)] = f;
        gd_[static_cast<std::size_t>(k)] = all - w;
        gw_[static_cast<std::size_t>(k)] = w;
      } else if (op.kind != model::OpKind::Attention) {
        const double mf = cost_.memory_bound(r.fwd_bytes).seconds();
        const double mbk = cost_.memory_bound(r.bwd_bytes).seconds();
        t.mem_fwd += mf;
        t.mem_bwd += mbk;
        if (mlp) {
          t.mlp_mem_fwd += mf;
          t.mlp_mem_bwd += mbk;
        }
      } else {
        t.attn_blk_fwd =
            cost_.attention_fwd(r.batch, r.heads, r.seq, r.head_dim, r.causal, impl).seconds();
        t.attn_blk_bwd =
            cost_.attention_bwd(r.batch, r.heads, r.seq, r.head_dim, r.causal, impl).seconds();
        attn_fwd = cp * t.attn_blk_fwd;
        t.fwd += attn_fwd;
        t.bwd += cp * t.attn_blk_bwd;
      }
    }
    if (rc == Recompute::Full) t.recompute = t.fwd;
    if (rc == Recompute::Selective) t.recompute = attn_fwd;
    const auto head = model::head_ops(mdl, b);
    for (const model::Op& op : head) {
      if (op.kind != model::OpKind::Gemm) continue;
      const workload::GemmTimes g = gemm(mdl, op, tp, sp);
      t.head += (g.fwd + g.dgrad + g.wgrad).seconds();
    }
    for (const model::Op& op : model::mtp_ops(mdl, b)) {
      if (op.kind != model::OpKind::Gemm) continue;
      const workload::GemmTimes g = gemm(mdl, op, tp, sp);
      t.mtp_proj += (g.fwd + g.dgrad + g.wgrad).seconds();
    }
    const double act = static_cast<double>(b) * mdl.seq_len * mdl.hidden * 2.0;
    double ag = 0, rs = 0, ar = 0;
    if (tp > 1) {
      std::vector<int> group;
      for (int i = 0; i < tp; ++i) group.push_back(i);
      auto cc = [&](net::CollectiveOp op) {
        return comm_.cost(op, static_cast<std::uint64_t>(act), group).time.seconds();
      };
      if (sp) {
        t.tp_fwd = 2 * (cc(net::CollectiveOp::AllGather) + cc(net::CollectiveOp::ReduceScatter));
        t.tp_bwd = t.tp_fwd + 2 * cc(net::CollectiveOp::AllGather);
      } else {
        t.tp_fwd = 2 * cc(net::CollectiveOp::AllReduce);
        t.tp_bwd = t.tp_fwd;
      }
      // How the builder chains TP collectives with the compute stream (workload/builder.cpp:
      // gather_then_gemm, gemm_then_reduce, row_backward, column_backward). A collective
      // starts after the previous kernel; the kernel after it waits for it; the TP stream is
      // in order. Forward, per (GEMM, collective) pair: serial without tp_comm_overlap (+C),
      // side by side with it (+max(0, C - G)). Backward: SP re-gathers the output gradient
      // before each row-parallel dgrad (+AG, serial); a column-parallel GEMM runs dgrad D
      // beside its input all-gather A (SP), then wgrad W beside the input-gradient reduction
      // R: at least max(D, A) + max(W, R). Split B/W passes only add waits.
      ag = cc(net::CollectiveOp::AllGather);
      rs = cc(net::CollectiveOp::ReduceScatter);
      ar = cc(net::CollectiveOp::AllReduce);
      auto side = [](double g, double comm) { return std::max(0.0, comm - g); };
      // The attention half alone (what an MoE layer surely keeps).
      double attn_wait_fwd = 0;
      if (!tco) {
        t.tp_wait_fwd = t.tp_fwd;
        attn_wait_fwd = t.tp_fwd / 2;
      } else if (sp) {
        attn_wait_fwd = side(gf_[0], ag) + side(gf_[1], rs);
        t.tp_wait_fwd = attn_wait_fwd + side(gf_[2], ag) + side(gf_[3], rs);
      } else {
        attn_wait_fwd = side(gf_[1], ar);
        t.tp_wait_fwd = attn_wait_fwd + side(gf_[3], ar);
      }
      const double a = sp ? ag : 0.0, r = sp ? rs : ar;
      auto column = [&](int k) {
        return std::max(gd_[k], a) - gd_[k] + std::max(gw_[k], r) - gw_[k];
      };
      t.tp_wait_bwd = (sp ? 2 * ag : 0.0) + column(0) + column(2);
      // MoE MLP (builder moe_forward / moe_backward): only the attention half is counted (0
      // for the MLP half: safe). The block's own TP waits depend on EP and the expert TP
      // (the wrapped block waits like the dense MLP; on local tokens there are none without
      // shared experts, and an expert-TP gather of top-k times the bytes with etp > 1), and
      // these times are shared by every (ep, etp). Backward: the projection's output-gradient
      // all-gather (SP) and the QKV column, as dense.
      t.moe_tp_wait_fwd = attn_wait_fwd;
      t.moe_tp_wait_bwd = (sp ? ag : 0.0) + column(0);
    }
    model::ActivationOptions aopt;
    aopt.tp = tp;
    aopt.sequence_parallel = sp;
    aopt.recompute = rc;
    aopt.flash_attention = base_.training.flash_attention;
    t.act_bytes = model::activation_bytes_per_layer(mdl, b, aopt);
    const double sbh = static_cast<double>(b) * mdl.seq_len * mdl.hidden;
    t.emb_act = 2.0 * sbh / (sp ? tp : 1);
    t.head_act = 4.0 * static_cast<double>(b) * mdl.seq_len * static_cast<double>(mdl.vocab) / tp;
    if (mdl.moe.enabled()) moe_floor(mdl, tp, b, aopt, &t);
    if (base_.gpus > tp) {
      // Stage 0 -> stage 1 with tp fastest in the rank order: GPU 0 to GPU tp*dp (pp stride).
      const int grp[2] = {0, std::min(base_.gpus - 1, tp)};
      t.p2p = comm_.cost(net::CollectiveOp::SendRecv, static_cast<std::uint64_t>(act / tp), grp)
                  .time.seconds();
    }
    return layer_cache_.emplace(key, t).first->second;
  }

  /// The MoE MLP's part of LayerTimes for `mdl` (this rank's tokens: seq_len / cp).
  /// Compute: each EP rank routes T = b x seq_len/cp tokens to k experts, so over the EP
  /// group the ranks process ep x T x k rows (dropless) and the busiest rank, the one the
  /// simulation times (docs/moe.md), at least the mean T x k. Its grouped expert GEMMs
  /// (sum of per-expert GEMMs, TP-split) therefore take at least the FLOPs of T x k rows
  /// at the FLOP floor, whatever the routing; the router and the shared experts at their
  /// FLOP floor split by TP. With a capacity factor the busiest rank may process fewer rows
  /// (drops): the routed experts then count 0. Permutation copies and the EP all-to-alls
  /// count 0 (they may overlap). Activations: the builder sizes the MoE MLP by the busiest
  /// rank's rows / T x expert ffn + shared ffn; rows >= T x k without drops.
  void moe_floor(const model::ModelSpec& mdl, int tp, std::int64_t b,
                 const model::ActivationOptions& aopt, LayerTimes* t) const {
    const auto& moe = mdl.moe;
    const bool dropless = moe.capacity_factor <= 0;
    double f = 0, bw = 0;
    for (const model::Op& op : model::moe_mlp_ops(mdl, b)) {
      if (op.kind != model::OpKind::Gemm) continue;
      if (!dropless && op.name.rfind("expert", 0) == 0) continue;
      f += flop_floor(op.flops.fwd / tp);
      bw += flop_floor((op.flops.bwd_input + op.flops.bwd_weight) / tp);
    }
    t->moe_fwd = f;
    t->moe_bwd = bw;
    model::ModelSpec shape = mdl;
    const std::int64_t ffn = (dropless ? static_cast<std::int64_t>(moe.top_k) * moe.expert_ffn_hidden : 0) +
                             moe.shared_ffn();
    shape.ffn_hidden = static_cast<int>(std::max<std::int64_t>(1, ffn));
    t->moe_act_bytes = model::activation_bytes_per_layer(shape, b, aopt);
  }

  double dp_cost(net::CollectiveOp op, double bytes, const parallel::Layout& L) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "%d/%d/%d/%d/%d/%.0f", static_cast<int>(op), L.tp, L.pp, L.dp,
                  L.cp, bytes);
    auto it = dp_cache_.find(buf);
    if (it != dp_cache_.end()) return it->second;
    // Dense gradients reduce over DP x CP (Layout::dp_cp_group, as the builder).
    const auto group = L.dp_cp_group(0, 0);
    const double t = comm_.cost(op, static_cast<std::uint64_t>(bytes), group).time.seconds();
    dp_cache_.emplace(buf, t);
    return t;
  }

  /// The CP ring's KV transfer forward (K, V) and backward (K, V and dK, dV) as the builder
  /// prices it (compute_cp_costs: the slowest link of the ring of each stage), the least
  /// over the stages.
  std::pair<double, double> cp_kv(const parallel::Layout& L, std::int64_t b) {
    const std::uint64_t key = (static_cast<std::uint64_t>(L.tp) << 48) |
                              (static_cast<std::uint64_t>(L.cp) << 36) |
                              (static_cast<std::uint64_t>(L.dp) << 24) |
                              (static_cast<std::uint64_t>(L.pp) << 12) | static_cast<std::uint64_t>(b);
    auto it = cp_cache_.find(key);
    if (it != cp_cache_.end()) return it->second;
    const auto& mdl = base_.model;
    const double kv_width = mdl.mla.enabled()
                                ? static_cast<double>(mdl.heads) / L.tp *
                                      (mdl.mla.qk_nope_head_dim + mdl.mla.qk_rope_head_dim +
                                       mdl.mla.v_head_dim)
                                : 2.0 * std::max(1, mdl.kv_heads / L.tp) * mdl.head_dim();
    const int local_seq = mdl.seq_len / L.cp;  // 2 cp divides seq_len (validate)
    const double kv = static_cast<double>(b) * local_seq * kv_width * 2.0;
    double lo_f = std::numeric_limits<double>::infinity(), lo_b = lo_f;
    for (int s = 0; s < L.pp; ++s) {
      const auto group = L.cp_group(0, s);
      double wf = 0, wb = 0;
      for (std::size_t i = 0; i < group.size(); ++i) {
        const int pair[2] = {group[i], group[(i + 1) % group.size()]};
        wf = std::max(wf, comm_.cost(net::CollectiveOp::SendRecv, static_cast<std::uint64_t>(kv), pair).time.seconds());
        wb = std::max(wb, comm_.cost(net::CollectiveOp::SendRecv, static_cast<std::uint64_t>(2 * kv), pair).time.seconds());
      }
      lo_f = std::min(lo_f, wf);
      lo_b = std::min(lo_b, wb);
    }
    return cp_cache_.emplace(key, std::make_pair(lo_f, lo_b)).first->second;
  }

  /// One EP all-to-all of `bytes` per rank on the first EP group (estimate only).
  double ep_cost(double bytes, const parallel::Layout& L) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "a2a/%d/%d/%d/%d/%d/%.0f", L.tp, L.expert_tp(), L.dp, L.cp, L.ep,
                  bytes);
    auto it = dp_cache_.find(buf);
    if (it != dp_cache_.end()) return it->second;
    const auto group = L.ep_group(0, 0);
    const double t =
        comm_.cost(net::CollectiveOp::AllToAll, static_cast<std::uint64_t>(bytes), group).time.seconds();
    dp_cache_.emplace(buf, t);
    return t;
  }

  /// Per stage, the most (microbatch, chunk) slots alive at once in the stage's program
  /// (parallel::make_programs, the one the simulation runs): a slot lives from its forward to
  /// its backward, or to its W pass when the backward is split, as the workload frees it. The
  /// compute stream runs the program in order, so the simulated peak holds at least these.
  const std::vector<int>& peak_alive(const parallel::Layout& L, int m) {
    const std::uint64_t key = (static_cast<std::uint64_t>(L.schedule) << 56) |
                              (static_cast<std::uint64_t>(L.pp) << 40) |
                              (static_cast<std::uint64_t>(L.virtual_stages) << 32) |
                              static_cast<std::uint64_t>(m);
    auto it = alive_cache_.find(key);
    if (it != alive_cache_.end()) return it->second;
    const int steps = parallel::flushes(L.schedule) ? base_.steps : base_.steps + 1;
    const auto programs = parallel::make_programs(L, m, steps);
    std::vector<int> peaks;
    for (const auto& prog : programs) {
      std::unordered_map<std::uint64_t, std::size_t> release;  // slot -> index of its last op
      auto slot = [](const parallel::PipeOp& op) {
        return (static_cast<std::uint64_t>(op.microbatch) << 8) | static_cast<std::uint64_t>(op.chunk);
      };
      for (std::size_t i = 0; i < prog.size(); ++i) {
        const auto k = prog[i].kind;
        if (k == parallel::PassKind::BackwardWeight) {
          release[slot(prog[i])] = i;
        } else if (k != parallel::PassKind::Forward) {
          release.try_emplace(slot(prog[i]), i);  // a W pass, when present, comes later
        }
      }
      std::vector<int> frees(prog.size(), 0);
      for (const auto& [sl, i] : release) ++frees[i];
      int alive = 0, peak = 0;
      for (std::size_t i = 0; i < prog.size(); ++i) {
        if (prog[i].kind == parallel::PassKind::Forward) peak = std::max(peak, ++alive);
        alive -= frees[i];
      }
      peaks.push_back(peak);
    }
    return alive_cache_.emplace(key, std::move(peaks)).first->second;
  }

  std::unordered_map<std::uint64_t, std::vector<int>> alive_cache_;
  std::vector<int> moe_of_;  ///< MoE layers per chain position (scratch)
  std::unordered_map<std::uint64_t, std::pair<double, double>> cp_cache_;
  std::array<double, 4> gf_{}, gd_{}, gw_{};  ///< per-GEMM fwd / dgrad / wgrad (scratch)
  const workload::Scenario& base_;
  const hw::Topology& topo_;
  net::AlphaBetaModel comm_;
  cost::CostModel cost_;
  std::unordered_map<std::uint64_t, LayerTimes> layer_cache_;
  std::unordered_map<std::string, double> dp_cache_;
};

std::string fmt(double v, const char* f) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

bool better(const Evaluated& a, const Evaluated& b, const std::string& ka, const std::string& kb) {
  if (a.step_time_s != b.step_time_s) return a.step_time_s < b.step_time_s;
  return ka < kb;
}

}  // namespace

const char* status_name(Status s) {
  switch (s) {
    case Status::Ranked: return "ranked";
    case Status::InvalidLayout: return "invalid_layout";
    case Status::MemoryBound: return "memory_bound";
    case Status::MemorySimulated: return "memory_simulated";
    case Status::PrunedBound: return "pruned_bound";
    case Status::NotSimulated: return "not_simulated";
    case Status::SimFailed: return "simulation_refused";
  }
  return "?";
}

std::string candidate_key(const Candidate& c) {
  const auto& L = c.layout;
  std::string k = "tp" + std::to_string(L.tp) + ".pp" + std::to_string(L.pp) + ".dp" +
                  std::to_string(L.dp) + ".cp" + std::to_string(L.cp) + ".ep" +
                  std::to_string(L.ep) +
                  (L.expert_tp() != L.tp ? ".etp" + std::to_string(L.expert_tp()) : std::string()) +
                  ".sp" + std::to_string(L.sequence_parallel ? 1 : 0) +
                  ".v" + std::to_string(L.virtual_stages) + "." +
                  std::string(parallel::schedule_name(L.schedule)) + ".mb" +
                  std::to_string(c.micro_batch) + ".rc-" + rc_name(c.recompute) + ".z" +
                  std::to_string(L.zero) + ".ogr" + std::to_string(L.overlap_grad_reduce ? 1 : 0) +
                  ".opg" + std::to_string(L.overlap_param_gather ? 1 : 0) + ".tco" +
                  std::to_string(L.tp_comm_overlap ? 1 : 0);
  return k;
}

workload::Scenario apply(const workload::Scenario& base, const Candidate& c) {
  workload::Scenario s = base;
  s.layout = c.layout;
  s.training.micro_batch = c.micro_batch;
  s.training.recompute = c.recompute;
  // The search's selective recompute is the attention core's (its bounds and estimates
  // price that one), whatever modules the base scenario names.
  s.training.recompute_modules = {};
  return s;
}

std::vector<std::int64_t> divisors(std::int64_t n) {
  // Trial division up to sqrt(n): each i <= n / i that divides n gives the pair (i, n / i).
  // O(sqrt n) (10^6 steps for n = 10^12; the loop to n took a minute at 2·10^9).
  std::vector<std::int64_t> low, high;
  for (std::int64_t i = 1; i <= n / i; ++i) {
    if (n % i != 0) continue;
    low.push_back(i);
    if (i != n / i) high.push_back(n / i);
  }
  low.insert(low.end(), high.rbegin(), high.rend());
  return low;
}

std::vector<Candidate> enumerate(const workload::Scenario& base, bool reduced) {
  const auto& m = base.model;
  const std::int64_t gb = base.training.global_batch;
  std::vector<Candidate> out;
  const std::vector<Recompute> rcs = {Recompute::None, Recompute::Selective, Recompute::Full};
  // Loop nest: tp, cp, pp (dp = gpus / (tp cp pp)), ep, micro_batch, schedule (+ virtual
  // stages), sp, recompute, zero, overlap flags. cp: the divisors of gpus / tp for which
  // seq_len divides into 2 cp mirrored chunks (Layout::validate's rule; other values would only
  // be rejected). ep: MoE models only, the divisors of dp x cp that divide the expert count
  // (expert layers take their EP ranks from the DP x CP ranks; Layout::validate checks the
  // rest, e.g. imbalance <= ep), and with tp > 1 also expert TP 1 with the divisors of
  // tp x dp x cp.
  // Degrees divide the GPU count (an int), so they fit in an int; micro-batch sizes divide
  // the global batch and stay 64-bit.
  auto int_divisors = [](int n) {
    std::vector<int> d;
    for (const std::int64_t x : divisors(n)) d.push_back(static_cast<int>(x));
    return d;
  };
  const std::vector<std::int64_t> gb_divisors = divisors(gb);
  for (int tp : int_divisors(base.gpus)) {
    for (int cp : int_divisors(base.gpus / tp)) {
      if (cp > 1 && m.seq_len % (2 * cp) != 0) continue;
      for (int pp : int_divisors(base.gpus / (tp * cp))) {
          const int dp = base.gpus / (tp * cp * pp);
          // (ep, etp): etp 0 is expert TP = TP; with TP also etp 1 (MoE parallel folding),
          // whose EP ranks come from tp x dp x cp.
          std::vector<std::pair<int, int>> eps{{1, 0}};
          if (m.moe.enabled()) {
            eps.clear();
            for (int e : int_divisors(dp * cp)) {
              if (m.moe.experts % e == 0) eps.emplace_back(e, 0);
            }
            if (tp > 1) {
              for (int e : int_divisors(tp * dp * cp)) {
                if (m.moe.experts % e == 0) eps.emplace_back(e, 1);
              }
            }
          }
          // A dp that does not divide the batch stays one candidate: validate names the batch.
          // The divisors of gb / dp are the divisors d of gb with (gb / dp) % d == 0: one
          // O(sqrt gb) factoring per enumeration, filtered here in increasing order.
          std::vector<std::int64_t> mbs{1};
          if (gb % dp == 0) {
            mbs.clear();
            for (const std::int64_t d : gb_divisors) {
              if ((gb / dp) % d == 0) mbs.push_back(d);
            }
          }
          // Schedules: one for pp = 1 (they coincide); flushing synchronous ones otherwise
          // (PipeDream and 2BW change the optimisation semantics: weight staleness).
          std::vector<std::pair<ScheduleKind, int>> scheds;
          if (pp == 1) {
            scheds.push_back({ScheduleKind::OneFOneB, 1});
          } else {
            if (!reduced) scheds.push_back({ScheduleKind::GPipe, 1});
            scheds.push_back({ScheduleKind::OneFOneB, 1});
            // Virtual stages: any count with at least one layer per chunk; uneven splits give
            // the end chunks one layer fewer (parallel::layers_per_virtual_stage). The
            // planner's reduced space keeps Megatron's even splits only.
            for (int v = 2; pp * v <= m.layers; ++v) {
              if (!reduced || m.layers % (pp * v) == 0) {
                scheds.push_back({ScheduleKind::Interleaved, v});
              }
            }
            if (!reduced) {
              scheds.push_back({ScheduleKind::ZbH1, 1});
              scheds.push_back({ScheduleKind::ZbH2, 1});
              scheds.push_back({ScheduleKind::DualPipe, 1});
            }
          }
          for (const auto& [ep, etp] : eps) {
          for (const std::int64_t mb : mbs) {
            for (const auto& [sched, v] : scheds) {
              for (int sp = 0; sp <= (tp > 1 ? 1 : 0); ++sp) {
                if (reduced && tp > 1 && sp == 0) continue;
                // Megatron-Core refuses EP (or expert TP below TP) with TP but without SP.
                if ((ep > 1 || etp == 1) && tp > 1 && sp == 0) continue;
                for (Recompute rc : rcs) {
                  // With nothing to shard or reduce (dp x cp = 1 and no expert-DP ranks)
                  // ZeRO and the DP overlap flags are one point (zero 0, overlap on).
                  const int dpc = dp * cp;
                  // The expert weights' own DP group (Layout::expert_dp) can shard and
                  // reduce even with dp x cp = 1.
                  parallel::Layout degrees;
                  degrees.tp = tp;
                  degrees.dp = dp;
                  degrees.cp = cp;
                  degrees.ep = ep;
                  degrees.etp = etp;
                  const bool shards = dpc > 1 || degrees.expert_dp() > 1;
                  const int zmax = !shards ? 0 : reduced ? 1 : (pp == 1 ? 3 : 1);
                  for (int z = reduced ? zmax : 0; z <= zmax; ++z) {
                    for (int ogr = (reduced || !shards) ? 1 : 0; ogr <= 1; ++ogr) {
                      for (int opg = reduced ? (z == 1 || z == 2 ? 1 : 0) : 0; opg <= (z == 1 || z == 2 ? 1 : 0); ++opg) {
                        for (int tco = reduced ? (tp > 1 ? 1 : 0) : 0; tco <= (tp > 1 ? 1 : 0); ++tco) {
                          Candidate c;
                          c.layout.tp = tp;
                          c.layout.cp = cp;
                          c.layout.ep = ep;
                          c.layout.etp = etp;
                          c.layout.pp = pp;
                          c.layout.dp = dp;
                          c.layout.sequence_parallel = sp == 1;
                          c.layout.virtual_stages = v;
                          c.layout.schedule = sched;
                          c.layout.zero = z;
                          c.layout.overlap_grad_reduce = ogr == 1;
                          c.layout.overlap_param_gather = opg == 1;
                          c.layout.tp_comm_overlap = tco == 1;
                          c.micro_batch = mb;
                          c.recompute = rc;
                          out.push_back(c);
                        }
                      }
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
  }
  return out;
}

namespace {

/// Why a search ranked nothing, from the statuses of its layouts. Only memory: the
/// familiar "no layout of this model fits in X GiB per GPU on N GPUs". Otherwise each reason
/// with its count, most common first, then every remedy (the most common reason's first); the
/// key is that of the most common reason (training.global_batch for the task limit).
InputError no_layout_error(const workload::Scenario& base, const SearchResult& r,
                           std::size_t budget, bool reduced_space) {
  const double cap = base.gpu.hbm_bytes;
  const std::string gib = fmt(cap / kGiB, "%.1f");
  const std::string gpus = std::to_string(base.gpus);
  std::int64_t memory = 0, refused = 0, unsimulated = 0;
  std::map<std::string, std::int64_t> refused_by;
  for (const Evaluated& e : r.all) {
    switch (e.status) {
      case Status::MemoryBound:
      case Status::MemorySimulated: ++memory; break;
      case Status::SimFailed: ++refused; ++refused_by[e.reason]; break;
      case Status::NotSimulated: ++unsimulated; break;
      default: break;
    }
  }
  if (memory > 0 && r.task_limited == 0 && r.time_range == 0 && refused == 0 &&
      unsimulated == 0) {
    return InputError("cluster.gpus", "no layout of this model fits in " + gib +
                                          " GiB per GPU on " + gpus + " GPUs");
  }
  struct Part {
    std::int64_t n;
    std::string what, key, remedy;
  };
  std::vector<Part> parts;
  const std::string gb = std::to_string(base.training.global_batch);
  const std::string smaller_batch =
      "use a smaller global batch (--global-batch; " + gb + " sequences now)";
  auto add = [&](std::int64_t n, std::string what, std::string key, std::string remedy) {
    if (n > 0) parts.push_back({n, std::move(what), std::move(key), std::move(remedy)});
  };
  add(r.task_limited,
      "would need more than the simulator's limit of " +
          fmt(parallel::kMaxSimulatedTasks / 1e6, "%.0f") +
          " million tasks (too many microbatches per step: global batch / (micro_batch x dp))",
      "training.global_batch", smaller_batch);
  add(r.time_range,
      "have micro-batches so large that one kernel would outlast the simulator's time range "
      "(about 106 days)",
      "training.global_batch", smaller_batch);
  add(memory, "do not fit in " + gib + " GiB per GPU", "cluster.gpus",
      "use more GPUs or GPUs with more memory");
  if (refused > 0) {
    // The most common refusal (reason "simulation refused the layout (KEY)"), by its key.
    std::string most;
    std::int64_t most_n = 0;
    for (const auto& [why, k] : refused_by) {
      if (k > most_n) {
        most = why;
        most_n = k;
      }
    }
    const std::size_t open = most.find('(');
    if (open != std::string::npos && most.back() == ')') {
      most = most.substr(open + 1, most.size() - open - 2);
    }
    add(refused, "were refused by the simulation (most often at " + most + ")", "",
        "simulate one with trainsim simulate to see the full message");
  }
  add(unsimulated,
      "were left unsimulated: the budget of " + std::to_string(budget) +
          " simulations was spent on layouts that failed",
      "", "raise --des");
  if (parts.empty()) {  // every layout invalid for this model, GPU count and batch
    // `plan` (the reduced space) has no --csv: name the usual cause instead.
    return InputError("cluster.gpus",
                      "no valid layout of this model on " + gpus + " GPUs with a global batch of " +
                          gb + " sequences" +
                          (reduced_space ? " (TP x PP x CP x DP must equal the GPUs and DP divide "
                                           "the global batch: try a GPU count or --global-batch "
                                           "with more factors of two)"
                                         : " (see --csv for each layout's reason)"));
  }
  std::stable_sort(parts.begin(), parts.end(),
                   [](const Part& x, const Part& y) { return x.n > y.n; });
  std::string msg = "no layout of this model could be simulated on " + gpus +
                    " GPUs with a global batch of " + gb + " sequences: ";
  for (std::size_t i = 0; i < parts.size(); ++i) {
    msg += (i == 0 ? "" : "; ") + std::to_string(parts[i].n) + " layouts " + parts[i].what;
  }
  // Every remedy, the most common reason's first, each once.
  std::vector<std::string> remedies;
  for (const Part& part : parts) {
    if (std::find(remedies.begin(), remedies.end(), part.remedy) == remedies.end()) {
      remedies.push_back(part.remedy);
    }
  }
  for (std::size_t i = 0; i < remedies.size(); ++i) {
    msg += (i == 0 ? "; " : ", or ") + remedies[i];
  }
  return InputError(parts.front().key.empty() ? std::string("cluster.gpus") : parts.front().key,
                    msg);
}

}  // namespace

SearchResult search(const workload::Scenario& base, const SearchOptions& opt,
                    const Communicator& comm) {
  base.model.validate();
  if (base.training.global_batch > kMaxGlobalBatch) {
    throw InputError("training.global_batch",
                     "training.global_batch (" + std::to_string(base.training.global_batch) +
                         ") is larger than the search takes (" +
                         std::to_string(kMaxGlobalBatch) + " = 2^40 sequences)");
  }
  // The analytic lower bounds that prune the search price full training (every weight
  // gradient and optimizer state); with frozen LoRA weights they would not be lower bounds.
  if (base.training.lora.enabled()) {
    throw InputError("training.lora", "search does not support training.lora yet: simulate the "
                                      "LoRA layouts one by one (trainsim simulate)");
  }
  const hw::Topology topo(base.topology, hw::whole_node_gpus(base.topology, base.gpus));
  const int threads = opt.threads > 0 ? opt.threads
                                      : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const auto cands = enumerate(base, opt.reduced_space);
  const std::size_t n = cands.size();
  SearchResult res;
  res.capacity_bytes = base.gpu.hbm_bytes;
  res.all.resize(n);
  for (std::size_t i = 0; i < n; ++i) res.all[i].c = cands[i];

  // Reason codes of Layout::validate failures (the key at fault), in a fixed table so ranks
  // can exchange them as numbers.
  static const std::vector<std::string> kKeys = {
      "parallel.tp", "parallel.pp", "parallel.dp", "parallel.ep", "parallel.cp",
      "parallel.virtual_stages", "parallel.sequence_parallel", "parallel.zero",
      "parallel.schedule", "cluster.gpus", "training.global_batch", "training.micro_batch",
      "other"};
  // A size-guard rejection (Layout::validate's task limit, key training.global_batch), and a
  // layout whose times leave the simulator's range (core::Time, about 106 days: kernels of
  // an enormous micro-batch), key training.micro_batch.
  const double kTaskLimitCode = static_cast<double>(kKeys.size());
  const double kTimeRangeCode = kTaskLimitCode + 1;
  auto key_code = [&](const std::string& k) {
    for (std::size_t i = 0; i + 1 < kKeys.size(); ++i) {
      if (kKeys[i] == k) return static_cast<double>(i);
    }
    return static_cast<double>(kKeys.size() - 1);
  };

  // Phase 1+2: validation and analytic pre-screen, split over ranks by index (i % size),
  // over threads within a rank. Fields per layout: status+1, reason code, lb, est, mem_lb,
  // mem_est (zero when another rank owns it; summed).
  constexpr std::size_t kA = 6;
  std::vector<double> a(n * kA, 0.0);
  const std::size_t mine = comm.size() > 1 ? (n + comm.size() - 1 - comm.rank()) / comm.size() : n;
  {
    // Chunks of layouts pulled by `threads` workers, each with its own analyzer and caches;
    // the coordinating thread reports progress.
    constexpr std::size_t kChunk = 2048;
    const std::size_t chunks = (mine + kChunk - 1) / kChunk;
    std::atomic<std::size_t> next{0}, done{0};
    std::mutex mu;
    std::exception_ptr error;
    std::atomic<int> finished{0};
    auto worker = [&] {
      struct Done {
        std::atomic<int>& f;
        ~Done() { ++f; }
      } mark{finished};
      Analyzer an(base, topo);
      for (;;) {
        const std::size_t ck = next.fetch_add(1);
        if (ck >= chunks) return;
        try {
          for (std::size_t j = ck * kChunk; j < std::min(mine, (ck + 1) * kChunk); ++j) {
            const std::size_t i = j * static_cast<std::size_t>(comm.size()) +
                                  static_cast<std::size_t>(comm.rank());
            const Candidate& c = cands[i];
            double* row = &a[i * kA];
            try {
              c.layout.validate(base.model, base.gpus, base.training.global_batch,
                                c.micro_batch, base.steps);
            } catch (const InputError& e) {
              row[0] = 1 + static_cast<double>(Status::InvalidLayout);
              row[1] = key_code(e.key());
              // training.global_batch with a batch that divides into micro_batch x dp: the
              // size guard (too many tasks to simulate), counted apart for the "nothing
              // ranked" message; its reason stays "invalid: training.global_batch".
              const std::int64_t gb = base.training.global_batch;
              if (e.key() == "training.global_batch" && c.micro_batch <= gb &&
                  gb % (c.micro_batch * c.layout.dp) == 0) {
                row[1] = kTaskLimitCode;
              }
              continue;
            }
            Analyzer::Result r;
            try {
              r = an.analyze(c);
            } catch (const std::overflow_error&) {
              row[0] = 1 + static_cast<double>(Status::InvalidLayout);
              row[1] = kTimeRangeCode;
              continue;
            }
            row[2] = r.lower_bound;
            row[3] = r.estimate;
            row[4] = r.mem_lb;
            row[5] = r.mem_est;
            row[0] = 1 + static_cast<double>(r.mem_lb > base.gpu.hbm_bytes
                                                 ? Status::MemoryBound
                                                 : Status::NotSimulated);
          }
        } catch (...) {
          std::lock_guard<std::mutex> lock(mu);
          if (!error) error = std::current_exception();
          next = chunks;
          return;
        }
        done += std::min(mine, (ck + 1) * kChunk) - ck * kChunk;
      }
    };
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) pool.emplace_back(worker);
    if (opt.progress) {
      while (finished.load() < threads) {
        opt.progress("analytic", done.load(), mine);
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    }
    for (auto& th : pool) th.join();
    if (error) std::rethrow_exception(error);
    if (opt.progress) opt.progress("analytic", mine, mine);
  }
  comm.sum(a);
  std::vector<std::string> keys(n);
  for (std::size_t i = 0; i < n; ++i) {
    Evaluated& e = res.all[i];
    const double* row = &a[i * kA];
    e.status = static_cast<Status>(static_cast<int>(row[0]) - 1);
    e.lower_bound_s = row[2];
    e.estimate_s = row[3];
    e.memory_lb_bytes = row[4];
    e.memory_est_bytes = row[5];
    if (e.status == Status::InvalidLayout) {
      const bool task_limit = row[1] == kTaskLimitCode;
      const bool time_range = row[1] == kTimeRangeCode;
      e.reason = "invalid: " + (task_limit   ? std::string("training.global_batch")
                                : time_range ? std::string("training.micro_batch")
                                             : kKeys[static_cast<std::size_t>(row[1])]);
      if (task_limit) ++res.task_limited;
      if (time_range) ++res.time_range;
    } else if (e.status == Status::MemoryBound) {
      e.reason = "memory: lower bound " + fmt(e.memory_lb_bytes / kGiB, "%.1f") + " GiB > " +
                 fmt(base.gpu.hbm_bytes / kGiB, "%.1f") + " GiB";
    }
    keys[i] = candidate_key(e.c);
  }

  // Phase 3: simulation queue: likely-fitting layouts by estimate, then the others.
  std::vector<std::size_t> queue;
  for (std::size_t i = 0; i < n; ++i) {
    if (res.all[i].status == Status::NotSimulated) queue.push_back(i);
  }
  const double cap = base.gpu.hbm_bytes;
  std::sort(queue.begin(), queue.end(), [&](std::size_t x, std::size_t y) {
    const Evaluated& ex = res.all[x];
    const Evaluated& ey = res.all[y];
    const bool fx = ex.memory_est_bytes <= cap, fy = ey.memory_est_bytes <= cap;
    if (fx != fy) return fx;
    if (ex.estimate_s != ey.estimate_s) return ex.estimate_s < ey.estimate_s;
    return keys[x] < keys[y];
  });
  double best = std::numeric_limits<double>::infinity();
  std::size_t qi = 0;
  const std::size_t round = static_cast<std::size_t>(std::max(1, opt.des_round));
  const std::size_t budget = static_cast<std::size_t>(std::max(0, opt.des_max));
  constexpr std::size_t kS = 11;
  while (qi < queue.size() && res.simulations < budget) {
    std::vector<std::size_t> batch;
    while (qi < queue.size() && batch.size() < round && res.simulations + batch.size() < budget) {
      const std::size_t i = queue[qi++];
      if (res.all[i].lower_bound_s >= best) {
        res.all[i].status = Status::PrunedBound;
        continue;
      }
      batch.push_back(i);
    }
    if (batch.empty()) continue;
    // Position j of the round goes to rank j % size.
    std::vector<std::size_t> my;
    for (std::size_t j = 0; j < batch.size(); ++j) {
      if (static_cast<int>(j % static_cast<std::size_t>(comm.size())) == comm.rank()) my.push_back(j);
    }
    std::vector<double> s(batch.size() * kS, 0.0);
    parallel_for(my.size(), threads, [&](std::size_t k) {
      const std::size_t j = my[k];
      double* row = &s[j * kS];
      const auto sc = apply(base, res.all[batch[j]].c);
      try {
        const auto r = workload::simulate_step(sc);
        row[0] = r.memory.fits ? 1 : 2;
        row[1] = r.step_time.seconds();
        row[2] = r.mfu;
        row[3] = r.memory.total;
        row[4] = r.breakdown.bubble;
        row[5] = r.breakdown.exposed_of(Category::TpComm);
        row[6] = r.breakdown.exposed_of(Category::DpComm);
        row[7] = r.breakdown.exposed_of(Category::PpComm);
        row[8] = r.breakdown.compute;
        row[9] = r.breakdown.optimizer;
      } catch (const InputError& e) {
        row[0] = 3;
        row[10] = key_code(e.key());
      } catch (const std::overflow_error&) {
        row[0] = 3;
        row[10] = kTimeRangeCode;
      }
    });
    comm.sum(s);
    for (std::size_t j = 0; j < batch.size(); ++j) {
      Evaluated& e = res.all[batch[j]];
      const double* row = &s[j * kS];
      e.simulated = row[0] != 3;
      if (row[0] == 3) {
        e.status = Status::SimFailed;
        e.reason = "simulation refused the layout (" +
                   (row[10] == kTimeRangeCode ? std::string("time out of range")
                                              : kKeys[static_cast<std::size_t>(row[10])]) +
                   ")";
        continue;
      }
      e.step_time_s = row[1];
      e.mfu = row[2];
      e.memory_bytes = row[3];
      e.bubble_s = row[4];
      e.exposed_tp_s = row[5];
      e.exposed_dp_s = row[6];
      e.exposed_pp_s = row[7];
      e.compute_s = row[8];
      e.optimizer_s = row[9];
      if (row[0] == 1) {
        e.status = Status::Ranked;
        best = std::min(best, e.step_time_s);
      } else {
        e.status = Status::MemorySimulated;
        e.reason = "memory: simulated " + fmt(e.memory_bytes / kGiB, "%.1f") + " GiB > " +
                   fmt(cap / kGiB, "%.1f") + " GiB";
      }
    }
    res.simulations += batch.size();
    if (opt.progress) opt.progress("simulate", res.simulations, std::min(budget, queue.size()));
  }
  res.proven = true;
  for (; qi < queue.size(); ++qi) {
    Evaluated& e = res.all[queue[qi]];
    if (e.lower_bound_s >= best) {
      e.status = Status::PrunedBound;
    } else {
      e.status = Status::NotSimulated;
      res.proven = false;
    }
  }
  for (std::size_t i = 0; i < n; ++i) {
    Evaluated& e = res.all[i];
    if (e.status == Status::PrunedBound) {
      e.reason = "bound: lower bound " + fmt(e.lower_bound_s, "%.4f") + " s >= best " +
                 fmt(best, "%.4f") + " s";
    } else if (e.status == Status::NotSimulated) {
      e.reason = "not simulated: budget of " + std::to_string(budget) + " simulations spent";
    }
    if (e.status == Status::Ranked) {
      res.ranking.push_back(i);
    } else if (e.status == Status::InvalidLayout) {
      ++res.rejected[e.reason];
    } else {
      ++res.rejected[status_name(e.status)];
    }
  }
  std::sort(res.ranking.begin(), res.ranking.end(), [&](std::size_t x, std::size_t y) {
    return better(res.all[x], res.all[y], keys[x], keys[y]);
  });
  if (res.ranking.empty()) throw no_layout_error(base, res, budget, opt.reduced_space);
  return res;
}

namespace {
/// A CSV field: quoted, with inner quotes doubled (RFC 4180).
std::string csv_field(const std::string& v) {
  std::string out = "\"";
  for (char ch : v) {
    if (ch == '"') out += '"';
    out += ch;
  }
  return out + "\"";
}
}  // namespace

std::string search_csv(const workload::Scenario& base, const SearchResult& r) {
  std::ostringstream o;
  o << "key,tp,pp,dp,cp,ep,etp,sequence_parallel,virtual_stages,schedule,micro_batch,recompute,zero,"
       "overlap_grad_reduce,overlap_param_gather,tp_comm_overlap,status,reason,lower_bound_s,"
       "estimate_s,memory_lower_bound_gib,memory_estimate_gib,step_time_s,mfu,memory_gib,bubble_s,exposed_tp_s,"
       "exposed_dp_s,exposed_pp_s,rank\n";
  std::vector<std::size_t> rank_of(r.all.size(), 0);
  for (std::size_t k = 0; k < r.ranking.size(); ++k) rank_of[r.ranking[k]] = k + 1;
  for (std::size_t i = 0; i < r.all.size(); ++i) {
    const Evaluated& e = r.all[i];
    const auto& L = e.c.layout;
    const bool analysed = e.status != Status::InvalidLayout;
    o << candidate_key(e.c) << ',' << L.tp << ',' << L.pp << ',' << L.dp << ',' << L.cp << ','
      << L.ep << ',' << L.expert_tp() << ',' << (L.sequence_parallel ? 1 : 0) << ','
      << L.virtual_stages << ','
      << parallel::schedule_name(L.schedule) << ',' << e.c.micro_batch << ','
      << rc_name(e.c.recompute) << ',' << L.zero << ',' << (L.overlap_grad_reduce ? 1 : 0) << ','
      << (L.overlap_param_gather ? 1 : 0) << ',' << (L.tp_comm_overlap ? 1 : 0) << ','
      << status_name(e.status) << ',';
    std::string reason = e.reason;
    if (e.status == Status::InvalidLayout) {
      // The full message of the check (recomputed here: ranks exchange only the key).
      try {
        L.validate(base.model, base.gpus, base.training.global_batch, e.c.micro_batch, base.steps);
        // Valid, yet refused: its analysis left the simulator's time range.
        reason = e.reason + ": kernel times of micro_batch " + std::to_string(e.c.micro_batch) +
                 " exceed the simulator's time range (about 106 days)";
      } catch (const InputError& err) {
        reason = e.reason + ": " + err.what();
      }
    }
    o << csv_field(reason) << ',';
    if (analysed) {
      o << fmt(e.lower_bound_s, "%.6g") << ',' << fmt(e.estimate_s, "%.6g") << ','
        << fmt(e.memory_lb_bytes / kGiB, "%.3f") << ',' << fmt(e.memory_est_bytes / kGiB, "%.3f");
    } else {
      o << ",,,";
    }
    o << ',';
    if (e.simulated) {
      o << fmt(e.step_time_s, "%.6g") << ',' << fmt(e.mfu, "%.4f") << ','
        << fmt(e.memory_bytes / kGiB, "%.3f") << ',' << fmt(e.bubble_s, "%.6g") << ','
        << fmt(e.exposed_tp_s, "%.6g") << ',' << fmt(e.exposed_dp_s, "%.6g") << ','
        << fmt(e.exposed_pp_s, "%.6g");
    } else {
      o << ",,,,,,";
    }
    o << ',';
    if (rank_of[i] > 0) o << rank_of[i];
    o << '\n';
  }
  return o.str();
}

nlohmann::ordered_json layout_json(const Candidate& c) {
  const auto& L = c.layout;
  nlohmann::ordered_json j;
  j["tp"] = L.tp;
  j["pp"] = L.pp;
  j["dp"] = L.dp;
  j["ep"] = L.ep;
  j["etp"] = L.expert_tp();
  j["cp"] = L.cp;
  j["sequence_parallel"] = L.sequence_parallel;
  j["virtual_stages"] = L.virtual_stages;
  j["schedule"] = std::string(parallel::schedule_name(L.schedule));
  j["micro_batch"] = c.micro_batch;
  j["recompute"] = rc_name(c.recompute);
  j["zero"] = L.zero;
  j["overlap_grad_reduce"] = L.overlap_grad_reduce;
  j["overlap_param_gather"] = L.overlap_param_gather;
  j["tp_comm_overlap"] = L.tp_comm_overlap;
  j["key"] = candidate_key(c);
  return j;
}

std::string search_json(const workload::Scenario& base, const SearchResult& r, int top) {
  nlohmann::ordered_json j;
  j["scenario"] = base.name;
  j["gpus"] = base.gpus;
  j["global_batch"] = base.training.global_batch;
  j["candidates_evaluated"] = r.all.size();
  j["simulations"] = r.simulations;
  j["proven"] = r.proven;
  nlohmann::ordered_json rej = nlohmann::ordered_json::object();
  for (const auto& [k, v] : r.rejected) rej[k] = v;
  j["rejected"] = rej;
  nlohmann::ordered_json arr = nlohmann::ordered_json::array();
  for (std::size_t k = 0; k < r.ranking.size() && static_cast<int>(k) < top; ++k) {
    const Evaluated& e = r.all[r.ranking[k]];
    nlohmann::ordered_json t;
    t["layout"] = layout_json(e.c);
    t["step_time_s"] = e.step_time_s;
    t["mfu"] = e.mfu;
    t["memory_gib"] = e.memory_bytes / kGiB;
    t["bubble_s"] = e.bubble_s;
    t["exposed_tp_comm_s"] = e.exposed_tp_s;
    t["exposed_dp_comm_s"] = e.exposed_dp_s;
    t["exposed_pp_comm_s"] = e.exposed_pp_s;
    arr.push_back(t);
  }
  j["top"] = arr;
  return j.dump(2) + "\n";
}

std::string search_text(const workload::Scenario& base, const SearchResult& r, int top) {
  std::ostringstream o;
  o << "trainsim search: " << base.name << " on " << base.gpus << " x " << base.gpu.display_name
    << ", global batch " << base.training.global_batch << "\n";
  o << "  layouts enumerated   " << r.all.size() << "\n";
  std::int64_t invalid = 0;
  for (const auto& [k, v] : r.rejected) {
    if (k.rfind("invalid: ", 0) == 0) invalid += v;
  }
  o << "  rejected (layout)    " << invalid << "\n";
  for (const auto& [k, v] : r.rejected) {
    if (k.rfind("invalid: ", 0) == 0) {
      o << "    " << k.substr(9) << std::string(k.size() - 9 < 19 ? 19 - (k.size() - 9) : 1, ' ')
        << v << "\n";
    }
  }
  for (const auto& [k, v] : r.rejected) {
    if (k.rfind("invalid: ", 0) != 0) {
      o << "  " << k << std::string(k.size() < 21 ? 21 - k.size() : 1, ' ') << v << "\n";
    }
  }
  o << "  simulated (DES)      " << r.simulations << "  ("
    << (r.proven ? "every layout left has a lower bound >= the best: ranking exact"
                 : "budget spent before the bound closed: ranking of the simulated ones")
    << ")\n\n";
  o << "  #  layout                                                        step s    MFU   mem GiB  bubble s  exp TP s  exp DP s\n";
  const Evaluated* best = r.ranking.empty() ? nullptr : &r.all[r.ranking.front()];
  for (std::size_t k = 0; k < r.ranking.size() && static_cast<int>(k) < top; ++k) {
    const Evaluated& e = r.all[r.ranking[k]];
    char line[256];
    std::snprintf(line, sizeof line, "%3zu  %-60s %8.3f  %5.1f%%  %7.1f  %8.3f  %8.3f  %8.3f\n",
                  k + 1, candidate_key(e.c).c_str(), e.step_time_s, 100 * e.mfu,
                  e.memory_bytes / kGiB, e.bubble_s, e.exposed_tp_s, e.exposed_dp_s);
    o << line;
  }
  if (best != nullptr && r.ranking.size() > 1) {
    o << "\n  why the runners-up lose to #1:\n";
    for (std::size_t k = 1; k < r.ranking.size() && static_cast<int>(k) < top; ++k) {
      const Evaluated& e = r.all[r.ranking[k]];
      struct Part {
        const char* name;
        double d;
      };
      const Part parts[] = {{"bubble", e.bubble_s - best->bubble_s},
                            {"exposed TP comm", e.exposed_tp_s - best->exposed_tp_s},
                            {"exposed DP comm", e.exposed_dp_s - best->exposed_dp_s},
                            {"exposed PP comm", e.exposed_pp_s - best->exposed_pp_s},
                            {"compute (incl. recompute)", e.compute_s - best->compute_s},
                            {"optimizer", e.optimizer_s - best->optimizer_s}};
      const Part* worst = &parts[0];
      for (const Part& p : parts) {
        if (p.d > worst->d) worst = &p;
      }
      char line[256];
      std::snprintf(line, sizeof line,
                    "%3zu  +%.3f s: mostly %s (+%.3f s); memory %.1f vs %.1f GiB\n", k + 1,
                    e.step_time_s - best->step_time_s, worst->name, worst->d,
                    e.memory_bytes / kGiB, best->memory_bytes / kGiB);
      o << line;
    }
  }
  return o.str();
}

}  // namespace trainsim::plan
