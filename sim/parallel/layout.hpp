// Parallel layout: degrees of TP, PP, DP, EP, CP, sequence parallelism, virtual pipeline
// stages, schedule and ZeRO stage, and the mapping of (tp, cp, dp, pp) coordinates onto
// global GPU ranks.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "model/transformer.hpp"

namespace trainsim::parallel {

/// The most tasks Layout::validate lets a step's graph have (about 100 bytes each in memory).
inline constexpr double kMaxSimulatedTasks = 60e6;

enum class ScheduleKind { GPipe, PipeDream, TwoBW, OneFOneB, Interleaved, ZbH1, ZbH2, DualPipe };

std::string_view schedule_name(ScheduleKind s);  ///< "gpipe", "1f1b", "interleaved", ...

struct Layout {
  int tp = 1, pp = 1, dp = 1, ep = 1, cp = 1;
  /// Expert tensor parallelism (ETP, Megatron-Core expert_tensor_parallel_size): 0 means equal
  /// to tp (Megatron-Core's default). A smaller ETP ("MoE parallel folding", Liu et al. 2025,
  /// arXiv:2504.14960) splits each expert over etp ranks only and takes the EP ranks from
  /// tp/etp x dp x cp; see expert_tp().
  int etp = 0;
  bool sequence_parallel = false;
  int virtual_stages = 1;  ///< model chunks per pipeline rank (VPP), interleaved only
  /// Layers of the first and of the last pipeline rank (Megatron-Core
  /// --decoder-first-pipeline-num-layers / --decoder-last-pipeline-num-layers; 0: the even
  /// split), spread over the rank's virtual_stages model chunks; the other ranks share the
  /// rest evenly. Uneven stages balance the embedding, the LM head and multi-token-prediction
  /// modules against the layers.
  int first_stage_layers = 0, last_stage_layers = 0;
  ScheduleKind schedule = ScheduleKind::OneFOneB;
  int zero = 0;            ///< ZeRO stage 0..3 (1 = distributed optimizer)
  bool overlap_grad_reduce = true;
  bool overlap_param_gather = false;
  bool tp_comm_overlap = false;
  /// Zero-bubble "optimizer post-validation" (Qi et al. 2023 §4): no pipeline-wide
  /// synchronisation (gradient-norm all-reduce) before each stage's optimizer step, so a
  /// stage starts its next step as soon as its own update is done.
  bool optimizer_post_validation = false;
  std::int64_t dp_bucket_params = 0;  ///< 0: Megatron's default max(40M, 1M x dp)
  /// Context-parallel attention: ring ("p2p", KV blocks passed peer to peer, overlapped
  /// with the previous block's attention) or "all_gather" of K and V before attention
  /// (Megatron-Core cp_comm_type).
  enum class CpComm { P2P, AllGather };
  CpComm cp_comm = CpComm::P2P;

  [[nodiscard]] std::int64_t world_size() const {
    return static_cast<std::int64_t>(tp) * pp * dp * cp;
  }

  /// Checks the layout against the model, the GPU count and the batch. Throws InputError
  /// naming the key at fault: tp not dividing heads (or kv_heads), pp larger than the layer
  /// count, virtual stages with a non-interleaved schedule or more chunks than layers,
  /// tp*pp*dp*cp != gpus, global batch not divisible by micro_batch*dp, schedules or
  /// features not simulated yet. EP/CP legality lives here only: ep > 1 needs an MoE model
  /// whose expert count ep divides and must divide (tp/etp) x dp x cp (expert layers take
  /// their EP ranks from the data- and context-parallel dimensions, and with etp < tp from
  /// the rest of TP, Megatron-Core); etp must divide tp, and etp < tp needs an MoE model and
  /// sequence parallelism when tp > 1 (each rank routes its own sequence shard); cp > 1 needs
  /// seq_len divisible by 2 x cp (two mirrored chunks per rank for causal balance).
  /// `steps`: training steps simulated back to back (for the size guard). With
  /// `check_schedule` false the schedule's own constraints are not checked (compare-schedules
  /// tries every schedule and skips those that do not fit).
  void validate(const model::ModelSpec& m, int gpus, std::int64_t global_batch,
                std::int64_t micro_batch, int steps = 1, bool check_schedule = true) const;

