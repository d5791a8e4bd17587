// Per-rank costs of one mixture-of-experts layer's MLP: router, shared experts, the routed
// experts' grouped GEMMs on the busiest EP rank, and the four expert-parallel all-to-alls
// (dispatch and combine, forward and backward) with the routing's real per-rank bytes.
#pragma once

#include <cstdint>

#include "core/time.hpp"
#include "cost/cost_model.hpp"
#include "model/routing.hpp"
#include "model/transformer.hpp"
#include "net/collective.hpp"
#include "parallel/layout.hpp"
#include "workload/gemm_cost.hpp"

namespace trainsim::workload {

/// Times of a GEMM in forward, input gradient and weight gradient.

/// One MoE layer on one rank of a pipeline stage.
struct MoeLayerCost {
  int layer = 0;
  /// Megatron-Core's all-to-all dispatcher under sequence parallelism (ep > 1, or expert TP
  /// below TP): the block runs on each rank's own sequence shard, the received rows gathered
  /// over the expert-TP group (etp_ag, etp_rs), and only the shared experts (which keep the
  /// attention's TP) wrapped in TP collectives. False: no SP, or ep = 1 with etp = tp (the
  /// all-gather dispatcher): the block runs on the TP group's tokens, wrapped in the dense
  /// MLP's TP collectives, so one expert without EP is the dense layer task for task.
  bool local_tokens = false;
  bool router = false;            ///< false with one expert (every token goes to it)
  GemmTimes router_gemm;
  bool shared = false;
  GemmTimes shared_in, shared_out;
  Time shared_act_fwd, shared_act_bwd;
  GemmTimes expert_in, expert_out;  ///< grouped GEMMs, summed over the local experts
  Time expert_act_fwd, expert_act_bwd;
  /// Token permutation (Megatron-Core's all-to-all dispatcher, memory-bound, 16-bit rows of
  /// h/tp; T tokens, R = T·k routed rows), none with one expert. Megatron-Core's default
  /// PyTorch ops (megatron/core/transformer/moe/moe_utils.py permute / unpermute, core_r0.8):
  ///  - permute: index_select of the R rows (read R, write R);
  ///  - unpermute: zeros [R, h] (write R), index_copy_ (read R, write R), multiply by the
  ///    routing probabilities (read R, write R), sum over k (read R, write T): 6R + T;
  ///  - unpermute backward: the multiply's gradient (read T broadcast, write R) and the
  ///    probabilities' gradient (read R saved + T), index_copy_'s (index_select: read R,
  ///    write R): 4R + 2T;
  ///  - permute backward: zeros [T, h] (write T), index_add_ of the R rows (read R,
  ///    read-modify-write R): T + 3R;
  /// with permute_fusion each moves its rows once: R + T, forward and backward. Permute
  /// backward also carries autograd's sum of the MoE input's two gradients (router and
  /// permutation: read 2T, write T). With more than one local expert (ep > 1) the R received
  /// rows are also sorted by local expert after dispatch and restored before combine (read R,
  /// write R each); Megatron-Core skips both with one local expert.
  Time permute, unpermute, permute_bwd, unpermute_bwd, sort_chunks, unsort_chunks;
  /// With local_tokens and etp > 1: all-gather of the received rows over the expert-TP group
  /// before the experts and reduce-scatter after them (forward; the same two, swapped, in
  /// backward).
  Time etp_ag, etp_rs;
  Time dispatch, combine;           ///< forward all-to-alls
  Time dispatch_bwd, combine_bwd;   ///< their conjugates in backward
  double imbalance = 1;             ///< max / mean rows per EP rank
  std::int64_t tokens_routed = 0;   ///< tokens one EP rank routes (T, or T·etp/tp on local tokens)
  std::int64_t rows_busiest = 0;    ///< rows the simulated (busiest) rank's experts process
  std::int64_t rows_sent = 0;       ///< rows the busiest sender sends to other EP ranks
  std::int64_t dropped = 0;         ///< rows dropped (capacity factor), whole EP group
  double a2a_bytes = 0;             ///< bytes passed to the all-to-all model (nccl-tests size)
  /// Bytes the busiest rank moves to or from other EP ranks in one forward dispatch, in the
  /// dispatch dtype: max over ranks of max(rows sent off-rank, rows received off-rank) x
  /// h/etp x bytes. Uniform routing without drops: T·k·h/tp·bytes·(EP−1)/EP (T tokens of a
  /// microbatch on a CP rank, either etp).
  double a2a_dispatch_bytes = 0;
  double a2a_combine_bytes = 0;     ///< the same for the forward combine (16-bit)
};

/// Costs one MoE layer `layer` (global index) for pipeline stage `stage` (`gpus_per_node`:
/// as net::slowest_group, to price each placement of the EP groups once).
///
/// Tokens per EP rank: T = micro_batch x seq_len / cp (each CP rank routes its own sequence
/// chunk; the TP group's, gathered), or with local_tokens T·etp/tp (each rank its
/// sequence-parallel shard, T/tp, an expert-TP group etp of them). Routing:
/// model::route_tokens(moe, tokens, ep, seed, layer), the same in every EP group
/// of the stage; the all-to-alls are priced on the stage's slowest EP group (Layout::ep_groups,
/// net::slowest_group). The stage's simulated rank is the EP
/// rank whose experts process the most rows (the all-to-all makes every EP rank wait for it).
/// Expert GEMMs: a grouped GEMM is costed as the sum of its member GEMMs, one per local
/// expert with that expert's row count (m = rows, SwiGLU fc1 n = 2f, fc2 k = f), n or k split
/// by the expert TP (Layout::expert_tp(); Megatron-Core's default expert_tensor_parallel_size
/// is tp). Shared experts keep the attention's TP. All-to-all: NCCL pairwise all-to-all on
/// the EP group, sized by the busiest rank: max over ranks of the rows it sends or
/// receives (self included, nccl-tests convention) x hidden x bytes / etp. Dispatch moves
/// dtype_bytes(kernels.dtype) per element (FP8 dispatch as in DeepSeek-V3 §3.3.2), combine
/// 16-bit. The GEMMs run as `kernels` says (workload::gemm_times).
/// Backward: combine_bwd moves the output gradients to the experts (the dispatch pattern,
/// 16-bit), dispatch_bwd the input gradients back (the combine pattern).
/// Throws std::invalid_argument when ep does not divide the expert count.
MoeLayerCost moe_layer_cost(const model::ModelSpec& model, const parallel::Layout& layout,
                            const GemmKernels& kernels, std::int64_t micro_batch,
                            const cost::CostModel& cost, const net::CollectiveModel& comm,
                            std::uint64_t seed, int layer, int stage, int gpus_per_node = 0);

}  // namespace trainsim::workload
