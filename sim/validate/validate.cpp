#include "validate/validate.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <toml++/toml.h>

#include "config/hf_config.hpp"
#include "config/scenario.hpp"
#include "config/scenario_writer.hpp"
#include "core/error.hpp"
#include "core/file_check.hpp"
#include "hw/gpu.hpp"
#include "parallel/schedule.hpp"

namespace trainsim::validate {

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}
bool has(const std::string& text, const std::string& what) {
  return lower(text).find(lower(what)) != std::string::npos;
}

/// printf into a std::string of any length.
template <class... A>
std::string strf(const char* format, A... args) {
  const int n = std::snprintf(nullptr, 0, format, args...);
  std::string out(static_cast<std::size_t>(std::max(n, 0)) + 1, '\0');
  std::snprintf(out.data(), out.size(), format, args...);
  out.resize(static_cast<std::size_t>(std::max(n, 0)));
  return out;
}

/// Reads one [[run]] row's fields.
struct Row {
  const toml::table& t;
  std::optional<double> num(const char* k) const {
    const toml::node* n = t.get(k);
    if (n == nullptr) return std::nullopt;
    if (n->is_integer()) return static_cast<double>(n->as_integer()->get());
    if (n->is_floating_point()) return n->as_floating_point()->get();
    return std::nullopt;
  }
  std::string str(const char* k) const {
    const toml::node* n = t.get(k);
    return n != nullptr && n->is_string() ? n->as_string()->get() : std::string();
  }
  std::optional<bool> boolean(const char* k) const {
    const toml::node* n = t.get(k);
    if (n == nullptr || !n->is_boolean()) return std::nullopt;
    return n->as_boolean()->get();
  }
};

/// The fields validate reads, by type. A field of another type would otherwise read as absent
/// and fall back to a default, and the row would be scored as a different run.
constexpr std::array kNumberFields{
    "num_layers", "hidden_size", "num_heads", "num_kv_heads", "seq_len", "tp", "pp", "dp", "cp",
    "ep", "etp", "vp", "layers_per_virtual_stage", "global_batch_size", "micro_batch_size",
    "num_gpus", "gpus_per_node", "ffn_hidden_size", "vocab_size", "moe_num_experts", "moe_top_k",
    "moe_ffn_hidden_size", "lora_rank", "iteration_time_s", "tflops_per_gpu", "mfu",
    "tokens_per_s_per_gpu", "fwd_ms", "bwd_ms", "zero", "mtp_layers", "first_stage_layers",
    "last_stage_layers"};
constexpr std::array kStringFields{
    "model", "source", "gpu", "precision", "recompute", "framework", "tflops_kind", "overlap",
    "ddp_impl", "attention", "attention_flops", "wgrad_accumulation", "task", "lora_targets",
    "pipeline_schedule", "activation", "norm", "hf_config"};
constexpr std::array kBoolFields{"sp", "bias"};
/// The fields every row needs (a per-layer row: all but global_batch_size).
constexpr std::array kRequiredFields{"num_layers", "hidden_size", "num_heads", "seq_len",
                                     "tp",         "pp",          "dp",        "global_batch_size"};

/// "missing fields: a, b" for the required fields `t` lacks (`per_layer`: one microbatch, no
/// global batch); empty when none is missing.
std::string missing_fields(const toml::table& t, bool per_layer) {
  std::string names;
  for (const char* k : kRequiredFields) {
    if (per_layer && std::string_view(k) == "global_batch_size") continue;
    if (t.get(k) == nullptr) names += (names.empty() ? "" : ", ") + std::string(k);
  }
  return names.empty() ? names : "missing fields: " + names;
}

/// "k (line N)" for each field of `row` whose value has the wrong type, by kind; empty when
/// all are right.
std::string wrong_types(const toml::table& t) {
  std::string why;
  auto check = [&](const auto& keys, const char* what, auto ok) {
    std::string names;
    for (const char* k : keys) {
      const toml::node* n = t.get(k);
      if (n == nullptr || ok(*n)) continue;
      names += (names.empty() ? "" : ", ") + std::string(k) + " (line " +
               std::to_string(n->source().begin.line) + ")";
    }
    if (!names.empty()) why += (why.empty() ? "" : "; ") + std::string(what) + names;
  };
  check(kNumberFields, "fields that are not numbers: ",
        [](const toml::node& n) { return n.is_integer() || n.is_floating_point(); });
  check(kStringFields, "fields that are not strings: ",
        [](const toml::node& n) { return n.is_string(); });
  check(kBoolFields, "fields that are not true/false: ",
        [](const toml::node& n) { return n.is_boolean(); });
  return why;
}

/// `text` in lower case with everything but letters and digits dropped ("Megatron Core 0.8"
/// -> "megatroncore08"), for matching names however they are spelled.
std::string squeezed(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) != 0) out += static_cast<char>(std::tolower(c));
  }
  return out;
}

/// The lower-case words of `text` (runs of letters and digits): "NVIDIA A100-SXM4-80GB" ->
/// {nvidia, a100, sxm4, 80gb}; "A100 40 GB" -> {a100, 40, gb}.
std::vector<std::string> words(const std::string& text) {
  std::vector<std::string> out;
  std::string w;
  for (unsigned char c : text + " ") {
    if (std::isalnum(c) != 0) {
      w += static_cast<char>(std::tolower(c));
    } else if (!w.empty()) {
      out.push_back(w);
      w.clear();
    }
  }
  return out;
}

/// A row's GPU, matched to a built-in profile.
struct GpuMatch {
  std::string profile, topology;  ///< empty when no built-in profile fits
  std::string why_not;            ///< with an empty profile: what the name lacks or names
};

/// Built-in GPU profile and topology file for a row's GPU name, matched on whole words (an
/// "RTX A1000" is not an A100). The profiles are the SXM parts in 8-GPU HGX/DGX nodes (GB200:
/// NVL72): PCIe and NVL cards (other clocks, power, memory and links) and GH200 are not.
GpuMatch hardware_of(const std::string& gpu) {
  const auto w = words(gpu);
  auto word = [&](const char* x) { return std::find(w.begin(), w.end(), x) != w.end(); };
  const std::string all = squeezed(gpu);
  if (word("pcie") || word("nvl") || word("gh200") || has(all, "gh200")) {
    return {"", "", "PCIe, NVL and Grace Hopper parts have no built-in profile (the built-in "
                    "ones are SXM GPUs in HGX/DGX nodes and GB200 NVL72)"};
  }
  if (word("a100")) {
    const bool gb40 = has(all, "40g") && !has(all, "80g");
    return {gb40 ? "a100_sxm4_40gb" : "a100_sxm4_80gb", "dgx-a100.toml", ""};
  }
  if (word("h100")) return {"h100_sxm", "dgx-h100.toml", ""};
  if (word("h200")) return {"h200_sxm", "dgx-h200.toml", ""};
  if (word("gb200")) return {"gb200", "gb200-nvl72.toml", ""};
  if (word("b200")) return {"b200", "dgx-b200.toml", ""};
  return {"", "", "no built-in profile matches its name"};
}

/// Narayanan et al. 2021, Eq. 3 (hardware FLOPs with the recompute forward):
/// 96 B s l h^2 (1 + s/6h + V/16lh); without recompute the 72 form, V/12lh.
double narayanan_eq3_flops(const model::ModelSpec& m, double B, bool full_recompute) {
  const double s = m.seq_len, l = m.layers, h = m.hidden, V = static_cast<double>(m.vocab);
  return full_recompute ? 96 * B * s * l * h * h * (1 + s / (6 * h) + V / (16 * l * h))
                        : 72 * B * s * l * h * h * (1 + s / (6 * h) + V / (12 * l * h));
}

}  // namespace

