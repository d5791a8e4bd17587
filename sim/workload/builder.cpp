#include "workload/builder.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <numeric>
#include <string>
#include <tuple>

#include "core/error.hpp"
#include "cost/cost_model.hpp"
#include "model/memory.hpp"
#include "net/collective.hpp"
#include "workload/full_fidelity.hpp"
#include "net/profiled.hpp"
#include "parallel/schedule.hpp"
#include "workload/moe.hpp"

namespace trainsim::workload {

const char* grad_scaling_name(GradScaling g) {
  switch (g) {
    case GradScaling::Bucket: return "bucket";
    case GradScaling::Buffer: return "buffer";
    case GradScaling::Collective: return "collective";
  }
  return "?";
}

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

/// The TP collectives of a column-parallel GEMM's input (one activation of its input width):
/// the SP all-gather before the forward, the SP re-gather for the weight gradient, and the
/// input gradient's reduce-scatter (SP) or all-reduce.
struct ColumnComm {
  CommCost ag, ag_wgrad, rs_bwd, ar_bwd;
};

/// Per-rank costs of a layer, the head and the embedding, computed once per step.
struct LayerCosts {
  OpCost attn_norm, qkv, attention, proj, attn_residual, mlp_norm, mlp_in, act, mlp_out,
      mlp_residual;
  OpCost embedding, final_norm, lm_head, loss;
  OpCost mtp_norm, mtp_proj;             // MTP: enorm / hnorm (alike), eh_proj (2h -> h)
  std::vector<OpCost> mla_up;            // MLA's up projections, with mla_up_proj recompute
  double mtp_params = 0;                 // per rank, one MTP module besides its layer
  CommCost tp_ag, tp_rs, tp_ar;          // of one [b, s, h] activation
  CommCost tp_ag_bwd, tp_rs_bwd;         // conjugates in backward (same sizes, own labels)
  CommCost tp_ag_wgrad;                  // SP: input all-gather for the weight gradient
  CommCost tp_ar_bwd;
  ColumnComm col;                        // the above, for GEMMs with a [b, s, h] input
  ColumnComm mtp_col;                    // MTP's eh_proj: [b, s, 2h] input
  CommCost head_ag, head_rs, head_ar;    // around the LM head
  double layer_params = 0;               // per rank, dense layer
  double layer_trainable = 0;            // per rank, dense layer: LoRA adapters, else all
  double moe_layer_params = 0;           // per rank, MoE layer without its routed experts
  double expert_params = 0;              // per rank, routed experts of one MoE layer
  // Context parallelism: one ring step's KV transfer (forward; backward also moves dKV),
  // or the all-gather of K and V and the reduce-scatter of their gradients.
  CommCost cp_kv, cp_kv_bwd, cp_ag, cp_rs;
  // Ring CP's memory-bound kernels around the per-step attention (Transformer Engine's
  // AttnFuncWithCPAndKVP2P), on the busiest rank (the last of the ring): forward, the KV
  // concatenation into the send buffer and the zeroed output, then after each step the merge
  // of its partial output (flash_attn_fwd_out_correction) and, from the second step on, the
  // copy of the first KV half; backward, the KV copy into the send buffer, then after each
  // step the dQ and dKV accumulation and, but for the last step, the KV half copy.
  Time cp_fwd_prep, cp_fwd_merge, cp_fwd_half_kv, cp_bwd_prep, cp_bwd_merge, cp_bwd_half_kv;
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
    // One chain of pp x v virtual stages (DualPipe: each of its two chains has pp).
    layers_ = parallel::layers_per_virtual_stage(sc_.model.layers, L.pp, shape_.dual ? 1 : v_,
                                                 L.first_stage_layers, L.last_stage_layers);
    first_layer_.assign(layers_.size(), 0);
    for (std::size_t i = 1; i < layers_.size(); ++i) {
      first_layer_[i] = first_layer_[i - 1] + layers_[i - 1];
    }
    // Each CP rank holds seq_len / cp tokens of every sequence: every per-token op works on
    // that chunk; attention is costed per ring step (compute_cp_costs).
    local_ = sc_.model;
    local_.seq_len = sc_.model.seq_len / L.cp;
    bucket_params_ = L.dp_bucket_params > 0
                         ? static_cast<double>(L.dp_bucket_params)
                         : std::max(40e6, 1e6 * L.dp);
    compute_costs();
  }

  const LayerCosts& costs() const { return c_; }
  int layers_of(int vs) const { return layers_[static_cast<std::size_t>(shape_.position(vs))]; }
  /// Global index of the first layer of virtual stage `vs`.
  int first_layer_of(int vs) const {
    return first_layer_[static_cast<std::size_t>(shape_.position(vs))];
  }
  /// MoE layers among those of virtual stage `vs`.
  int moe_layers_of(int vs) const {
    int n = 0;
    for (int l = 0; l < layers_of(vs); ++l) n += sc_.model.is_moe_layer(first_layer_of(vs) + l);
    return n;
  }
  /// MTP modules on virtual stage `vs`: all of them on the last of the chain.
  int mtp_of(int vs) const { return shape_.last_of_chain(vs) ? sc_.model.mtp_layers : 0; }
  /// Global index of MTP module k's layer (0-based k).
  int mtp_layer(int k) const { return sc_.model.layers + k; }
  /// Per-rank parameters of layer `i` without its routed experts.
  double layer_params_at(int i) const {
    return sc_.model.is_moe_layer(i) ? c_.moe_layer_params : c_.layer_params;
  }
  int chunks() const { return v_; }
  const PipelineShape& shape() const { return shape_; }

  /// Parameters of one rank of `stage`.
  double stage_params(int stage) const {
    double p = 0;
    for (int c = 0; c < v_; ++c) p += chunk_params(stage, c) + chunk_expert_params(stage, c);
    return p;
  }
  /// Routed-expert parameters of one rank of `stage` (sharded by EP and TP).
  double stage_expert_params(int stage) const {
    double p = 0;
    for (int c = 0; c < v_; ++c) p += chunk_expert_params(stage, c);
    return p;
  }
  double chunk_expert_params(int stage, int chunk) const {
    const int vs = shape_.vs_of(stage, chunk);
    const int mtp_moe = sc_.model.mtp_is_moe() ? mtp_of(vs) : 0;
    return (moe_layers_of(vs) + mtp_moe) * c_.expert_params;
  }
  /// MoE statistics of the layers costed so far (all stages).
  const std::vector<MoeLayerCost>& moe_costs() const { return moe_all_; }

  /// Parameters in model chunk `chunk` of `stage`, per rank, routed experts excluded: its
  /// layers, the embedding on the first virtual stage, the head on the last (with tied
  /// embeddings and pp > 1, the last stage keeps its own copy of the embedding, as
  /// Megatron-LM does), and the MTP modules on the last.
  double chunk_params(int stage, int chunk) const {
    const int vs = shape_.vs_of(stage, chunk);
    const int moe = moe_layers_of(vs);
    double p = (layers_of(vs) - moe) * c_.layer_params + moe * c_.moe_layer_params;
    if (shape_.first_of_chain(vs)) p += embedding_params();
    if (shape_.last_of_chain(vs)) p += head_params() + mtp_of(vs) * mtp_module_params();
    return p;
  }
  /// One MTP module on one rank, routed experts excluded.
  double mtp_module_params() const { return layer_params_at(mtp_layer(0)) + c_.mtp_params; }
  double embedding_params() const { return sc_.model.embedding_params() / tp_; }
  /// With pp > 1 the last stage keeps its own copy of the embedding table when the head is
  /// tied to it or MTP looks tokens up in it (Megatron-Core's embedding group), and the two
  /// copies all-reduce their gradients. DualPipe's end ranks hold both ends of the model (the
  /// first stage of one chain, the last of the other), so they share the one table (DeepSeek-V3
  /// §3.2.3: MTP's embedding and head are the main model's, physically).
  bool embedding_copy_on_last() const { return embedding_copy_on_last_stage(sc_.model, sc_.layout); }
  double head_params() const {
    return (sc_.model.head_params() +
            (embedding_copy_on_last() ? sc_.model.embedding_params() : 0.0)) / tp_;
  }
  /// The trainable subset of the parameters above (gradients, their reduction, optimizer
  /// state, parameter all-gathers): with LoRA (TrainingSpec::lora, dense models only) the
  /// adapters, without it every parameter.
  bool lora() const { return sc_.training.lora.enabled(); }
  double layer_trainable_at(int i) const { return lora() ? c_.layer_trainable : layer_params_at(i); }
  double embedding_trainable() const { return lora() ? 0.0 : embedding_params(); }
  double head_trainable() const { return lora() ? 0.0 : head_params(); }
  double chunk_trainable(int stage, int chunk) const {
    if (!lora()) return chunk_params(stage, chunk);
    // LoRA: dense models without MTP (validate_lora).
    return layers_of(shape_.vs_of(stage, chunk)) * c_.layer_trainable;
  }
  double stage_trainable(int stage) const {
    if (!lora()) return stage_params(stage);
    double p = 0;
    for (int c = 0; c < v_; ++c) p += chunk_trainable(stage, c);
    return p;
  }

  /// Where, in each stage's program, updates happen and gradient buckets are reduced.
  struct StagePlan {
    std::vector<int> update_after;      ///< per op: the update group that ends with it, or -1
    std::vector<bool> reduce_trigger;   ///< per op: last weight-gradient pass of a chunk in
                                        ///< its update group: reduce buckets during it
    std::vector<bool> pair_with_next;   ///< per op: DualPipe forward overlapped with the
                                        ///< backward that follows it
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
    tp_rep_.clear();
    dp_rep_.clear();
    edp_rep_.clear();
    op_index_ = 0;
    updates_ = 0;
    blocking_gathers_.clear();
    dp_grad_tasks_.clear();
    bucket_fill_ = 0;
    step_ends_.emplace_back();
    compute_tp_costs();  // the TP group of this stage, where it sits on the topology
    compute_cp_costs();
    compute_moe_costs();
    schedule_param_gathers(st, kNoId);
  }

