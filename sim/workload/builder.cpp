#include "workload/builder.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <string>
#include <tuple>

#include "core/error.hpp"
#include "cost/cost_model.hpp"
#include "model/memory.hpp"
#include "net/collective.hpp"
#include "net/profiled.hpp"
#include "parallel/schedule.hpp"

namespace trainsim::workload {

const char* fidelity_name(Fidelity f) {
  switch (f) {
    case Fidelity::Analytic: return "analytic";
    case Fidelity::Stage: return "stage";
    case Fidelity::Full: return "full";
  }
  return "?";
}

namespace {

using model::Op;
using model::OpKind;
using model::Shard;
using net::CollectiveOp;
using parallel::PassKind;
using parallel::PipeOp;

/// Bytes of the optimizer step per local parameter: read and write the fp32 master weight,
/// momentum and variance (2 x 12), read the 16-bit gradient (2), write the 16-bit weight (2).
constexpr double kAdamBytesPerParam = 28.0;

/// A compute op of one rank with its cost per pass.
struct OpCost {
  LabelId fwd_label = kNoId, bwd_label = kNoId, recompute_label = kNoId;
  Time fwd, bwd_input, bwd_weight;
  LabelId dgrad_label = kNoId, wgrad_label = kNoId;
};

/// A collective of one rank's TP or DP group.
struct CommCost {
  LabelId label = kNoId;
  Time time;
};

/// Per-rank costs of a layer, the head and the embedding, computed once per step.
struct LayerCosts {
  OpCost attn_norm, qkv, attention, proj, attn_residual, mlp_norm, mlp_in, act, mlp_out,
      mlp_residual;
  OpCost embedding, final_norm, lm_head, loss;
  CommCost tp_ag, tp_rs, tp_ar;          // of one [b, s, h] activation
  CommCost tp_ag_bwd, tp_rs_bwd;         // conjugates in backward (same sizes, own labels)
  CommCost tp_ag_wgrad;                  // SP: input all-gather for the weight gradient
  CommCost tp_ar_bwd;
  CommCost head_ag, head_rs, head_ar;    // around the LM head
  double layer_params = 0;               // per rank
};

class StepBuilder final : public PassEmitter {
 public:
  StepBuilder(const Scenario& sc, const net::CollectiveModel& comm, const cost::CostModel& cost,
              TaskGraph& g)
      : sc_(sc), comm_(comm), cost_(cost), g_(g) {
    const auto& L = sc_.layout;
    tp_ = L.tp;
    sp_ = L.sequence_parallel;
    shape_ = PipelineShape{L.pp, L.virtual_stages, L.schedule == parallel::ScheduleKind::DualPipe};
    v_ = shape_.dual ? 2 : L.virtual_stages;  // model chunks per rank
    layers_ = parallel::layers_per_virtual_stage(sc_.model.layers, shape_.chain_length(), 1);
    bucket_params_ = L.dp_bucket_params > 0
                         ? static_cast<double>(L.dp_bucket_params)
                         : std::max(40e6, 1e6 * L.dp);
    compute_costs();
  }

  const LayerCosts& costs() const { return c_; }
  int layers_of(int vs) const { return layers_[static_cast<std::size_t>(shape_.position(vs))]; }
  int chunks() const { return v_; }
  const PipelineShape& shape() const { return shape_; }

  /// Parameters of one rank of `stage`.
  double stage_params(int stage) const {
    double p = 0;
    for (int c = 0; c < v_; ++c) p += chunk_params(stage, c);
    return p;
  }

  /// Parameters in model chunk `chunk` of `stage`, per rank: its layers, the embedding on the
  /// first virtual stage, the head on the last (with tied embeddings and pp > 1, the last
  /// stage keeps its own copy of the embedding, as Megatron-LM does).
  double chunk_params(int stage, int chunk) const {
    const int vs = shape_.vs_of(stage, chunk);
    double p = layers_of(vs) * c_.layer_params;
    if (shape_.first_of_chain(vs)) p += embedding_params();
    if (shape_.last_of_chain(vs)) p += head_params();
    return p;
  }
  double embedding_params() const { return sc_.model.embedding_params() / tp_; }
  double head_params() const {
    const bool tied_copy = sc_.model.tied_embeddings && shape_.chain_length() > 1;
    return (sc_.model.head_params() + (tied_copy ? sc_.model.embedding_params() : 0.0)) / tp_;
  }

  /// Where, in each stage's program, updates happen and gradient buckets are reduced.
  struct StagePlan {
    std::vector<int> update_after;      ///< per op: the update group that ends with it, or -1
    std::vector<bool> reduce_trigger;   ///< per op: last weight-gradient pass of a chunk in
                                        ///< its update group: reduce buckets during it
  };
  void set_plans(std::vector<StagePlan> plans, std::vector<int> group_step) {
    plans_ = std::move(plans);
    group_step_ = std::move(group_step);
  }
  /// Per stage, the optimizer task that ends each step (index = step).
  const std::vector<std::vector<TaskId>>& step_ends() const { return step_ends_; }
  /// Per step, the stages' gradient-norm synchronisation tasks (empty without a barrier).
  const std::vector<std::vector<TaskId>>& barriers() const { return barriers_; }

  /// Before the stage's program: ZeRO-1/2 parameter all-gathers overlapped with the forward.
  void begin_stage(const StageStreams& st, int stage) {
    stage_ = stage;
    op_index_ = 0;
    updates_ = 0;
    blocking_gathers_.clear();
    dp_grad_tasks_.clear();
    bucket_fill_ = 0;
    step_ends_.emplace_back();
    compute_tp_costs();  // the TP group of this stage, where it sits on the topology
    schedule_param_gathers(st, kNoId);
  }

