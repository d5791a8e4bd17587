#include "parallel/layout.hpp"

#include <string>

#include "core/error.hpp"

namespace trainsim::parallel {

std::string_view schedule_name(ScheduleKind s) {
  switch (s) {
    case ScheduleKind::GPipe: return "gpipe";
    case ScheduleKind::PipeDream: return "pipedream";
    case ScheduleKind::TwoBW: return "2bw";
    case ScheduleKind::OneFOneB: return "1f1b";
    case ScheduleKind::Interleaved: return "interleaved";
    case ScheduleKind::ZbH1: return "zb-h1";
    case ScheduleKind::ZbH2: return "zb-h2";
    case ScheduleKind::DualPipe: return "dualpipe";
  }
  return "?";
}

namespace {
std::string str(std::int64_t v) { return std::to_string(v); }
}  // namespace

void Layout::validate(const model::ModelSpec& m, int gpus, std::int64_t global_batch,
                      std::int64_t micro_batch, int steps, bool check_schedule) const {
  auto positive = [](const char* key, std::int64_t v) {
    if (v < 1) throw InputError(key, std::string(key) + " must be >= 1 (got " + str(v) + ")");
  };
  positive("parallel.tp", tp);
  positive("parallel.pp", pp);
  positive("parallel.dp", dp);
  positive("parallel.ep", ep);
  positive("parallel.cp", cp);
  positive("parallel.virtual_stages", virtual_stages);
  positive("training.micro_batch", micro_batch);
  positive("training.global_batch", global_batch);
  if (m.heads % tp != 0) {
    throw InputError("parallel.tp", "parallel.tp (" + str(tp) + ") must divide model.heads (" +
                                        str(m.heads) + ")");
  }
  if (m.kv_heads % tp != 0 && tp % m.kv_heads != 0) {
    throw InputError("parallel.tp", "parallel.tp (" + str(tp) +
                                        ") and model.kv_heads (" + str(m.kv_heads) +
                                        ") must divide one another");
  }
  if (m.ffn_hidden % tp != 0) {
    throw InputError("parallel.tp", "parallel.tp (" + str(tp) +
                                        ") must divide model.ffn_hidden (" +
                                        str(m.ffn_hidden) + ")");
  }
  if (overlap_param_gather && zero == 0) {
    // Megatron-LM asserts it too (--overlap-param-gather needs --use-distributed-optimizer):
    // without ZeRO sharding the parameters there is no parameter all-gather to overlap.
    throw InputError("parallel.overlap_param_gather",
                     "parallel.overlap_param_gather needs parallel.zero >= 1 (only ZeRO-sharded "
                     "parameters are all-gathered)");
  }
  if (pp > m.layers) {
    throw InputError("parallel.pp", "parallel.pp (" + str(pp) +
                                        ") is larger than the layer count model.layers (" +
                                        str(m.layers) + ")");
  }
  if (virtual_stages > 1 && schedule != ScheduleKind::Interleaved) {
    throw InputError("parallel.virtual_stages",
                     "parallel.virtual_stages > 1 needs schedule = \"interleaved\" (got \"" +
                         std::string(schedule_name(schedule)) + "\")");
  }
  if (static_cast<std::int64_t>(pp) * virtual_stages > m.layers) {
    throw InputError("parallel.virtual_stages",
                     "parallel.pp x parallel.virtual_stages (" +
                         str(static_cast<std::int64_t>(pp) * virtual_stages) +
                         ") exceeds model.layers (" + str(m.layers) + ")");
  }
  if (first_stage_layers != 0 || last_stage_layers != 0) {
    (void)layers_per_virtual_stage(m.layers, pp, virtual_stages, first_stage_layers,
                                   last_stage_layers);
  }
  if (sequence_parallel && tp == 1) {
    throw InputError("parallel.sequence_parallel", "parallel.sequence_parallel needs tp > 1");
  }
  if (tp_comm_overlap && tp == 1) {
    throw InputError("parallel.tp_comm_overlap", "parallel.tp_comm_overlap needs tp > 1");
  }
  if (cp_comm == CpComm::AllGather && cp == 1) {
    throw InputError("parallel.cp_comm", "parallel.cp_comm = \"all_gather\" needs cp > 1");
  }
  if (overlap_param_gather && zero == 3) {
    // ZeRO-3 gathers each layer's parameters just before the layer, in the step itself; the
    // option overlaps ZeRO-1/2's once-per-step gather of the updated parameters.
    throw InputError("parallel.overlap_param_gather",
                     "parallel.overlap_param_gather applies to ZeRO-1 and ZeRO-2 (ZeRO-3 gathers "
                     "each layer's parameters before its use)");
  }
  if (zero < 0 || zero > 3) {
    throw InputError("parallel.zero", "parallel.zero must be 0..3 (got " + str(zero) + ")");
  }
  if (zero >= 2 && pp > 1) {
    throw InputError("parallel.zero",
                     "parallel.zero = " + str(zero) + " with pp > 1: ZeRO-2/3 shard gradients "
                     "across DP, which breaks gradient accumulation over pipeline microbatches "
                     "(DeepSpeed rejects it; Megatron's distributed optimizer is ZeRO-1)");
  }
  if (ep != 1 && !m.moe.enabled()) {
    throw InputError("parallel.ep", "parallel.ep > 1 needs a mixture-of-experts model "
                                    "([model.moe] experts > 0)");
  }
  if (m.moe.enabled() && m.moe.experts % ep != 0) {
    throw InputError("parallel.ep", "parallel.ep (" + str(ep) +
                                        ") must divide model.moe.experts (" +
                                        str(m.moe.experts) + ")");
  }
  if (etp < 0 || (etp > 0 && tp % etp != 0)) {
    throw InputError("parallel.etp", "parallel.etp (" + str(etp) + ") must divide parallel.tp (" +
                                         str(tp) + ")");
  }
  const int etp_eff = expert_tp();
  if (etp_eff != tp && !m.moe.enabled()) {
    throw InputError("parallel.etp", "parallel.etp (" + str(etp) + ") differs from parallel.tp (" +
                                         str(tp) + ") but the model has no experts");
  }
  const std::int64_t expert_ranks = static_cast<std::int64_t>(tp / etp_eff) * dp * cp;
  if (expert_ranks % ep != 0) {
    throw InputError("parallel.ep",
                     "parallel.ep (" + str(ep) + ") must divide " +
                         (etp_eff == tp ? "dp x cp (" + str(expert_ranks) +
                                              "): expert layers take their EP ranks from the "
                                              "data- and context-parallel ranks"
                                        : "(tp / etp) x dp x cp (" + str(expert_ranks) +
                                              "): expert layers take their EP ranks from the "
                                              "data-, context- and the rest of the "
                                              "tensor-parallel ranks"));
  }
  if ((ep > 1 || etp_eff < tp) && tp > 1 && !sequence_parallel) {
    // Megatron-Core refuses it (TransformerConfig.__post_init__: "When using expert parallelism
    // and tensor parallelism, sequence parallelism must be used"): its token dispatcher takes
    // the sequence-parallel shard of each TP rank's tokens.
    throw InputError("parallel.sequence_parallel",
                     std::string(ep > 1 ? "parallel.ep > 1" : "parallel.etp < parallel.tp") +
                         " with parallel.tp > 1 needs parallel.sequence_parallel = "
                         "true (Megatron-Core requires sequence parallelism for EP with TP)");
  }
  if (m.moe.enabled() && m.moe.expert_ffn_hidden % etp_eff != 0) {
    const char* key = etp > 0 ? "parallel.etp" : "parallel.tp";
    throw InputError(key, std::string(key) + " (" + str(etp_eff) +
                              ") must divide model.moe.expert_ffn_hidden (" +
                              str(m.moe.expert_ffn_hidden) + ")");
  }
  if (m.moe.enabled() && m.moe.shared_experts > 0 && m.moe.shared_ffn() % tp != 0) {
    throw InputError("parallel.tp", "parallel.tp (" + str(tp) +
                         ") must divide the shared experts' ffn width (" +
                         str(m.moe.shared_ffn()) +
                         ": model.moe.shared_ffn_hidden, or shared_experts x expert_ffn_hidden)");
  }
  if (m.moe.enabled() && m.moe.routing == model::Routing::Imbalance && m.moe.imbalance > ep) {
    throw InputError("model.moe.imbalance",
                     "model.moe.imbalance (max / mean tokens per EP rank) cannot exceed "
                     "parallel.ep (" + str(ep) + ")");
  }
  if (m.moe.enabled() && zero == 3) {
    throw InputError("parallel.zero", "parallel.zero = 3 with [model.moe] is not simulated "
                                      "(use 0..2; Megatron-Core's distributed optimizer is "
                                      "ZeRO-1)");
  }
  if (cp > 1 && m.seq_len % (2 * cp) != 0) {
    throw InputError("parallel.cp", "parallel.cp (" + str(cp) + "): model.seq_len (" +
                                        str(m.seq_len) + ") must be divisible by 2 x cp "
                                        "(each rank holds two mirrored chunks)");
  }
  // Sequence parallelism splits each rank's seq_len / cp tokens into tp equal slices
  // (Megatron-LM asserts the same); otherwise every SP tensor would hold fractional tokens.
  if (sequence_parallel && (m.seq_len / cp) % tp != 0) {
    throw InputError("parallel.sequence_parallel",
                     "parallel.sequence_parallel: model.seq_len / parallel.cp (" +
                         str(m.seq_len / cp) + ") must be divisible by parallel.tp (" + str(tp) +
                         "): each TP rank holds an equal slice of the sequence");
  }
  if (world_size() != gpus) {
    throw InputError("cluster.gpus", "tp x pp x dp x cp = " + str(tp) + " x " + str(pp) + " x " +
                                         str(dp) + " x " + str(cp) + " = " + str(world_size()) +
                                         " does not equal cluster.gpus (" + str(gpus) + ")");
  }
  if (micro_batch > global_batch || global_batch % (micro_batch * dp) != 0) {
    throw InputError("training.global_batch",
                     "training.global_batch (" + str(global_batch) +
                         ") is not divisible by training.micro_batch x parallel.dp (" +
                         str(micro_batch) + " x " + str(dp) + ")");
  }
  const std::int64_t m_count = global_batch / (micro_batch * dp);
  // One rank per stage runs every microbatch of every layer it holds: up to about 50 tasks
  // per layer per microbatch (TP + SP + full recompute), for every simulated step (one more
  // for schedules that never flush). Refuse graphs that would not fit in memory (~100 bytes
  // per task).
  const double layers = static_cast<double>(m.layers) + m.mtp_layers;  // MTP modules: one each
  const double tasks = 50.0 * static_cast<double>(m_count) * layers * (steps + 1);
  if (tasks > kMaxSimulatedTasks) {
    throw InputError("training.global_batch",
                     "this run has " + str(m_count) + " microbatches per pipeline x " +
                         str(static_cast<std::int64_t>(layers)) + " layers x " + str(steps) +
                         " steps, about " +
                         str(static_cast<std::int64_t>(tasks)) + " tasks to simulate (limit " +
                         str(static_cast<std::int64_t>(kMaxSimulatedTasks)) +
                         "); use a larger micro_batch or dp, a smaller global_batch or "
                         "fewer simulation.steps");
  }
  if (!check_schedule) return;
  switch (schedule) {
    case ScheduleKind::GPipe:
    case ScheduleKind::OneFOneB:
    case ScheduleKind::ZbH1:
    case ScheduleKind::ZbH2: break;
    case ScheduleKind::DualPipe:
      if (pp % 2 != 0 || m_count % 2 != 0 || m_count < 2 * static_cast<std::int64_t>(pp)) {
        throw InputError("parallel.schedule",
                         "schedule \"dualpipe\" needs an even pp (got " + str(pp) +
                             ") and an even microbatch count of at least 2 x pp (got " +
                             str(m_count) + " = global_batch / (micro_batch x dp))");
      }
      break;
    case ScheduleKind::PipeDream:
    case ScheduleKind::TwoBW:
      if (zero != 0) {
        throw InputError("parallel.zero", "schedule \"" + std::string(schedule_name(schedule)) +
                                              "\" keeps whole weight versions per stage; it "
                                              "needs parallel.zero = 0");
      }
      break;
    case ScheduleKind::Interleaved:
      if (pp < 2) {
        throw InputError("parallel.schedule", "schedule \"interleaved\" needs pp >= 2");
      }
      if (virtual_stages < 2) {
        throw InputError("parallel.virtual_stages",
                         "schedule \"interleaved\" needs parallel.virtual_stages >= 2 (model "
                         "chunks per pipeline rank)");
      }
      if (m_count % pp != 0) {
        throw InputError("parallel.schedule",
                         "schedule \"interleaved\" needs the microbatch count (" + str(m_count) +
                             " = global_batch / (micro_batch x dp)) to be a multiple of pp (" +
                             str(pp) + "), as Megatron-LM requires");
      }
      break;
    default:
      throw InputError("parallel.schedule", "schedule \"" + std::string(schedule_name(schedule)) +
                                                "\" is not simulated yet");
  }
}

std::vector<int> Layout::tp_group(int dp_i, int pp_i) const {
  std::vector<int> g;
  for (int t = 0; t < tp; ++t) g.push_back(rank(t, 0, dp_i, pp_i));
  return g;
}

std::vector<int> Layout::dp_group(int tp_i, int pp_i) const {
  std::vector<int> g;
  for (int d = 0; d < dp; ++d) g.push_back(rank(tp_i, 0, d, pp_i));
  return g;
}

std::vector<int> Layout::dp_cp_group(int tp_i, int pp_i) const {
  std::vector<int> g;
  for (int d = 0; d < dp; ++d) {
    for (int c = 0; c < cp; ++c) g.push_back(rank(tp_i, c, d, pp_i));
  }
  return g;
}

std::vector<int> Layout::cp_group(int dp_i, int pp_i) const {
  std::vector<int> g;
  for (int c = 0; c < cp; ++c) g.push_back(rank(0, c, dp_i, pp_i));
  return g;
}

std::vector<int> Layout::ep_group(int etp_i, int pp_i, int block) const {
  const int e_tp = expert_tp();
  const int base = pp_i * stage_size() + etp_i + e_tp * ep * block;
  std::vector<int> g;
  for (int e = 0; e < ep; ++e) g.push_back(base + e_tp * e);
  return g;
}

std::vector<int> Layout::expert_dp_group(int etp_i, int pp_i, int ep_i) const {
  const int e_tp = expert_tp();
  const int base = pp_i * stage_size() + etp_i + e_tp * ep_i;
  std::vector<int> g;
  for (int b = 0; b < expert_dp(); ++b) g.push_back(base + e_tp * ep * b);
  return g;
}

std::vector<std::vector<int>> Layout::tp_groups(int pp_i) const {
  std::vector<std::vector<int>> out;
  for (int d = 0; d < dp; ++d) {
    for (int c = 0; c < cp; ++c) {
      std::vector<int> g;
      for (int t = 0; t < tp; ++t) g.push_back(rank(t, c, d, pp_i));
      out.push_back(std::move(g));
    }
  }
  return out;
}

std::vector<std::vector<int>> Layout::cp_groups(int pp_i) const {
  std::vector<std::vector<int>> out;
  for (int d = 0; d < dp; ++d) {
    for (int t = 0; t < tp; ++t) {
      std::vector<int> g;
      for (int c = 0; c < cp; ++c) g.push_back(rank(t, c, d, pp_i));
      out.push_back(std::move(g));
    }
  }
  return out;
}

std::vector<std::vector<int>> Layout::dp_cp_groups(int pp_i) const {
  std::vector<std::vector<int>> out;
  for (int t = 0; t < tp; ++t) out.push_back(dp_cp_group(t, pp_i));
  return out;
}

std::vector<std::vector<int>> Layout::ep_groups(int pp_i) const {
  std::vector<std::vector<int>> out;
  for (int block = 0; block < expert_dp(); ++block) {
    for (int t = 0; t < expert_tp(); ++t) out.push_back(ep_group(t, pp_i, block));
  }
  return out;
}

std::vector<std::vector<int>> Layout::expert_dp_groups(int pp_i) const {
  std::vector<std::vector<int>> out;
  for (int e = 0; e < ep; ++e) {
    for (int t = 0; t < expert_tp(); ++t) out.push_back(expert_dp_group(t, pp_i, e));
  }
  return out;
}

std::vector<std::vector<int>> Layout::etp_groups(int pp_i) const {
  const int e_tp = expert_tp();
  std::vector<std::vector<int>> out;
  for (int g0 = pp_i * stage_size(); g0 < (pp_i + 1) * stage_size(); g0 += e_tp) {
    std::vector<int> g;
    for (int t = 0; t < e_tp; ++t) g.push_back(g0 + t);
    out.push_back(std::move(g));
  }
  return out;
}

std::vector<std::vector<int>> Layout::pp_pairs(int from, int to) const {
  std::vector<std::vector<int>> out;
  for (int d = 0; d < dp; ++d) {
    for (int c = 0; c < cp; ++c) {
      for (int t = 0; t < tp; ++t) out.push_back({rank(t, c, d, from), rank(t, c, d, to)});
    }
  }
  return out;
}

std::vector<int> layers_per_virtual_stage(int layers, int pp, int v, int first, int last) {
  const int stages = pp * v;
  if (stages < 1 || layers < stages) {
    throw InputError("parallel.pp", "cannot split " + str(layers) + " layers over " +
                                        str(stages) + " pipeline stages");
  }
  if (first < 0 || last < 0) {
    throw InputError(first < 0 ? "parallel.first_stage_layers" : "parallel.last_stage_layers",
                     "parallel.first_stage_layers and last_stage_layers must be >= 0");
  }
  if (first > 0 || last > 0) {
    const char* key = first > 0 ? "parallel.first_stage_layers" : "parallel.last_stage_layers";
    if (pp < 2) {
      throw InputError(key, std::string(key) + " needs pp >= 2");
    }
    // Megatron-Core (TransformerConfig): the first and last pipeline ranks' layers are spread
    // over their v model chunks, so each must divide by v; the middle ranks share the rest,
    // v chunks each, evenly.
    for (const auto& [n, k] : {std::pair{first, "parallel.first_stage_layers"},
                               std::pair{last, "parallel.last_stage_layers"}}) {
      if (n % v != 0) {
        throw InputError(k, std::string(k) + " (" + str(n) + ") must be a multiple of "
                                "parallel.virtual_stages (" + str(v) + "): the rank's layers "
                                "are spread over its model chunks");
      }
    }
    const int middle_ranks = pp - (first > 0 ? 1 : 0) - (last > 0 ? 1 : 0);
    const int middle = layers - first - last;
    const int middle_chunks = middle_ranks * v;
    if (middle < middle_chunks || (middle_chunks == 0 && middle != 0) ||
        (middle_chunks > 0 && middle % middle_chunks != 0)) {
      throw InputError(key, "parallel.first_stage_layers (" + str(first) +
                                ") and last_stage_layers (" + str(last) + ") leave " +
                                str(middle) + " of model.layers (" + str(layers) + ") for " +
                                str(middle_ranks) + " middle pipeline ranks of " + str(v) +
                                " model chunks: each chunk needs the same number of layers, at "
                                "least one (Megatron-Core's rule)");
    }
    std::vector<int> out(static_cast<std::size_t>(stages));
    for (int vs = 0; vs < stages; ++vs) {
      const int rank = vs % pp;
      out[static_cast<std::size_t>(vs)] = rank == 0 && first > 0        ? first / v
                                          : rank == pp - 1 && last > 0 ? last / v
                                                                       : middle / middle_chunks;
    }
    return out;
  }
  const int per = (layers + stages - 1) / stages;
  std::vector<int> out(static_cast<std::size_t>(stages), per);
  int deficit = per * stages - layers;
  // Take one layer from the ends inward: first, last, second, second-to-last, ...
  for (int i = 0; deficit > 0; ++i) {
    const int idx = (i % 2 == 0) ? i / 2 : stages - 1 - i / 2;
    --out[static_cast<std::size_t>(idx)];
    --deficit;
  }
  return out;
}

}  // namespace trainsim::parallel
