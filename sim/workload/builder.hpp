// One training step of a dense transformer, built as a per-rank task graph and simulated.
//
// Stage fidelity (DESIGN.md): one simulated rank per pipeline stage. Its TP and DP peers are
// symmetric, so their collectives are single-rank tasks whose time the collective model gives
// for the real group placement on the topology; pipeline transfers are two-rank rendezvous
// between stages. Per pass and layer the graph follows Megatron-LM:
//  - TP (Shoeybi et al. 2019): column-parallel QKV / fc1, row-parallel projection / fc2, an
//    all-reduce after each block in forward (g) and after each block's input gradient in
//    backward (f), overlapped there with the weight-gradient GEMM.
//  - SP (Korthikanti et al. 2022 §4.2.2, Fig. 5): g becomes all-gather before the block and
//    reduce-scatter after it in forward, their conjugates in backward, plus the backward
//    all-gather of the block input that the weight gradient needs; norms and residuals work
//    on the sequence shard.
//  - PP: the stage's schedule program with activations and gradients of b*s*h/t elements
//    (scatter/gather, Narayanan et al. 2021 §4.1) sent peer to peer.
//  - Recompute: full re-runs each layer's forward (with its TP collectives) before its
//    backward; selective re-runs the attention core.
//  - DP: gradients in buckets (Megatron's default max(40M, 1M x dp) parameters) reduced as
//    soon as the last microbatch's backward has produced them (overlap_grad_reduce), else
//    after the pipeline flush; all-reduce for ZeRO-0, reduce-scatter + parameter all-gather
//    after the optimizer for ZeRO-1/2 (at the start of the step, overlapped with the first
//    forward, with overlap_param_gather), per-layer all-gather + reduce-scatter for ZeRO-3.
//  - Optimizer: Adam step, memory-bound over the local (sharded) parameters.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/task_graph.hpp"
#include "cost/cost_model.hpp"
#include "hw/gpu.hpp"
#include "hw/profile.hpp"
#include "hw/topology.hpp"
#include "model/transformer.hpp"
#include "parallel/layout.hpp"
#include "parallel/schedule.hpp"
#include "workload/gemm_cost.hpp"
#include "workload/pipeline_sim.hpp"
#include "workload/straggler.hpp"