  /// ZeRO-1/2: the parameter all-gathers after an update (or, with overlap_param_gather,
  /// before the first step: the previous step's). With overlap_param_gather they wait for
  /// nothing and each chunk's first forward waits for the buckets it needs; otherwise they
  /// follow the optimizer step directly.
  void schedule_param_gathers(const StageStreams& st, TaskId after) {
    const auto& L = sc_.layout;
    gathers_.assign(static_cast<std::size_t>(v_), {});
    if (L.dp == 1 || (L.zero != 1 && L.zero != 2)) return;
    if (after == kNoId && !L.overlap_param_gather) return;
    for (int c = 0; c < v_; ++c) {
      auto& gathers = gathers_[static_cast<std::size_t>(c)];
      for (double bytes : bucket_bytes(chunk_params(stage_, c))) {
        const TaskId t = g_.add_task(st.dp, dp_cost(CollectiveOp::AllGather, bytes),
                                     Category::DpComm, l_param_ag_);
        if (after != kNoId) g_.add_dependency(after, t);
        if (L.overlap_param_gather) {
          gathers.tasks.push_back(t);
        } else {
          blocking_gathers_.push_back(t);  // the next forward waits for all of them
        }
      }
    }
  }

  /// End of an update group (a step, or for PipeDream one microbatch): gradient reduction not
  /// yet done, the pipeline-wide gradient-norm synchronisation (unless the schedule has none),
  /// the optimizer step and the parameter gathers for the next step.
  void end_update(const StageStreams& st, TaskId last_compute, int group) {
    const auto& L = sc_.layout;
    const bool dp_comm = L.dp > 1;
    if (dp_comm && !L.overlap_grad_reduce && L.zero < 3) {
      for (int c = v_ - 1; c >= 0; --c) {
        for (double bytes : bucket_bytes(chunk_params(stage_, c))) {
          const TaskId t = g_.add_task(st.dp, dp_cost(grad_op(), bytes), Category::DpComm,
                                       l_grad_reduce_);
          g_.add_dependency(last_compute, t);
          dp_grad_tasks_.push_back(t);
        }
      }
    }
    // Tied embeddings with pp > 1: the first and the last stage all-reduce the embedding
    // gradient between them (Megatron-LM's embedding group) before the optimizer.
    if (sc_.model.tied_embeddings && shape_.chain_length() > 1 && !shape_.dual &&
        (stage_ == 0 || stage_ == sc_.layout.pp - 1)) {
      const int pair[2] = {L.rank(0, 0, 0, 0), L.rank(0, 0, 0, L.pp - 1)};
      const Time t = comm_.cost(CollectiveOp::AllReduce,
                                static_cast<std::uint64_t>(embedding_params() *
                                                           hw::dtype_bytes(grad_dtype())),
                                pair).time;
      const TaskId sync = g_.add_task(st.dp, t, Category::DpComm, l_tied_sync_);
      g_.add_dependency(last_compute, sync);
      dp_grad_tasks_.push_back(sync);
      if (stage_ == 0) {
        tied_syncs_.push_back(sync);
      } else {
        g_.add_rendezvous({tied_syncs_.at(tied_index_++), sync});
      }
    }
    // DualPipe: rank r and rank p-1-r hold the same layers (in opposite directions) and
    // all-reduce their gradients before the update (DeepSeek-V3 report §3.2.1).
    if (shape_.dual) {
      const int mirror = L.pp - 1 - stage_;
      const int pair_ranks[2] = {L.rank(0, 0, 0, std::min(stage_, mirror)),
                                 L.rank(0, 0, 0, std::max(stage_, mirror))};
      const Time t = comm_.cost(CollectiveOp::AllReduce,
                                static_cast<std::uint64_t>(stage_params(stage_) *
                                                           hw::dtype_bytes(grad_dtype())),
                                pair_ranks).time;
      const TaskId sync = g_.add_task(st.dp, t, Category::DpComm, l_mirror_sync_);
      g_.add_dependency(last_compute, sync);
      for (TaskId d : dp_grad_tasks_) g_.add_dependency(d, sync);
      dp_grad_tasks_.push_back(sync);
      const auto key = std::make_pair(std::min(stage_, mirror), updates_);
      auto it = mirror_syncs_.find(key);
      if (it == mirror_syncs_.end()) {
        mirror_syncs_.emplace(key, sync);
      } else {
        g_.add_rendezvous({it->second, sync});
        mirror_syncs_.erase(it);
      }
    }
    ++updates_;
    const int step = group_step_[static_cast<std::size_t>(group)];
    // Megatron-LM clips gradients by their global norm: an all-reduce over the pipeline group
    // before every optimizer step, which synchronises the stages. Zero-bubble post-validation
    // and the asynchronous PipeDream schedules have none.
    if (step >= 0 && L.pp > 1 && !L.optimizer_post_validation &&
        parallel::flushes(L.schedule)) {
      if (barriers_.size() <= static_cast<std::size_t>(step)) {
        barriers_.resize(static_cast<std::size_t>(step) + 1);
      }
      const TaskId b = g_.add_task(st.dp, norm_sync_time_, Category::PpComm, l_norm_sync_);
      g_.add_dependency(last_compute, b);
      for (TaskId t : dp_grad_tasks_) g_.add_dependency(t, b);
      barriers_[static_cast<std::size_t>(step)].push_back(b);
      dp_grad_tasks_.push_back(b);
    }
    const double params = stage_params(stage_);
    const double local = L.zero >= 1 ? params / L.dp : params;
    const TaskId opt = g_.add_task(st.compute, cost_.memory_bound(kAdamBytesPerParam * local),
                                   Category::Optimizer, l_optimizer_);
    for (TaskId t : dp_grad_tasks_) g_.add_dependency(t, opt);
    dp_grad_tasks_.clear();
    if (step >= 0) step_ends_.back().push_back(opt);
    const bool last = group + 1 == static_cast<int>(group_step_.size());
    if (!last || !L.overlap_param_gather) schedule_param_gathers(st, opt);
  }