  /// Global GPU rank of a coordinate. Megatron-LM's default order: tp fastest, then cp,
  /// then dp, then pp (megatron/core/parallel_state.py, order "tp-cp-ep-dp-pp").
  [[nodiscard]] int rank(int tp_i, int cp_i, int dp_i, int pp_i) const {
    return tp_i + tp * (cp_i + cp * (dp_i + dp * pp_i));
  }
  /// The TP group containing (dp_i, pp_i), cp 0.
  [[nodiscard]] std::vector<int> tp_group(int dp_i, int pp_i) const;
  /// The DP group containing (tp_i, pp_i), cp 0.
  [[nodiscard]] std::vector<int> dp_group(int tp_i, int pp_i) const;
  /// The gradient-reduction group of dense weights: DP x CP ranks of (tp_i, pp_i)
  /// (Megatron's data-parallel group "with context parallel").
  [[nodiscard]] std::vector<int> dp_cp_group(int tp_i, int pp_i) const;
  /// The CP group containing (dp_i, pp_i), tp 0, in ring order.
  [[nodiscard]] std::vector<int> cp_group(int dp_i, int pp_i) const;
  /// Expert layers number a stage's S = tp·cp·dp ranks g = rank − pp_i·S again, in
  /// Megatron-Core's expert order "tp-ep-dp-pp" (parallel_state's expert RankGenerator, over
  /// the same ranks as "tp-cp-dp-pp"): etp_i = g mod etp, ep_i = (g / etp) mod ep, expert-DP
  /// index g / (etp·ep), with etp = expert_tp(). With etp = tp that is x = cp_i + cp·dp_i
  /// split in consecutive blocks of ep, so with tp·cp·ep ≤ GPUs per node an EP group stays
  /// inside an NVLink domain; with etp = 1 an EP group is ep consecutive ranks.
  /// The EP group number `block` (0-based) of expert-TP index etp_i of stage pp_i.
  [[nodiscard]] std::vector<int> ep_group(int etp_i, int pp_i, int block = 0) const;
  /// The expert-data-parallel group of EP rank `ep_i`, expert-TP index etp_i: the expert
  /// weights' gradient-reduction group, expert_dp() ranks.
  [[nodiscard]] std::vector<int> expert_dp_group(int etp_i, int pp_i, int ep_i = 0) const;
  /// Every group of one kind among the ranks of pipeline stage `pp_i`, in the order of their
  /// first member: the TP groups of every (cp, dp) coordinate; the CP rings of every (tp, dp);
  /// the DP x CP groups of every tp; the EP groups of every tp and block; the expert-DP groups
  /// of every tp and EP rank. Stage fidelity prices the slowest of them
  /// (net::slowest_group): where the degrees do not divide a node, one copy of a group can
  /// span two nodes while another sits in one, and a step waits for its slowest replica.
  [[nodiscard]] std::vector<std::vector<int>> tp_groups(int pp_i) const;
  [[nodiscard]] std::vector<std::vector<int>> cp_groups(int pp_i) const;
  [[nodiscard]] std::vector<std::vector<int>> dp_cp_groups(int pp_i) const;
  [[nodiscard]] std::vector<std::vector<int>> ep_groups(int pp_i) const;
  [[nodiscard]] std::vector<std::vector<int>> expert_dp_groups(int pp_i) const;
  /// The expert-TP groups of stage pp_i (etp consecutive ranks each, inside a TP group): the
  /// experts' received rows are gathered over them under SP with EP (or etp < tp), etp > 1.
  [[nodiscard]] std::vector<std::vector<int>> etp_groups(int pp_i) const;
  /// The pipeline transfers from stage `from` to stage `to`: {rank(t, c, d, from),
  /// rank(t, c, d, to)} for every (t, c, d).
  [[nodiscard]] std::vector<std::vector<int>> pp_pairs(int from, int to) const;
  /// Degree of the dense weights' data parallelism (dp x cp) and of the experts'
  /// (tp·dp·cp / (etp·ep); dp·cp/ep with etp = tp).
  [[nodiscard]] int dp_cp() const { return dp * cp; }
  [[nodiscard]] int expert_tp() const { return etp > 0 ? etp : tp; }
  [[nodiscard]] int expert_dp() const { return tp / expert_tp() * dp * cp / ep; }
  /// Ranks of a stage: tp·cp·dp.
  [[nodiscard]] int stage_size() const { return tp * cp * dp; }
};

/// Layers of each virtual pipeline stage (pp * v of them, in virtual-stage order). Layers are
/// spread evenly; when they do not divide, the first and last stages (which also hold the
/// embedding and the LM head) get one layer fewer, as in Llama 3 405B's 126 layers on 16
/// stages (Dubey et al. 2024 §3.3.2). A positive `first` / `last` gives the first / last
/// pipeline rank that many layers, first / v (last / v) in each of its v chunks, and the
/// ranks between share the rest, the same number in every chunk; as Megatron-Core requires
/// (TransformerConfig), first and last divide by v and the rest by the middle chunks' count.
/// Throws InputError (key parallel.pp) when a stage would get no layer, and (keys
/// parallel.first_stage_layers / last_stage_layers) for a split that does not work.
std::vector<int> layers_per_virtual_stage(int layers, int pp, int v, int first = 0, int last = 0);

}  // namespace trainsim::parallel