namespace trainsim::workload {

enum class Fidelity { Analytic, Stage, Full };
const char* fidelity_name(Fidelity f);

/// LoRA fine-tuning (Hu et al. 2021, arXiv:2106.09685 §4.1): the base weights are frozen and
/// each targeted linear layer Y = X W (W [k x n] on this rank) gains a trainable update
/// X A B, A [k x r], B [r x n], added to its output. Frozen weights need no weight gradient,
/// no gradient reduction and no optimizer state; the backward still computes every input
/// gradient down to the first adapter.
struct LoraSpec {
  int rank = 0;  ///< r; 0: full training, no LoRA
  /// Targeted GEMMs. NeMo 1.x's default (examples/nlp/language_modeling/tuning/conf/
  /// megatron_gpt_finetuning_config.yaml: target_modules ['attention_qkv'], adapter_dim 32).
  bool qkv = true, proj = false, mlp_in = false, mlp_out = false;
  [[nodiscard]] bool enabled() const { return rank > 0; }
  /// Whether the layer GEMM named `gemm` (model::layer_ops: "qkv", "proj", "mlp_fc1" /
  /// "mlp_gate_up", "mlp_fc2" / "mlp_down") carries an adapter.
  [[nodiscard]] bool targets(std::string_view gemm) const {
    if (!enabled()) return false;
    if (gemm == "qkv") return qkv;
    if (gemm == "proj") return proj;
    if (gemm == "mlp_fc1" || gemm == "mlp_gate_up") return mlp_in;
    if (gemm == "mlp_fc2" || gemm == "mlp_down") return mlp_out;
    return false;
  }
};

/// Where the data-parallel gradient average (the sum's 1/DP) is applied.
enum class GradScaling {
  /// Megatron-Core's DDP (core r0.5 on; megatron/core/distributed/param_and_grad_buffer.py,
  /// start_grad_sync: `grad_data *= gradient_scaling_factor` when the factor is not 1):
  /// one read-modify-write kernel per bucket on the compute stream, just before the bucket's
  /// reduction, when DP x CP > 1.
  Bucket,
  /// Megatron-LM's local DDP (2021-23, megatron/model/distributed.py allreduce_gradients:
  /// `buffer_.data /= data_parallel_world_size` before the all-reduce): one kernel over the
  /// whole gradient buffer after the backward, every step, even with DP = 1.
  Buffer,
  /// No separate kernel: the collective averages (NCCL ReduceOp.AVG, as apex's
  /// DistributedFusedAdam with average_grad_sync) or the framework divides while copying
  /// the gradient into its bucket (PyTorch DDP's reducer).
  Collective,
};
/// The scenario-file name of `g`: "bucket", "buffer" or "collective".
const char* grad_scaling_name(GradScaling g);

struct TrainingSpec {
  std::int64_t global_batch = 0;  ///< sequences per step
  std::int64_t micro_batch = 1;   ///< sequences per microbatch
  hw::Dtype dtype = hw::Dtype::BF16;
  model::Recompute recompute = model::Recompute::None;
  /// With Recompute::Selective: the modules recomputed (Megatron-Core's --recompute-modules).
  model::RecomputeModules recompute_modules;
  std::optional<double> tokens;   ///< training tokens, for time to train
  /// Attention kernels: FlashAttention (default) or Megatron's unfused softmax path.
  bool flash_attention = true;
  /// With model.bias: true (default) when the bias add and the bias gradient run in the GEMM
  /// epilogues (Transformer Engine; cuBLASLt's BIAS / BGRADB epilogues), so they cost nothing
  /// extra; false for PyTorch-era Megatron-LM (2021-22), where QKV adds its bias in a separate
  /// kernel and every bias gradient is a separate column reduction (`grad_output.sum(0)` and
  /// autograd's sum over broadcast dimensions).
  bool bias_in_epilogue = true;
  /// true (default): each weight-gradient GEMM accumulates into the main gradient in its
  /// epilogue (Megatron-LM's gradient-accumulation fusion, 2022 on; Transformer Engine);
  /// false: a separate add kernel per weight and microbatch (2021 Megatron-LM,
  /// `--no-gradient-accumulation-fusion`). workload::gemm_times prices both.
  bool fused_wgrad_accumulation = true;
  /// The gradient average's kernel (`[training] grad_scaling = "bucket" | "buffer" |
  /// "collective"`); each kernel reads and writes the gradients once in their dtype.
  GradScaling grad_scaling = GradScaling::Bucket;
  /// LoRA fine-tuning; disabled (rank 0) for full training. simulate_step throws InputError
  /// for combinations it does not model (MoE, ZeRO-3, schedules with a separate weight pass
  /// or weight stashing).
  LoraSpec lora;