  PassRecord emit(TaskGraph& g, const StageStreams& st, int stage, const PipeOp& op,
                  TaskId wait_for) override {
    (void)g;
    const auto op_i = static_cast<std::size_t>(op_index_++);
    const StagePlan& plan = plans_[static_cast<std::size_t>(stage)];
    reduce_trigger_ = plan.reduce_trigger[op_i];
    st_ = &st;
    mb_ = op.microbatch;
    chunk_ = op.chunk;
    wait_.clear();
    if (wait_for != kNoId) wait_.push_back(wait_for);
    first_ = kNoId;
    last_ = kNoId;
    const int vs = shape_.vs_of(stage, op.chunk);
    const int nl = layers_of(vs);
    const bool first_vs = shape_.first_of_chain(vs), last_vs = shape_.last_of_chain(vs);
    if (op.kind == PassKind::Forward) {
      // Without overlap_param_gather Megatron gathers the parameters inside the optimizer
      // step: the next forward starts after all of them.
      for (TaskId t : blocking_gathers_) wait_.push_back(t);
      blocking_gathers_.clear();
      gather_ = &gathers_[static_cast<std::size_t>(op.chunk)];
      if (first_vs) {
        wait_for_params(embedding_params());
        zero3_gather(embedding_params());
        embedding_forward();
      }
      for (int l = 0; l < nl; ++l) {
        wait_for_params(c_.layer_params);
        zero3_gather(c_.layer_params);
        layer_forward(false);
      }
      if (last_vs) {
        wait_for_params(head_params());
        zero3_gather(head_params());
        head_forward();
      }
      gather_->tasks.clear();  // later microbatches find the parameters in place
      gather_ = nullptr;
    } else if (op.kind == PassKind::BackwardWeight) {
      // Zero-bubble W pass: the weight-gradient GEMMs of the chunk, in backward order.
      input_only_ = false;
      begin_reduction();
      if (last_vs) {
        const TaskId wgrad = column_weight_grad(c_.lm_head);
        zero3_reduce(head_params(), wgrad);
        add_grads(head_params());
      }
      for (int l = 0; l < nl; ++l) {
        const TaskId wgrad = layer_weight_grads();
        zero3_reduce(c_.layer_params, wgrad);
        add_grads(c_.layer_params);
      }
      if (first_vs) {
        zero3_reduce(embedding_params(), last_);  // its gradient came with the B pass
        add_grads(embedding_params());
      }
      if (reduce_now_ && bucket_fill_ > 0) flush_bucket();
    } else {
      // Whole backward, or (zero-bubble B pass) the activation-gradient part only.
      input_only_ = op.kind == PassKind::BackwardInput;
      begin_reduction();
      if (last_vs) {
        zero3_gather(head_params());
        const TaskId wgrad = head_backward();
        if (!input_only_) {
          zero3_reduce(head_params(), wgrad);
          add_grads(head_params());
        }
      }
      for (int l = 0; l < nl; ++l) {
        zero3_gather(c_.layer_params);  // before recompute and backward
        if (sc_.training.recompute == model::Recompute::Full) layer_forward(true);
        const TaskId wgrad = layer_backward();
        if (!input_only_) {
          zero3_reduce(c_.layer_params, wgrad);
          add_grads(c_.layer_params);
        }
      }
      if (first_vs) {
        zero3_gather(embedding_params());
        embedding_backward();
        if (!input_only_) {
          zero3_reduce(embedding_params(), last_);
          add_grads(embedding_params());
        }
      }
      if (reduce_now_ && bucket_fill_ > 0) flush_bucket();
    }
    const PassRecord rec{first_, last_};
    if (plan.update_after[op_i] >= 0) end_update(st, last_, plan.update_after[op_i]);
    return rec;
  }

 private:
  // ----- costs -------------------------------------------------------------------------
  OpCost op_cost(const Op& model_op, const std::string& name) {
    OpCost c;
    c.fwd_label = g_.intern(name);
    c.bwd_label = g_.intern(name + " bwd");
    c.recompute_label = g_.intern("recompute " + name);
    const hw::Dtype dt = sc_.training.dtype;
    const Op op = rank_op(sc_, model_op);
    switch (op.kind) {
      case OpKind::Gemm: {
        c.fwd = cost_.gemm(op.m, op.n, op.k, dt);
        c.bwd_input = cost_.gemm(op.m, op.k, op.n, dt);   // dX = dY * W^T
        c.bwd_weight = cost_.gemm(op.k, op.n, op.m, dt);  // dW = X^T * dY
        c.dgrad_label = g_.intern(name + " dgrad");
        c.wgrad_label = g_.intern(name + " wgrad");
        break;
      }
      case OpKind::Attention: {
        const auto impl = sc_.training.flash_attention ? cost::AttentionImpl::Flash
                                                       : cost::AttentionImpl::Unfused;
        c.fwd = cost_.attention_fwd(op.batch, op.heads, op.seq, op.head_dim, op.causal, impl);
        c.bwd_input =
            cost_.attention_bwd(op.batch, op.heads, op.seq, op.head_dim, op.causal, impl);
        break;
      }
      default: {
        c.fwd = cost_.memory_bound(op.fwd_bytes);
        c.bwd_input = cost_.memory_bound(op.bwd_bytes);
        break;
      }
    }
    return c;
  }

  CommCost tp_comm(CollectiveOp op, double bytes, const std::string& label) {
    CommCost c;
    c.label = g_.intern(label);
    if (tp_ > 1) {
      const auto group = sc_.layout.tp_group(0, stage_);
      c.time = comm_.cost(op, static_cast<std::uint64_t>(bytes), group).time;
    }
    return c;
  }