double megatron_core_model_flops(const model::ModelSpec& m, std::int64_t global_batch,
                                 AttentionFlops attention) {
  const double tokens = static_cast<double>(global_batch) * m.seq_len;
  const double h = m.hidden, d = m.head_dim();
  const double q = static_cast<double>(m.heads) * d, kv = static_cast<double>(m.kv_heads) * d;
  const double mlp_mats = m.activation == model::Activation::SwiGLU ? 3.0 : 2.0;
  // Per token per layer, forward multiply-adds: QKV h(q + 2kv), projection q h, MLP
  // mlp_mats h ffn, attention core 2 q s (halved for a causal model when the source does).
  const double core = attention == AttentionFlops::CausalHalf && m.causal ? 0.5 : 1.0;
  double attn = h * (q + 2 * kv) + q * h + core * 2.0 * q * m.seq_len;
  if (m.mla.enabled()) {
    // Multi-head latent attention (DeepSeek-V2 §2.1, DeepSeek-V3 §2.1.1): the down and up
    // projections of Q (or one Q projection) and of the joint KV latent plus the shared rope
    // key (ModelSpec::qkv_width), the output projection from heads x v_head_dim, and the
    // core's QK^T over nope + rope dims and AV over v_head_dim.
    const double heads = m.heads;
    const double qk = m.mla.qk_nope_head_dim + m.mla.qk_rope_head_dim;
    attn = h * static_cast<double>(m.qkv_width()) + static_cast<double>(m.attn_out_width()) * h +
           core * heads * (qk + m.mla.v_head_dim) * m.seq_len;
  }
  const double dense_mlp = mlp_mats * h * m.ffn_hidden;
  // MoE layers: the k routed experts and the shared experts a token passes through (the
  // router GEMM is not counted, as in Megatron-LM's num_floating_point_operations).
  const double moe_mlp = mlp_mats * h *
                         (static_cast<double>(m.moe.top_k) * m.moe.expert_ffn_hidden +
                          m.moe.shared_ffn());
  const int n_moe = m.moe_layers();
  double macs = attn * m.layers + dense_mlp * (m.layers - n_moe) + moe_mlp * n_moe;
  // MTP (Megatron-Core core_r0.13 num_floating_point_operations): each module counts as one
  // more layer of the last layer's kind, its eh_proj (2h x h) and three norms (3h), and one
  // more logit GEMM.
  const int D = m.mtp_layers;
  macs += D * (attn + (m.mtp_is_moe() ? moe_mlp : dense_mlp) + 3 * h + 2 * h * h);
  const double per_token = 3 * 2 * (macs + (D + 1) * h * static_cast<double>(m.vocab));
  return per_token * tokens;
}

std::optional<double> kendall_tau(const std::vector<double>& a, const std::vector<double>& b) {
  double concordant = 0, discordant = 0, ties_a = 0, ties_b = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    for (std::size_t j = i + 1; j < a.size(); ++j) {
      const double da = a[i] - a[j], db = b[i] - b[j];
      if (da == 0 && db == 0) continue;
      if (da == 0) {
        ties_a += 1;
      } else if (db == 0) {
        ties_b += 1;
      } else if ((da > 0) == (db > 0)) {
        concordant += 1;
      } else {
        discordant += 1;
      }
    }
  }
  const double n1 = concordant + discordant + ties_a, n2 = concordant + discordant + ties_b;
  if (n1 == 0 || n2 == 0) return std::nullopt;  // a series without two distinct values
  return (concordant - discordant) / std::sqrt(n1 * n2);
}

std::pair<double, double> layer_pass_ms(workload::Scenario sc) {
  sc.training.global_batch = sc.training.micro_batch * sc.layout.dp;
  sc.layout.pp = 1;
  sc.layout.virtual_stages = 1;
  sc.layout.schedule = parallel::ScheduleKind::OneFOneB;
  sc.steps = 1;
  auto spans = [&](int layers) {
    sc.model.layers = layers;
    const auto r = workload::simulate_step(sc);
    double f = 0, b = 0;
    for (const auto& p : r.passes) {
      const double ms = (p.end - p.start).seconds() * 1e3;
      if (p.kind == parallel::PassKind::Forward) f += ms;
      else b += ms;
    }
    return std::pair<double, double>{f, b};
  };
  const auto one = spans(1);
  const auto two = spans(2);
  return {two.first - one.first, two.second - one.second};
}