  /// ZeRO-1/2: the parameter all-gathers after an update (or, with overlap_param_gather,
  /// before the first step: the previous step's). With overlap_param_gather they wait for
  /// nothing and each chunk's first forward waits for the buckets it needs; otherwise they
  /// follow the optimizer step directly.
  void schedule_param_gathers(const StageStreams& st, TaskId after) {
    const auto& L = sc_.layout;
    gathers_.assign(static_cast<std::size_t>(v_), {});
    if (!grad_comm() || (L.zero != 1 && L.zero != 2)) return;
    if (after == kNoId && !L.overlap_param_gather) return;
    for (int c = 0; c < v_; ++c) {
      auto& gathers = gathers_[static_cast<std::size_t>(c)];
      std::vector<std::pair<double, bool>> buckets;  // (bytes, expert)
      for (double bytes : bucket_bytes(chunk_trainable(stage_, c), param_dtype())) {
        buckets.emplace_back(bytes, false);
      }
      for (double bytes : bucket_bytes(chunk_expert_params(stage_, c), param_dtype())) {
        buckets.emplace_back(bytes, true);
      }
      for (const auto& [bytes, expert] : buckets) {
        const Time time = expert ? edp_cost(CollectiveOp::AllGather, bytes)
                                 : dp_cost(CollectiveOp::AllGather, bytes);
        if (time == Time::zero()) continue;
        const TaskId t = g_.add_task(st.dp, time, Category::DpComm, l_param_ag_);
        if (after != kNoId) g_.add_dependency(after, t);
        if (L.overlap_param_gather) {
          (expert ? gathers.expert_tasks : gathers.tasks).push_back(t);
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
    const bool dp_comm = grad_comm();
    // Megatron-LM's local DDP divides the whole gradient buffer by DP after the backward,
    // whatever DP is (GradScaling::Buffer); the reductions below wait for it.
    if (sc_.training.grad_scaling == GradScaling::Buffer && L.zero < 3) {
      const double bytes = stage_trainable(stage_) * hw::dtype_bytes(grad_dtype());
      if (bytes > 0) {
        last_compute = grad_scale_kernel(st, bytes, last_compute);
        dp_grad_tasks_.push_back(last_compute);
      }
    }
    if (dp_comm && !L.overlap_grad_reduce && L.zero < 3) {
      // Without overlap Megatron-Core reduces bucket by bucket, each collective synchronous
      // with the compute stream, so each bucket's scaling waits for the previous reduction.
      TaskId prev = last_compute;
      // With dp x cp = 1 only the experts have DP ranks (expert TP below TP).
      const bool dense_dp = L.dp_cp() > 1;
      for (int c = v_ - 1; c >= 0; --c) {
        for (double bytes : dense_dp ? bucket_bytes(chunk_trainable(stage_, c))
                                     : std::vector<double>()) {
          const TaskId t = g_.add_task(st.dp, dp_cost(grad_op(), bytes), Category::DpComm,
                                       l_grad_reduce_);
          g_.add_dependency(bucket_scale(st, bytes, prev), t);
          dp_grad_tasks_.push_back(t);
          if (sc_.training.grad_scaling == GradScaling::Bucket) prev = t;
        }
        for (double bytes : bucket_bytes(chunk_expert_params(stage_, c))) {
          const Time time = edp_cost(grad_op(), bytes);
          if (time == Time::zero()) {
            (void)bucket_scale(st, bytes, prev);  // scaled by 1/(DP x CP), not reduced
            continue;
          }
          const TaskId t = g_.add_task(st.dp, time, Category::DpComm, l_expert_grad_reduce_);
          g_.add_dependency(bucket_scale(st, bytes, prev), t);
          dp_grad_tasks_.push_back(t);
          if (sc_.training.grad_scaling == GradScaling::Bucket) prev = t;
        }
      }
    }
    // Tied embeddings or MTP with pp > 1: the first and the last stage all-reduce the
    // embedding gradient between them (Megatron-LM's embedding group) before the optimizer.
    if (embedding_copy_on_last() && !lora() &&
        (stage_ == 0 || stage_ == sc_.layout.pp - 1)) {
      // One pair per (TP, CP, DP) position; the slowest placement prices them all.
      const Time t = net::slowest_group(comm_, CollectiveOp::AllReduce,
                                        static_cast<std::uint64_t>(
                                            embedding_params() * hw::dtype_bytes(grad_dtype())),
                                        L.pp_pairs(0, L.pp - 1), sc_.topology.gpus_per_node)
                         .cost.time;
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
      // One pair per (TP, CP, DP) position: the slowest placement prices them all (a pair
      // that crosses nodes while rank 0's pair stays on NVLink, e.g. 12 GPUs on 8-GPU nodes).
      const Time t = net::slowest_group(comm_, CollectiveOp::AllReduce,
                                        static_cast<std::uint64_t>(
                                            stage_params(stage_) * hw::dtype_bytes(grad_dtype())),
                                        L.pp_pairs(std::min(stage_, mirror),
                                                   std::max(stage_, mirror)),
                                        sc_.topology.gpus_per_node)
                         .cost.time;
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
    const double experts = stage_expert_params(stage_);
    const double dense = stage_trainable(stage_) - experts;
    const double local =
        L.zero >= 1 ? dense / L.dp_cp() + experts / L.expert_dp() : dense + experts;
    const double buffer = L.zero >= 3 ? local : dense + experts;
    const TaskId opt = g_.add_task(
        st.compute, cost_.memory_bound(optimizer_step_bytes(local, buffer, sc_.training.dtype)),
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
    if (paired_ && paired_->op_index == op_i) {
      // The backward half of a DualPipe pair, emitted with its forward: link its input.
      const Paired pb = *paired_;
      paired_.reset();
      if (wait_for != kNoId && pb.rec.first != kNoId) g_.add_dependency(wait_for, pb.rec.first);
      if (plan.update_after[op_i] >= 0) end_update(st, pb.rec.last, plan.update_after[op_i]);
      return pb.rec;
    }
    begin_pass(st, op, plan.reduce_trigger[op_i]);
    if (wait_for != kNoId) wait_.push_back(wait_for);
    std::vector<Action> acts = pass_actions(stage, op);
    const bool paired = op_i + 1 < plan.pair_with_next.size() && plan.pair_with_next[op_i];
    if (!paired) {
      for (auto& a : acts) a.run();
    } else {
      // DualPipe's overlapped forward/backward pair (DeepSeek-V3 report §3.2.1, Fig. 4): the
      // two passes' work is interleaved on the compute stream, switching at every all-to-all
      // issue, so each pass's dispatch and combine run under the other pass's computation.
      const PipeOp& bop = programs_[static_cast<std::size_t>(stage)][op_i + 1];
      PassState fs = save();
      begin_pass(st, bop, plan.reduce_trigger[op_i + 1]);
      std::vector<Action> bacts = pass_actions(stage, bop);
      PassState bs = save();
      std::size_t i = 0, j = 0;
      while (i < acts.size() || j < bacts.size()) {
        restore(fs);
        while (i < acts.size()) {
          acts[i].run();
          if (acts[i++].yield_after) break;
        }
        fs = save();
        restore(bs);
        while (j < bacts.size()) {
          bacts[j].run();
          if (bacts[j++].yield_after) break;
        }
        bs = save();
      }
      paired_ = Paired{op_i + 1, PassRecord{bs.first, bs.last}};
      restore(fs);
    }
    const PassRecord rec{first_, last_};
    if (plan.update_after[op_i] >= 0) end_update(st, last_, plan.update_after[op_i]);
    return rec;
  }

  void set_programs(std::vector<parallel::StageProgram> programs) { programs_ = std::move(programs); }

 private:
  /// One step of a pass's emission; `yield_after`: an all-to-all was just issued, so a paired
  /// pass may run its own work before this pass waits for it.
  struct Action {
    std::function<void()> run;
    bool yield_after = false;
  };
  /// The per-pass emission state (swapped when two passes are interleaved).
  struct PassState {
    const StageStreams* st = nullptr;
    int mb = -1, chunk = -1;
    std::vector<TaskId> wait;
    TaskId first = kNoId, last = kNoId, ag_input = kNoId;
    bool reduce_now = false, input_only = false, reduce_trigger = false;
    double bucket_fill = 0, expert_fill = 0;
    void* gather = nullptr;
  };
  struct Paired {
    std::size_t op_index = 0;
    PassRecord rec;
  };
  PassState save() const {
    PassState p;
    p.st = st_;
    p.mb = mb_;
    p.chunk = chunk_;
    p.wait = wait_;
    p.first = first_;
    p.last = last_;
    p.ag_input = moe_ag_input_;
    p.reduce_now = reduce_now_;
    p.input_only = input_only_;
    p.reduce_trigger = reduce_trigger_;
    p.bucket_fill = bucket_fill_;
    p.expert_fill = expert_fill_;
    p.gather = gather_;
    return p;
  }
  void restore(const PassState& p) {
    st_ = p.st;
    mb_ = p.mb;
    chunk_ = p.chunk;
    wait_ = p.wait;
    first_ = p.first;
    last_ = p.last;
    moe_ag_input_ = p.ag_input;
    reduce_now_ = p.reduce_now;
    input_only_ = p.input_only;
    reduce_trigger_ = p.reduce_trigger;
    bucket_fill_ = p.bucket_fill;
    expert_fill_ = p.expert_fill;
    gather_ = static_cast<ChunkGathers*>(p.gather);
  }
  void begin_pass(const StageStreams& st, const PipeOp& op, bool reduce_trigger) {
    reduce_trigger_ = reduce_trigger;
    st_ = &st;
    mb_ = op.microbatch;
    chunk_ = op.chunk;
    wait_.clear();
    first_ = kNoId;
    last_ = kNoId;
    moe_ag_input_ = kNoId;
  }

  /// The emission of one pass as a list of actions (run in order unless interleaved).
  std::vector<Action> pass_actions(int stage, const PipeOp& op) {
    std::vector<Action> acts;
    auto add = [&acts](std::function<void()> f, bool yield = false) {
      acts.push_back(Action{std::move(f), yield});
    };
    const int vs = shape_.vs_of(stage, op.chunk);
    const int nl = layers_of(vs);
    const int first_layer = first_layer_of(vs);
    const bool first_vs = shape_.first_of_chain(vs), last_vs = shape_.last_of_chain(vs);
    const bool moe_ep = sc_.layout.ep > 1;
    if (op.kind == PassKind::Forward) {
      const int chunk = op.chunk;
      add([this, chunk, first_vs] {
        // Without overlap_param_gather Megatron gathers the parameters inside the optimizer
        // step: the next forward starts after all of them.
        for (TaskId t : blocking_gathers_) wait_.push_back(t);
        blocking_gathers_.clear();
        gather_ = &gathers_[static_cast<std::size_t>(chunk)];
        if (first_vs) {
          wait_for_params(embedding_trainable());
          zero3_gather(embedding_params());
          embedding_forward();
        }
      });
      for (int l = 0; l < nl; ++l) {
        const int idx = first_layer + l;
        const bool moe = sc_.model.is_moe_layer(idx);
        add([this, idx, moe] {
          wait_for_params(layer_trainable_at(idx));
          if (moe) {
            for (TaskId t : gather_->expert_tasks) wait_.push_back(t);
            gather_->expert_tasks.clear();
          }
          zero3_gather(layer_params_at(idx));
          layer_forward_a(false, idx);
        }, moe && moe_ep);
        if (moe) {
          add([this, idx] { moe_forward_b(idx); }, moe_ep);
          add([this, idx] { moe_forward_c(idx); });
        }
      }
      add([this, last_vs] {
        if (last_vs) {
          wait_for_params(head_trainable());
          zero3_gather(head_params());
          head_forward();
        }
      });
      for (int k = 0; k < mtp_of(vs); ++k) {
        const int idx = mtp_layer(k);
        const bool moe = sc_.model.is_moe_layer(idx);
        add([this, idx, moe] {
          wait_for_params(mtp_module_params());
          if (moe) {
            for (TaskId t : gather_->expert_tasks) wait_.push_back(t);
            gather_->expert_tasks.clear();
          }
          zero3_gather(mtp_module_params());
          // ZeRO-3: the shared table the module looks its tokens up in, gathered again.
          zero3_gather(embedding_params());
          mtp_forward_in();
          layer_forward_a(false, idx);
        }, moe && moe_ep);
        if (moe) {
          add([this, idx] { moe_forward_b(idx); }, moe_ep);
          add([this, idx] { moe_forward_c(idx); });
        }
        add([this] { head_forward(); });
      }
      add([this] {
        gather_->tasks.clear();  // later microbatches find the parameters in place
        gather_ = nullptr;
      });
    } else if (op.kind == PassKind::BackwardWeight) {
      // Zero-bubble W pass: the weight-gradient GEMMs of the chunk, in backward order.
      add([this, nl, first_layer, first_vs, last_vs, vs] {
        input_only_ = false;
        begin_reduction();
        if (last_vs) {
          TaskId wgrad = column_weight_grad(c_.lm_head);
          for (int k = mtp_of(vs) - 1; k >= 0; --k) {
            const int idx = mtp_layer(k);
            column_weight_grad(c_.lm_head);  // the shared head, once per MTP depth
            layer_weight_grads(idx);
            wgrad = column_weight_grad(c_.mtp_proj, c_.mtp_col);
            if (sc_.model.is_moe_layer(idx)) add_expert_grads(c_.expert_params);
          }
          zero3_reduce(head_params() + mtp_of(vs) * mtp_module_params(), wgrad);
          add_grads(head_trainable() + mtp_of(vs) * mtp_module_params());
        }
        for (int l = 0; l < nl; ++l) {
          const int idx = first_layer + nl - 1 - l;
          const TaskId wgrad = layer_weight_grads(idx);
          zero3_reduce(layer_params_at(idx), wgrad);
          add_grads(layer_trainable_at(idx));
          if (sc_.model.is_moe_layer(idx)) add_expert_grads(c_.expert_params);
        }
        if (first_vs) {
          zero3_reduce(embedding_params(), last_);  // its gradient came with the B pass
          add_grads(embedding_trainable());
        }
        if (reduce_now_ && bucket_fill_ > 0) flush_bucket();
        if (reduce_now_ && expert_fill_ > 0) flush_expert_bucket();
      });
    } else {
      // Whole backward, or (zero-bubble B pass) the activation-gradient part only.
      const bool input_only = op.kind == PassKind::BackwardInput;
      const int mtp = mtp_of(vs);
      add([this, input_only, last_vs, mtp] {
        input_only_ = input_only;
        begin_reduction();
        if (last_vs) {
          zero3_gather(head_params());
          const TaskId wgrad = head_backward();
          // With MTP the head's gradient (and the last stage's embedding copy's) is complete
          // only after the modules' backward: reduced there.
          if (!input_only_ && mtp == 0) {
            zero3_reduce(head_params(), wgrad);
            add_grads(head_trainable());
          }
        }
      });
      // MTP modules, deepest first: their gradient reaches the last layer's output through
      // hnorm, so the decoder's backward follows them.
      for (int k = mtp - 1; k >= 0; --k) {
        const int idx = mtp_layer(k);
        const bool moe = sc_.model.is_moe_layer(idx);
        add([this, idx] {
          zero3_gather(mtp_module_params());
          head_backward();  // the shared head's weight gradient accumulates into the main one
          layer_backward_a(idx);
        }, moe && moe_ep);
        if (moe) add([this, idx] { moe_backward_b(idx); }, moe_ep);
        add([this, idx, k] {
          layer_backward_c(idx);
          const TaskId wgrad = mtp_backward_in();
          if (!input_only_) {
            zero3_reduce(mtp_module_params(), wgrad);
            add_grads(mtp_module_params());
            if (sc_.model.is_moe_layer(idx)) add_expert_grads(c_.expert_params);
            if (k == 0) {  // the last module: the shared head and the embedding copy are done
              zero3_reduce(head_params(), last_);
              add_grads(head_trainable());
            }
          }
        });
      }
      for (int l = 0; l < nl; ++l) {
        const int idx = first_layer + nl - 1 - l;  // backward runs the layers in reverse
        const bool moe = sc_.model.is_moe_layer(idx);
        add([this, idx] {
          zero3_gather(layer_params_at(idx));  // before recompute and backward
          layer_backward_a(idx);
        }, moe && moe_ep);
        if (moe) add([this, idx] { moe_backward_b(idx); }, moe_ep);
        add([this, idx] {
          const TaskId wgrad = layer_backward_c(idx);
          if (!input_only_) {
            zero3_reduce(layer_params_at(idx), wgrad);
            add_grads(layer_trainable_at(idx));
            if (sc_.model.is_moe_layer(idx)) add_expert_grads(c_.expert_params);
          }
        });
      }
      add([this, first_vs] {
        if (first_vs) {
          zero3_gather(embedding_params());
          embedding_backward();
          if (!input_only_) {
            zero3_reduce(embedding_params(), last_);
            add_grads(embedding_trainable());
          }
        }
        if (reduce_now_ && bucket_fill_ > 0) flush_bucket();
        if (reduce_now_ && expert_fill_ > 0) flush_expert_bucket();
      });
    }
    return acts;
  }

  // ----- costs -------------------------------------------------------------------------
  OpCost op_cost(const Op& model_op, const std::string& name) {
    OpCost c;
    c.fwd_label = g_.intern(name);
    c.bwd_label = g_.intern(name + " bwd");
    c.recompute_label = g_.intern("recompute " + name);
    const Op op = rank_op(sc_, model_op);
    switch (op.kind) {
      case OpKind::Gemm: {
        GemmTimes g = gemm_times(cost_, op, sc_.training.gemm_kernels(), sp_ ? tp_ : 1);
        if (sc_.training.lora.targets(name)) {
          const GemmTimes a =
              lora_adapter_times(cost_, op, sc_.training.lora.rank, sc_.training.dtype);
          g.fwd += a.fwd;
          g.dgrad += a.dgrad;
          g.wgrad = a.wgrad;  // the frozen base weight has none
        }
        c.fwd = g.fwd;
        c.bwd_input = g.dgrad;
        c.bwd_weight = g.wgrad;
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

  /// The stage's slowest group of one kind (net::slowest_group over `groups()`), chosen by
  /// the first collective priced on it and kept in `rep` for the rest of the stage.
  template <typename Groups>
  const std::vector<int>& representative(std::vector<int>& rep, CollectiveOp op, double bytes,
                                         Groups groups) {
    if (rep.empty()) {
      rep = net::slowest_group(comm_, op, static_cast<std::uint64_t>(bytes), groups(),
                               sc_.topology.gpus_per_node)
                .group;
    }
    return rep;
  }

  CommCost tp_comm(CollectiveOp op, double bytes, const std::string& label) {
    CommCost c;
    c.label = g_.intern(label);
    if (tp_ > 1) {
      const auto& group = representative(tp_rep_, op, bytes, [&] { return sc_.layout.tp_groups(stage_); });
      c.time = comm_.cost(op, static_cast<std::uint64_t>(bytes), group).time;
    }
    return c;
  }

  void compute_costs() {
    const auto& mdl = local_;  // per-token ops on this rank's sequence chunk
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
    // The table's dense weight gradient, every microbatch (~1% of a small model's step with
    // a 128k vocabulary).
    c_.embedding.bwd_input +=
        cost_.memory_bound(embedding_grad_bytes(sc_.model, tp_, sc_.training.dtype));
    // LoRA: the table is frozen, autograd runs no embedding backward.
    if (lora()) c_.embedding.bwd_input = Time::zero();
    const auto head = model::head_ops(mdl, b);
    c_.final_norm = op_cost(head[0], "final_norm");
    c_.lm_head = op_cost(head[1], "lm_head");
    c_.loss = op_cost(head[2], "loss");
    if (rc_modules() != nullptr && rc_modules()->mla_up_proj) {
      for (const Op& op : model::mla_up_ops(mdl, b)) c_.mla_up.push_back(op_cost(op, op.name));
    }
    if (mdl.mtp_layers > 0) {
      const auto mtp = model::mtp_ops(mdl, b);
      c_.mtp_norm = op_cost(mtp[0], "mtp_norm");
      c_.mtp_proj = op_cost(mtp[2], "mtp_eh_proj");
      // eh_proj split by TP (column-parallel); enorm, hnorm and the final norm replicated.
      c_.mtp_params = mtp_extra_params_per_rank(mdl, tp_);
    }
    // Per rank: QKV (KV heads replicated when tp > kv_heads), projection, MLP, norms.
    const double h = mdl.hidden;
    const double mats = mdl.activation == model::Activation::SwiGLU ? 3.0 : 2.0;
    const double attn = attention_params_per_rank(mdl, tp_);
    c_.layer_params = attn + dense_mlp_params_per_rank(mdl, tp_, mdl.ffn_hidden);
    c_.layer_trainable = lora() ? lora_params_per_rank(mdl, tp_, sc_.training.lora)
                                : c_.layer_params;
    if (mdl.moe.enabled()) {
      // Router replicated; shared experts split by TP; routed experts by EP and expert TP.
      const double router = mdl.moe.experts > 1 ? h * mdl.moe.experts : 0.0;
      c_.moe_layer_params = attn + router + mats * h * static_cast<double>(mdl.moe.shared_ffn()) / tp_;
      // Layout::validate guarantees ep divides the expert count: whole experts per rank.
      const int local_experts = mdl.moe.experts / sc_.layout.ep;
      c_.expert_params = static_cast<double>(local_experts) * mats * h *
                         mdl.moe.expert_ffn_hidden / sc_.layout.expert_tp();
      if (sc_.layout.ep == 1 && sc_.layout.expert_tp() == tp_) {
        // Without EP the experts are replicated like every other weight: one gradient
        // bucket stream and one optimizer shard over DP x CP.
        c_.moe_layer_params += c_.expert_params;
        c_.expert_params = 0;
      }
    }
    l_expert_grad_reduce_ = g_.intern(sc_.layout.zero >= 1 ? "expert-dp reduce_scatter grads"
                                                           : "expert-dp all_reduce grads");
    l_router_ = g_.intern("router");
    l_etp_ag_ = g_.intern("etp all_gather");
    l_etp_rs_ = g_.intern("etp reduce_scatter");
    l_etp_ag_bwd_ = g_.intern("etp all_gather bwd");
    l_etp_rs_bwd_ = g_.intern("etp reduce_scatter bwd");
    l_cp_merge_ = g_.intern("cp attention merge");
    l_cp_merge_bwd_ = g_.intern("cp attention merge bwd");
    l_permute_ = g_.intern("moe token permute");
    l_permute_bwd_ = g_.intern("moe token permute bwd");
    l_router_bwd_ = g_.intern("router bwd");
    l_shared_in_ = g_.intern("shared_expert_in");
    l_shared_act_ = g_.intern("shared_expert_act");
    l_shared_out_ = g_.intern("shared_expert_out");
    l_shared_bwd_ = g_.intern("shared_expert bwd");
    l_expert_in_ = g_.intern("expert_in grouped_gemm");
    l_expert_act_ = g_.intern("expert_act");
    l_expert_out_ = g_.intern("expert_out grouped_gemm");
    l_expert_bwd_ = g_.intern("experts bwd");
    l_expert_wgrad_ = g_.intern("experts wgrad");
    l_dispatch_ = g_.intern("ep all_to_all dispatch");
    l_combine_ = g_.intern("ep all_to_all combine");
    l_dispatch_bwd_ = g_.intern("ep all_to_all dispatch bwd");
    l_combine_bwd_ = g_.intern("ep all_to_all combine bwd");
    l_tied_sync_ = g_.intern("embedding grad all_reduce (first/last stage)");
    l_norm_sync_ = g_.intern("grad-norm all_reduce (pipeline)");
    l_mirror_sync_ = g_.intern("grad all_reduce with mirror rank (DualPipe)");
    // One fp32 value per rank over the pipeline ranks of TP rank 0, DP rank 0.
    std::vector<int> pipe;
    for (int s = 0; s < sc_.layout.pp; ++s) pipe.push_back(sc_.layout.rank(0, 0, 0, s));
    norm_sync_time_ = comm_.cost(CollectiveOp::AllReduce, 4, pipe).time;
    l_grad_reduce_ = g_.intern(sc_.layout.zero >= 1 ? "dp reduce_scatter grads"
                                                    : "dp all_reduce grads");
    l_grad_scale_ = g_.intern("dp grad scale");
    l_param_ag_ = g_.intern("dp all_gather params");
    l_optimizer_ = g_.intern("optimizer step");
  }

  /// Output width of the QKV GEMM on one TP rank: its query heads and its K/V heads (one
  /// replicated K/V head per rank when tp exceeds kv_heads).
  std::int64_t qkv_width_per_rank() const { return qkv_width(sc_.model, tp_); }

  /// Context parallelism: the KV block one ring step passes on (K and V of seq_len / cp
  /// tokens for this rank's KV heads), and the all-gather variant's collectives.
  void compute_cp_costs() {
    const auto& L = sc_.layout;
    c_.cp_kv = {g_.intern("cp send_recv kv"), Time::zero()};
    c_.cp_kv_bwd = {g_.intern("cp send_recv kv+dkv"), Time::zero()};
    c_.cp_ag = {g_.intern("cp all_gather kv"), Time::zero()};
    c_.cp_rs = {g_.intern("cp reduce_scatter dkv"), Time::zero()};
    if (L.cp == 1) return;
    const auto& mdl = sc_.model;
    const double kv_width = mdl.mla.enabled()
                                ? static_cast<double>(mdl.heads) / tp_ *
                                      (mdl.mla.qk_nope_head_dim + mdl.mla.qk_rope_head_dim +
                                       mdl.mla.v_head_dim)
                                : 2.0 * std::max(1, mdl.kv_heads / tp_) * mdl.head_dim();
    const double kv = static_cast<double>(sc_.training.micro_batch) * local_.seq_len * kv_width * 2.0;
    // The slowest link of any ring of the stage (every copy steps together), and the
    // stage's slowest CP group for the all-gather variant.
    const auto rings = L.cp_groups(stage_);
    std::vector<std::vector<int>> hops;
    for (const auto& ring : rings) {
      for (std::size_t i = 0; i < ring.size(); ++i) hops.push_back({ring[i], ring[(i + 1) % ring.size()]});
    }
    const int gpn = sc_.topology.gpus_per_node;
    c_.cp_kv.time = net::slowest_group(comm_, CollectiveOp::SendRecv,
                                       static_cast<std::uint64_t>(kv), hops, gpn).cost.time;
    c_.cp_kv_bwd.time = net::slowest_group(comm_, CollectiveOp::SendRecv,
                                           static_cast<std::uint64_t>(2 * kv), hops, gpn).cost.time;
    const auto group =
        net::slowest_group(comm_, CollectiveOp::AllGather, static_cast<std::uint64_t>(kv * L.cp), rings, gpn)
            .group;
    c_.cp_ag.time = comm_.cost(CollectiveOp::AllGather, static_cast<std::uint64_t>(kv * L.cp), group).time;
    c_.cp_rs.time = comm_.cost(CollectiveOp::ReduceScatter, static_cast<std::uint64_t>(kv * L.cp), group).time;
    // Ring CP's merges (Transformer Engine, AttnFuncWithCPAndKVP2P): `out` is the rank's
    // 16-bit attention output [b, s/cp, heads/t, d_v]; the merge of one step reads the step's
    // output and `out` and writes `out` (one fused elementwise kernel); dQ and dKV
    // accumulate with add_ (read both, write one); `.contiguous()` copies read and write.
    const double out = static_cast<double>(sc_.training.micro_batch) * local_.seq_len *
                       static_cast<double>(mdl.attn_out_width()) / tp_ * 2.0;
    c_.cp_fwd_prep = cost_.memory_bound(2 * kv + out);
    c_.cp_fwd_merge = cost_.memory_bound(3 * out);
    c_.cp_fwd_half_kv = cost_.memory_bound(kv);
    c_.cp_bwd_prep = cost_.memory_bound(2 * kv);
    c_.cp_bwd_merge = cost_.memory_bound(3 * out + 3 * kv);
    c_.cp_bwd_half_kv = cost_.memory_bound(kv);
  }

  /// MoE layers of this stage: routing and per-rank costs, once per step.
  void compute_moe_costs() {
    moe_.clear();
    if (!sc_.model.moe.enabled()) return;
    for (int c = 0; c < v_; ++c) {
      const int vs = shape_.vs_of(stage_, c);
      std::vector<int> idxs;
      for (int l = 0; l < layers_of(vs); ++l) idxs.push_back(first_layer_of(vs) + l);
      for (int k = 0; k < mtp_of(vs); ++k) idxs.push_back(mtp_layer(k));
      for (const int idx : idxs) {
        if (!sc_.model.is_moe_layer(idx) || moe_.count(idx) != 0) continue;
        MoeLayerCost mc = moe_layer_cost(sc_.model, sc_.layout, sc_.training.gemm_kernels(),
                                         sc_.training.micro_batch, cost_, comm_, sc_.seed, idx,
                                         stage_, sc_.topology.gpus_per_node);
        moe_all_.push_back(mc);
        moe_.emplace(idx, mc);
      }
    }
  }

  /// TP collectives of one [b, s, h] activation in this stage's TP group.
  void compute_tp_costs() {
    const auto& mdl = local_;
    const double act = static_cast<double>(sc_.training.micro_batch) * mdl.seq_len * mdl.hidden * 2.0;
    c_.tp_ag = tp_comm(CollectiveOp::AllGather, act, "tp all_gather");
    c_.tp_rs = tp_comm(CollectiveOp::ReduceScatter, act, "tp reduce_scatter");
    c_.tp_ar = tp_comm(CollectiveOp::AllReduce, act, "tp all_reduce");
    c_.tp_ag_bwd = tp_comm(CollectiveOp::AllGather, act, "tp all_gather bwd");
    c_.tp_rs_bwd = tp_comm(CollectiveOp::ReduceScatter, act, "tp reduce_scatter bwd");
    c_.tp_ag_wgrad = tp_comm(CollectiveOp::AllGather, act, "tp all_gather (wgrad input)");
    c_.tp_ar_bwd = tp_comm(CollectiveOp::AllReduce, act, "tp all_reduce bwd");
    c_.col = {c_.tp_ag, c_.tp_ag_wgrad, c_.tp_rs_bwd, c_.tp_ar_bwd};
    if (mdl.mtp_layers > 0) {
      const double in = 2 * act;  // eh_proj's input: the concatenation [b, s, 2h]
      c_.mtp_col = {tp_comm(CollectiveOp::AllGather, in, "tp all_gather (eh_proj input)"),
                    tp_comm(CollectiveOp::AllGather, in, "tp all_gather (eh_proj wgrad input)"),
                    tp_comm(CollectiveOp::ReduceScatter, in, "tp reduce_scatter (eh_proj bwd)"),
                    tp_comm(CollectiveOp::AllReduce, in, "tp all_reduce (eh_proj bwd)")};
    }
  }

  Time dp_cost(CollectiveOp op, double bytes) {
    const auto key = std::make_tuple(static_cast<int>(op), bytes, stage_);
    auto it = dp_cache_.find(key);
    if (it != dp_cache_.end()) return it->second;
    const auto& group =
        representative(dp_rep_, op, bytes, [&] { return sc_.layout.dp_cp_groups(stage_); });
    const Time t = comm_.cost(op, static_cast<std::uint64_t>(bytes), group).time;
    dp_cache_.emplace(key, t);
    return t;
  }
  /// A collective of the routed experts' gradients or parameters over the expert-DP group.
  Time edp_cost(CollectiveOp op, double bytes) {
    const auto key = std::make_tuple(static_cast<int>(op) + 100, bytes, stage_);
    auto it = dp_cache_.find(key);
    if (it != dp_cache_.end()) return it->second;
    const auto& group =
        representative(edp_rep_, op, bytes, [&] { return sc_.layout.expert_dp_groups(stage_); });
    const Time t = comm_.cost(op, static_cast<std::uint64_t>(bytes), group).time;
    dp_cache_.emplace(key, t);
    return t;
  }

  CollectiveOp grad_op() const {
    return sc_.layout.zero >= 1 ? CollectiveOp::ReduceScatter : CollectiveOp::AllReduce;
  }

  /// Splits `params` into buckets; returns the bytes of each in `dtype` (default: gradients).
  std::vector<double> bucket_bytes(double params, std::optional<hw::Dtype> dtype = {}) const {
    const int elem = hw::dtype_bytes(dtype.value_or(grad_dtype()));
    std::vector<double> out;
    while (params > 0) {
      const double p = std::min(params, bucket_params_);
      out.push_back(p * elem);
      params -= p;
    }
    return out;
  }
  hw::Dtype grad_dtype() const { return gradient_dtype(sc_.training.dtype); }
  /// Parameters as all-gathered by ZeRO: bf16 for FP8 training, else the training dtype.
  hw::Dtype param_dtype() const {
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
    return comm(st_->tp, c.time, Category::TpComm, c.label, after);
  }
  /// An expert-TP collective (MoeLayerCost::etp_ag / etp_rs), on the TP stream.
  TaskId etp(Time d, LabelId label) { return comm(st_->tp, d, Category::TpComm, label); }
  /// ZeRO-3: all-gather `params` (a layer, the embedding, the head) before they are used.
  void zero3_gather(double params) {
    if (sc_.layout.zero != 3 || sc_.layout.dp == 1) return;
    const TaskId t = g_.add_task(st_->dp, dp_cost(CollectiveOp::AllGather,
                                                  params * hw::dtype_bytes(param_dtype())),
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
    if (!reduce_now_ || sc_.layout.zero == 3 || sc_.layout.dp_cp() == 1) return;
    bucket_fill_ += params;
    if (bucket_fill_ >= bucket_params_) flush_bucket();
  }
  /// Expert gradients: reduced over the expert-DP group when it has more than one rank;
  /// Megatron-Core scales their buckets by 1/(DP x CP) even when it has one (its
  /// expert_gradient_scaling_factor), so under GradScaling::Bucket they are still bucketed.
  void add_expert_grads(double params) {
    if (!reduce_now_) return;
    if (sc_.layout.expert_dp() == 1 && sc_.training.grad_scaling != GradScaling::Bucket) return;
    expert_fill_ += params;
    if (expert_fill_ >= bucket_params_) flush_expert_bucket();
  }
  void flush_expert_bucket() {
    const double bytes = expert_fill_ * hw::dtype_bytes(grad_dtype());
    const TaskId scaled = bucket_scale(*st_, bytes, last_, mb_, chunk_);
    expert_fill_ = 0;
    if (sc_.layout.expert_dp() == 1) return;
    const TaskId t = g_.add_task(st_->dp, edp_cost(grad_op(), bytes), Category::DpComm,
                                 l_expert_grad_reduce_, mb_, chunk_);
    g_.add_dependency(scaled, t);
    dp_grad_tasks_.push_back(t);
  }
  void flush_bucket() {
    const double bytes = bucket_fill_ * hw::dtype_bytes(grad_dtype());
    const TaskId t = g_.add_task(st_->dp, dp_cost(grad_op(), bytes), Category::DpComm,
                                 l_grad_reduce_, mb_, chunk_);
    g_.add_dependency(bucket_scale(*st_, bytes, last_, mb_, chunk_), t);
    dp_grad_tasks_.push_back(t);
    bucket_fill_ = 0;
  }
  /// GradScaling::Bucket: the 1/DP scaling of a `bytes` gradient bucket; returns the task
  /// the bucket's reduction waits for (`after` itself under the other modes). `mb`/`chunk`
  /// tag a bucket flushed inside a backward pass; end-of-step buckets belong to none.
  TaskId bucket_scale(const StageStreams& st, double bytes, TaskId after, std::int32_t mb = -1,
                      std::int32_t chunk = -1) {
    if (sc_.training.grad_scaling != GradScaling::Bucket) return after;
    return grad_scale_kernel(st, bytes, after, mb, chunk);
  }
  /// The gradient average's kernel over `bytes` of gradients (read and write each once) on
  /// the compute stream, after `after`.
  TaskId grad_scale_kernel(const StageStreams& st, double bytes, TaskId after,
                           std::int32_t mb = -1, std::int32_t chunk = -1) {
    const TaskId t = g_.add_task(st.compute, cost_.memory_bound(2.0 * bytes), Category::Compute,
                                 l_grad_scale_, mb, chunk);
    g_.add_dependency(after, t);
    return t;
  }

  bool tp_on() const { return tp_ > 1; }
  /// Whether gradients are reduced at all: over DP x CP, or (expert TP below TP) over the
  /// experts' own DP group, which can have ranks with dp x cp = 1.
  bool grad_comm() const { return sc_.layout.dp_cp() > 1 || sc_.layout.expert_dp() > 1; }
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

  /// A communication task on `stream` whose input is produced by `after` (the last compute
  /// task if kNoId).
  TaskId comm(StreamId stream, Time d, Category cat, LabelId label, TaskId after = kNoId) {
    const TaskId t = g_.add_task(stream, d, cat, label, mb_, chunk_);
    const TaskId src = after != kNoId ? after : last_;
    if (src != kNoId) g_.add_dependency(src, t);
    if (first_ == kNoId) {
      for (TaskId w : wait_) g_.add_dependency(w, t);
      wait_.clear();
      first_ = t;
    }
    return t;
  }

  /// Attention core forward. cp == 1: one kernel. Ring (p2p): cp steps over the KV blocks,
  /// each one causal-balanced block of seq/cp tokens (with two mirrored chunks per rank every
  /// step does the same work, Megatron-Core / Transformer Engine), the KV transfer for step
  /// i+1 running on the CP stream while step i computes. All-gather: K and V of the whole
  /// sequence gathered first, then the local queries' attention in one kernel.
  void attention_forward(LabelId label) {
    const auto& L = sc_.layout;
    if (L.cp == 1) {
      compute(c_.attention.fwd, label);
      return;
    }
    if (L.cp_comm == parallel::Layout::CpComm::AllGather) {
      wait_.push_back(comm(st_->cp, c_.cp_ag.time, Category::CpComm, c_.cp_ag.label));
      compute(c_.attention.fwd * L.cp, label);
      return;
    }
    compute(c_.cp_fwd_prep, l_cp_merge_);
    const TaskId kv_ready = last_;
    std::vector<TaskId> recv;
    for (int i = 1; i < L.cp; ++i) {
      recv.push_back(comm(st_->cp, c_.cp_kv.time, Category::CpComm, c_.cp_kv.label, kv_ready));
    }
    for (int i = 0; i < L.cp; ++i) {
      if (i > 0) {
        wait_.push_back(recv[static_cast<std::size_t>(i - 1)]);
        compute(c_.cp_fwd_half_kv, l_cp_merge_);
      }
      compute(c_.attention.fwd, label);
      compute(c_.cp_fwd_merge, l_cp_merge_);
    }
  }
  /// Attention core backward. Ring: step i's transfer carries the next KV block and the
  /// partial dKV of step i-2 (it waits for that step), then one last dKV transfer returns
  /// each block's gradient to its owner before the QKV backward. All-gather: one kernel,
  /// then the reduce-scatter of dK, dV.
  void attention_backward() {
    const auto& L = sc_.layout;
    if (L.cp == 1) {
      compute(c_.attention.bwd_input, c_.attention.bwd_label);
      return;
    }
    if (L.cp_comm == parallel::Layout::CpComm::AllGather) {
      wait_.push_back(comm(st_->cp, c_.cp_ag.time, Category::CpComm, c_.cp_ag.label));
      compute(c_.attention.bwd_input * L.cp, c_.attention.bwd_label);
      wait_.push_back(comm(st_->cp, c_.cp_rs.time, Category::CpComm, c_.cp_rs.label));
      return;
    }
    std::vector<TaskId> recv(static_cast<std::size_t>(L.cp), kNoId);
    compute(c_.cp_bwd_prep, l_cp_merge_bwd_);
    recv[1] = comm(st_->cp, c_.cp_kv_bwd.time, Category::CpComm, c_.cp_kv_bwd.label);
    for (int i = 0; i < L.cp; ++i) {
      if (i > 0) wait_.push_back(recv[static_cast<std::size_t>(i)]);
      if (i + 1 < L.cp) compute(c_.cp_bwd_half_kv, l_cp_merge_bwd_);
      compute(c_.attention.bwd_input, c_.attention.bwd_label);
      const TaskId blk = compute(c_.cp_bwd_merge, l_cp_merge_bwd_);
      if (i + 2 < L.cp) {
        recv[static_cast<std::size_t>(i) + 2] =
            comm(st_->cp, c_.cp_kv_bwd.time, Category::CpComm, c_.cp_kv_bwd.label, blk);
      }
    }
    wait_.push_back(comm(st_->cp, c_.cp_kv.time, Category::CpComm, c_.cp_kv_bwd.label));
  }

  const MoeLayerCost& moe_cost(int idx) const { return moe_.at(idx); }

  /// MoE MLP forward (Megatron-Core all-to-all token dispatcher): router, permute, dispatch
  /// all-to-all with the shared experts on the compute stream while it runs (part a); the
  /// local experts' grouped GEMMs and the combine all-to-all (part b); un-permute (part c).
  /// On local tokens (SP with EP, or expert TP below TP: mc.local_tokens) each rank routes its
  /// own sequence shard, the received rows are gathered over the expert-TP group around the
  /// experts (etp > 1), and only the shared experts are wrapped in TP collectives; otherwise
  /// (no SP, or EP 1 with expert TP = TP) the block is wrapped in the dense MLP's.
  void moe_forward_a(int idx) {
    const MoeLayerCost& mc = moe_cost(idx);
    if (tp_on() && sp_ && !mc.local_tokens) wait_.push_back(tp(c_.tp_ag));
    if (mc.router) {
      compute(mc.router_gemm.fwd, l_router_);
      compute(mc.permute, l_permute_);
    }
    const TaskId dispatch =
        sc_.layout.ep > 1 ? comm(st_->ep, mc.dispatch, Category::EpComm, l_dispatch_) : kNoId;
    if (mc.shared) {
      if (tp_on() && sp_ && mc.local_tokens) wait_.push_back(tp(c_.tp_ag));
      compute(mc.shared_in.fwd, l_shared_in_);
      compute(mc.shared_act_fwd, l_shared_act_);
      compute(mc.shared_out.fwd, l_shared_out_);
    }
    if (dispatch != kNoId) wait_.push_back(dispatch);
  }
  void moe_forward_b(int idx) {
    const MoeLayerCost& mc = moe_cost(idx);
    if (mc.sort_chunks > Time()) compute(mc.sort_chunks, l_permute_);
    if (mc.etp_ag > Time()) wait_.push_back(etp(mc.etp_ag, l_etp_ag_));
    compute(mc.expert_in.fwd, l_expert_in_);
    compute(mc.expert_act_fwd, l_expert_act_);
    compute(mc.expert_out.fwd, l_expert_out_);
    if (mc.etp_rs > Time()) wait_.push_back(etp(mc.etp_rs, l_etp_rs_));
    if (sc_.layout.ep > 1) {
      if (mc.unsort_chunks > Time()) compute(mc.unsort_chunks, l_permute_);
      wait_.push_back(comm(st_->ep, mc.combine, Category::EpComm, l_combine_));
    }
  }
  void moe_forward_c(int idx, bool residual = true) {
    const MoeLayerCost& mc = moe_cost(idx);
    if (mc.router) compute(mc.unpermute, l_permute_);
    if (tp_on() && (!mc.local_tokens || mc.shared)) wait_.push_back(tp(sp_ ? c_.tp_rs : c_.tp_ar));
    if (residual) compute(c_.mlp_residual.fwd, c_.mlp_residual.fwd_label);
  }
  /// The modules selective recompute re-runs, or nullptr without selective recompute.
  const model::RecomputeModules* rc_modules() const {
    return sc_.training.recompute == model::Recompute::Selective ? &sc_.training.recompute_modules
                                                                 : nullptr;
  }
  /// Selective recompute before a layer's MLP backward (Megatron-Core --recompute-modules):
  /// the MLP norm's output (layernorm); a dense layer's MLP forward with its TP collectives
  /// (mlp); an MoE layer's whole block forward, all-to-alls included (moe).
  void recompute_mlp_block(int idx) {
    const model::RecomputeModules* rm = rc_modules();
    if (rm == nullptr) return;
    if (rm->layernorm) compute(c_.mlp_norm.fwd, c_.mlp_norm.recompute_label);
    if (sc_.model.is_moe_layer(idx)) {
      if (!rm->moe) return;
      moe_forward_a(idx);
      moe_forward_b(idx);
      moe_forward_c(idx, false);
      return;
    }
    if (!rm->mlp) return;
    gather_then_gemm(c_.mlp_in, true);
    compute(c_.act.fwd, c_.act.recompute_label);
    gemm_then_reduce(c_.mlp_out, true);
  }
  /// MoE MLP backward: output gradients to the experts (combine's conjugate) while the
  /// shared experts' backward runs (part a); the experts' dgrad and wgrad, input gradients
  /// back (dispatch's conjugate) (part b); router backward (part c). TP collectives as in the
  /// dense MLP's backward (row-parallel expert_out, column-parallel expert_in), so one expert
  /// without EP is the dense layer task for task.
  void moe_backward_a(int idx) {
    const MoeLayerCost& mc = moe_cost(idx);
    if (tp_on() && sp_ && !mc.local_tokens) wait_.push_back(tp(c_.tp_ag_bwd));
    if (mc.router) compute(mc.unpermute_bwd, l_permute_bwd_);
    const TaskId to_experts =
        sc_.layout.ep > 1 ? comm(st_->ep, mc.combine_bwd, Category::EpComm, l_combine_bwd_)
                          : kNoId;
    if (mc.shared) {
      if (const auto* rm = rc_modules(); rm != nullptr && rm->shared_experts && !rm->moe) {
        // Recomputed: the shared experts' forward (on local tokens after their input
        // all-gather).
        if (tp_on() && sp_ && mc.local_tokens) wait_.push_back(tp(c_.tp_ag));
        compute(mc.shared_in.fwd, l_shared_in_);
        compute(mc.shared_act_fwd, l_shared_act_);
        compute(mc.shared_out.fwd, l_shared_out_);
      }
      // On local tokens the shared experts are a sequence-parallel MLP of their own: the
      // output gradient gathered first, the input re-gathered for the weight gradient.
      TaskId ag_input = kNoId;
      if (tp_on() && sp_ && mc.local_tokens) {
        wait_.push_back(tp(c_.tp_ag_bwd));
        if (!input_only_) ag_input = tp(c_.tp_ag_wgrad);
      }
      compute(mc.shared_out.dgrad + mc.shared_act_bwd + mc.shared_in.dgrad, l_shared_bwd_);
      if (ag_input != kNoId) wait_.push_back(ag_input);
      if (!input_only_) compute(mc.shared_out.wgrad + mc.shared_in.wgrad, l_expert_wgrad_);
    }
    if (to_experts != kNoId) wait_.push_back(to_experts);
  }
  void moe_backward_b(int idx) {
    const MoeLayerCost& mc = moe_cost(idx);
    if (const auto* rm = rc_modules(); rm != nullptr && rm->moe_act && !rm->moe) {
      compute(mc.expert_act_fwd, l_expert_act_);  // the experts' activation, recomputed
    }
    if (mc.unsort_chunks > Time()) compute(mc.unsort_chunks, l_permute_bwd_);
    // The conjugates of the forward's: the output gradients all-gathered, the input
    // gradients reduce-scattered.
    if (mc.etp_ag > Time()) wait_.push_back(etp(mc.etp_ag, l_etp_ag_bwd_));
    compute(mc.expert_out.dgrad, l_expert_bwd_);
    if (!input_only_) compute(mc.expert_out.wgrad, l_expert_wgrad_);
    compute(mc.expert_act_bwd, l_expert_bwd_);
    moe_ag_input_ = kNoId;
    if (!input_only_ && tp_on() && sp_ && !mc.local_tokens) moe_ag_input_ = tp(c_.tp_ag_wgrad);
    compute(mc.expert_in.dgrad, l_expert_bwd_);
    if (mc.etp_rs > Time()) wait_.push_back(etp(mc.etp_rs, l_etp_rs_bwd_));
    if (sc_.layout.ep > 1) {
      if (mc.sort_chunks > Time()) compute(mc.sort_chunks, l_permute_bwd_);
      wait_.push_back(comm(st_->ep, mc.dispatch_bwd, Category::EpComm, l_dispatch_bwd_));
    }
  }
  void moe_backward_c(int idx) {
    const MoeLayerCost& mc = moe_cost(idx);
    if (mc.router) {
      compute(mc.permute_bwd, l_permute_bwd_);
      compute(mc.router_gemm.dgrad, l_router_bwd_);
    }
    TaskId red = kNoId;
    if (tp_on() && (!mc.local_tokens || mc.shared)) red = tp(sp_ ? c_.tp_rs_bwd : c_.tp_ar_bwd);
    if (!input_only_) {
      if (moe_ag_input_ != kNoId) wait_.push_back(moe_ag_input_);
      compute(mc.expert_in.wgrad, l_expert_wgrad_);
      if (mc.router) compute(mc.router_gemm.wgrad, l_router_bwd_);
    }
    moe_ag_input_ = kNoId;
    if (red != kNoId) wait_.push_back(red);
  }
  /// W pass of an MoE MLP: the weight gradients of experts, shared experts and router.
  void moe_weight_grads(int idx) {
    const MoeLayerCost& mc = moe_cost(idx);
    compute(mc.expert_out.wgrad, l_expert_wgrad_);
    if (tp_on() && sp_ && !mc.local_tokens) wait_.push_back(tp(c_.tp_ag_wgrad));
    compute(mc.expert_in.wgrad, l_expert_wgrad_);
    if (mc.shared) {
      if (tp_on() && sp_ && mc.local_tokens) wait_.push_back(tp(c_.tp_ag_wgrad));
      compute(mc.shared_out.wgrad + mc.shared_in.wgrad, l_expert_wgrad_);
    }
    if (mc.router) compute(mc.router_gemm.wgrad, l_router_bwd_);
  }

  /// Forward of one layer up to (MoE) the dispatch all-to-all, or (dense) whole.
  void layer_forward_a(bool recompute, int idx) {
    auto lbl = [recompute](const OpCost& c) { return recompute ? c.recompute_label : c.fwd_label; };
    compute(c_.attn_norm.fwd, lbl(c_.attn_norm));
    gather_then_gemm(c_.qkv, recompute);
    attention_forward(lbl(c_.attention));
    gemm_then_reduce(c_.proj, recompute);
    compute(c_.attn_residual.fwd, lbl(c_.attn_residual));
    compute(c_.mlp_norm.fwd, lbl(c_.mlp_norm));
    if (sc_.model.is_moe_layer(idx)) {
      moe_forward_a(idx);
      return;
    }
    gather_then_gemm(c_.mlp_in, recompute);
    compute(c_.act.fwd, lbl(c_.act));
    gemm_then_reduce(c_.mlp_out, recompute);
    compute(c_.mlp_residual.fwd, lbl(c_.mlp_residual));
  }
  void layer_forward(bool recompute, int idx) {
    layer_forward_a(recompute, idx);
    if (sc_.model.is_moe_layer(idx)) {
      moe_forward_b(idx);
      moe_forward_c(idx);
    }
  }

  /// Backward of a row-parallel GEMM: (SP) all-gather of the output gradient, then dgrad
  /// and wgrad.
  void row_backward(const OpCost& gemm) {
    if (tp_on() && sp_) wait_.push_back(tp(c_.tp_ag_bwd));
    compute(gemm.bwd_input, gemm.dgrad_label);
    if (!input_only_ && trains(gemm)) compute(gemm.bwd_weight, gemm.wgrad_label);
  }
  /// Whether the GEMM has a weight gradient (not a frozen LoRA base weight without adapter).
  static bool trains(const OpCost& gemm) { return gemm.bwd_weight > Time::zero(); }
  /// Backward of a column-parallel GEMM: dgrad, then the input-gradient reduce-scatter (SP)
  /// or all-reduce overlapped with wgrad; with SP, wgrad also waits for the re-gathered input.
  TaskId column_backward(const OpCost& gemm) { return column_backward(gemm, c_.col); }
  /// The same with the collectives `cc` of the GEMM's input width.
  TaskId column_backward(const OpCost& gemm, const ColumnComm& cc) {
    if (input_only_ || !trains(gemm)) {
      compute(gemm.bwd_input, gemm.dgrad_label);
      if (tp_on()) wait_.push_back(tp(sp_ ? cc.rs_bwd : cc.ar_bwd));
      return kNoId;
    }
    TaskId ag_input = kNoId;
    if (tp_on() && sp_) ag_input = tp(cc.ag_wgrad);
    compute(gemm.bwd_input, gemm.dgrad_label);
    TaskId red = kNoId;
    if (tp_on()) red = tp(sp_ ? cc.rs_bwd : cc.ar_bwd);
    if (ag_input != kNoId) wait_.push_back(ag_input);
    const TaskId wgrad = compute(gemm.bwd_weight, gemm.wgrad_label);
    if (red != kNoId) wait_.push_back(red);
    return wgrad;
  }

  /// W pass of a column-parallel GEMM: (SP) re-gather its input, then the weight gradient.
  TaskId column_weight_grad(const OpCost& gemm) { return column_weight_grad(gemm, c_.col); }
  TaskId column_weight_grad(const OpCost& gemm, const ColumnComm& cc) {
    if (tp_on() && sp_) wait_.push_back(tp(cc.ag_wgrad));
    return compute(gemm.bwd_weight, gemm.wgrad_label);
  }
  /// W pass of one layer: the four weight-gradient GEMMs in backward order.
  TaskId layer_weight_grads(int idx) {
    if (sc_.model.is_moe_layer(idx)) {
      moe_weight_grads(idx);
    } else {
      compute(c_.mlp_out.bwd_weight, c_.mlp_out.wgrad_label);
      column_weight_grad(c_.mlp_in);
    }
    compute(c_.proj.bwd_weight, c_.proj.wgrad_label);
    return column_weight_grad(c_.qkv);
  }
  /// Gradient reduction state for a backward or W pass: buckets are reduced during the last
  /// pass that produces weight gradients of the chunk.
  void begin_reduction() {
    reduce_now_ = !input_only_ && grad_comm() && sc_.layout.overlap_grad_reduce &&
                  sc_.layout.zero < 3 && reduce_trigger_;
    bucket_fill_ = 0;
    expert_fill_ = 0;
  }

  /// Backward of a dense layer's MLP (after its residual).
  void dense_mlp_backward() {
    row_backward(c_.mlp_out);
    compute(c_.act.bwd_input, c_.act.bwd_label);
    column_backward(c_.mlp_in);
  }
  /// Backward of a layer's attention block (after the MLP); returns the QKV weight-gradient
  /// task.
  TaskId attention_block_backward() {
    compute(c_.mlp_norm.bwd_input, c_.mlp_norm.bwd_label);
    compute(c_.attn_residual.bwd_input, c_.attn_residual.bwd_label);
    row_backward(c_.proj);
    const model::RecomputeModules* rm = rc_modules();
    // mla_up_proj: Q, K and V again from the kept latents, before the core needs them.
    for (const OpCost& up : c_.mla_up) compute(up.fwd, up.recompute_label);
    if (rm != nullptr && rm->core_attn) attention_forward(c_.attention.recompute_label);
    attention_backward();
    if (rm != nullptr && rm->layernorm) compute(c_.attn_norm.fwd, c_.attn_norm.recompute_label);
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
  /// Backward of layer `idx` up to (MoE) the dispatch all-to-all's gradient: recompute, the
  /// MLP residual, and for an MoE layer the combine side (moe_backward_a).
  void layer_backward_a(int idx) {
    if (sc_.training.recompute == model::Recompute::Full) layer_forward(true, idx);
    recompute_mlp_block(idx);
    compute(c_.mlp_residual.bwd_input, c_.mlp_residual.bwd_label);
    if (sc_.model.is_moe_layer(idx)) moe_backward_a(idx);
  }
  /// The rest of layer `idx`'s backward: the MLP (or the MoE block's last part) and the
  /// attention block; returns the QKV weight-gradient task.
  TaskId layer_backward_c(int idx) {
    if (sc_.model.is_moe_layer(idx)) {
      moe_backward_c(idx);
    } else {
      dense_mlp_backward();
    }
    return attention_block_backward();
  }
  /// An MTP module's input (DeepSeek-V3 report §2.2; Megatron-Core core_r0.13
  /// MultiTokenPredictionLayer): the shifted tokens' embedding (the shared table's lookup
  /// with its TP reduction), enorm and hnorm, and eh_proj — a column-parallel linear on their
  /// [b, s, 2h] concatenation (with SP its input all-gathered first), its [b, s, h/t] output
  /// all-gathered over TP (gather_from_tensor_model_parallel_region) and, with SP, cut back
  /// to the sequence shard (scatter_to_sequence_parallel_region: a local split).
  void mtp_forward_in() {
    embedding_forward();
    compute(c_.mtp_norm.fwd, c_.mtp_norm.fwd_label);
    compute(c_.mtp_norm.fwd, c_.mtp_norm.fwd_label);
    if (tp_on() && sp_) wait_.push_back(tp(c_.mtp_col.ag));
    compute(c_.mtp_proj.fwd, c_.mtp_proj.fwd_label);
    if (tp_on()) wait_.push_back(tp(c_.tp_ag));
  }
  /// Backward of mtp_forward_in after the module's layer: with SP the sequence split's
  /// conjugate (an all-gather of [b, s, h]; the TP gather's conjugate is a local split),
  /// eh_proj's dgrad and wgrad with its [b, s, 2h] input gradient reduced (and, SP, its input
  /// re-gathered), the two norms and the embedding's scatter-add. Returns eh_proj's
  /// weight-gradient task (kNoId in a B-only pass).
  TaskId mtp_backward_in() {
    if (tp_on() && sp_) wait_.push_back(tp(c_.tp_ag_bwd));
    const TaskId wgrad = column_backward(c_.mtp_proj, c_.mtp_col);
    compute(c_.mtp_norm.bwd_input, c_.mtp_norm.bwd_label);
    compute(c_.mtp_norm.bwd_input, c_.mtp_norm.bwd_label);
    embedding_backward();
    return wgrad;
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
  model::ModelSpec local_;                 // the model as one CP rank sees it (seq / cp)
  std::vector<int> first_layer_;           // per pipeline position: its first global layer
  std::map<int, MoeLayerCost> moe_;        // this stage's MoE layers by global index
  std::vector<MoeLayerCost> moe_all_;      // every stage's, for the report
  double expert_fill_ = 0;
  TaskId moe_ag_input_ = kNoId;            // SP: expert_in's re-gathered input (per pass)
  std::optional<Paired> paired_;           // the emitted backward half of a DualPipe pair
  std::vector<parallel::StageProgram> programs_;
  LabelId l_cp_merge_ = kNoId, l_cp_merge_bwd_ = kNoId;
  LabelId l_expert_grad_reduce_ = kNoId, l_router_ = kNoId, l_router_bwd_ = kNoId,
          l_etp_ag_ = kNoId, l_etp_rs_ = kNoId, l_etp_ag_bwd_ = kNoId, l_etp_rs_bwd_ = kNoId,
          l_shared_in_ = kNoId, l_shared_act_ = kNoId, l_shared_out_ = kNoId,
          l_shared_bwd_ = kNoId, l_expert_in_ = kNoId, l_expert_act_ = kNoId,
          l_expert_out_ = kNoId, l_expert_bwd_ = kNoId, l_expert_wgrad_ = kNoId,
          l_dispatch_ = kNoId, l_combine_ = kNoId, l_dispatch_bwd_ = kNoId,
          l_combine_bwd_ = kNoId, l_permute_ = kNoId, l_permute_bwd_ = kNoId;
  LabelId l_grad_scale_ = kNoId, l_grad_reduce_ = kNoId, l_param_ag_ = kNoId, l_optimizer_ = kNoId,
          l_tied_sync_ = kNoId;
  /// ZeRO-1/2 parameter all-gathers of one chunk, consumed by its first forward.
  struct ChunkGathers {
    std::vector<TaskId> tasks;
    std::vector<TaskId> expert_tasks;  ///< the chunk's expert buckets: its first MoE layer waits
    std::size_t next = 0;
    double offset = 0;
  };
  std::vector<ChunkGathers> gathers_;
  ChunkGathers* gather_ = nullptr;
  std::vector<TaskId> blocking_gathers_;
  std::map<std::tuple<int, double, int>, Time> dp_cache_;
  /// The stage's slowest TP, DP x CP and expert-DP groups (net::slowest_group), the groups
  /// its collectives are priced on; empty until the first collective of the kind.
  std::vector<int> tp_rep_, dp_rep_, edp_rep_;
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
  if (mdl.mla.enabled()) return std::max<std::int64_t>(1, mdl.qkv_width() / tp);
  const std::int64_t d = mdl.head_dim();
  const std::int64_t kv_local = std::max(1, mdl.kv_heads / tp);
  return static_cast<std::int64_t>(mdl.heads / tp) * d + 2 * kv_local * d;
}

bool embedding_copy_on_last_stage(const model::ModelSpec& m, const parallel::Layout& L) {
  const bool dual = L.schedule == parallel::ScheduleKind::DualPipe;
  const int chain = dual ? L.pp : L.pp * L.virtual_stages;
  return (m.tied_embeddings || m.mtp_layers > 0) && chain > 1 && !dual;
}

double mtp_extra_params_per_rank(const model::ModelSpec& m, int tp) {
  const double eh = 2.0 * m.hidden * static_cast<double>(m.hidden);
  return m.mtp_extra_params() - eh + eh / tp;
}

double embedding_grad_bytes(const model::ModelSpec& model, int tp, hw::Dtype dtype) {
  return model.embedding_params() / tp * (2.0 + 2.0 + 2.0 * hw::dtype_bytes(gradient_dtype(dtype)));
}

double optimizer_step_bytes(double shard_params, double buffer_params, hw::Dtype dtype) {
  const double per_shard_param = 4.0 + 28.0 + 6.0 + (dtype == hw::Dtype::FP16 ? 8.0 : 0.0);
  return per_shard_param * shard_params + 4.0 * buffer_params;
}

double attention_params_per_rank(const model::ModelSpec& mdl, int tp) {
  const double h = mdl.hidden;
  const double qkv = static_cast<double>(qkv_width(mdl, tp));
  const double biases = mdl.bias ? qkv + h : 0.0;
  return h * qkv + static_cast<double>(mdl.attn_out_width()) * h / tp +
         (mdl.norm == model::Norm::LayerNorm ? 4.0 : 2.0) * h + biases;
}

double dense_mlp_params_per_rank(const model::ModelSpec& mdl, int tp, double ffn) {
  const bool swiglu = mdl.activation == model::Activation::SwiGLU;
  const double h = mdl.hidden;
  const double biases = mdl.bias ? (swiglu ? 2.0 : 1.0) * ffn / tp + h : 0.0;
  return (swiglu ? 3.0 : 2.0) * h * ffn / tp + biases;
}

double lora_flops_per_step(const model::ModelSpec& mdl, std::int64_t global_batch,
                           const LoraSpec& lora) {
  double layer = 0, head = 0;
  for (const model::Op& op : model::layer_ops(mdl, global_batch)) {
    layer += op.flops.fwd + op.flops.bwd_input;
    if (op.kind == OpKind::Gemm && lora.targets(op.name)) {
      // Adapter: forward, input gradient and the two weight gradients, 2 r (k + n) each.
      layer += 6.0 * lora.rank * static_cast<double>(op.k + op.n) * static_cast<double>(op.m);
    }
  }
  for (const model::Op& op : model::head_ops(mdl, global_batch)) {
    head += op.flops.fwd + op.flops.bwd_input;
  }
  return layer * mdl.layers + head;
}

double lora_params_per_rank(const model::ModelSpec& mdl, int tp, const LoraSpec& lora) {
  if (!lora.enabled()) return 0.0;
  const double h = mdl.hidden, r = lora.rank;
  const double ffn = static_cast<double>(mdl.ffn_hidden) / tp;
  const double in_width = (mdl.activation == model::Activation::SwiGLU ? 2.0 : 1.0) * ffn;
  double p = 0;
  if (lora.qkv) p += r * (h + static_cast<double>(qkv_width(mdl, tp)));
  if (lora.proj) p += r * (static_cast<double>(mdl.attn_out_width()) / tp + h);
  if (lora.mlp_in) p += r * (h + in_width);
  if (lora.mlp_out) p += r * (ffn + h);
  return p;
}

model::Op rank_op(const Scenario& sc, const model::Op& op) {
  return rank_op(sc.model, sc.layout.tp, sc.layout.sequence_parallel, op);
}

model::Op rank_op(const model::ModelSpec& mdl, int tp, bool sp, const model::Op& op) {
  model::Op r = op;
  switch (op.kind) {
    case OpKind::Gemm:
      if (op.shard == Shard::Column) r.n = std::max<std::int64_t>(1, op.n / tp);
      if (op.shard == Shard::Row) r.k = std::max<std::int64_t>(1, op.k / tp);
      if (op.name == "qkv") r.n = qkv_width(mdl, tp);
      break;
    case OpKind::Attention:
      r.heads = std::max(1, op.heads / tp);
      r.kv_heads = std::max(1, op.kv_heads / tp);
      break;
    default: {
      double div = 1;
      if (op.shard == Shard::TpLocal) div = tp;
      if (op.shard == Shard::Replicated && sp) div = tp;
      r.fwd_bytes = op.fwd_bytes / div;
      r.bwd_bytes = op.bwd_bytes / div;
      break;
    }
  }
  return r;
}

void validate_lora(const Scenario& sc) {
  const LoraSpec& lora = sc.training.lora;
  if (!lora.enabled()) return;
  auto no = [](const std::string& what) {
    throw InputError("training.lora", "training.lora: LoRA with " + what + " is not modelled");
  };
  if (!(lora.qkv || lora.proj || lora.mlp_in || lora.mlp_out)) {
    throw InputError("training.lora", "training.lora.targets must name at least one GEMM");
  }
  // A rank beyond the smaller side of a targeted weight adds parameters, not expressiveness.
  std::int64_t full_rank = sc.model.hidden;
  if (lora.proj) full_rank = std::min<std::int64_t>(full_rank, sc.model.attn_out_width());
  if (lora.mlp_in || lora.mlp_out) full_rank = std::min<std::int64_t>(full_rank, sc.model.ffn_hidden);
  if (lora.rank > full_rank) {
    throw InputError("training.lora.rank",
                     "training.lora.rank (" + std::to_string(lora.rank) +
                         ") exceeds the full rank of the targeted weights (" +
                         std::to_string(full_rank) + ")");
  }
  if (sc.model.moe.enabled()) no("MoE layers");
  if (sc.model.mla.enabled()) no("MLA attention");
  if (sc.model.mtp_layers > 0) no("multi-token prediction (model.mtp_layers)");
  if (sc.layout.zero >= 3) no("ZeRO-3");
  switch (sc.layout.schedule) {
    case parallel::ScheduleKind::GPipe:
    case parallel::ScheduleKind::OneFOneB:
    case parallel::ScheduleKind::Interleaved:
      break;
    default:
      no("schedule \"" + std::string(parallel::schedule_name(sc.layout.schedule)) +
         "\" (gpipe, 1f1b and interleaved are)");
  }
}

void validate_training(const Scenario& sc) {
  validate_lora(sc);
  if (sc.training.recompute == model::Recompute::Selective &&
      sc.training.recompute_modules.mla_up_proj && !sc.model.mla.enabled()) {
    throw InputError("training.recompute_modules",
                     "training.recompute_modules: \"mla_up_proj\" needs a model with multi-head "
                     "latent attention (a DeepSeek hf_config)");
  }
  const auto& L = sc.layout;
  if (sc.training.grad_scaling == GradScaling::Buffer && L.overlap_grad_reduce &&
      L.dp_cp() > 1 && L.zero < 3) {
    throw InputError("training.grad_scaling",
                     "training.grad_scaling = \"buffer\" (Megatron-LM's local DDP) reduces the "
                     "gradients after the backward; set parallel.overlap_grad_reduce = false");
  }
}

StepResult simulate_step(const Scenario& sc) {
  sc.model.validate();
  const auto& L = sc.layout;
  L.validate(sc.model, sc.gpus, sc.training.global_batch, sc.training.micro_batch, sc.steps);
  validate_training(sc);
  if (sc.fidelity == Fidelity::Analytic) {
    throw InputError("simulation.fidelity", std::string("simulation.fidelity \"") +
                                                fidelity_name(sc.fidelity) +
                                                "\" is not simulated yet (available: stage, full)");
  }
  const hw::Topology topo(sc.topology, hw::whole_node_gpus(sc.topology, sc.gpus));
  const net::AlphaBetaModel ab_model(topo, sc.gpu);
  const net::ProfiledCollectiveModel profiled_comm(ab_model, topo, sc.profile);
  const net::CollectiveModel& base_comm =
      sc.profile ? static_cast<const net::CollectiveModel&>(profiled_comm) : ab_model;
  // Full fidelity (full_fidelity.hpp): same graph, comm tasks become flows on the topology.
  std::optional<FullFidelity> full;
  if (sc.fidelity == Fidelity::Full) full.emplace(L, topo, ab_model, sc.stragglers, &base_comm);
  const net::CollectiveModel& comm = full ? full->model() : base_comm;
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
  spec.ep_stream = L.ep > 1;
  spec.cp_stream = L.cp > 1;
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
    plan.pair_with_next.assign(prog.size(), false);
    // DualPipe overlaps a forward with the backward that follows it; it matters where there
    // are all-to-alls to hide (MoE with ep > 1).
    if (spec.dual && sc.model.moe.enabled() && L.ep > 1) {
      for (std::size_t i = 0; i + 1 < prog.size(); ++i) {
        plan.pair_with_next[i] =
            prog[i].kind == PassKind::Forward && prog[i + 1].kind == PassKind::Backward;
      }
    }
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
  builder.set_programs(spec.programs);
  const double p2p_bytes = static_cast<double>(sc.training.micro_batch) * sc.model.seq_len *
                           sc.model.hidden * 2.0 / L.tp / L.cp;
  std::map<std::pair<int, int>, Time> p2p_cache;
  spec.p2p_time = [&](int from, int to) {
    auto key = std::make_pair(from, to);
    auto it = p2p_cache.find(key);
    if (it != p2p_cache.end()) return it->second;
    // The slowest of the stage pair's transfers (one per TP, CP and DP coordinate).
    const Time t = from == to ? Time::zero()
                              : net::slowest_group(comm, CollectiveOp::SendRecv,
                                                   static_cast<std::uint64_t>(p2p_bytes),
                                                   L.pp_pairs(from, to), sc.topology.gpus_per_node)
                                    .cost.time;
    p2p_cache.emplace(key, t);
    return t;
  };

  StagedEmitter staged(builder);
  const PipelineGraph pg = build_pipeline(*graph, spec, staged);
  for (const auto& members : builder.barriers()) {
    if (members.size() > 1) graph->add_rendezvous(members);
  }

  if (full) full->convert(*graph);
  Simulator sim;
  sim.reserve(graph->num_streams() * 4);
  Executor ex(*graph);
  if (sc.sm_contention) ex.set_sm_contention(sc.gpu.comm_sms, sc.gpu.sm_count);
  if (full) {
    full->run(sim, ex);
  } else {
    ex.run(sim);
  }

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
  // Each stage is analysed over one step time ending where its measured step ends: when the
  // steady state is not exactly periodic (asynchronous schedules with few microbatches drift
  // by microseconds from step to step), a stage's own span between its updates differs from
  // the step time, and its breakdown did not add up to the step time the report divides by.
  if (steps > 1) {
    for (int s = 0; s < L.pp; ++s) {
      win_begin[static_cast<std::size_t>(s)] =
          max(Time::zero(), win_end[static_cast<std::size_t>(s)] - r.step_time);
    }
  }
  r.window_begin = prev_end;
  r.window_end = last_end;
  r.steps_simulated = sim_steps;
  r.measured_step = steps;
  r.microbatches = m;
  r.events = sim.events_processed();
  if (full) {
    r.flows = full->stats().flows;
    r.flow_recomputations = full->stats().recomputations;
    if (const auto slow = full->slowest()) {
      r.slowest_rank = slow->first;
      r.slowest_rank_stage = slow->second;
    }
  }
  r.tasks = graph->num_tasks();
  if (sc.profile) {
    r.pricing = cost.pricing();
    // The file name only: the same inputs give the same report in any checkout (docs/trust.md).
    r.pricing->profile_path = std::filesystem::path(sc.profile->path).filename().string();
    r.pricing->collective = profiled_comm.count();
  }
  if (!builder.moe_costs().empty()) {
    MoeStats ms;
    double imb = 0, dispatch = 0, combine = 0, rows = 0, routed = 0;
    std::int64_t dropped = 0;
    for (const auto& mc : builder.moe_costs()) {
      ms.imbalance_max = std::max(ms.imbalance_max, mc.imbalance);
      imb += mc.imbalance;
      dispatch += mc.a2a_dispatch_bytes;
      combine += mc.a2a_combine_bytes;
      rows += static_cast<double>(mc.rows_sent);
      dropped += mc.dropped;
      routed += static_cast<double>(mc.tokens_routed) * L.ep * sc.model.moe.top_k;
    }
    const auto n_layers = static_cast<double>(builder.moe_costs().size());
    ms.imbalance_mean = imb / n_layers;
    ms.a2a_dispatch_bytes_per_layer = dispatch / n_layers;
    ms.a2a_combine_bytes_per_layer = combine / n_layers;
    ms.rows_sent_per_layer = rows / n_layers;
    ms.dropped_fraction = static_cast<double>(dropped) / routed;
    // The decoder's MoE layers and the MTP modules' (MoE when the last layer is).
    ms.moe_layers = sc.model.moe_layers() +
                    (sc.model.mtp_is_moe() ? sc.model.mtp_layers : 0);
    r.moe = ms;
  }
  const double step = r.step_time.seconds();
  const double tokens = static_cast<double>(sc.training.global_batch) * sc.model.seq_len;
  r.tokens_per_s = tokens / step;
  r.model_flops = model::model_flops_per_step(sc.model, sc.training.global_batch);
  r.hardware_flops =
      model::hardware_flops_per_step(sc.model, sc.training.global_batch, sc.training.recompute,
                                     sc.training.recompute_modules);
  // A causal FlashAttention kernel skips the masked half of the attention core (the unfused
  // path computes all of Q·K^T and P·V and masks the scores): hardware FLOPs count what runs,
  // model FLOPs keep the convention of counting it in full.
  if (sc.training.flash_attention) {
    r.hardware_flops -= model::causal_masked_flops_per_step(sc.model, sc.training.global_batch,
                                                            sc.training.recompute,
                                                            sc.training.recompute_modules);
  }
  if (sc.training.lora.enabled()) {
    // What LoRA computes: no weight gradient of a frozen weight (recompute unchanged).
    const double lora = lora_flops_per_step(sc.model, sc.training.global_batch, sc.training.lora);
    r.hardware_flops += lora - r.model_flops;
    r.model_flops = lora;
  }
  if (r.moe && r.moe->dropped_fraction > 0) {
    // Rows dropped by the capacity factor skip the routed experts' GEMMs (forward,
    // backward and a full recompute's forward, or the moe module's): hardware FLOPs count
    // what runs, while model FLOPs keep the Megatron convention of top-k routed rows per
    // token.
    const bool refwd = sc.training.recompute == model::Recompute::Full ||
                       (sc.training.recompute == model::Recompute::Selective &&
                        sc.training.recompute_modules.moe);
    double expert = 0;
    for (const auto& op : model::layer_ops_at(sc.model, sc.model.moe.first_dense_layers,
                                              sc.training.global_batch)) {
      if (op.name != "expert_in" && op.name != "expert_out") continue;
      expert += op.flops.total();
      if (refwd) expert += op.flops.fwd;
    }
    r.hardware_flops -= r.moe->dropped_fraction * expert * r.moe->moe_layers;
  }
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
  aopt.modules = sc.training.recompute_modules;
  // Context parallelism: every rank keeps the activations of its seq_len / cp tokens.
  model::ModelSpec local = sc.model;
  local.seq_len = sc.model.seq_len / L.cp;
  const double act_layer = model::activation_bytes_per_layer(local, sc.training.micro_batch, aopt);
  // MoE layers: the layer without its MLP, then the routed experts' tensors for the rows the
  // (busiest) rank's experts process — rows / T times the expert ffn size — and the shared
  // experts'. Recompute modules: none with moe; the routed ones without their activation
  // output with moe_act; no shared ones with shared_experts. Full recompute keeps the input.
  double act_moe_layer = act_layer;
  if (sc.model.moe.enabled() && sc.training.recompute != model::Recompute::Full) {
    double rows = 0;
    for (const auto& mc : builder.moe_costs()) rows = std::max(rows, static_cast<double>(mc.rows_busiest));
    const double T = static_cast<double>(sc.training.micro_batch) * local.seq_len;
    // The formula splits the MLP tensors by tp; the experts' rows are split by etp.
    const double etp_share = static_cast<double>(L.tp) / L.expert_tp();
    const double routed_ffn = rows / T * sc.model.moe.expert_ffn_hidden * etp_share;
    const bool selective = sc.training.recompute == model::Recompute::Selective;
    model::RecomputeModules rm;  // what recompute re-runs of the MoE block: nothing without it
    rm.core_attn = false;
    if (selective) rm = sc.training.recompute_modules;
    model::ActivationOptions no_mlp = aopt;
    no_mlp.with_mlp = false;
    act_moe_layer = model::activation_bytes_per_layer(local, sc.training.micro_batch, no_mlp);
    if (!rm.moe) {
      act_moe_layer += model::mlp_activation_bytes(local, routed_ffn, sc.training.micro_batch,
                                                   L.tp, rm.moe_act);
      if (!rm.shared_experts) {
        act_moe_layer += model::mlp_activation_bytes(
            local, static_cast<double>(sc.model.moe.shared_ffn()), sc.training.micro_batch, L.tp);
      }
    }
  }
  const double b = static_cast<double>(sc.training.micro_batch);
  const double sbh = b * local.seq_len * sc.model.hidden;
  // Embedding output kept for the first layer (sharded with SP); fp32 logits for the loss.
  const double emb_act = 2.0 * sbh / (L.sequence_parallel ? L.tp : 1);
  const double head_act = 4.0 * b * local.seq_len * static_cast<double>(sc.model.vocab) / L.tp;
  // One MTP module: its layer, its own fp32 logits, the inputs enorm and hnorm keep and
  // eh_proj's [b, s, 2h] input (SP keeps the sequence shard and re-gathers it for wgrad).
  const double sp_div = L.sequence_parallel ? L.tp : 1;
  const double mtp_act = (sc.model.mtp_is_moe() ? act_moe_layer : act_layer) + head_act +
                         (2.0 * 2.0 * sbh + 2.0 * 2.0 * sbh) / sp_div;
  const int v = builder.chunks();
  const PipelineShape shape = builder.shape();
  double worst = -1;
  for (int s = 0; s < L.pp; ++s) {
    StageResult sr;
    sr.stage = s;
    for (int c = 0; c < v; ++c) sr.layers += builder.layers_of(shape.vs_of(s, c));
    sr.params = builder.stage_params(s);
    sr.window_begin = win_begin[static_cast<std::size_t>(s)];
    sr.window_end = win_end[static_cast<std::size_t>(s)];
    sr.breakdown = analyze_stage(*graph, ex, prev, pg.streams[static_cast<std::size_t>(s)].compute,
                                 sr.window_begin, sr.window_end);
    // A stage done before the step ends (the first of several steps of a schedule that never
    // flushes, `steps = 1` with pipedream or 2bw: stages finish it at different times) waits
    // for the rest of the step, so the stage's parts add up to the step time.
    if (const double wait = r.step_time.seconds() - sr.breakdown.step; wait > 0) {
      sr.breakdown.bubble += wait;
      sr.breakdown.step = r.step_time.seconds();
    }
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
        const auto idx = static_cast<std::size_t>(mb) * static_cast<std::size_t>(v) +
                         static_cast<std::size_t>(c);
        const int vs = shape.vs_of(s, c);
        if (pg.fwd[static_cast<std::size_t>(s)][idx].first == kNoId) continue;  // DualPipe
        alloc.push_back(ex.start(pg.fwd[static_cast<std::size_t>(s)][idx].first));
        free.push_back(ex.end(pg.release(s, idx)));
        const int moe_layers = builder.moe_layers_of(vs);
        double bts = (builder.layers_of(vs) - moe_layers) * act_layer + moe_layers * act_moe_layer;
        if (shape.first_of_chain(vs)) bts += emb_act;
        if (shape.last_of_chain(vs)) bts += head_act + sc.model.mtp_layers * mtp_act;
        bytes.push_back(bts);
      }
    }
    const PeakResult peak_act = peak_in_flight(alloc, free, bytes);
    sr.peak_inflight = peak_act.peak_count;
    // Dense weights are replicated over DP x CP, routed experts over the expert-DP ranks
    // (dp·cp/ep); ZeRO shards each over its own group.
    const double expert_params = builder.stage_expert_params(s);
    const double grad_bytes = hw::dtype_bytes(gradient_dtype(sc.training.dtype));
    auto state = model::model_state_bytes(sr.params - expert_params, L.dp_cp(), L.zero, grad_bytes);
    if (sc.training.lora.enabled()) {
      // Frozen 16-bit base weights; gradients and optimizer state for the adapters only.
      const double adapters = builder.stage_trainable(s);
      const auto trained = model::model_state_bytes(adapters, L.dp_cp(), L.zero, grad_bytes);
      state.weights += trained.weights;
      state.gradients = trained.gradients;
      state.optimizer = trained.optimizer;
    }
    const auto expert_state =
        model::model_state_bytes(expert_params, L.expert_dp(), L.zero, grad_bytes);
    state.weights += expert_state.weights;
    state.gradients += expert_state.gradients;
    state.optimizer += expert_state.optimizer;
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
    r.breakdown.contention += sr.breakdown.contention / n;
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
      const auto idx = static_cast<std::size_t>(op.microbatch) * static_cast<std::size_t>(v) +
                       static_cast<std::size_t>(op.chunk);
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