  /// The GEMM-side kernel choices above, for workload::gemm_times.
  [[nodiscard]] GemmKernels gemm_kernels() const {
    return {dtype, bias_in_epilogue, fused_wgrad_accumulation, lora.enabled()};
  }
};

/// Everything one simulation needs; built by the config layer from a scenario file.
struct Scenario {
  std::string name;
  model::ModelSpec model;
  TrainingSpec training;
  parallel::Layout layout;
  hw::TopologySpec topology;
  hw::GpuSpec gpu;
  /// A measured hardware profile ([cluster] profile = "file.toml"); null: built-in only.
  std::shared_ptr<const hw::HardwareProfile> profile;
  int gpus = 0;
  Fidelity fidelity = Fidelity::Stage;
  std::uint64_t seed = 0;
  /// Training steps simulated back to back; with more than one, the reported step is the
  /// last one (steady state), which is what asynchronous schedules need.
  int steps = 1;
  std::optional<double> gpu_hour_usd;
  std::vector<Straggler> stragglers;  ///< full fidelity only
  /// Communication kernels slow the computation they overlap by taking GpuSpec::comm_sms
  /// SMs (Executor::set_sm_contention). `[simulation] sm_contention = false` turns it off.
  bool sm_contention = true;
  /// The input files' bytes, for reproducibility (set by config::load_scenario; zero hashes
  /// and empty names when the scenario was built in code): FNV-1a 64-bit (core/hash.hpp) of
  /// the scenario, topology and measured-profile files, and the latter two's file names.
  struct Inputs {
    std::uint64_t scenario_fnv1a64 = 0, topology_fnv1a64 = 0, profile_fnv1a64 = 0;
    std::string topology_file, profile_file;
    /// The files as loaded (resolved against the scenario's directory), for writing the
    /// scenario back (config::scenario_toml); empty when built in code.
    std::string topology_path, profile_path;
    std::string hf_config_path;  ///< model.hf_config as loaded; empty without one
    /// The files besides the scenario itself that the scenario read (non-empty paths).
    [[nodiscard]] std::vector<std::string> read_files() const {
      std::vector<std::string> out;
      for (const std::string* p : {&topology_path, &profile_path, &hf_config_path}) {
        if (!p->empty()) out.push_back(*p);
      }
      return out;
    }
  };
  Inputs inputs;
};

/// Bytes per GPU.
struct MemoryBreakdown {
  double weights = 0, gradients = 0, optimizer = 0, activations = 0, total = 0, capacity = 0;
  bool fits = true;
};

/// Routing statistics of the MoE layers (one draw per layer per step, EP group 0).
struct MoeStats {
  int moe_layers = 0;              ///< MoE layers of the model, MTP modules' included
  double imbalance_max = 1;        ///< max over layers of max / mean rows per EP rank
  double imbalance_mean = 1;       ///< mean over layers
  /// Off-rank bytes of the busiest EP rank per MoE layer, forward dispatch (dispatch dtype) and
  /// combine (16-bit), mean over MoE layers (MoeLayerCost::a2a_dispatch_bytes).
  double a2a_dispatch_bytes_per_layer = 0;
  double a2a_combine_bytes_per_layer = 0;
  double rows_sent_per_layer = 0;  ///< rows the busiest sender sends to other EP ranks
  double dropped_fraction = 0;     ///< rows dropped by the capacity factor / rows routed
};

struct StageResult {
  int stage = 0;
  int layers = 0;
  double params = 0;            ///< parameters held by one GPU of this stage
  StageBreakdown breakdown;
  MemoryBreakdown memory;
  int peak_inflight = 0;        ///< (microbatch, chunk) activations alive at the peak
  int weight_versions = 1;      ///< copies of the weights held (PipeDream stashes, 2BW: 2)
  int staleness = 0;            ///< updates between the weights a gradient used and applied
  /// The stretch of the timeline `breakdown` analyses: one step time ending where this
  /// stage's measured step ends ([0, makespan] for one step that drains the pipeline).
  Time window_begin, window_end;
};

/// One pipeline pass (F, B, W) as it ran: for timelines.
struct PassSpan {
  int stage = 0;
  parallel::PassKind kind = parallel::PassKind::Forward;
  int microbatch = 0;
  int chunk = 0;
  Time start, end;
};

struct StepResult {
  Time step_time;
  int microbatches = 0;         ///< per pipeline (global_batch / (micro_batch x dp))
  int steps_simulated = 1;
  int measured_step = 1;        ///< which simulated step the metrics describe (1-based)
  /// The measured step on the simulated timeline (all stages): [0, makespan] for one step.
  Time window_begin, window_end;
  double tokens_per_s = 0;
  double model_flops = 0;       ///< per step, whole cluster (Megatron convention)
  /// What the kernels compute, per step, whole cluster: model FLOPs plus recompute, less the
  /// masked half of causal FlashAttention and expert rows dropped by the capacity factor. So
  /// HFU <= 1, while MFU, by its convention, may exceed HFU (and, at extreme sequence lengths
  /// with little else to compute, 1).
  double hardware_flops = 0;
  double model_tflops_per_gpu = 0, hardware_tflops_per_gpu = 0;
  double mfu = 0, hfu = 0;
  double bubble_fraction = 0;   ///< mean over stages of bubble / step time
  StageBreakdown breakdown;     ///< mean over stages (parts add up to the mean window)
  MemoryBreakdown memory;       ///< of the stage with the largest total
  std::vector<StageResult> stages;
  std::optional<double> time_to_train_days;
  std::optional<MoeStats> moe;     ///< MoE models only
  std::optional<double> cost_usd;  ///< of time_to_train at gpu_hour_usd
  std::uint64_t events = 0;
  std::size_t tasks = 0;
  /// Full fidelity with stragglers: the slowest GPU (lowest of its factors) and its stage.
  std::optional<Straggler> slowest_rank;
  int slowest_rank_stage = -1;
  std::uint64_t flows = 0;                ///< full fidelity: flows run on the topology
  std::uint64_t flow_recomputations = 0;  ///< full fidelity: max-min component solves
  /// With a measured profile: which source priced the GEMMs, attention, memory-bound kernels
  /// and collectives (distinct cost queries; the builder prices each op shape once per stage).
  std::optional<cost::PricingSources> pricing;
  std::vector<PassSpan> passes;  ///< every pass of every stage, in program order
  /// The simulated timeline, for traces.
  std::shared_ptr<const TaskGraph> graph;
  std::vector<Time> task_start, task_end;
};

/// Output width of the QKV GEMM on one of `tp` ranks: its query heads and its K/V heads
/// (one replicated K/V head per rank when tp exceeds kv_heads).
std::int64_t qkv_width(const model::ModelSpec& model, int tp);

/// Whether the last pipeline stage keeps its own copy of the embedding table: with a head
/// tied to it or MTP modules (which look their tokens up in it) and more than one stage in
/// the model chain, as Megatron-Core's embedding group does; not under DualPipe, whose end
/// ranks hold both ends of the model (DeepSeek-V3 §3.2.3).
bool embedding_copy_on_last_stage(const model::ModelSpec& model, const parallel::Layout& layout);
/// Weights one of `tp` ranks holds for an MTP module besides its layer: eh_proj split by TP
/// (column-parallel, 2h x h / tp) and the three norms replicated (ModelSpec::mtp_extra_params).
double mtp_extra_params_per_rank(const model::ModelSpec& model, int tp);

/// HBM bytes of the embedding table's weight gradient on one of `tp` ranks, per microbatch,
/// as PyTorch computes it (aten embedding_dense_backward): a dense [V/t, h] gradient
/// zero-filled in the 16-bit parameter dtype (2 B) before the looked-up rows are summed into
/// it, then added into the main gradient by the data-parallel hook (main_grad.add_(grad):
/// read 2, read and write workload::gradient_dtype). The scatter-add of the rows themselves
/// is model::embedding_op's backward.
double embedding_grad_bytes(const model::ModelSpec& model, int tp, hw::Dtype dtype);

/// HBM bytes of one rank's optimizer step in Megatron-LM's mixed-precision optimizer
/// (megatron/core/optimizer/optimizer.py MixedPrecisionOptimizer.step; apex FusedAdam;
/// megatron/core/distributed/param_and_grad_buffer.py), all memory-bound:
///  - per parameter the rank's optimizer updates (`shard_params`: all of its model shard, or
///    1/DP of it under the distributed optimizer): the gradient-norm read (4 B,
///    clip_grad_norm_fp32), Adam (read the fp32 weight, gradient, m and v, write weight, m
///    and v: 28 B) and the copy back to the 16-bit weight (read 4, write 2); fp16 adds the
///    loss-scale unscale and inf check (read + write 4 B);
///  - per parameter of the rank's gradient buffer (`buffer_params`): zeroing it for the next
///    step (write 4 B; the buffer holds the whole model shard unless ZeRO-3 shards it).
double optimizer_step_bytes(double shard_params, double buffer_params, hw::Dtype dtype);

/// Parameters one of `tp` ranks holds for a layer's attention block: QKV (qkv_width), the
/// output projection split by rows, the norm weights of the layer (both norms; replicated on
/// every TP rank, as in Megatron-LM, whose distributed optimizer shards over DP, not TP), and
/// with model.bias the QKV bias (split) and the projection's bias (replicated).
double attention_params_per_rank(const model::ModelSpec& model, int tp);
/// Parameters one of `tp` ranks holds for a dense MLP of `ffn` intermediate size (2 or 3
/// matrices, split by TP), with its biases under model.bias (fc1's split, fc2's replicated).
double dense_mlp_params_per_rank(const model::ModelSpec& model, int tp, double ffn);
/// Trainable LoRA parameters one of `tp` ranks holds for a layer: r (k + n) per targeted GEMM,
/// with k x n its rank-local shape (QKV: hidden x qkv_width, projection: attn_out / tp x
/// hidden, MLP input: hidden x ffn / tp (x2 for SwiGLU's fused gate/up), MLP output:
/// ffn / tp x hidden). 0 without LoRA.
double lora_params_per_rank(const model::ModelSpec& model, int tp, const LoraSpec& lora);
/// FLOPs of one LoRA step of `global_batch` sequences (dense models): every op's forward and
/// input gradient (model::Op::flops, Megatron-LM's count), no weight gradient of the frozen
/// weights, plus 6 r (k + n) per token for each targeted GEMM's adapter (forward, input
/// gradient and the A and B weight gradients).
double lora_flops_per_step(const model::ModelSpec& model, std::int64_t global_batch,
                           const LoraSpec& lora);

/// `op` (from model::layer_ops / embedding_op / head_ops) as one TP rank of the scenario runs
/// it, exactly as simulate_step prices it: column-parallel GEMMs split n, row-parallel split
/// k (QKV: qkv_width), attention splits heads and K/V heads, TP-local memory-bound ops (and,
/// with SP, replicated ones) split their bytes by tp. Used by trainsim-calibrate to measure
/// the shapes the simulator asks about and to run the same ops for --validate.
model::Op rank_op(const Scenario& sc, const model::Op& op);
/// The same for a model on `tp` ranks, with or without sequence parallelism (`sp`); the
/// layout search uses it for layouts it has not built a scenario for.
model::Op rank_op(const model::ModelSpec& model, int tp, bool sp, const model::Op& op);

/// Builds and runs one step. Throws InputError for an impossible scenario (the layout
/// checks of Layout::validate, model checks), std::invalid_argument for a bad topology,
/// DeadlockError / InternalError if the engine's invariants break.
/// Throws InputError (key "training.lora") when the scenario asks for LoRA with what the
/// LoRA model does not cover: MoE, MLA or MTP models, ZeRO-3, or a schedule other than gpipe,
/// 1f1b and interleaved (zero-bubble and DualPipe split weight passes, PipeDream stashes
/// weights); also when it targets no GEMM, and (key "training.lora.rank") when its rank is
/// above the targeted weights' full rank. Does nothing without LoRA.
void validate_lora(const Scenario& scenario);
/// The training options that depend on each other: validate_lora, the mla_up_proj recompute
/// module without an MLA model (key training.recompute_modules), and a grad_scaling of
/// "buffer" (Megatron-LM's local DDP, which reduces after the backward) with an overlapped
/// gradient reduction. Throws InputError naming the key; config::load_scenario runs it so
/// that the error points at the file's line.
void validate_training(const Scenario& scenario);

StepResult simulate_step(const Scenario& scenario);

}  // namespace trainsim::workload