Report run_validation(const std::filesystem::path& runs_file,
                      const std::filesystem::path& topologies, const std::string& only_group) {
  // The same checks as a scenario file; toml++ reported a missing file as a syntax error at
  // 0:0, and a folder of topologies that does not exist skipped every row with exit 0.
  std::error_code ec;
  if (const std::string why = unreadable_file_reason(runs_file); !why.empty()) {
    throw config::ConfigError(runs_file.string(), 1, 1,
                              why == "is a directory" ? "is a directory, not a runs file"
                                                      : "cannot open file (" + why + ")");
  }
  if (!std::filesystem::is_directory(topologies, ec)) {
    throw InputError("--topologies", "--topologies: no such folder \"" + topologies.string() +
                                         "\" (it holds dgx-a100.toml, dgx-h100.toml, ...)");
  }
  toml::table root;
  try {
    root = toml::parse_file(runs_file.string());
  } catch (const toml::parse_error& e) {
    throw config::ConfigError(runs_file.string(), static_cast<int>(e.source().begin.line),
                              static_cast<int>(e.source().begin.column),
                              "TOML syntax error: " + std::string(e.description()));
  }
  Report report;
  std::map<std::string, std::string> titles;
  std::vector<std::string> group_order;
  // The non-empty string `key` of table `t` (nullptr: not a table); a ConfigError at the
  // value, or at `where` when there is none, saying `message`.
  auto required_string = [&](const toml::table* t, const toml::node& where, const char* key,
                             const char* message) -> const toml::node& {
    const toml::node* n = t != nullptr ? t->get(key) : nullptr;
    if (n == nullptr || !n->is_string() || n->as_string()->get().empty()) {
      const auto& at = (n != nullptr ? n->source() : where.source()).begin;
      throw config::ConfigError(runs_file.string(), static_cast<int>(at.line),
                                static_cast<int>(at.column), message);
    }
    return *n;
  };
  // Records the id `node` in `seen` (id -> line); a ConfigError naming the earlier line when it
  // is there already: one id would be scored twice. `what` is "group" or "row".
  auto unique_id = [&](std::map<std::string, int>& seen, const toml::node& node,
                       const std::string& what) -> const std::string& {
    const auto& at = node.source().begin;
    const auto [it, fresh] = seen.emplace(node.as_string()->get(), static_cast<int>(at.line));
    if (!fresh) {
      throw config::ConfigError(
          runs_file.string(), static_cast<int>(at.line), static_cast<int>(at.column),
          (what == "row" ? "run" : what) + ".id: \"" + it->first + "\" is already the id of the " +
              what + " at line " + std::to_string(it->second) + "; " + what + " ids must be unique");
    }
    return it->first;
  };
  if (const toml::array* groups = root["group"].as_array()) {
    std::map<std::string, int> group_lines;
    for (const toml::node& g : *groups) {
      const toml::table* gt = g.as_table();
      const std::string& id = unique_id(
          group_lines,
          required_string(gt, g, "id", "group.id: each [[group]] table needs a non-empty string id"),
          "group");
      titles[id] = Row{*gt}.str("title");
      group_order.push_back(id);
    }
  }
  const toml::array* runs = root["run"].as_array();
  if (runs == nullptr) {
    throw config::ConfigError(runs_file.string(), 1, 1, "no [[run]] rows in the file");
  }
  // Every entry is a row with its own id: a duplicate would be scored twice and a non-table
  // entry would vanish from the counts.
  std::map<std::string, int> id_lines;
  for (const toml::node& node : *runs) {
    const auto& src = node.source().begin;
    const toml::table* rt = node.as_table();
    if (rt == nullptr) {
      throw config::ConfigError(runs_file.string(), static_cast<int>(src.line),
                                static_cast<int>(src.column),
                                "run: each entry must be a table ([[run]] with id, group, ...)");
    }
    const toml::node& id =
        required_string(rt, node, "id", "run.id: each [[run]] row needs a non-empty string id");
    // The group a row is scored in: a row without one (or with a number there) would land
    // in a nameless group.
    (void)required_string(rt, node, "group",
                          "run.group: each [[run]] row needs a non-empty string group");
    (void)unique_id(id_lines, id, "row");
  }
  for (const toml::node& node : *runs) {
    const toml::table* rt = node.as_table();
    const Row row{*rt};
    RowResult res;
    res.id = row.str("id");
    res.group = row.str("group");
    res.model = row.str("model");
    const toml::node* id_node = rt->get("id");
    res.line = static_cast<int>((id_node != nullptr ? id_node->source() : rt->source()).begin.line);
    if (!only_group.empty() && res.group != only_group) continue;
    if (std::find(group_order.begin(), group_order.end(), res.group) == group_order.end()) {
      group_order.push_back(res.group);
    }
    std::vector<std::string> notes;
    auto skip = [&](const std::string& why) {
      res.ok = false;
      res.reason = why;
      res.scenario_toml.clear();  // only simulated rows have a scenario file
      report.rows.push_back(res);
    };
    if (const std::string why = wrong_types(*rt); !why.empty()) {
      std::string reason = missing_fields(*rt, false);
      if (!reason.empty()) reason.append("; ");
      skip(reason.append(why));
      continue;
    }
    // The metric the row reports, in order of preference.
    std::string kind = row.str("tflops_kind");
    const bool lora = has(row.str("task"), "lora");
    if (auto lora_tok = row.num("tokens_per_s_per_gpu"); lora_tok && lora) {
      // NeMo does not document how it counts a PEFT step's FLOPs (its LoRA rows imply
      // 2.7e10 per token for Llama 2 7B, two thirds of full training's 6N); tokens/s is
      // unambiguous.
      res.metric = "tokens_per_s_per_gpu";
      res.published = *lora_tok;
    } else if (auto t = row.num("iteration_time_s")) {
      res.metric = "iteration_time_s";
      res.published = *t;
    } else if (auto f = row.num("tflops_per_gpu")) {
      res.metric = "tflops_per_gpu";
      res.published = *f;
    } else if (auto u = row.num("mfu")) {
      res.metric = "mfu";
      res.published = *u;
    } else if (auto tok = row.num("tokens_per_s_per_gpu")) {
      res.metric = "tokens_per_s_per_gpu";
      res.published = *tok;
    } else if (row.num("fwd_ms") && row.num("bwd_ms")) {
      res.metric = "layer_ms";
      res.published_fwd_ms = *row.num("fwd_ms");
      res.published_bwd_ms = *row.num("bwd_ms");
      res.published = res.published_fwd_ms + res.published_bwd_ms;
    } else {
      skip("no absolute metric (iteration time, TFLOP/s per GPU or MFU): relative or per-layer "
           "results are not compared yet");
      continue;
    }
    {
      // A published value of 0, a negative one, NaN or infinity cannot be compared with.
      const bool per_layer_row = res.metric == "layer_ms";
      std::optional<double> bad;
      for (double v : {res.published, per_layer_row ? res.published_fwd_ms : 1.0,
                       per_layer_row ? res.published_bwd_ms : 1.0}) {
        if (!bad && !(std::isnormal(v) && v > 0)) bad = v;  // not 0, subnormal, inf or NaN
      }
      if (bad) {
        skip("the published " + res.metric + " must be a finite number > 0 (got " +
             strf("%g", *bad) + ")");
        continue;
      }
      // An MFU beside the compared metric must be possible too: a row that contradicts
      // itself is not compared.
      if (const auto u = row.num("mfu"); u && !(*u > 0 && *u <= 1)) {
        skip("the published mfu must be a fraction in (0, 1] (got " + strf("%g", *u) +
             (*u > 1 ? "; a percentage?)" : ")"));
        continue;
      }
    }
    if (lora && res.metric != "tokens_per_s_per_gpu" && res.metric != "iteration_time_s") {
      skip("LoRA row without tokens_per_s_per_gpu or iteration_time_s: how its source counts "
           "a LoRA step's FLOPs is not documented");
      continue;
    }
    const bool per_layer = res.metric == "layer_ms";
    // (Present fields of the wrong type were skipped above, with their lines.)
    if (const std::string why = missing_fields(*rt, per_layer); !why.empty()) {
      skip(why);
      continue;
    }
    // Shape, batch and layout fields are counts: a fraction or a value beyond int would be
    // truncated or wrapped into a different run.
    std::string bad_counts;
    for (const char* k : {"num_layers", "hidden_size", "num_heads", "num_kv_heads", "seq_len",
                          "tp", "pp", "dp", "cp", "ep", "etp", "vp", "layers_per_virtual_stage",
                          "global_batch_size", "micro_batch_size", "num_gpus", "ffn_hidden_size",
                          "vocab_size", "moe_num_experts", "moe_top_k", "moe_ffn_hidden_size",
                          "lora_rank"}) {
      const auto v = row.num(k);
      if (!v || (*v >= 1 && *v <= 2147483647.0 && std::floor(*v) == *v)) continue;
      bad_counts += (bad_counts.empty() ? "" : ", ") + std::string(k) + " = " + strf("%g", *v) +
                    " (line " + std::to_string(row.t.get(k)->source().begin.line) + ")";
    }
    if (!bad_counts.empty()) {
      skip("fields that must be whole numbers in [1, 2147483647]: " + bad_counts);
      continue;
    }
    const GpuMatch hw_match = hardware_of(row.str("gpu"));
    const std::string& gpu_key = hw_match.profile;
    const std::string& topo_file = hw_match.topology;
    if (gpu_key.empty()) {
      skip("no built-in profile for GPU \"" + row.str("gpu") + "\": " + hw_match.why_not);
      continue;
    }
    res.gpu_profile = gpu_key;
    res.topology = topo_file;
    workload::Scenario sc;
    sc.name = res.id;
    auto& md = sc.model;
    md.name = res.model;
    md.layers = static_cast<int>(*row.num("num_layers"));
    md.hidden = static_cast<int>(*row.num("hidden_size"));
    md.heads = static_cast<int>(*row.num("num_heads"));
    md.kv_heads = static_cast<int>(row.num("num_kv_heads").value_or(md.heads));
    md.seq_len = static_cast<int>(*row.num("seq_len"));
    // The MLP and the norm: a row may say `activation = "gelu" | "swiglu"` and
    // `norm = "layernorm" | "rmsnorm"`; otherwise the model's family decides (Llama, Mistral,
    // Mixtral, Qwen and DeepSeek: SwiGLU with RMSNorm; GPT, Nemotron-4, BLOOM, OPT, Falcon:
    // a two-matrix MLP with LayerNorm, priced as GeLU), and a name from no family is noted.
    // A family is a word of the model's name that ends with it, or with it and a version
    // number ("LLAMA3-8B", "Qwen2-7B", "CodeLlama-34B", "MegatronGPT-20B"; not "optimized").
    const auto name_words = words(res.model);
    auto family = [&](std::initializer_list<const char*> fs) {
      for (const auto& w : name_words) {
        for (const char* f : fs) {
          for (auto at = w.find(f); at != std::string::npos; at = w.find(f, at + 1)) {
            const auto rest = w.substr(at + std::string(f).size());
            if (std::all_of(rest.begin(), rest.end(),
                            [](unsigned char c) { return std::isdigit(c) != 0; })) {
              return true;
            }
          }
        }
      }
      return false;
    };
    const bool swiglu_family = family({"llama", "mistral", "mixtral", "qwen", "deepseek"});
    const bool known_family =
        swiglu_family || family({"gpt", "nemotron", "bloom", "opt", "falcon", "megatron", "nlg"});
    const std::string activation = squeezed(row.str("activation")), norm = squeezed(row.str("norm"));
    if (!activation.empty() && activation != "gelu" && activation != "swiglu") {
      skip("activation = \"" + row.str("activation") + "\" (line " +
           std::to_string(rt->get("activation")->source().begin.line) +
           "): expected \"gelu\" or \"swiglu\"");
      continue;
    }
    if (!norm.empty() && norm != "layernorm" && norm != "rmsnorm") {
      skip("norm = \"" + row.str("norm") + "\" (line " +
           std::to_string(rt->get("norm")->source().begin.line) +
           "): expected \"layernorm\" or \"rmsnorm\"");
      continue;
    }
    md.activation = !activation.empty() ? (activation == "swiglu" ? model::Activation::SwiGLU
                                                                  : model::Activation::GeLU)
                    : swiglu_family     ? model::Activation::SwiGLU
                                        : model::Activation::GeLU;
    md.norm = !norm.empty() ? (norm == "rmsnorm" ? model::Norm::RMSNorm : model::Norm::LayerNorm)
              : swiglu_family ? model::Norm::RMSNorm
                              : model::Norm::LayerNorm;
    if (!known_family && (activation.empty() || norm.empty())) {
      const std::string part = activation.empty() && norm.empty() ? "GeLU MLP and LayerNorm"
                               : activation.empty()               ? "GeLU MLP"
                                                                  : "LayerNorm";
      notes.emplace_back(part + " (GPT's) for an unknown model family");
    }
    // GPT rows are Megatron-LM's GPT, whose linear layers carry biases (`add_bias_linear`,
    // on by default; NeMo's GPT-3 configs: `bias: True`), as do BLOOM's and OPT's (their
    // Hugging Face configs); Llama, Mixtral, Nemotron-4 and Falcon have none. A row may say
    // `bias = true|false`.
    md.bias = row.boolean("bias").value_or(family({"gpt", "bloom", "opt"}));
    if (auto f = row.num("ffn_hidden_size")) {
      md.ffn_hidden = static_cast<int>(*f);
    } else if (4.0 * md.hidden > 2147483647.0) {
      skip("no ffn_hidden_size, and 4 x hidden_size is beyond 2147483647");
      continue;
    } else {
      md.ffn_hidden = 4 * md.hidden;
      notes.emplace_back("ffn 4h");
    }
    if (auto v = row.num("vocab_size")) {
      md.vocab = static_cast<std::int64_t>(*v);
    } else if (has(res.model, "nemotron")) {
      // Nemotron-4 (Parmar et al. 2024, arXiv:2402.16819 §2): a 256,000-token vocabulary.
      md.vocab = 256000;
      notes.emplace_back("vocab 256000 (Nemotron-4)");
    } else {
      md.vocab = 51200;
      notes.emplace_back("vocab 51200");
    }
    if (auto experts = row.num("moe_num_experts")) {
      // Dropless MoE with the top-k router. No per-run routing statistics are published; the
      // runs train with a load-balancing auxiliary loss, so each token's experts are drawn
      // uniformly at random (seeded, model::Routing::Uniform): the per-microbatch imbalance
      // of independent choices, which no router beats on average (exactly even counts,
      // Routing::Balanced, would be an optimistic bound).
      md.moe.experts = static_cast<int>(*experts);
      md.moe.top_k = static_cast<int>(row.num("moe_top_k").value_or(2));
      md.moe.expert_ffn_hidden = static_cast<int>(row.num("moe_ffn_hidden_size").value_or(md.ffn_hidden));
      md.moe.routing = model::Routing::Uniform;
      notes.emplace_back("uniform random routing (seeded)");
    }
    if (row.t.contains("hf_config")) {
      // The architecture from a Hugging Face config.json (path relative to the runs file):
      // what the row's fields cannot state (MLA, shared experts, dense first layers, tied
      // embeddings). The row's own shape fields must agree with it.
      const toml::node* hn = rt->get("hf_config");
      const std::string at = " (line " + std::to_string(hn->source().begin.line) + ")";
      if (per_layer) {
        skip("hf_config" + at + ": per-layer rows (fwd_ms, bwd_ms) take their layer from the "
             "row's own fields");
        continue;
      }
      if (row.str("hf_config").empty()) {
        skip("hf_config" + at + ": empty path");
        continue;
      }
      model::ModelSpec hf;
      std::filesystem::path hf_path = runs_file.parent_path() / row.str("hf_config");
      try {
        hf_path = std::filesystem::absolute(hf_path).lexically_normal();
        report.hf_config_files.push_back(hf_path);
        hf = config::load_hf_config(hf_path);
      } catch (const std::exception& e) {
        skip("hf_config" + at + ": " + e.what());
        continue;
      }
      std::vector<std::string> disagree;
      auto line_of = [&](const char* key) {
        return " (line " + std::to_string(row.t.get(key)->source().begin.line) + ")";
      };
      auto agree = [&](const char* key, double config_value) {
        const auto v = row.num(key);
        if (!v || *v == config_value) return;
        disagree.push_back(std::string(key) + " = " + strf("%g", *v) + line_of(key) +
                           " but the config has " + strf("%g", config_value));
      };
      agree("num_layers", hf.layers);
      agree("hidden_size", hf.hidden);
      agree("num_heads", hf.heads);
      agree("num_kv_heads", hf.kv_heads);
      agree("ffn_hidden_size", hf.ffn_hidden);
      agree("vocab_size", static_cast<double>(hf.vocab));
      if (hf.moe.enabled()) {
        agree("moe_num_experts", hf.moe.experts);
        agree("moe_top_k", hf.moe.top_k);
        agree("moe_ffn_hidden_size", hf.moe.expert_ffn_hidden);
      } else {
        for (const char* k : {"moe_num_experts", "moe_top_k", "moe_ffn_hidden_size"}) {
          if (row.num(k)) disagree.push_back(std::string(k) + line_of(k) + " but the config has no experts");
        }
      }
      auto agree_word = [&](const char* key, bool row_says, bool config_says, const char* config_word) {
        if (row.t.contains(key) && row_says != config_says) {
          disagree.push_back(std::string(key) + " = " + lower(row.str(key)) + line_of(key) +
                             " but the config has " + config_word);
        }
      };
      agree_word("activation", activation == "swiglu", hf.activation == model::Activation::SwiGLU,
                 hf.activation == model::Activation::SwiGLU ? "swiglu" : "gelu");
      agree_word("norm", norm == "rmsnorm", hf.norm == model::Norm::RMSNorm,
                 hf.norm == model::Norm::RMSNorm ? "rmsnorm" : "layernorm");
      if (const auto b = row.boolean("bias"); b && *b != hf.bias) {
        disagree.push_back(std::string("bias = ") + (*b ? "true" : "false") + line_of("bias") +
                           " but the config has " + (hf.bias ? "true" : "false"));
      }
      if (!disagree.empty()) {
        std::string why = "fields that disagree with hf_config" + at + ": ";
        for (std::size_t k = 0; k < disagree.size(); ++k) why += (k > 0 ? ", " : "") + disagree[k];
        skip(why);
        continue;
      }
      hf.name = md.name;
      hf.seq_len = md.seq_len;
      if (hf.moe.enabled()) {
        hf.moe.routing = model::Routing::Uniform;  // as for the rows' own MoE fields, above
        if (!md.moe.enabled()) notes.emplace_back("uniform random routing (seeded)");
      }
      md = hf;
      sc.inputs.hf_config_path = hf_path.string();  // a written scenario names it again
      // The notes of defaults the config replaced no longer apply.
      std::erase_if(notes, [](const std::string& n) {
        return n == "ffn 4h" || n.rfind("vocab ", 0) == 0 ||
               n.find("for an unknown model family") != std::string::npos;
      });
      notes.emplace_back("architecture from " + hf_path.filename().string());
    }
    // Multi-token prediction modules: the row's mtp_layers, else the config's
    // num_nextn_predict_layers (a training choice the source may not print).
    if (const auto mtp = row.num("mtp_layers")) {
      if (!(*mtp >= 0 && *mtp <= 1000 && std::floor(*mtp) == *mtp)) {
        skip("mtp_layers = " + strf("%g", *mtp) + " (line " +
             std::to_string(rt->get("mtp_layers")->source().begin.line) +
             "): must be a whole number in [0, 1000]");
        continue;
      }
      md.mtp_layers = static_cast<int>(*mtp);
    } else if (md.mtp_layers > 0) {
      notes.emplace_back(strf("%d multi-token-prediction module(s) from the config", md.mtp_layers));
    }
    auto& tr = sc.training;
    if (lora) {
      // LoRA as NeMo 1.x runs it by default (examples/nlp/language_modeling/tuning/conf/
      // megatron_gpt_finetuning_config.yaml: target_modules ['attention_qkv'],
      // adapter_dim 32); a row may give `lora_rank` and `lora_targets`.
      const double rank = row.num("lora_rank").value_or(32);
      if (!(rank >= 1 && rank <= 65536)) {
        skip("lora_rank must be in [1, 65536]");
        continue;
      }
      tr.lora.rank = static_cast<int>(rank);
      const std::string targets = lower(row.str("lora_targets"));
      if (!targets.empty()) {
        tr.lora.qkv = has(targets, "qkv");
        tr.lora.proj = has(targets, "proj");
        tr.lora.mlp_in = has(targets, "fc1");
        tr.lora.mlp_out = has(targets, "fc2");
      }
      notes.emplace_back("LoRA rank " + std::to_string(tr.lora.rank) + (targets.empty() ? " on QKV" : ""));
    }
    if (auto mb = row.num("micro_batch_size")) {
      tr.micro_batch = static_cast<std::int64_t>(*mb);
    } else {
      tr.micro_batch = 1;
      notes.emplace_back("micro batch 1");
    }
    tr.global_batch = per_layer ? tr.micro_batch * static_cast<std::int64_t>(*row.num("dp"))
                                : static_cast<std::int64_t>(*row.num("global_batch_size"));
    // Precision: FP8 (with 16-bit elsewhere), BF16 or FP16, however the row words it
    // ("fp16", "float16", "mixed fp16", "bfloat16"); a row naming both 16-bit types ("fp16/bf16
    // (not stated in table)") or none is simulated in BF16, noted. FP32/TF32 training is not
    // modelled.
    {
      const auto pw = words(row.str("precision"));
      const std::string pq = squeezed(row.str("precision"));
      auto word = [&](const char* x) { return std::find(pw.begin(), pw.end(), x) != pw.end(); };
      const bool fp8 = has(pq, "fp8") || has(pq, "e4m3") || has(pq, "e5m2");
      const bool bf16 = has(pq, "bf16") || has(pq, "bfloat16");
      // "16-mixed" is Lightning's name for fp16 mixed precision.
      const bool fp16 = has(pq, "fp16") || (has(pq, "float16") && !has(pq, "bfloat16")) ||
                        word("half") || word("16");
      if (fp8) {
        tr.dtype = hw::Dtype::FP8;
      } else if (fp16 && !bf16) {
        tr.dtype = hw::Dtype::FP16;
      } else if (bf16 && !fp16) {
        tr.dtype = hw::Dtype::BF16;
      } else if (!fp16 && !bf16 && (has(pq, "fp32") || has(pq, "float32") || has(pq, "tf32"))) {
        skip("precision \"" + row.str("precision") +
             "\": 32-bit training is not modelled (fp8, bf16 or fp16)");
        continue;
      } else {
        tr.dtype = hw::Dtype::BF16;
        if (!row.str("precision").empty() && !(fp16 && bf16)) {
          skip("precision \"" + row.str("precision") + "\" (line " +
               std::to_string(rt->get("precision")->source().begin.line) +
               "): expected fp8, bf16 or fp16");
          continue;
        }
        notes.emplace_back("bf16");
      }
    }
    // Recompute: "full" (GPipe's re-materialization is the same), "selective" or "none".
    {
      const std::string rc = squeezed(row.str("recompute"));
      auto starts = [&](const char* x) { return rc.rfind(x, 0) == 0; };
      if (starts("full") || starts("rematerialization")) {
        tr.recompute = model::Recompute::Full;
      } else if (starts("selective")) {
        tr.recompute = model::Recompute::Selective;
      } else if (rc == "none" || rc == "no" || rc == "off" || rc == "false" || rc.empty()) {
        tr.recompute = model::Recompute::None;
        if (rc.empty()) notes.emplace_back("no recompute");
      } else {
        skip("recompute = \"" + row.str("recompute") + "\" (line " +
             std::to_string(rt->get("recompute")->source().begin.line) +
             "): expected \"full\", \"selective\" or \"none\"");
        continue;
      }
    }
    // Selective recompute's modules (Megatron-Core --recompute-modules): an array of names,
    // as a scenario gives them, or one string of names separated by commas or white space
    // ("moe, mlp, layernorm"); names in any case, each once. Without the field: the
    // attention core.
    if (const toml::node* rn = rt->get("recompute_modules")) {
      const std::string at = " (line " + std::to_string(rn->source().begin.line) + ")";
      std::vector<std::string> names;
      bool typed = true;
      if (const auto* str = rn->as_string()) {
        std::string word_text;
        for (const char ch : lower(str->get()) + ",") {
          if (ch == ',' || ch == ';' || std::isspace(static_cast<unsigned char>(ch)) != 0) {
            if (!word_text.empty()) names.push_back(word_text);
            word_text.clear();
          } else {
            word_text += ch;
          }
        }
      } else if (const auto* arr = rn->as_array()) {
        for (const toml::node& e : *arr) {
          const auto* es = e.as_string();
          typed = typed && es != nullptr;
          if (es != nullptr) names.push_back(lower(es->get()));
        }
      } else {
        typed = false;
      }
      if (!typed) {
        skip("recompute_modules" + at + " must be a string or an array of strings");
        continue;
      }
      if (tr.recompute != model::Recompute::Selective) {
        skip("recompute_modules" + at + " needs recompute = \"selective\"");
        continue;
      }
      model::RecomputeModules mods;
      mods.core_attn = false;
      std::string unknown, twice;
      for (const std::string& name : names) {
        bool* flag = model::recompute_module_flag(mods, name);
        if (flag == nullptr) {
          unknown += (unknown.empty() ? "\"" : ", \"") + name + "\"";
        } else if (*flag) {
          twice += (twice.empty() ? "\"" : ", \"") + name + "\"";
        }
        if (flag != nullptr) *flag = true;
      }
      if (!unknown.empty() || !twice.empty() || names.empty()) {
        skip("recompute_modules" + at + ": " +
             (names.empty()     ? std::string("names no module")
              : !twice.empty() ? "names " + twice + " twice"
                               : "modules not simulated: " + unknown +
                                     " (simulated: core_attn, mlp, moe, moe_act, layernorm, "
                                     "shared_experts, mla_up_proj)"));
        continue;
      }
      tr.recompute_modules = mods;
    }
    auto& L = sc.layout;
    L.tp = static_cast<int>(*row.num("tp"));
    L.pp = static_cast<int>(*row.num("pp"));
    L.dp = static_cast<int>(*row.num("dp"));
    L.cp = static_cast<int>(row.num("cp").value_or(1));
    L.ep = static_cast<int>(row.num("ep").value_or(1));
    // Expert TP (Megatron-Core expert_tensor_parallel_size); absent: equal to tp.
    L.etp = static_cast<int>(row.num("etp").value_or(0));
    const std::string framework = row.str("framework");
    // Megatron-Core ("Megatron-Core r0.8.0", "MCore v0.9", "megatron_core") and NeMo, which
    // runs on it, however spelled.
    const std::string fw = squeezed(framework);
    const bool modern = has(fw, "megatroncore") || has(fw, "mcore") || has(fw, "nemo");
    if (auto sp = row.boolean("sp")) {
      L.sequence_parallel = *sp && L.tp > 1;
    } else {
      L.sequence_parallel = modern && L.tp > 1;
      if (L.sequence_parallel) notes.emplace_back("sequence parallel");
    }
    int v = static_cast<int>(row.num("vp").value_or(1));
    if (auto lpvs = row.num("layers_per_virtual_stage")) {
      // Layers per model chunk: the chunks of all stages must hold the layers exactly, and
      // agree with vp where the row gives both.
      const double chunks = md.layers / (L.pp * *lpvs);
      if (chunks < 1 || std::floor(chunks) != chunks ||
          (row.num("vp") && static_cast<int>(chunks) != v)) {
        skip(strf("layers_per_virtual_stage = %g does not split %d layers over pp %d", *lpvs,
                  md.layers, L.pp) +
             (row.num("vp") ? " into vp " + std::to_string(v) + " chunks" : std::string()));
        continue;
      }
      v = static_cast<int>(chunks);
    }
    // A vp that does not divide the layers is simulated with uneven chunks (the end chunks
    // one layer fewer, parallel::layers_per_virtual_stage), as Megatron's uneven pipelines
    // (Llama 3 405B: 126 layers over PP 8 x VP 8).
    L.virtual_stages = v;
    L.schedule = v > 1 ? parallel::ScheduleKind::Interleaved : parallel::ScheduleKind::OneFOneB;
    // Uneven pipeline ends (Megatron-Core --decoder-first/last-pipeline-num-layers; 0: even).
    std::string bad_ends;
    for (auto [k, field] : {std::pair{"first_stage_layers", &L.first_stage_layers},
                            std::pair{"last_stage_layers", &L.last_stage_layers}}) {
      const auto n = row.num(k);
      if (!n) continue;
      if (!(*n >= 0 && *n <= 100000 && std::floor(*n) == *n)) {
        bad_ends += (bad_ends.empty() ? "" : ", ") + std::string(k) + " = " + strf("%g", *n) +
                    " (line " + std::to_string(rt->get(k)->source().begin.line) + ")";
        continue;
      }
      *field = static_cast<int>(*n);
    }
    if (!bad_ends.empty()) {
      skip("fields that must be whole numbers in [0, 100000]: " + bad_ends);
      continue;
    }
    // The row's pipeline schedule, where it has a pipeline: Megatron's 1F1B (PipeDream-Flush;
    // interleaved with vp > 1), GPipe, PipeDream-2BW, the zero-bubble ZB-H1 / ZB-H2 and
    // DualPipe. A name that could be several ("ZB-H1/ZB-2p/ZB-V") is not guessed.
    if (const std::string ps = lower(row.str("pipeline_schedule")); !ps.empty() && L.pp > 1) {
      const std::string q = squeezed(ps);
      std::size_t zb_names = 0;
      for (std::size_t at = q.find("zb"); at != std::string::npos; at = q.find("zb", at + 2)) {
        ++zb_names;
      }
      // "non-interleaved 1F1B" is plain 1F1B.
      const bool interleaved = has(q, "interleaved") && !has(q, "noninterleaved");
      const bool zero_bubble = zb_names > 0 || has(q, "zerobubble");
      const int named =
          (has(q, "gpipe") ? 1 : 0) + (has(q, "2bw") ? 1 : 0) + (zero_bubble ? 1 : 0) +
          (has(q, "dualpipe") ? 1 : 0) +
          (has(q, "1f1b") || has(q, "pipedreamflush") || has(q, "interleaved") ? 1 : 0);
      if (named > 1 || zb_names > 1) {
        skip("pipeline_schedule \"" + row.str("pipeline_schedule") + "\" names several schedules");
        continue;
      }
      // Zero-bubble variants other than H1 / H2 (ZB-V, ZB-1p/2p) and DualPipe-V are other
      // schedules, not modelled.
      const bool zb_h2 = zero_bubble && (has(q, "h2") || has(q, "zbh2"));
      const bool zb_h1 = zero_bubble && has(q, "h1");
      if ((zero_bubble && !zb_h1 && !zb_h2) || has(q, "dualpipev")) {
        skip("pipeline_schedule \"" + row.str("pipeline_schedule") +
             "\" is not modelled (zero-bubble ZB-H1 and ZB-H2, and DualPipe, are)");
        continue;
      }
      if (has(q, "gpipe")) {
        L.schedule = parallel::ScheduleKind::GPipe;
      } else if (has(q, "2bw")) {
        L.schedule = parallel::ScheduleKind::TwoBW;
      } else if (zb_h2) {
        L.schedule = parallel::ScheduleKind::ZbH2;
      } else if (zb_h1) {
        L.schedule = parallel::ScheduleKind::ZbH1;
      } else if (has(q, "dualpipe")) {
        L.schedule = parallel::ScheduleKind::DualPipe;
      } else if (interleaved && v == 1) {
        skip("pipeline_schedule \"" + row.str("pipeline_schedule") +
             "\" needs vp or layers_per_virtual_stage (model chunks per stage)");
        continue;
      } else if (!(has(q, "1f1b") || has(q, "pipedreamflush") || has(q, "interleaved"))) {
        skip("pipeline_schedule \"" + row.str("pipeline_schedule") + "\" (line " +
             std::to_string(rt->get("pipeline_schedule")->source().begin.line) +
             ") with pp " + std::to_string(L.pp) +
             ": expected 1F1B, interleaved 1F1B, GPipe, 2BW, ZB-H1, ZB-H2 or DualPipe");
        continue;
      }
      if (v > 1 && L.schedule != parallel::ScheduleKind::OneFOneB &&
          L.schedule != parallel::ScheduleKind::Interleaved) {
        skip("pipeline_schedule \"" + row.str("pipeline_schedule") + "\" with vp " +
             std::to_string(v) + ": only interleaved 1F1B runs model chunks");
        continue;
      }
    }
    // Asynchronous schedules have no flush: their steady state is measured, as the scenario
    // loader does (4 steps).
    if (!parallel::flushes(L.schedule)) sc.steps = parallel::kSteadyStateSteps;
    // Attention kernels of the software the run used: FlashAttention arrived in Megatron-LM
    // with Transformer Engine (2023); the 2021-22 papers ran its fused-softmax path. A row may
    // say so itself (`attention = "flash" | "unfused"`); otherwise the framework, or the
    // source's year, decides.
    const std::string attention = lower(row.str("attention"));
    if (!attention.empty() && attention != "flash" && attention != "unfused") {
      skip("attention = \"" + row.str("attention") + "\": expected \"flash\" or \"unfused\"");
      continue;
    }
    const std::string source = row.str("source") + " " + res.group;
    if (!attention.empty()) {
      tr.flash_attention = attention != "unfused";
    } else if (modern) {
      tr.flash_attention = true;
    } else if (has(source, "2021") || has(source, "2022")) {
      tr.flash_attention = false;
      notes.emplace_back("unfused attention (pre-2023 Megatron-LM)");
    }
    // Bias kernels follow the same software: Transformer Engine (2023 on) fuses the bias add
    // and its gradient into GEMM epilogues; PyTorch-era Megatron-LM runs them separately.
    tr.bias_in_epilogue = modern || tr.flash_attention;
    // Gradient-accumulation fusion (the wgrad GEMM accumulating into the main gradient)
    // needs apex's fused_weight_gradient_mlp_cuda, which appeared in early 2022 (apex PRs
    // #1312 / #1317 and issue #1314, March 2022); the April-2021 runs of Narayanan et al.
    // add each weight's gradient into its main gradient with a separate kernel per
    // microbatch. A row may say `wgrad_accumulation = "fused" | "separate"`.
    const std::string wgrad = lower(row.str("wgrad_accumulation"));
    if (!wgrad.empty() && wgrad != "fused" && wgrad != "separate") {
      skip("wgrad_accumulation = \"" + row.str("wgrad_accumulation") +
           "\": expected \"fused\" or \"separate\"");
      continue;
    }
    if (!wgrad.empty()) {
      tr.fused_wgrad_accumulation = wgrad != "separate";
    } else if (!modern && has(source, "2021")) {
      tr.fused_wgrad_accumulation = false;
      notes.emplace_back("separate gradient accumulation (2021 Megatron-LM)");
    }
    std::string overlap = row.str("overlap");
    if (overlap.empty() && has(framework, "nemo")) {
      // NeMo's launcher configs train with its distributed optimizer, overlapping the
      // gradient reduce-scatter and the parameter all-gather with computation
      // (NeMo-Framework-Launcher conf/training/*: optim.name distributed_fused_adam,
      // overlap_grad_sync and overlap_param_sync true).
      overlap = "grad-reduce, param-gather";
      notes.emplace_back("NeMo distributed optimizer");
    }
    if (has(overlap, "param-gather")) {
      L.zero = 1;
      L.overlap_param_gather = true;
    }
    L.tp_comm_overlap = has(overlap, "tp-comm") && L.tp > 1;  // nothing to overlap at TP 1
    // ZeRO stage of the optimizer (DeepSpeed `zero_optimization.stage`; Megatron's
    // `--use-distributed-optimizer` is stage 1), for rows whose source states it without
    // naming overlap flags; it sets the sharding (memory, and the gradient reduce-scatter plus
    // parameter all-gather in place of the all-reduce), not the overlap.
    if (const auto z = row.num("zero")) {
      if (!(*z == 0 || *z == 1 || *z == 2 || *z == 3)) {
        skip("zero = " + strf("%g", *z) + ": expected a ZeRO stage 0, 1, 2 or 3");
        continue;
      }
      if (*z == 0 && L.overlap_param_gather) {
        skip("zero = 0 with overlap \"param-gather\": the parameter all-gather needs a "
             "sharded optimizer (zero >= 1)");
        continue;
      }
      L.zero = static_cast<int>(*z);
    }
    // Megatron-LM's own DDP of 2021-22 (`--DDP-impl local`) all-reduces the gradient buffer
    // after the whole forward-backward (megatron/training.py train_step: "All-reduce if
    // needed": model_module.allreduce_gradients() after forward_backward_func); PyTorch's
    // DDP ("torch") overlaps its bucket all-reduces with the last microbatch's backward.
    const std::string ddp = lower(row.str("ddp_impl"));
    if (!ddp.empty() && ddp != "local" && ddp != "torch") {
      skip("ddp_impl = \"" + row.str("ddp_impl") + "\": expected \"local\" or \"torch\"");
      continue;
    }
    if (ddp == "local") {
      L.overlap_grad_reduce = false;
      notes.emplace_back("gradient all-reduce after the backward (Megatron local DDP)");
    }
    // The gradient average's kernel (workload::GradScaling): Megatron-Core's DDP scales each
    // bucket (the default); NeMo's distributed optimizer (apex DistributedFusedAdam,
    // average_grad_sync) and PyTorch's DDP average without a separate pass; Megatron-LM's
    // local DDP -- the default `--DDP-impl` of the 2021-22 papers' code -- divides the whole
    // buffer after the backward, also with DP = 1.
    if (has(framework, "nemo") || ddp == "torch") {
      tr.grad_scaling = workload::GradScaling::Collective;
    } else if (ddp == "local" || (!modern && !tr.flash_attention)) {
      tr.grad_scaling = workload::GradScaling::Buffer;
      L.overlap_grad_reduce = false;  // local DDP never overlapped its all-reduce
    }
    sc.gpus = static_cast<int>(row.num("num_gpus").value_or(L.tp * L.pp * L.dp * L.cp));
    try {
      const std::filesystem::path topo_path = topologies / topo_file;
      if (std::find(report.topology_files.begin(), report.topology_files.end(), topo_path) ==
          report.topology_files.end()) {
        report.topology_files.push_back(topo_path);
      }
      sc.topology = config::load_topology(topo_path);
    } catch (const config::ConfigError& e) {
      skip(std::string("topology: ") + e.what());
      continue;
    }
    sc.gpu = *hw::find_builtin_gpu(gpu_key);
    if (auto gpn = row.num("gpus_per_node"); gpn && *gpn != sc.topology.gpus_per_node) {
      skip(strf("gpus_per_node = %g, but the built-in topology for this GPU (%s) has %d GPUs per "
                "node",
                *gpn, topo_file.c_str(), sc.topology.gpus_per_node));
      continue;
    }
    // A job that does not fill its last node runs on the first GPUs of it
    // (hw::whole_node_gpus): a 128-GPU run on 72-GPU NVL72 racks.
    res.scenario_toml =
        config::scenario_toml(sc, std::filesystem::absolute(topologies / topo_file));
    try {
      if (per_layer) {
        const auto [fwd, bwd] = layer_pass_ms(sc);
        res.predicted_fwd_ms = fwd;
        res.predicted_bwd_ms = bwd;
        res.predicted = fwd + bwd;
        res.formula = "one layer: 2-layer minus 1-layer pass spans";
        res.error = res.predicted / res.published - 1;
        res.ok = true;
        char parts[160];
        std::snprintf(parts, sizeof parts, "fwd %.2f ms vs %.2f (%+.1f%%), bwd %.2f vs %.2f (%+.1f%%)",
                      fwd, res.published_fwd_ms, 100 * (fwd / res.published_fwd_ms - 1), bwd,
                      res.published_bwd_ms, 100 * (bwd / res.published_bwd_ms - 1));
        res.detail = parts;
        for (const auto& n : notes) res.assumptions += (res.assumptions.empty() ? "" : ", ") + n;
        report.rows.push_back(res);
        continue;
      }
      const auto r = workload::simulate_step(sc);
      const double step = r.step_time.seconds();
      if (res.metric == "iteration_time_s") {
        res.predicted = step;
        res.formula = "simulated step time";
      } else if (res.metric == "tokens_per_s_per_gpu") {
        res.predicted = r.tokens_per_s / sc.gpus;
        res.formula = "simulated tokens per second per GPU";
      } else {
        double flops = 0;
        if (has(kind, "eq.3") || has(kind, "eq 3")) {
          flops = narayanan_eq3_flops(md, static_cast<double>(tr.global_batch),
                                      tr.recompute == model::Recompute::Full);
          res.formula = "Narayanan et al. 2021 Eq. 3";
        } else {
          // The rows' sources (Megatron-Core r0.8/r0.9, NeMo 24.07) count the attention core
          // in full; a row may say `attention_flops = "causal"` for later code.
          const bool causal_half = lower(row.str("attention_flops")) == "causal";
          flops = megatron_core_model_flops(
              md, tr.global_batch, causal_half ? AttentionFlops::CausalHalf : AttentionFlops::Full);
          res.formula = causal_half ? "Megatron-LM model FLOPs (causal attention halved)"
                                    : "Megatron-LM / NeMo model FLOPs (attention counted in full)";
        }
        const double per_gpu = flops / step / sc.gpus;
        if (res.metric == "tflops_per_gpu") {
          res.predicted = per_gpu / 1e12;
        } else {
          res.predicted = per_gpu / sc.gpu.peak_flops(tr.dtype);
        }
      }
      res.error = res.predicted / res.published - 1;
      res.ok = true;
      if (!r.memory.fits) {
        res.memory_exceeded = true;
        constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
        notes.emplace_back(strf("it does not fit: %.1f of %.1f GiB per GPU",
                                r.memory.total / kGiB, r.memory.capacity / kGiB));
      }
    } catch (const InputError& e) {
      // A scenario key that one of the row's own fields set ("parallel.first_stage_layers":
      // first_stage_layers) points at the row's line for it.
      std::string why = e.what();
      const std::string& key = e.key();
      const std::string field = key.substr(key.rfind('.') + 1);
      if (const toml::node* n = rt->get(field); n != nullptr && !field.empty()) {
        why += " (line " + std::to_string(n->source().begin.line) + ")";
      }
      skip(why);
      continue;
    } catch (const std::invalid_argument& e) {
      // Such as a precision the GPU has no tensor-core rate for (FP8 on an A100).
      skip(e.what());
      continue;
    } catch (const std::overflow_error& e) {
      // A row whose sizes put a simulated time beyond the clock's range (Time, ~106 days in
      // picoseconds) is skipped like any other row that cannot be simulated.
      skip(std::string("a simulated time is out of range (") + e.what() +
           "); check the row's sizes");
      continue;
    }
    if (!std::isfinite(res.error)) {
      skip("the published " + res.metric + " (" + strf("%g", res.published) +
           ") is too small to compare with");
      continue;
    }
    for (const auto& n : notes) res.assumptions += (res.assumptions.empty() ? "" : ", ") + n;
    report.rows.push_back(res);
  }
  for (const auto& gid : group_order) {
    GroupResult gr;
    gr.group = gid;
    gr.title = titles[gid];
    std::vector<double> apes, pred, pub;
    // Kendall tau ranks one quantity: the rows of the group's most common metric (NeMo's
    // LoRA rows report tokens/s beside the others' TFLOP/s).
    std::map<std::string, int> metric_rows;
    for (const auto& r : report.rows) {
      if (r.group == gid && r.ok) ++metric_rows[r.metric];
    }
    std::string tau_metric;
    int most = 0;
    for (const auto& [metric, n] : metric_rows) {
      if (n > most) {
        most = n;
        tau_metric = metric;
      }
    }
    for (const auto& r : report.rows) {
      if (r.group != gid) continue;
      if (!r.ok) {
        ++gr.rows_skipped;
        continue;
      }
      ++gr.rows_ok;
      apes.push_back(std::abs(r.error));
      if (r.metric != tau_metric) continue;
      pred.push_back(r.predicted);
      pub.push_back(r.published);
    }
    if (gr.rows_ok + gr.rows_skipped == 0) continue;
    if (!apes.empty()) {
      double sum = 0;
      for (double a : apes) sum += a;
      gr.mape = sum / static_cast<double>(apes.size());
      gr.max_ape = *std::max_element(apes.begin(), apes.end());
      std::sort(apes.begin(), apes.end());
      const std::size_t n = apes.size();
      gr.median_ape = n % 2 == 1 ? apes[n / 2] : (apes[n / 2 - 1] + apes[n / 2]) / 2;
    }
    if (pred.size() >= 2) gr.kendall_tau = kendall_tau(pred, pub);  // none when all tied
    report.groups.push_back(gr);
  }
  return report;
}