  void compute_costs() {
    const auto& mdl = sc_.model;
    const std::int64_t b = sc_.training.micro_batch;
    const auto ops = model::layer_ops(mdl, b);
    auto find = [&](const char* name) -> const Op& {
      for (const Op& o : ops) {
        if (o.name == name) return o;
      }
      return ops.front();
    };
    const bool swiglu = mdl.activation == model::Activation::SwiGLU;
    c_.attn_norm = op_cost(find("attn_norm"), "attn_norm");
    c_.qkv = op_cost(find("qkv"), "qkv");
    c_.attention = op_cost(find("attention"), "attention");
    c_.proj = op_cost(find("proj"), "proj");
    c_.attn_residual = op_cost(find("attn_residual"), "attn_residual");
    c_.mlp_norm = op_cost(find("mlp_norm"), "mlp_norm");
    c_.mlp_in = op_cost(find(swiglu ? "mlp_gate_up" : "mlp_fc1"), swiglu ? "mlp_gate_up" : "mlp_fc1");
    c_.act = op_cost(find(swiglu ? "swiglu" : "gelu"), swiglu ? "swiglu" : "gelu");
    c_.mlp_out = op_cost(find(swiglu ? "mlp_down" : "mlp_fc2"), swiglu ? "mlp_down" : "mlp_fc2");
    c_.mlp_residual = op_cost(find("mlp_residual"), "mlp_residual");
    c_.embedding = op_cost(model::embedding_op(mdl, b), "embedding");
    const auto head = model::head_ops(mdl, b);
    c_.final_norm = op_cost(head[0], "final_norm");
    c_.lm_head = op_cost(head[1], "lm_head");
    c_.loss = op_cost(head[2], "loss");
    // Per rank: QKV (KV heads replicated when tp > kv_heads), projection, MLP, norms.
    const double h = mdl.hidden;
    c_.layer_params = h * static_cast<double>(qkv_width_per_rank()) + h * h / tp_ +
                      (mdl.activation == model::Activation::SwiGLU ? 3.0 : 2.0) * h *
                          mdl.ffn_hidden / tp_ +
                      (mdl.norm == model::Norm::LayerNorm ? 4.0 : 2.0) * h / tp_;
    l_tied_sync_ = g_.intern("embedding grad all_reduce (first/last stage)");
    l_norm_sync_ = g_.intern("grad-norm all_reduce (pipeline)");
    l_mirror_sync_ = g_.intern("grad all_reduce with mirror rank (DualPipe)");
    // One fp32 value per rank over the pipeline ranks of TP rank 0, DP rank 0.
    std::vector<int> pipe;
    for (int s = 0; s < sc_.layout.pp; ++s) pipe.push_back(sc_.layout.rank(0, 0, 0, s));
    norm_sync_time_ = comm_.cost(CollectiveOp::AllReduce, 4, pipe).time;
    l_grad_reduce_ = g_.intern(sc_.layout.zero >= 1 ? "dp reduce_scatter grads"
                                                    : "dp all_reduce grads");
    l_param_ag_ = g_.intern("dp all_gather params");
    l_optimizer_ = g_.intern("optimizer step");
  }

  /// Output width of the QKV GEMM on one TP rank: its query heads and its K/V heads (one
  /// replicated K/V head per rank when tp exceeds kv_heads).
  std::int64_t qkv_width_per_rank() const { return qkv_width(sc_.model, tp_); }

  /// TP collectives of one [b, s, h] activation in this stage's TP group.
  void compute_tp_costs() {
    const auto& mdl = sc_.model;
    const double act = static_cast<double>(sc_.training.micro_batch) * mdl.seq_len * mdl.hidden * 2.0;
    c_.tp_ag = tp_comm(CollectiveOp::AllGather, act, "tp all_gather");
    c_.tp_rs = tp_comm(CollectiveOp::ReduceScatter, act, "tp reduce_scatter");
    c_.tp_ar = tp_comm(CollectiveOp::AllReduce, act, "tp all_reduce");
    c_.tp_ag_bwd = tp_comm(CollectiveOp::AllGather, act, "tp all_gather bwd");
    c_.tp_rs_bwd = tp_comm(CollectiveOp::ReduceScatter, act, "tp reduce_scatter bwd");
    c_.tp_ag_wgrad = tp_comm(CollectiveOp::AllGather, act, "tp all_gather (wgrad input)");
    c_.tp_ar_bwd = tp_comm(CollectiveOp::AllReduce, act, "tp all_reduce bwd");
  }

  Time dp_cost(CollectiveOp op, double bytes) {
    const auto key = std::make_tuple(static_cast<int>(op), bytes, stage_);
    auto it = dp_cache_.find(key);
    if (it != dp_cache_.end()) return it->second;
    const auto group = sc_.layout.dp_group(0, stage_);
    const Time t = comm_.cost(op, static_cast<std::uint64_t>(bytes), group).time;
    dp_cache_.emplace(key, t);
    return t;
  }

  CollectiveOp grad_op() const {
    return sc_.layout.zero >= 1 ? CollectiveOp::ReduceScatter : CollectiveOp::AllReduce;
  }

  /// Splits `params` into buckets; returns the gradient bytes of each.
  std::vector<double> bucket_bytes(double params) const {
    std::vector<double> out;
    while (params > 0) {
      const double p = std::min(params, bucket_params_);
      out.push_back(p * hw::dtype_bytes(grad_dtype()));
      params -= p;
    }
    return out;
  }
  hw::Dtype grad_dtype() const {
    return sc_.training.dtype == hw::Dtype::FP8 ? hw::Dtype::BF16 : sc_.training.dtype;
  }

  // ----- emission helpers --------------------------------------------------------------
  TaskId compute(Time d, LabelId label) {
    const TaskId t = g_.add_task(st_->compute, d, Category::Compute, label, mb_, chunk_);
    for (TaskId w : wait_) g_.add_dependency(w, t);
    wait_.clear();
    if (first_ == kNoId) first_ = t;
    last_ = t;
    return t;
  }
  /// A TP collective whose input is produced by `after` (the last compute task if kNoId).
  TaskId tp(const CommCost& c, TaskId after = kNoId) {
    const TaskId t = g_.add_task(st_->tp, c.time, Category::TpComm, c.label, mb_, chunk_);
    const TaskId src = after != kNoId ? after : last_;
    if (src != kNoId) g_.add_dependency(src, t);
    if (first_ == kNoId) {
      for (TaskId w : wait_) g_.add_dependency(w, t);
      wait_.clear();
      first_ = t;
    }
    return t;
  }
  /// ZeRO-3: all-gather `params` (a layer, the embedding, the head) before they are used.
  void zero3_gather(double params) {
    if (sc_.layout.zero != 3 || sc_.layout.dp == 1) return;
    const TaskId t = g_.add_task(st_->dp, dp_cost(CollectiveOp::AllGather,
                                                  params * hw::dtype_bytes(grad_dtype())),
                                 Category::DpComm, l_param_ag_, mb_, chunk_);
    wait_.push_back(t);
  }
  /// ZeRO-3: reduce-scatter the gradients of `params` once `wgrad` produced them.
  void zero3_reduce(double params, TaskId wgrad) {
    if (sc_.layout.zero != 3 || sc_.layout.dp == 1) return;
    const TaskId rs = g_.add_task(st_->dp, dp_cost(CollectiveOp::ReduceScatter,
                                                   params * hw::dtype_bytes(grad_dtype())),
                                  Category::DpComm, l_grad_reduce_, mb_, chunk_);
    g_.add_dependency(wgrad, rs);
    dp_grad_tasks_.push_back(rs);
  }
  /// ZeRO-1/2 with overlap_param_gather: the first forward of a chunk waits, op by op, for
  /// the bucket all-gathers that cover the next `params` parameters.
  void wait_for_params(double params) {
    if (gather_ == nullptr || gather_->tasks.empty()) return;
    gather_->offset += params;
    const auto needed = static_cast<std::size_t>(
        std::min<double>(static_cast<double>(gather_->tasks.size()),
                         std::ceil(gather_->offset / bucket_params_ - 1e-9)));
    for (; gather_->next < needed; ++gather_->next) wait_.push_back(gather_->tasks[gather_->next]);
  }
  void add_grads(double params) {
    if (!reduce_now_ || sc_.layout.zero == 3) return;
    bucket_fill_ += params;
    if (bucket_fill_ >= bucket_params_) flush_bucket();
  }
  void flush_bucket() {
    const TaskId t = g_.add_task(st_->dp, dp_cost(grad_op(), bucket_fill_ * hw::dtype_bytes(grad_dtype())),
                                 Category::DpComm, l_grad_reduce_, mb_, chunk_);
    g_.add_dependency(last_, t);
    dp_grad_tasks_.push_back(t);
    bucket_fill_ = 0;
  }

