#include "config/scenario_writer.hpp"

#include <sstream>
#include <stdexcept>
#include <toml++/toml.h>

#include "hw/profile.hpp"
#include "model/transformer.hpp"
#include "parallel/layout.hpp"

namespace trainsim::config {

namespace {

std::string str(std::string_view s) { return std::string(s); }

}  // namespace

std::string scenario_toml(const workload::Scenario& sc, const std::filesystem::path& topology,
                          const std::filesystem::path& profile) {
  // The profile decides the kernel times: a file naming another one (or none) would not
  // read back into the same simulation. Without an explicit path, the one it was loaded from.
  const std::filesystem::path prof =
      profile.empty() ? std::filesystem::path(sc.inputs.profile_path) : profile;
  if (sc.profile != nullptr && prof.empty()) {
    throw std::invalid_argument("scenario \"" + sc.name +
                                "\" runs on the measured hardware profile \"" +
                                sc.profile->path + "\": pass its path to scenario_toml");
  }
  if (sc.profile == nullptr && !prof.empty()) {
    throw std::invalid_argument("scenario \"" + sc.name + "\" has no measured hardware profile, "
                                "but the profile \"" + prof.string() + "\" was given");
  }
  if (!prof.empty() && prof.extension() != ".toml") {
    throw std::invalid_argument("measured hardware profile \"" + prof.string() +
                                "\": load_scenario reads a profile file only by its .toml name");
  }
  const auto& md = sc.model;
  // A model read from a Hugging Face config is written as that config (its shape, MLA
  // included, comes from the file again), with what a scenario may set beside it.
  const bool hf = !sc.inputs.hf_config_path.empty();
  if (md.mla.enabled() && !hf) {
    throw std::invalid_argument("the model uses multi-head latent attention, which a written "
                                "scenario can only express through model.hf_config");
  }
  toml::table model = hf ? toml::table{{"name", md.name},
                                       {"hf_config", sc.inputs.hf_config_path},
                                       {"seq_len", md.seq_len},
                                       {"causal", md.causal}}
                         : toml::table{{"name", md.name},
                                       {"layers", md.layers},
                                       {"hidden", md.hidden},
                                       {"heads", md.heads},
                                       {"kv_heads", md.kv_heads},
                                       {"ffn_hidden", md.ffn_hidden},
                                       {"vocab", md.vocab},
                                       {"seq_len", md.seq_len},
                                       {"activation", model::activation_name(md.activation)},
                                       {"norm", model::norm_name(md.norm)},
                                       {"tied_embeddings", md.tied_embeddings},
                                       {"causal", md.causal},
                                       {"bias", md.bias}};
  if (md.head_size > 0 && !hf) model.insert("head_dim", md.head_size);
  // With hf_config always: the scenario may override the config's num_nextn_predict_layers.
  if (md.mtp_layers > 0 || hf) model.insert("mtp_layers", md.mtp_layers);
  if (md.moe.enabled()) {
    const auto& moe = md.moe;
    toml::table t = hf ? toml::table{{"capacity_factor", moe.capacity_factor},
                                     {"routing", model::routing_name(moe.routing)},
                                     {"permute_fusion", moe.permute_fusion}}
                       : toml::table{{"experts", moe.experts},
                                     {"top_k", moe.top_k},
                                     {"expert_ffn_hidden", moe.expert_ffn_hidden},
                                     {"shared_experts", moe.shared_experts},
                                     {"shared_ffn_hidden", moe.shared_ffn_hidden},
                                     {"capacity_factor", moe.capacity_factor},
                                     {"moe_layer_freq", moe.layer_freq},
                                     {"first_dense_layers", moe.first_dense_layers},
                                     {"routing", model::routing_name(moe.routing)},
                                     {"permute_fusion", moe.permute_fusion}};
    if (moe.routing == model::Routing::Zipf) t.insert("zipf_exponent", moe.zipf_exponent);
    if (moe.routing == model::Routing::Imbalance) t.insert("imbalance", moe.imbalance);
    model.insert("moe", std::move(t));
  }

  const auto& tr = sc.training;
  toml::table training{{"global_batch", tr.global_batch},
                       {"micro_batch", tr.micro_batch},
                       {"dtype", str(hw::dtype_name(tr.dtype))},
                       {"recompute", model::recompute_name(tr.recompute)},
                       {"attention", tr.flash_attention ? "flash" : "unfused"},
                       {"bias_kernels", tr.bias_in_epilogue ? "epilogue" : "separate"},
                       {"wgrad_accumulation", tr.fused_wgrad_accumulation ? "fused" : "separate"},
                       {"grad_scaling", workload::grad_scaling_name(tr.grad_scaling)}};
  if (tr.tokens) training.insert("tokens", *tr.tokens);
  if (tr.recompute == model::Recompute::Selective && !(tr.recompute_modules == model::RecomputeModules{})) {
    const auto& rm = tr.recompute_modules;
    toml::array modules;
    for (const auto& [on, name] : {std::pair{rm.core_attn, "core_attn"}, std::pair{rm.mlp, "mlp"},
                                   std::pair{rm.moe, "moe"}, std::pair{rm.moe_act, "moe_act"},
                                   std::pair{rm.layernorm, "layernorm"},
                                   std::pair{rm.shared_experts, "shared_experts"},
                                   std::pair{rm.mla_up_proj, "mla_up_proj"}}) {
      if (on) modules.push_back(name);
    }
    training.insert("recompute_modules", std::move(modules));
  }
  if (tr.lora.enabled()) {
    toml::array targets;
    if (tr.lora.qkv) targets.push_back("qkv");
    if (tr.lora.proj) targets.push_back("proj");
    if (tr.lora.mlp_in) targets.push_back("fc1");
    if (tr.lora.mlp_out) targets.push_back("fc2");
    training.insert("lora", toml::table{{"rank", tr.lora.rank}, {"targets", std::move(targets)}});
  }

  const auto& L = sc.layout;
  toml::table parallel{
      {"tp", L.tp},
      {"pp", L.pp},
      {"dp", L.dp},
      {"ep", L.ep},
      {"cp", L.cp},
      {"sequence_parallel", L.sequence_parallel},
      {"virtual_stages", L.virtual_stages},
      {"schedule", str(parallel::schedule_name(L.schedule))},
      {"zero", L.zero},
      {"overlap_grad_reduce", L.overlap_grad_reduce},
      {"overlap_param_gather", L.overlap_param_gather},
      {"tp_comm_overlap", L.tp_comm_overlap},
      {"optimizer_post_validation", L.optimizer_post_validation},
      {"cp_comm", L.cp_comm == parallel::Layout::CpComm::P2P ? "p2p" : "all_gather"}};
  if (L.dp_bucket_params > 0) parallel.insert("dp_bucket_params", L.dp_bucket_params);
  if (L.etp > 0) parallel.insert("etp", L.etp);
  if (L.first_stage_layers > 0) parallel.insert("first_stage_layers", L.first_stage_layers);
  if (L.last_stage_layers > 0) parallel.insert("last_stage_layers", L.last_stage_layers);

  const std::filesystem::path topo =
      topology.empty() ? std::filesystem::path(sc.inputs.topology_path) : topology;
  if (topo.empty()) {
    throw std::invalid_argument("scenario \"" + sc.name + "\": no topology file to write");
  }
  toml::table cluster{{"topology", topo.generic_string()},
                      {"gpus", sc.gpus},
                      {"profile", prof.empty() ? sc.gpu.key : prof.generic_string()}};

  toml::array stragglers;
  for (const auto& s : sc.stragglers) {
    stragglers.push_back(toml::table{{"gpu", s.gpu},
                                     {"speed", s.speed},
                                     {"nic_bandwidth", s.nic_bandwidth},
                                     {"nvlink_bandwidth", s.nvlink_bandwidth}});
  }
  toml::table simulation{{"fidelity", workload::fidelity_name(sc.fidelity)},
                         {"seed", static_cast<std::int64_t>(sc.seed)},
                         {"steps", sc.steps},
                         {"sm_contention", sc.sm_contention}};
  if (!stragglers.empty()) simulation.insert("stragglers", std::move(stragglers));

  toml::table root{{"version", 1},
                   {"name", sc.name},
                   {"model", std::move(model)},
                   {"training", std::move(training)},
                   {"parallel", std::move(parallel)},
                   {"cluster", std::move(cluster)},
                   {"simulation", std::move(simulation)}};
  if (sc.gpu_hour_usd) root.insert("cost", toml::table{{"gpu_hour_usd", *sc.gpu_hour_usd}});
  // Strings in escaped double quotes only: TOML drops a newline right after a multi-line
  // string's opening quotes (a name starting with a newline would not read back), and
  // TOML++ 3.3 writes a string holding a newline as a single-line literal when multi-line
  // strings are off, which no parser reads.
  std::ostringstream os;
  os << "# Written by trainsim " << TRAINSIM_VERSION << " (config::scenario_toml).\n"
     << toml::toml_formatter(root, toml::toml_formatter::default_flags &
                                       ~(toml::format_flags::allow_multi_line_strings |
                                         toml::format_flags::allow_literal_strings))
     << "\n";
  return os.str();
}

}  // namespace trainsim::config