namespace {
std::string pct(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%+.1f%%", 100 * v);
  return buf;
}
std::string val(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}
/// MAPE, median APE, max APE and Kendall tau of a group as text; `none` where undefined.
std::array<std::string, 4> stats_text(const GroupResult& g, const char* none) {
  auto p = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f%%", 100 * v);
    return std::string(buf);
  };
  if (g.rows_ok == 0) return {none, none, none, none};
  return {p(g.mape), p(g.median_ape), p(g.max_ape),
          g.kendall_tau ? val(*g.kendall_tau) : std::string(none)};
}
}  // namespace

void print_report(std::ostream& os, const Report& r) {
  for (const auto& g : r.groups) {
    os << "\n== " << g.group << (g.title.empty() ? "" : " — " + g.title) << "\n";
    os << strf("  %-40s %-16s %11s %11s %8s\n", "row", "metric", "published", "predicted",
               "error");
    for (const auto& row : r.rows) {
      if (row.group != g.group) continue;
      if (!row.ok) {
        os << strf("  %-40s skipped: %s\n", row.id.c_str(), row.reason.c_str());
      } else {
        std::string tail;
        if (!row.detail.empty()) tail += "  " + row.detail;
        if (!row.assumptions.empty()) tail += "  (assumed " + row.assumptions + ")";
        os << strf("  %-40s %-16s %11s %11s %8s%s\n", row.id.c_str(), row.metric.c_str(),
                   val(row.published).c_str(), val(row.predicted).c_str(),
                   pct(row.error).c_str(), tail.c_str());
      }
    }
  }
  os << "\n  group                          ok  skipped    MAPE  median   max APE  Kendall tau\n";
  for (const auto& g : r.groups) {
    const auto st = stats_text(g, "-");
    os << strf("  %-28s %4d %8d %7s %7s %9s  %s\n", g.group.c_str(), g.rows_ok, g.rows_skipped,
               st[0].c_str(), st[1].c_str(), st[2].c_str(), st[3].c_str());
  }
}