  bool tp_on() const { return tp_ > 1; }
  bool overlap() const { return sc_.layout.tp_comm_overlap; }

  /// Column-parallel GEMM preceded (SP) by the all-gather of its input.
  void gather_then_gemm(const OpCost& gemm, bool recompute) {
    const LabelId label = recompute ? gemm.recompute_label : gemm.fwd_label;
    if (tp_on() && sp_) {
      const TaskId ag = tp(c_.tp_ag);
      if (overlap()) {
        compute(gemm.fwd, label);
        wait_.push_back(ag);
        return;
      }
      wait_.push_back(ag);
    }
    compute(gemm.fwd, label);
  }
  /// Row-parallel GEMM followed by its reduce-scatter (SP) or all-reduce.
  void gemm_then_reduce(const OpCost& gemm, bool recompute) {
    const LabelId label = recompute ? gemm.recompute_label : gemm.fwd_label;
    if (!tp_on()) {
      compute(gemm.fwd, label);
      return;
    }
    const CommCost& red = sp_ ? c_.tp_rs : c_.tp_ar;
    if (overlap()) {
      const TaskId before = last_;
      const TaskId r = tp(red, before);
      compute(gemm.fwd, label);
      wait_.push_back(r);
      return;
    }
    compute(gemm.fwd, label);
    wait_.push_back(tp(red));
  }

  void layer_forward(bool recompute) {
    auto lbl = [recompute](const OpCost& c) { return recompute ? c.recompute_label : c.fwd_label; };
    compute(c_.attn_norm.fwd, lbl(c_.attn_norm));
    gather_then_gemm(c_.qkv, recompute);
    compute(c_.attention.fwd, lbl(c_.attention));
    gemm_then_reduce(c_.proj, recompute);
    compute(c_.attn_residual.fwd, lbl(c_.attn_residual));
    compute(c_.mlp_norm.fwd, lbl(c_.mlp_norm));
    gather_then_gemm(c_.mlp_in, recompute);
    compute(c_.act.fwd, lbl(c_.act));
    gemm_then_reduce(c_.mlp_out, recompute);
    compute(c_.mlp_residual.fwd, lbl(c_.mlp_residual));
  }

  /// Backward of a row-parallel GEMM: (SP) all-gather of the output gradient, then dgrad
  /// and wgrad.
  void row_backward(const OpCost& gemm) {
    if (tp_on() && sp_) wait_.push_back(tp(c_.tp_ag_bwd));
    compute(gemm.bwd_input, gemm.dgrad_label);
    if (!input_only_) compute(gemm.bwd_weight, gemm.wgrad_label);
  }
  /// Backward of a column-parallel GEMM: dgrad, then the input-gradient reduce-scatter (SP)
  /// or all-reduce overlapped with wgrad; with SP, wgrad also waits for the re-gathered input.
  TaskId column_backward(const OpCost& gemm) {
    if (input_only_) {
      compute(gemm.bwd_input, gemm.dgrad_label);
      if (tp_on()) wait_.push_back(tp(sp_ ? c_.tp_rs_bwd : c_.tp_ar_bwd));
      return kNoId;
    }
    TaskId ag_input = kNoId;
    if (tp_on() && sp_) ag_input = tp(c_.tp_ag_wgrad);
    compute(gemm.bwd_input, gemm.dgrad_label);
    TaskId red = kNoId;
    if (tp_on()) red = tp(sp_ ? c_.tp_rs_bwd : c_.tp_ar_bwd);
    if (ag_input != kNoId) wait_.push_back(ag_input);
    const TaskId wgrad = compute(gemm.bwd_weight, gemm.wgrad_label);
    if (red != kNoId) wait_.push_back(red);
    return wgrad;
  }

  /// W pass of a column-parallel GEMM: (SP) re-gather its input, then the weight gradient.
  TaskId column_weight_grad(const OpCost& gemm) {
    if (tp_on() && sp_) wait_.push_back(tp(c_.tp_ag_wgrad));
    return compute(gemm.bwd_weight, gemm.wgrad_label);
  }
  /// W pass of one layer: the four weight-gradient GEMMs in backward order.
  TaskId layer_weight_grads() {
    compute(c_.mlp_out.bwd_weight, c_.mlp_out.wgrad_label);
    column_weight_grad(c_.mlp_in);
    compute(c_.proj.bwd_weight, c_.proj.wgrad_label);
    return column_weight_grad(c_.qkv);
  }
  /// Gradient reduction state for a backward or W pass: buckets are reduced during the last
  /// pass that produces weight gradients of the chunk.
  void begin_reduction() {
    reduce_now_ = !input_only_ && sc_.layout.dp > 1 && sc_.layout.overlap_grad_reduce &&
                  sc_.layout.zero < 3 && reduce_trigger_;
    bucket_fill_ = 0;
  }