std::string report_json(const Report& r) {
  nlohmann::ordered_json j;
  j["trainsim_version"] = TRAINSIM_VERSION;
  auto rows = nlohmann::ordered_json::array();
  for (const auto& row : r.rows) {
    nlohmann::ordered_json o;
    o["id"] = row.id;
    o["group"] = row.group;
    o["metric"] = row.metric;
    if (row.ok) {
      o["published"] = row.published;
      o["predicted"] = row.predicted;
      o["error"] = row.error;
      o["status"] = "ok";
      o["formula"] = row.formula;
      if (!row.assumptions.empty()) o["assumptions"] = row.assumptions;
      o["gpu_profile"] = row.gpu_profile;
      o["topology"] = row.topology;
      o["memory_exceeded"] = row.memory_exceeded;
      if (row.metric == "layer_ms") {
        o["published_fwd_ms"] = row.published_fwd_ms;
        o["published_bwd_ms"] = row.published_bwd_ms;
        o["predicted_fwd_ms"] = row.predicted_fwd_ms;
        o["predicted_bwd_ms"] = row.predicted_bwd_ms;
      }
    } else {
      o["published"] = row.metric.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(row.published);
      o["predicted"] = nullptr;
      o["error"] = nullptr;
      o["status"] = "skipped";
      o["reason"] = row.reason;
    }
    rows.push_back(o);
  }
  j["rows"] = rows;
  auto groups = nlohmann::ordered_json::array();
  for (const auto& g : r.groups) {
    nlohmann::ordered_json o;
    o["group"] = g.group;
    o["rows_ok"] = g.rows_ok;
    o["rows_skipped"] = g.rows_skipped;
    const bool any = g.rows_ok > 0;
    o["mape"] = any ? nlohmann::ordered_json(g.mape) : nlohmann::ordered_json();
    o["median_ape"] = any ? nlohmann::ordered_json(g.median_ape) : nlohmann::ordered_json();
    o["max_ape"] = any ? nlohmann::ordered_json(g.max_ape) : nlohmann::ordered_json();
    o["kendall_tau"] = g.kendall_tau ? nlohmann::ordered_json(*g.kendall_tau) : nlohmann::ordered_json();
    groups.push_back(o);
  }
  j["groups"] = groups;
  return j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

std::vector<std::pair<std::filesystem::path, std::string>> row_scenario_files(
    const Report& r, const std::filesystem::path& dir) {
  // NAME_MAX of Linux file systems (ext4, xfs, btrfs, tmpfs): bytes of one path component.
  constexpr std::size_t kNameMax = 255;
  const std::string suffix = ".toml";
  std::map<std::string, int> line_of;
  std::vector<std::pair<std::filesystem::path, std::string>> files;
  for (const auto& row : r.rows) {
    if (row.scenario_toml.empty()) continue;
    const std::string& id = row.id;
    const std::string where = "row id \"" + id + "\" (line " + std::to_string(row.line) + ")";
    if (id.empty() || id == "." || id == ".." || id.find_first_of(std::string("/\\\0", 3)) !=
                                                        std::string::npos) {
      throw InputError("--scenarios", "--scenarios: " + where +
                                          " is not a file name: DIR/<row id>.toml would not be "
                                          "a file in DIR (no '/', '\\', \"..\" or empty ids)");
    }
    if (id.size() + suffix.size() > kNameMax) {
      throw InputError("--scenarios", "--scenarios: " + where + " is longer than a file name (" +
                                          std::to_string(kNameMax - suffix.size()) +
                                          " bytes)");
    }
    const auto [it, fresh] = line_of.emplace(id, row.line);
    if (!fresh) {
      throw InputError("--scenarios", "--scenarios: rows at lines " + std::to_string(it->second) +
                                          " and " + std::to_string(row.line) +
                                          " have the same id \"" + id +
                                          "\"; each row's scenario file is named by its id");
    }
    files.emplace_back(dir / (id + suffix), row.scenario_toml);
  }
  return files;
}

namespace {
/// A CSV field (RFC 4180): quoted, with quotes doubled, when it holds a comma, a quote or a
/// line break.
std::string csv_field(const std::string& f) {
  if (f.find_first_of(",\"\r\n") == std::string::npos) return f;
  std::string q = "\"";
  for (char c : f) {
    q += c;
    if (c == '"') q += '"';
  }
  return q + '"';
}
/// Text for a Markdown table cell: '|' escaped, line breaks as spaces.
std::string md_cell(const std::string& f) {
  std::string out;
  for (char c : f) {
    if (c == '|') {
      out += "\\|";
    } else if (c == '\n' || c == '\r') {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}
}  // namespace

std::string report_csv(const Report& r) {
  std::ostringstream os;
  os << "id,group,metric,published,predicted,error,status,reason\n";
  for (const auto& row : r.rows) {
    os << csv_field(row.id) << ',' << csv_field(row.group) << ',' << csv_field(row.metric) << ',';
    if (row.ok) {
      os << val(row.published) << ',' << val(row.predicted) << ',' << val(row.error) << ",ok,";
    } else {
      os << (row.metric.empty() ? "" : val(row.published)) << ",,,skipped,"
         << csv_field(row.reason);
    }
    os << '\n';
  }
  return os.str();
}

std::string report_markdown(const Report& r, const std::string& command) {
  std::ostringstream os;
  os << "# Validation against published runs\n\n"
     << "Generated by `trainsim validate " << command << "` "
     << "(trainsim " << TRAINSIM_VERSION << "); do not edit by hand. Error = predicted / "
     << "published − 1, on the metric each row reports, derived with that source's FLOP "
     << "formula. Skipped rows say why.\n\n";
  os << "| group | ok | skipped | MAPE | median APE | max APE | Kendall tau |\n"
     << "|---|---|---|---|---|---|---|\n";
  for (const auto& g : r.groups) {
    const auto st = stats_text(g, "–");
    os << "| " << md_cell(g.group) << " | " << g.rows_ok << " | " << g.rows_skipped << " | "
       << st[0] << " | " << st[1] << " | " << st[2] << " | " << st[3] << " |\n";
  }
  for (const auto& g : r.groups) {
    os << "\n## " << md_cell(g.group) << "\n\n";
    if (!g.title.empty()) os << md_cell(g.title) << "\n\n";
    os << "| row | metric | published | predicted | error | notes |\n|---|---|---|---|---|---|\n";
    for (const auto& row : r.rows) {
      if (row.group != g.group) continue;
      if (row.ok) {
        os << "| " << md_cell(row.id) << " | " << md_cell(row.metric) << " | "
           << val(row.published) << " | " << val(row.predicted) << " | " << pct(row.error)
           << " | "
           << md_cell(row.formula + (row.detail.empty() ? "" : "; " + row.detail) +
                      (row.assumptions.empty() ? "" : "; assumed " + row.assumptions))
           << " |\n";
      } else {
        os << "| " << md_cell(row.id) << " | " << md_cell(row.metric)
           << " | – | – | – | skipped: " << md_cell(row.reason) << " |\n";
      }
    }
  }
  return os.str();
}

}  // namespace trainsim::validate