  /// Backward of one layer; returns the task of its last weight gradient.
  TaskId layer_backward() {
    compute(c_.mlp_residual.bwd_input, c_.mlp_residual.bwd_label);
    row_backward(c_.mlp_out);
    compute(c_.act.bwd_input, c_.act.bwd_label);
    column_backward(c_.mlp_in);
    compute(c_.mlp_norm.bwd_input, c_.mlp_norm.bwd_label);
    compute(c_.attn_residual.bwd_input, c_.attn_residual.bwd_label);
    row_backward(c_.proj);
    if (sc_.training.recompute == model::Recompute::Selective) {
      compute(c_.attention.fwd, c_.attention.recompute_label);
    }
    compute(c_.attention.bwd_input, c_.attention.bwd_label);
    const TaskId wgrad = column_backward(c_.qkv);
    compute(c_.attn_norm.bwd_input, c_.attn_norm.bwd_label);
    return wgrad;
  }

  void embedding_forward() {
    compute(c_.embedding.fwd, c_.embedding.fwd_label);
    if (tp_on()) wait_.push_back(tp(sp_ ? c_.tp_rs : c_.tp_ar));
  }
  void embedding_backward() {
    if (tp_on() && sp_) wait_.push_back(tp(c_.tp_ag_bwd));
    compute(c_.embedding.bwd_input, c_.embedding.bwd_label);
  }
  void head_forward() {
    compute(c_.final_norm.fwd, c_.final_norm.fwd_label);
    gather_then_gemm(c_.lm_head, false);
    compute(c_.loss.fwd, c_.loss.fwd_label);
  }
  TaskId head_backward() {
    compute(c_.loss.bwd_input, c_.loss.bwd_label);
    const TaskId wgrad = column_backward(c_.lm_head);
    compute(c_.final_norm.bwd_input, c_.final_norm.bwd_label);
    return wgrad;
  }

  const Scenario& sc_;
  const net::CollectiveModel& comm_;
  const cost::CostModel& cost_;
  TaskGraph& g_;
  int tp_ = 1, v_ = 1, stage_ = 0;
  PipelineShape shape_;
  std::map<std::pair<int, std::size_t>, TaskId> mirror_syncs_;
  std::size_t updates_ = 0;
  bool sp_ = false;
  std::vector<int> layers_;
  double bucket_params_ = 0;
  LayerCosts c_;
  LabelId l_grad_reduce_ = kNoId, l_param_ag_ = kNoId, l_optimizer_ = kNoId,
          l_tied_sync_ = kNoId;
  /// ZeRO-1/2 parameter all-gathers of one chunk, consumed by its first forward.
  struct ChunkGathers {
    std::vector<TaskId> tasks;
    std::size_t next = 0;
    double offset = 0;
  };
  std::vector<ChunkGathers> gathers_;
  ChunkGathers* gather_ = nullptr;
  std::vector<TaskId> blocking_gathers_;
  std::map<std::tuple<int, double, int>, Time> dp_cache_;
  std::vector<StagePlan> plans_;
  std::vector<int> group_step_;
  int op_index_ = 0;
  bool reduce_trigger_ = false;
  std::vector<std::vector<TaskId>> step_ends_, barriers_;
  std::vector<TaskId> tied_syncs_;
  std::size_t tied_index_ = 0;
  LabelId l_norm_sync_ = kNoId, l_mirror_sync_ = kNoId;
  Time norm_sync_time_;
  // per-pass state
  const StageStreams* st_ = nullptr;
  int mb_ = -1, chunk_ = -1;
  std::vector<TaskId> wait_;
  TaskId first_ = kNoId, last_ = kNoId;
  bool reduce_now_ = false;
  bool input_only_ = false;
  double bucket_fill_ = 0;
  std::vector<TaskId> dp_grad_tasks_;
};

/// Calls the builder's stage prologue when build_pipeline() moves to the next stage.
class StagedEmitter final : public PassEmitter {
 public:
  explicit StagedEmitter(StepBuilder& b) : b_(b) {}
  PassRecord emit(TaskGraph& g, const StageStreams& st, int stage, const PipeOp& op,
                  TaskId wait_for) override {
    if (stage != current_) {
      current_ = stage;
      b_.begin_stage(st, stage);
    }
    return b_.emit(g, st, stage, op, wait_for);
  }

 private:
  StepBuilder& b_;
  int current_ = -1;
};

}  // namespace

std::int64_t qkv_width(const model::ModelSpec& mdl, int tp) {
  const std::int64_t d = mdl.head_dim();
  const std::int64_t kv_local = std::max(1, mdl.kv_heads / tp);
  return static_cast<std::int64_t>(mdl.heads / tp) * d + 2 * kv_local * d;
}

model::Op rank_op(const Scenario& sc, const model::Op& op) {
  const int tp = sc.layout.tp;
  model::Op r = op;
  switch (op.kind) {
    case OpKind::Gemm:
      if (op.shard == Shard::Column) r.n = std::max<std::int64_t>(1, op.n / tp);
      if (op.shard == Shard::Row) r.k = std::max<std::int64_t>(1, op.k / tp);
      if (op.name == "qkv") r.n = qkv_width(sc.model, tp);
      break;
    case OpKind::Attention:
      r.heads = std::max(1, op.heads / tp);
      r.kv_heads = std::max(1, op.kv_heads / tp);
      break;
    default: {
      double div = 1;
      if (op.shard == Shard::TpLocal) div = tp;
      if (op.shard == Shard::Replicated && sc.layout.sequence_parallel) div = tp;
      r.fwd_bytes = op.fwd_bytes / div;
      r.bwd_bytes = op.bwd_bytes / div;
      break;
    }
  }
  return r;
}

StepResult simulate_step(const Scenario& sc) {
  sc.model.validate();
  const auto& L = sc.layout;
  L.validate(sc.model, sc.gpus, sc.training.global_batch, sc.training.micro_batch, sc.steps);
  if (sc.fidelity != Fidelity::Stage) {
    throw InputError("simulation.fidelity", std::string("simulation.fidelity \"") +
                                                fidelity_name(sc.fidelity) +
                                                "\" is not simulated yet (available: stage)");
  }
  const hw::Topology topo(sc.topology, sc.gpus);
  const net::AlphaBetaModel builtin_comm(topo, sc.gpu);
  const net::ProfiledCollectiveModel profiled_comm(builtin_comm, topo, sc.profile);
  const net::CollectiveModel& comm =
      sc.profile ? static_cast<const net::CollectiveModel&>(profiled_comm) : builtin_comm;
  const cost::CostModel cost(sc.gpu, sc.profile);
  const int m = static_cast<int>(sc.training.global_batch / (sc.training.micro_batch * L.dp));

  auto graph = std::make_shared<TaskGraph>();
  StepBuilder builder(sc, comm, cost, *graph);

  // Schedules that never flush get one more step simulated after the measured ones, so the
  // measured step is not the pipeline's drain.
  const int steps = sc.steps;
  const int sim_steps = parallel::flushes(L.schedule) ? steps : steps + 1;
  PipelineSpec spec;
  spec.pp = L.pp;
  spec.virtual_stages = L.virtual_stages;
  spec.dual = L.schedule == parallel::ScheduleKind::DualPipe;
  spec.microbatches = m * sim_steps;
  spec.programs = parallel::make_programs(L, m, sim_steps);
  // Update groups: PipeDream updates the weights after every microbatch (Narayanan et al.
  // 2019); every other schedule once per step, after accumulating m microbatches.
  const bool per_microbatch = L.schedule == parallel::ScheduleKind::PipeDream;
  const int groups = per_microbatch ? m * sim_steps : sim_steps;
  auto group_of = [&](int mb) { return per_microbatch ? mb : mb / m; };
  std::vector<int> group_step(static_cast<std::size_t>(groups), -1);
  for (int g = 0; g < groups; ++g) {
    if (!per_microbatch) group_step[static_cast<std::size_t>(g)] = g;
    else if ((g + 1) % m == 0) group_step[static_cast<std::size_t>(g)] = (g + 1) / m - 1;
  }
  std::vector<StepBuilder::StagePlan> plans(static_cast<std::size_t>(L.pp));
  for (int s = 0; s < L.pp; ++s) {
    const auto& prog = spec.programs[static_cast<std::size_t>(s)];
    auto& plan = plans[static_cast<std::size_t>(s)];
    plan.update_after.assign(prog.size(), -1);
    plan.reduce_trigger.assign(prog.size(), false);
    // The last weight-gradient pass of each (group, chunk), and of each group.
    std::map<std::pair<int, int>, std::size_t> last_of_chunk;
    std::map<int, std::size_t> last_of_group;
    for (std::size_t i = 0; i < prog.size(); ++i) {
      const PipeOp& op = prog[i];
      if (op.kind != PassKind::Backward && op.kind != PassKind::BackwardWeight) continue;
      const int g = group_of(op.microbatch);
      last_of_chunk[{g, op.chunk}] = i;
      last_of_group[g] = i;
    }
    for (const auto& [key, i] : last_of_chunk) plan.reduce_trigger[i] = true;
    for (const auto& [g, i] : last_of_group) plan.update_after[i] = g;
  }
  builder.set_plans(std::move(plans), std::move(group_step));
  const double p2p_bytes = static_cast<double>(sc.training.micro_batch) * sc.model.seq_len *
                           sc.model.hidden * 2.0 / L.tp;
  std::map<std::pair<int, int>, Time> p2p_cache;
  spec.p2p_time = [&](int from, int to) {
    auto key = std::make_pair(from, to);
    auto it = p2p_cache.find(key);
    if (it != p2p_cache.end()) return it->second;
    const int group[2] = {L.rank(0, 0, 0, from), L.rank(0, 0, 0, to)};
    const Time t = from == to ? Time::zero()
                              : comm.cost(CollectiveOp::SendRecv,
                                          static_cast<std::uint64_t>(p2p_bytes), group)
                                    .time;
    p2p_cache.emplace(key, t);
    return t;
  };

  StagedEmitter staged(builder);
  const PipelineGraph pg = build_pipeline(*graph, spec, staged);
  for (const auto& members : builder.barriers()) {
    if (members.size() > 1) graph->add_rendezvous(members);
  }

  Simulator sim;
  sim.reserve(graph->num_streams() * 4);
  Executor ex(*graph);
  ex.run(sim);

  StepResult r;
  // The step: with one step simulated, from 0 to the last task; with several, the steady
  // state: the last step's span, from the end of the previous step's update to the end of
  // its own, per stage.
  const auto& ends = builder.step_ends();
  std::vector<Time> win_begin(static_cast<std::size_t>(L.pp)), win_end(static_cast<std::size_t>(L.pp));
  Time last_end, prev_end;
  const bool drained = sim_steps == steps;  // nothing simulated after the measured step
  for (int s = 0; s < L.pp; ++s) {
    const auto& e = ends[static_cast<std::size_t>(s)];
    const auto last = static_cast<std::size_t>(steps - 1);
    if (steps > 1) win_begin[static_cast<std::size_t>(s)] = ex.end(e[last - 1]);
    win_end[static_cast<std::size_t>(s)] =
        (steps == 1 && drained) ? ex.makespan() : ex.end(e[last]);
    last_end = max(last_end, win_end[static_cast<std::size_t>(s)]);
    prev_end = max(prev_end, win_begin[static_cast<std::size_t>(s)]);
  }
  r.step_time = last_end - prev_end;
  r.window_begin = prev_end;
  r.window_end = last_end;
  r.steps_simulated = sim_steps;
  r.measured_step = steps;
  r.microbatches = m;
  r.events = sim.events_processed();
  r.tasks = graph->num_tasks();
  if (sc.profile) {
    r.pricing = cost.pricing();
    r.pricing->profile_path = sc.profile->path;
    r.pricing->collective = profiled_comm.count();
  }
  const double step = r.step_time.seconds();
  const double tokens = static_cast<double>(sc.training.global_batch) * sc.model.seq_len;
  r.tokens_per_s = tokens / step;
  r.model_flops = model::model_flops_per_step(sc.model, sc.training.global_batch);
  r.hardware_flops =
      model::hardware_flops_per_step(sc.model, sc.training.global_batch, sc.training.recompute);
  const double peak = sc.gpu.peak_flops(sc.training.dtype);
  r.model_tflops_per_gpu = r.model_flops / step / sc.gpus / 1e12;
  r.hardware_tflops_per_gpu = r.hardware_flops / step / sc.gpus / 1e12;
  r.mfu = r.model_flops / (step * sc.gpus * peak);
  r.hfu = r.hardware_flops / (step * sc.gpus * peak);

  const auto prev = stream_predecessors(*graph);
  model::ActivationOptions aopt;
  aopt.tp = L.tp;
  aopt.sequence_parallel = L.sequence_parallel;
  aopt.recompute = sc.training.recompute;
  aopt.flash_attention = sc.training.flash_attention;
  const double act_layer =
      model::activation_bytes_per_layer(sc.model, sc.training.micro_batch, aopt);
  const double b = static_cast<double>(sc.training.micro_batch);
  const double sbh = b * sc.model.seq_len * sc.model.hidden;
  // Embedding output kept for the first layer (sharded with SP); fp32 logits for the loss.
  const double emb_act = 2.0 * sbh / (L.sequence_parallel ? L.tp : 1);
  const double head_act = 4.0 * b * sc.model.seq_len * static_cast<double>(sc.model.vocab) / L.tp;
  const int v = builder.chunks();
  const PipelineShape shape = builder.shape();
  double worst = -1;
  for (int s = 0; s < L.pp; ++s) {
    StageResult sr;
    sr.stage = s;
    for (int c = 0; c < v; ++c) sr.layers += builder.layers_of(shape.vs_of(s, c));
    sr.params = builder.stage_params(s);
    sr.breakdown = analyze_stage(*graph, ex, prev, pg.streams[static_cast<std::size_t>(s)].compute,
                                 win_begin[static_cast<std::size_t>(s)],
                                 win_end[static_cast<std::size_t>(s)]);
    // Weight versions held at once: PipeDream stashes one per microbatch in flight on the
    // stage (p - s in steady state), PipeDream-2BW double-buffers (2).
    sr.weight_versions = 1;
    if (L.schedule == parallel::ScheduleKind::PipeDream) sr.weight_versions = L.pp - s;
    if (L.schedule == parallel::ScheduleKind::TwoBW) sr.weight_versions = 2;
    // Gradient staleness in updates: PipeDream's stage s computes a gradient on weights that
    // are p - s - 1 updates old when it is applied; 2BW's is one update old.
    sr.staleness = 0;
    if (L.schedule == parallel::ScheduleKind::PipeDream) sr.staleness = L.pp - s - 1;
    if (L.schedule == parallel::ScheduleKind::TwoBW) sr.staleness = 1;
    std::vector<Time> alloc, free;
    std::vector<double> bytes;
    for (int mb = 0; mb < m * sim_steps; ++mb) {
      for (int c = 0; c < v; ++c) {
        const auto idx = static_cast<std::size_t>(mb * v + c);
        const int vs = shape.vs_of(s, c);
        if (pg.fwd[static_cast<std::size_t>(s)][idx].first == kNoId) continue;  // DualPipe
        alloc.push_back(ex.start(pg.fwd[static_cast<std::size_t>(s)][idx].first));
        free.push_back(ex.end(pg.release(s, idx)));
        double bts = builder.layers_of(vs) * act_layer;
        if (shape.first_of_chain(vs)) bts += emb_act;
        if (shape.last_of_chain(vs)) bts += head_act;
        bytes.push_back(bts);
      }
    }
    const PeakResult peak_act = peak_in_flight(alloc, free, bytes);
    sr.peak_inflight = peak_act.peak_count;
    const auto state = model::model_state_bytes(sr.params, L.dp, L.zero);
    sr.memory.weights = state.weights * sr.weight_versions;
    sr.memory.gradients = state.gradients;
    sr.memory.optimizer = state.optimizer;
    sr.memory.activations = peak_act.peak_bytes;
    sr.memory.total =
        sr.memory.weights + sr.memory.gradients + sr.memory.optimizer + peak_act.peak_bytes;
    sr.memory.capacity = sc.gpu.hbm_bytes;
    sr.memory.fits = sr.memory.total <= sr.memory.capacity;
    if (sr.memory.total > worst) {
      worst = sr.memory.total;
      r.memory = sr.memory;
    }
    r.stages.push_back(sr);
  }
  // Mean breakdown over stages.
  const double n = L.pp;
  for (const auto& sr : r.stages) {
    r.breakdown.compute += sr.breakdown.compute / n;
    r.breakdown.optimizer += sr.breakdown.optimizer / n;
    r.breakdown.bubble += sr.breakdown.bubble / n;
    for (std::size_t i = 0; i < r.breakdown.exposed.size(); ++i) {
      r.breakdown.exposed[i] += sr.breakdown.exposed[i] / n;
    }
  }
  r.breakdown.step = 0;
  for (const auto& sr : r.stages) r.breakdown.step += sr.breakdown.step / n;
  r.bubble_fraction = r.breakdown.bubble / r.breakdown.step;
  if (sc.training.tokens) {
    r.time_to_train_days = *sc.training.tokens / r.tokens_per_s / 86400.0;
    if (sc.gpu_hour_usd) {
      r.cost_usd = *r.time_to_train_days * 24.0 * sc.gpus * *sc.gpu_hour_usd;
    }
  }
  for (int s = 0; s < L.pp; ++s) {
    for (const PipeOp& op : spec.programs[static_cast<std::size_t>(s)]) {
      const auto idx = static_cast<std::size_t>(op.microbatch * v + op.chunk);
      const auto& recs = op.kind == PassKind::Forward          ? pg.fwd
                         : op.kind == PassKind::BackwardWeight ? pg.wgt
                                                               : pg.bwd;
      const PassRecord& rec = recs[static_cast<std::size_t>(s)][idx];
      r.passes.push_back(PassSpan{s, op.kind, op.microbatch, op.chunk, ex.start(rec.first),
                                  ex.end(rec.last)});
    }
  }
  r.graph = graph;
  r.task_start.resize(graph->num_tasks());
  r.task_end.resize(graph->num_tasks());
  for (TaskId t = 0; t < graph->num_tasks(); ++t) {
    r.task_start[t] = ex.start(t);
    r.task_end[t] = ex.end(t);
  }
  return r;
}

}  // namespace trainsim::workload
