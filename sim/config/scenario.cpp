#include "config/scenario.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <toml++/toml.h>

#include "config/hf_config.hpp"
#include "config/units.hpp"
#include "core/error.hpp"
#include "core/file_check.hpp"
#include "core/hash.hpp"
#include "hw/gpu.hpp"
#include "hw/profile_io.hpp"
#include "parallel/schedule.hpp"
#include "workload/builder.hpp"

namespace trainsim::config {

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

namespace {

const std::map<std::string, std::vector<std::string>>& all_keys() {
  static const std::map<std::string, std::vector<std::string>> keys = {
      {"", {"version", "name", "model", "training", "parallel", "cluster", "simulation", "cost"}},
      {"model",
       {"name", "layers", "hidden", "heads", "kv_heads", "ffn_hidden", "vocab", "seq_len",
        "activation", "norm", "tied_embeddings", "causal", "hf_config", "moe", "head_dim",
        "bias", "mtp_layers"}},
      {"model.moe",
       {"experts", "top_k", "expert_ffn_hidden", "shared_experts", "shared_ffn_hidden",
        "capacity_factor", "moe_layer_freq", "first_dense_layers", "routing", "zipf_exponent",
        "imbalance", "permute_fusion"}},
      {"training",
       {"global_batch", "micro_batch", "dtype", "recompute", "recompute_modules", "optimizer", "tokens",
        "attention", "bias_kernels", "wgrad_accumulation", "grad_scaling", "lora"}},
      {"training.lora", {"rank", "targets"}},
      {"parallel",
       {"tp", "pp", "dp", "ep", "etp", "cp", "sequence_parallel", "virtual_stages", "schedule", "zero",
        "overlap_grad_reduce", "overlap_param_gather", "tp_comm_overlap", "dp_bucket_params",
        "optimizer_post_validation", "cp_comm", "first_stage_layers", "last_stage_layers"}},
      {"cluster", {"topology", "gpus", "profile"}},
      {"simulation", {"fidelity", "seed", "sm_contention", "stragglers", "steps"}},
      {"cost", {"gpu_hour_usd"}},
      {"topology", {"version", "name", "kind", "gpu", "source", "node", "network"}},
      {"topology.node", {"gpus", "nvlink_bw", "nvlink_latency", "nics"}},
      {"topology.network",
       {"nic_bw", "nic_efficiency", "link_latency", "nodes_per_su", "spines",
        "oversubscription", "tiers", "sus_per_pod", "cores", "dims", "torus_link_bw"}},
  };
  return keys;
}

const char* type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table: return "table";
    case toml::node_type::array: return "array";
    case toml::node_type::string: return "string";
    case toml::node_type::integer: return "integer";
    case toml::node_type::floating_point: return "float";
    case toml::node_type::boolean: return "boolean";
    case toml::node_type::date: return "date";
    case toml::node_type::time: return "time";
    case toml::node_type::date_time: return "date-time";
    default: return "nothing";
  }
}

/// Reads one table, remembers which keys were read, and reports errors with positions.
class Section {
 public:
  Section(std::string file, const toml::table* tbl, std::string name,
          toml::source_region where)
      : file_(std::move(file)), tbl_(tbl), name_(std::move(name)), where_(std::move(where)) {}

  [[noreturn]] void fail_at(const toml::source_region& r, const std::string& msg) const {
    throw ConfigError(file_, static_cast<int>(r.begin.line), static_cast<int>(r.begin.column),
                      msg);
  }
  [[noreturn]] void fail(const std::string& msg) const { fail_at(where_, msg); }

  std::string full(const std::string& key) const {
    return name_.empty() ? key : name_ + "." + key;
  }

  const toml::node* node(const std::string& key) {
    if (tbl_ == nullptr) return nullptr;
    const toml::node* n = tbl_->get(key);
    return n;
  }

  bool has(const std::string& key) { return node(key) != nullptr; }

  std::optional<std::int64_t> integer(const std::string& key) {
    const toml::node* n = node(key);
    if (n == nullptr) return std::nullopt;
    if (!n->is_integer()) {
      fail_at(n->source(), full(key) + " must be an integer (got " + type_name(*n) + ")");
    }
    return n->as_integer()->get();
  }
  std::int64_t integer_req(const std::string& key) {
    auto v = integer(key);
    if (!v) fail("missing key " + full(key) + " in [" + name_ + "]");
    return *v;
  }
  /// An integer in [lo, hi]; `def` when absent (not checked).
  std::int64_t bounded(const std::string& key, std::int64_t def, std::int64_t lo, std::int64_t hi) {
    auto v = integer(key);
    if (!v) return def;
    if (*v < lo || *v > hi) {
      fail_at(node(key)->source(), full(key) + " must be in [" + std::to_string(lo) + ", " +
                                       std::to_string(hi) + "] (got " + std::to_string(*v) + ")");
    }
    return *v;
  }
  std::int64_t bounded_req(const std::string& key, std::int64_t lo, std::int64_t hi) {
    if (!has(key)) fail("missing key " + full(key) + " in [" + name_ + "]");
    return bounded(key, 0, lo, hi);
  }
  /// A finite number in [lo, hi]; nullopt when absent.
  std::optional<double> real(const std::string& key, double lo, double hi) {
    auto v = number(key);
    if (v && !(std::isfinite(*v) && *v >= lo && *v <= hi)) {
      fail_at(node(key)->source(), full(key) + " must be a finite number in [" + fmt_num(lo) +
                                       ", " + fmt_num(hi) + "]");
    }
    return v;
  }
  static std::string fmt_num(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
  }
  std::optional<double> number(const std::string& key) {
    const toml::node* n = node(key);
    if (n == nullptr) return std::nullopt;
    if (n->is_integer()) return static_cast<double>(n->as_integer()->get());
    if (n->is_floating_point()) return n->as_floating_point()->get();
    fail_at(n->source(), full(key) + " must be a number (got " + type_name(*n) + ")");
  }
  std::optional<bool> boolean(const std::string& key) {
    const toml::node* n = node(key);
    if (n == nullptr) return std::nullopt;
    if (!n->is_boolean()) {
      fail_at(n->source(), full(key) + " must be true or false (got " + type_name(*n) + ")");
    }
    return n->as_boolean()->get();
  }
  std::optional<std::string> string(const std::string& key) {
    const toml::node* n = node(key);
    if (n == nullptr) return std::nullopt;
    if (!n->is_string()) {
      fail_at(n->source(), full(key) + " must be a string (got " + type_name(*n) + ")");
    }
    return n->as_string()->get();
  }
  std::string string_req(const std::string& key) {
    auto v = string(key);
    if (!v) fail("missing key " + full(key) + " in [" + name_ + "]");
    return *v;
  }
  /// A string among `choices`.
  template <typename E>
  std::optional<E> choice(const std::string& key, const std::vector<std::pair<std::string, E>>& choices) {
    auto v = string(key);
    if (!v) return std::nullopt;
    for (const auto& [name, e] : choices) {
      if (name == *v) return e;
    }
    std::string list;
    for (const auto& [name, e] : choices) list += (list.empty() ? "\"" : ", \"") + name + "\"";
    fail_at(node(key)->source(), full(key) + " must be one of " + list + " (got \"" + *v + "\")");
  }
  /// A quantity: a plain number in SI base units, or a string with a unit.
  std::optional<double> quantity(const std::string& key,
                                 std::optional<double> (*parse)(std::string_view),
                                 const char* example) {
    const toml::node* n = node(key);
    if (n == nullptr) return std::nullopt;
    if (n->is_string()) {
      auto v = parse(n->as_string()->get());
      if (!v) {
        fail_at(n->source(), full(key) + ": cannot read \"" + n->as_string()->get() +
                                 "\" as a quantity (e.g. \"" + example + "\")");
      }
      return v;
    }
    return number(key);
  }
  /// A quantity that must lie in [lo, hi] (SI base units); `example` shows the syntax.
  std::optional<double> quantity_in(const std::string& key,
                                    std::optional<double> (*parse)(std::string_view),
                                    const char* example, double lo, double hi, const char* unit) {
    auto v = quantity(key, parse, example);
    if (v && !(std::isfinite(*v) && *v >= lo && *v <= hi)) {
      fail_at(node(key)->source(), full(key) + " must be between " + fmt_num(lo) + " and " +
                                       fmt_num(hi) + " " + unit + " (got " + fmt_num(*v) + ")");
    }
    return v;
  }

  /// Rejects keys that were not expected, suggesting the nearest valid one.
  void check_unknown(const std::vector<std::string>& valid) const {
    if (tbl_ == nullptr) return;
    for (auto&& [k, v] : *tbl_) {
      const std::string key(k.str());
      if (std::find(valid.begin(), valid.end(), key) != valid.end()) continue;
      std::string best;
      std::size_t best_d = 1000;
      for (const auto& cand : valid) {
        const std::size_t d = edit_distance(key, cand);
        if (d < best_d) {
          best_d = d;
          best = cand;
        }
      }
      std::string msg = "unknown key '" + key + "'" +
                        (name_.empty() ? std::string(" at top level") : " in [" + name_ + "]");
      if (!best.empty() && best_d <= std::max<std::size_t>(2, key.size() / 3)) {
        msg += "; did you mean '" + best + "'?";
      } else {
        std::string list;
        for (const auto& c : valid) list += (list.empty() ? "" : ", ") + c;
        msg += "; valid keys: " + list;
      }
      fail_at(k.source(), msg);
    }
  }

  const toml::table* table() const { return tbl_; }
  const toml::source_region& where() const { return where_; }

 private:
  std::string file_;
  const toml::table* tbl_;
  std::string name_;
  toml::source_region where_;
};

/// Parses a TOML file; `what` names the kind of file for messages ("scenario", "topology").
toml::table parse(const std::filesystem::path& file, const char* what) {
  if (const std::string why = unreadable_file_reason(file); !why.empty()) {
    throw ConfigError(file.string(), 1, 1,
                      why == "is a directory" ? "is a directory, not a " + std::string(what) +
                                                    " file"
                                              : "cannot open file (" + why + ")");
  }
  try {
    return toml::parse_file(file.string());
  } catch (const toml::parse_error& e) {
    throw ConfigError(file.string(), static_cast<int>(e.source().begin.line),
                      static_cast<int>(e.source().begin.column),
                      "TOML syntax error: " + std::string(e.description()));
  }
}

/// A sub-table `name` of `root`, or an empty section positioned at the file start.
Section sub(const std::string& file, toml::table& root, const std::string& name,
            const std::string& full_name, bool required) {
  toml::node* n = root.get(name);
  if (n == nullptr) {
    if (required) {
      throw ConfigError(file, 1, 1, "missing section [" + full_name + "]");
    }
    return Section(file, nullptr, full_name, root.source());
  }
  if (!n->is_table()) {
    throw ConfigError(file, static_cast<int>(n->source().begin.line),
                      static_cast<int>(n->source().begin.column),
                      "[" + full_name + "] must be a table (got " + type_name(*n) + ")");
  }
  return Section(file, n->as_table(), full_name, n->source());
}

void check_version(Section& top) {
  auto v = top.integer("version");
  if (!v) top.fail("missing key version (schema version; this trainsim reads version = 1)");
  if (*v != 1) {
    top.fail_at(top.node("version")->source(),
                "unsupported schema version " + std::to_string(*v) + " (this trainsim reads 1)");
  }
}

/// [model] with hf_config: the shape comes from the Hugging Face config; only name, seq_len,
/// causal, mtp_layers and [model.moe]'s routing keys may be given alongside.
void load_hf_model(const std::string& file, const std::filesystem::path& scenario, Section& m,
                   model::ModelSpec& md, std::string& hf_path) {
  for (const char* k : {"layers", "hidden", "heads", "kv_heads", "ffn_hidden", "vocab",
                        "activation", "norm", "tied_embeddings", "head_dim", "bias"}) {
    if (m.has(k)) {
      m.fail_at(m.node(k)->source(), std::string("model.") + k +
                                         " conflicts with model.hf_config (the shape comes "
                                         "from the config file)");
    }
  }
  std::filesystem::path hf(m.string_req("hf_config"));
  if (hf.is_relative()) hf = scenario.parent_path() / hf;
  if (const std::string why = unreadable_file_reason(hf); !why.empty()) {
    m.fail_at(m.node("hf_config")->source(), unreadable_file_message("model.hf_config", hf, why) +
                                                 " (paths resolve relative to the scenario "
                                                 "file)");
  }
  (void)file;
  md = load_hf_config(hf);
  hf_path = std::filesystem::absolute(hf).lexically_normal().string();
  md.seq_len = static_cast<int>(m.bounded_req("seq_len", 1, 100000000));
}

/// [model.moe]. With an HF config only the routing model and the capacity factor may be set.
void read_moe(const std::string& file, const toml::node* node, model::ModelSpec& md, bool hf) {
  if (!node->is_table()) {
    throw ConfigError(file, static_cast<int>(node->source().begin.line),
                      static_cast<int>(node->source().begin.column),
                      "[model.moe] must be a table");
  }
  Section s(file, node->as_table(), "model.moe", node->source());
  s.check_unknown(scenario_keys("model.moe"));
  auto& moe = md.moe;
  if (hf) {
    for (const char* k : {"experts", "top_k", "expert_ffn_hidden", "shared_experts",
                          "shared_ffn_hidden", "moe_layer_freq", "first_dense_layers"}) {
      if (s.has(k)) {
        s.fail_at(s.node(k)->source(), std::string("model.moe.") + k +
                                           " conflicts with model.hf_config (the experts come "
                                           "from the config file)");
      }
    }
    if (!moe.enabled()) s.fail("[model.moe] given but the Hugging Face config has no experts");
  } else {
    moe.experts = static_cast<int>(s.bounded_req("experts", 1, 1000000));
    moe.top_k = static_cast<int>(s.bounded("top_k", 1, 1, moe.experts));
    moe.expert_ffn_hidden =
        static_cast<int>(s.bounded("expert_ffn_hidden", md.ffn_hidden, 1, 100000000));
    moe.shared_experts = static_cast<int>(s.bounded("shared_experts", 0, 0, 1000));
    moe.shared_ffn_hidden = static_cast<int>(s.bounded("shared_ffn_hidden", 0, 0, 100000000));
    moe.layer_freq = static_cast<int>(s.bounded("moe_layer_freq", 1, 1, 100000));
    moe.first_dense_layers =
        static_cast<int>(s.bounded("first_dense_layers", 0, 0, std::max(0, md.layers - 1)));
  }
  moe.capacity_factor = s.real("capacity_factor", 0, 1000).value_or(0);
  moe.routing = s.choice<model::Routing>("routing", {{"balanced", model::Routing::Balanced},
                                                     {"uniform", model::Routing::Uniform},
                                                     {"zipf", model::Routing::Zipf},
                                                     {"imbalance", model::Routing::Imbalance}})
                    .value_or(model::Routing::Balanced);
  moe.zipf_exponent = s.real("zipf_exponent", 0, 10).value_or(1.0);
  if (s.has("zipf_exponent") && moe.routing != model::Routing::Zipf) {
    s.fail_at(s.node("zipf_exponent")->source(), "model.moe.zipf_exponent needs routing = \"zipf\"");
  }
  moe.imbalance = s.real("imbalance", 1, 1e6).value_or(1.0);
  if (s.has("imbalance") && moe.routing != model::Routing::Imbalance) {
    s.fail_at(s.node("imbalance")->source(), "model.moe.imbalance needs routing = \"imbalance\"");
  }
  // The given factor is the whole of this routing model: without it the step would be the
  // balanced one under another name.
  if (moe.routing == model::Routing::Imbalance && !s.has("imbalance")) {
    s.fail_at(s.node("routing")->source(),
              "model.moe.routing = \"imbalance\" needs model.moe.imbalance (max / mean tokens "
              "per EP rank, e.g. 1.5)");
  }
  moe.permute_fusion = s.boolean("permute_fusion").value_or(false);
}

}  // namespace

const std::vector<std::string>& scenario_keys(const std::string& section) {
  static const std::vector<std::string> none;
  auto it = all_keys().find(section);
  return it == all_keys().end() ? none : it->second;
}

namespace {

/// [network] keys of the other fabric shapes: tiers, sus_per_pod, cores (3-tier fat tree),
/// dims and torus_link_bw (torus). See hw::TopologySpec.
void load_fabric_keys(Section& net, hw::TopologySpec& spec) {
  // Keys of another fabric shape would be read and never used: refused at their line.
  const bool torus = spec.kind == "torus";
  for (const char* key : {"nodes_per_su", "spines", "oversubscription", "tiers", "sus_per_pod",
                          "cores"}) {
    if (torus && net.has(key)) {
      net.fail_at(net.node(key)->source(), std::string("network.") + key +
                                               " belongs to the fat-tree kinds; a torus has "
                                               "one router per node (dims, torus_link_bw)");
    }
  }
  for (const char* key : {"dims", "torus_link_bw"}) {
    if (!torus && net.has(key)) {
      net.fail_at(net.node(key)->source(),
                  std::string("network.") + key + " belongs to kind = \"torus\"");
    }
  }
  spec.tiers = static_cast<int>(net.bounded("tiers", 2, 2, 3));
  if (spec.tiers == 3 && spec.kind != "rail_optimized_fat_tree") {
    net.fail_at(net.node("tiers")->source(),
                "network.tiers = 3 needs kind = \"rail_optimized_fat_tree\"");
  }
  for (const char* key : {"sus_per_pod", "cores"}) {
    if (spec.tiers != 3 && net.has(key)) {
      net.fail_at(net.node(key)->source(),
                  std::string("network.") + key + " belongs to a 3-tier fat tree (tiers = 3)");
    }
  }
  spec.sus_per_pod = static_cast<int>(net.bounded("sus_per_pod", 1, 1, 100000));
  // A spine reaches at most as many cores as it has uplink ports (hw::spine_uplink_ports).
  spec.cores = static_cast<int>(net.bounded("cores", 0, 0, hw::spine_uplink_ports(spec)));
  spec.torus_link_bw =
      net.quantity_in("torus_link_bw", parse_bandwidth, "400 Gbps", 1e6, 1e15, "B/s").value_or(0);
  if (const toml::node* d = net.node("dims")) {
    const toml::array* arr = d->as_array();
    if (arr == nullptr || (arr->size() != 2 && arr->size() != 3)) {
      net.fail_at(d->source(), "network.dims must be an array of 2 or 3 positive integers");
    }
    for (const toml::node& e : *arr) {
      if (!e.is_integer() || e.as_integer()->get() < 1 || e.as_integer()->get() > 100000) {
        net.fail_at(e.source(), "network.dims entries must be integers in [1, 100000]");
      }
      spec.dims.push_back(static_cast<int>(e.as_integer()->get()));
    }
  }
  if (spec.kind == "torus" && spec.dims.empty()) {
    net.fail("kind = \"torus\" needs network.dims = [x, y] or [x, y, z] (nodes per axis)");
  }
}

}  // namespace

namespace {

/// Non-empty when a node's NVLink bandwidth (B/s per GPU per direction) is above the GPU's
/// datasheet rate: NCCL's NVLink rate is its per-link rate times the GPU's links (topo.h), so
/// a topology with fewer links scales it down, but a GPU cannot drive more links than it has;
/// rather than cap the value silently, it is refused.
std::string nvlink_above_gpu(double nvlink_bw, const hw::GpuSpec& gpu) {
  if (!(gpu.nvlink_bw > 0) || nvlink_bw <= gpu.nvlink_bw * (1 + 1e-9)) return {};
  const auto gbs = [](double b) { return Section::fmt_num(b / 1e9) + " GB/s"; };
  return "nvlink_bw " + gbs(nvlink_bw) + " is above " + gpu.display_name +
         "'s NVLink bandwidth of " + gbs(gpu.nvlink_bw) +
         " per direction (its datasheet links; a GPU cannot drive more, and NCCL's NVLink rate "
         "is scaled down for fewer links, never up)";
}

/// [training.lora] rank = 32, targets = ["qkv", "proj", "fc1", "fc2"] (default ["qkv"]).
void read_lora(const std::string& file, const toml::node& node, workload::LoraSpec& lora) {
  const toml::table* tbl = node.as_table();
  if (tbl == nullptr) {
    throw ConfigError(file, static_cast<int>(node.source().begin.line),
                      static_cast<int>(node.source().begin.column),
                      "[training.lora] must be a table like { rank = 32, targets = [\"qkv\"] }");
  }
  Section s(file, tbl, "training.lora", node.source());
  s.check_unknown(scenario_keys("training.lora"));
  lora.rank = static_cast<int>(s.bounded_req("rank", 1, 65536));
  const toml::node* tn = s.node("targets");
  if (tn == nullptr) return;  // LoraSpec's default: QKV only
  const toml::array* arr = tn->as_array();
  const char* expected = "training.lora.targets must be a non-empty array of \"qkv\", \"proj\", "
                         "\"fc1\", \"fc2\"";
  if (arr == nullptr || arr->empty()) s.fail_at(tn->source(), expected);
  lora.qkv = lora.proj = lora.mlp_in = lora.mlp_out = false;
  for (const toml::node& e : *arr) {
    const auto* str = e.as_string();
    const std::string v = str != nullptr ? str->get() : std::string();
    bool* flag = v == "qkv" ? &lora.qkv : v == "proj" ? &lora.proj : v == "fc1" ? &lora.mlp_in
                 : v == "fc2" ? &lora.mlp_out : nullptr;
    if (flag == nullptr) {
      s.fail_at(e.source(), std::string(expected) + " (got " +
                                (str != nullptr ? "\"" + v + "\"" : type_name(e)) + ")");
    }
    if (*flag) s.fail_at(e.source(), "training.lora.targets names \"" + v + "\" twice");
    *flag = true;
  }
}

/// training.recompute_modules = ["core_attn", "mlp", "moe", "moe_act", "layernorm",
/// "shared_experts", "mla_up_proj"] (Megatron-Core's names; with recompute = "selective"
/// only; mla_up_proj with an MLA model, workload::validate_training).
model::RecomputeModules read_recompute_modules(Section& t, const toml::node& node) {
  const toml::array* arr = node.as_array();
  const char* expected = "training.recompute_modules must be an array of \"core_attn\", \"mlp\", "
                         "\"moe\", \"moe_act\", \"layernorm\", \"shared_experts\", \"mla_up_proj\"";
  if (arr == nullptr) t.fail_at(node.source(), expected);
  model::RecomputeModules m;
  m.core_attn = false;
  for (const toml::node& e : *arr) {
    const auto* str = e.as_string();
    const std::string v = str != nullptr ? str->get() : std::string();
    bool* flag = model::recompute_module_flag(m, v);
    if (flag == nullptr) {
      t.fail_at(e.source(), std::string(expected) + " (got " +
                                (str != nullptr ? "\"" + v + "\"" : type_name(e)) + ")");
    }
    if (*flag) t.fail_at(e.source(), "training.recompute_modules names \"" + v + "\" twice");
    *flag = true;
  }
  return m;
}

/// [simulation] stragglers = [{ gpu = 17, speed = 0.8, nic_bandwidth = 0.5,
/// nvlink_bandwidth = 1.0 }, ...]: factors in [0.001, 1] (slower than nominal), full fidelity only.
void load_stragglers(const std::string& file, const toml::node& st, workload::Scenario& sc) {
  const auto fail = [&](const toml::node& n, const std::string& msg) {
    throw ConfigError(file, static_cast<int>(n.source().begin.line),
                      static_cast<int>(n.source().begin.column), msg);
  };
  const toml::array* arr = st.as_array();
  if (arr == nullptr) fail(st, "simulation.stragglers must be an array of tables");
  if (!arr->empty() && sc.fidelity != workload::Fidelity::Full) {
    fail(st, "simulation.stragglers are only simulated with simulation.fidelity = \"full\"");
  }
  for (const toml::node& e : *arr) {
    const toml::table* t = e.as_table();
    if (t == nullptr) fail(e, "simulation.stragglers entries must be tables like { gpu = 3, speed = 0.8 }");
    Section sec(file, t, "simulation.stragglers", e.source());
    sec.check_unknown({"gpu", "speed", "nic_bandwidth", "nvlink_bandwidth"});
    workload::Straggler s;
    s.gpu = static_cast<int>(sec.bounded_req("gpu", 0, std::max(0, sc.gpus - 1)));
    s.speed = sec.real("speed", 1e-3, 1.0).value_or(1.0);
    s.nic_bandwidth = sec.real("nic_bandwidth", 1e-3, 1.0).value_or(1.0);
    s.nvlink_bandwidth = sec.real("nvlink_bandwidth", 1e-3, 1.0).value_or(1.0);
    for (const auto& earlier : sc.stragglers) {
      if (earlier.gpu == s.gpu) {
        fail(e, "simulation.stragglers names gpu " + std::to_string(s.gpu) +
                    " twice; give one entry per GPU");
      }
    }
    sc.stragglers.push_back(s);
  }
}

}  // namespace

hw::TopologySpec load_topology(const std::filesystem::path& path) {
  const std::string file = path.string();
  toml::table root = parse(path, "topology");
  Section top(file, &root, "", root.source());
  top.check_unknown(scenario_keys("topology"));
  check_version(top);
  hw::TopologySpec spec;
  spec.name = top.string("name").value_or(path.stem().string());
  spec.kind = top.string("kind").value_or("rail_optimized_fat_tree");
  if (spec.kind != "rail_optimized_fat_tree" && spec.kind != "leaf_spine" &&
      spec.kind != "torus") {
    top.fail_at(top.node("kind")->source(),
                "kind must be one of \"rail_optimized_fat_tree\", \"leaf_spine\", \"torus\" "
                "(got \"" + spec.kind + "\")");
  }
  spec.gpu = top.string_req("gpu");
  const hw::GpuSpec* gpu = hw::find_builtin_gpu(spec.gpu);
  if (gpu == nullptr) {
    std::string list;
    for (const auto& g : hw::builtin_gpus()) list += (list.empty() ? "" : ", ") + g.key;
    top.fail_at(top.node("gpu")->source(),
                "unknown GPU \"" + spec.gpu + "\" (built-in profiles: " + list + ")");
  }
  spec.source = top.string("source").value_or("");
  Section node = sub(file, root, "node", "node", true);
  node.check_unknown(scenario_keys("topology.node"));
  spec.gpus_per_node = static_cast<int>(node.bounded_req("gpus", 1, 4096));
  spec.nvlink_bw =
      node.quantity_in("nvlink_bw", parse_bandwidth, "300 GB/s", 1e6, 1e15, "B/s").value_or(0);
  if (spec.nvlink_bw <= 0) node.fail("missing key node.nvlink_bw in [node]");
  if (const std::string why = nvlink_above_gpu(spec.nvlink_bw, *gpu); !why.empty()) {
    node.fail_at(node.node("nvlink_bw")->source(), "node." + why);
  }
  spec.nvlink_latency =
      node.quantity_in("nvlink_latency", parse_duration, "0.7 us", 0, 1, "s").value_or(0.0);
  spec.nics_per_node = static_cast<int>(node.bounded("nics", spec.gpus_per_node, 1, 4096));
  Section net = sub(file, root, "network", "network", true);
  net.check_unknown(scenario_keys("topology.network"));
  spec.nic_bw =
      net.quantity_in("nic_bw", parse_bandwidth, "400 Gbps", 1e6, 1e15, "B/s").value_or(0);
  if (spec.nic_bw <= 0) net.fail("missing key network.nic_bw in [network]");
  spec.nic_efficiency = net.real("nic_efficiency", 1e-3, 1.0).value_or(1.0);
  spec.link_latency =
      net.quantity_in("link_latency", parse_duration, "0.6 us", 0, 1, "s").value_or(0.0);
  spec.nodes_per_su = static_cast<int>(net.bounded("nodes_per_su", 32, 1, 100000));
  spec.oversubscription = net.real("oversubscription", 1.0, 1024.0).value_or(1.0);
  // Each leaf has (downlink ports) / oversubscription uplink cables; every spine needs one.
  spec.spines = static_cast<int>(net.bounded("spines", 0, 0, hw::leaf_uplinks(spec)));
  load_fabric_keys(net, spec);
  return spec;
}

workload::Scenario load_scenario(const std::filesystem::path& path, bool check_schedule,
                                 bool check_layout) {
  const std::string file = path.string();
  toml::table root = parse(path, "scenario");
  Section top(file, &root, "", root.source());
  top.check_unknown(scenario_keys(""));
  check_version(top);
  workload::Scenario sc;
  sc.name = top.string("name").value_or(path.stem().string());

  // [model]
  Section m = sub(file, root, "model", "model", true);
  m.check_unknown(scenario_keys("model"));
  auto& md = sc.model;
  if (m.has("hf_config")) {
    load_hf_model(file, path, m, md, sc.inputs.hf_config_path);
    md.name = m.string("name").value_or(md.name);
  } else {
  md.name = m.string("name").value_or(sc.name);
  md.layers = static_cast<int>(m.bounded_req("layers", 1, 100000));
  md.hidden = static_cast<int>(m.bounded_req("hidden", 1, 10000000));
  md.heads = static_cast<int>(m.bounded_req("heads", 1, 1000000));
  md.kv_heads = static_cast<int>(m.bounded("kv_heads", md.heads, 1, md.heads));
  md.activation = m.choice<model::Activation>("activation", {{"gelu", model::Activation::GeLU},
                                                             {"swiglu", model::Activation::SwiGLU}})
                      .value_or(model::Activation::GeLU);
  md.ffn_hidden = static_cast<int>(
      m.bounded("ffn_hidden", std::min<std::int64_t>(4LL * md.hidden, 100000000), 1, 100000000));
  md.vocab = m.bounded_req("vocab", 1, 1000000000);
  md.seq_len = static_cast<int>(m.bounded_req("seq_len", 1, 100000000));
  md.norm = m.choice<model::Norm>("norm", {{"layernorm", model::Norm::LayerNorm},
                                           {"rmsnorm", model::Norm::RMSNorm}})
                .value_or(model::Norm::LayerNorm);
  md.tied_embeddings = m.boolean("tied_embeddings").value_or(false);
  md.bias = m.boolean("bias").value_or(false);
  md.head_size = static_cast<int>(m.bounded("head_dim", 0, 1, 100000));
  }  // shape given in the scenario
  // Multi-token prediction: a training choice (Megatron-Core --mtp-num-layers), so it may
  // override the Hugging Face config's num_nextn_predict_layers.
  md.mtp_layers = static_cast<int>(m.bounded("mtp_layers", md.mtp_layers, 0, 1000));
  md.causal = m.boolean("causal").value_or(true);
  if (const toml::node* mn = m.node("moe")) read_moe(file, mn, md, m.has("hf_config"));

  // [training]
  Section t = sub(file, root, "training", "training", true);
  t.check_unknown(scenario_keys("training"));
  auto& tr = sc.training;
  tr.global_batch = t.bounded_req("global_batch", 1, 1000000000000LL);
  tr.micro_batch = t.bounded("micro_batch", 1, 1, tr.global_batch);
  tr.dtype = t.choice<hw::Dtype>("dtype", {{"bf16", hw::Dtype::BF16},
                                           {"fp16", hw::Dtype::FP16},
                                           {"fp8", hw::Dtype::FP8}})
                 .value_or(hw::Dtype::BF16);
  tr.recompute = t.choice<model::Recompute>("recompute", {{"none", model::Recompute::None},
                                                          {"selective", model::Recompute::Selective},
                                                          {"full", model::Recompute::Full}})
                     .value_or(model::Recompute::None);
  if (const toml::node* rm = t.node("recompute_modules")) {
    if (tr.recompute != model::Recompute::Selective) {
      t.fail_at(rm->source(), "training.recompute_modules needs recompute = \"selective\"");
    }
    tr.recompute_modules = read_recompute_modules(t, *rm);
  }
  (void)t.choice<int>("optimizer", {{"adam", 0}});
  tr.flash_attention = t.choice<bool>("attention", {{"flash", true}, {"unfused", false}})
                           .value_or(true);
  tr.bias_in_epilogue =
      t.choice<bool>("bias_kernels", {{"epilogue", true}, {"separate", false}}).value_or(true);
  tr.fused_wgrad_accumulation =
      t.choice<bool>("wgrad_accumulation", {{"fused", true}, {"separate", false}})
          .value_or(true);
  tr.grad_scaling = t.choice<workload::GradScaling>("grad_scaling",
                                                    {{"bucket", workload::GradScaling::Bucket},
                                                     {"buffer", workload::GradScaling::Buffer},
                                                     {"collective",
                                                      workload::GradScaling::Collective}})
                        .value_or(workload::GradScaling::Bucket);
  if (auto tok = t.real("tokens", 1, 1e18)) tr.tokens = *tok;
  if (const toml::node* ln = t.node("lora")) read_lora(file, *ln, tr.lora);

  // [cluster]
  Section c = sub(file, root, "cluster", "cluster", true);
  c.check_unknown(scenario_keys("cluster"));
  const std::string topo_rel = c.string_req("topology");
  std::filesystem::path topo_path(topo_rel);
  if (topo_path.is_relative()) topo_path = path.parent_path() / topo_path;
  {
    if (const std::string why = unreadable_file_reason(topo_path); !why.empty()) {
      c.fail_at(c.node("topology")->source(),
                unreadable_file_message("cluster.topology", topo_path, why) +
                    " (paths resolve relative to the scenario file)");
    }
  }
  sc.topology = load_topology(topo_path);
  sc.inputs.scenario_fnv1a64 = fnv1a64_file(path);
  sc.inputs.topology_fnv1a64 = fnv1a64_file(topo_path);
  sc.inputs.topology_file = topo_path.filename().string();
  sc.inputs.topology_path = std::filesystem::absolute(topo_path).lexically_normal().string();
  sc.gpus = static_cast<int>(c.bounded_req("gpus", 1, 1 << 20));
  std::string profile = c.string("profile").value_or(sc.topology.gpu);
  if (profile.size() > 5 && profile.ends_with(".toml")) {
    // A measured hardware profile (trainsim-calibrate), relative to the scenario file.
    std::filesystem::path prof_path(profile);
    if (prof_path.is_relative()) prof_path = path.parent_path() / prof_path;
    if (const std::string why = unreadable_file_reason(prof_path); !why.empty()) {
      c.fail_at(c.node("profile")->source(),
                unreadable_file_message("cluster.profile", prof_path, why) +
                    " (paths resolve relative to the scenario file)");
    }
    try {
      sc.profile = std::make_shared<const hw::HardwareProfile>(hw::read_profile(prof_path));
    } catch (const hw::ProfileError& e) {
      throw ConfigError(e.file(), e.line(), e.column(), e.message());
    }
    profile = sc.profile->base_gpu;
    sc.inputs.profile_fnv1a64 = fnv1a64_file(prof_path);
    sc.inputs.profile_file = prof_path.filename().string();
    sc.inputs.profile_path = std::filesystem::absolute(prof_path).lexically_normal().string();
  }
  const hw::GpuSpec* gpu = hw::find_builtin_gpu(profile);
  if (gpu == nullptr) {
    std::string list;
    for (const auto& g : hw::builtin_gpus()) list += (list.empty() ? "" : ", ") + g.key;
    c.fail_at(c.node("profile")->source(),
              "cluster.profile: unknown hardware profile \"" + profile +
                  "\" (built-in: " + list + ", or a measured profile file \"*.toml\")");
  }
  if (const std::string why = nvlink_above_gpu(sc.topology.nvlink_bw, *gpu); !why.empty()) {
    const std::string msg = "cluster.profile: the topology's node." + why;
    if (const toml::node* n = c.node("profile"); n != nullptr) c.fail_at(n->source(), msg);
    c.fail(msg);
  }
  sc.gpu = *gpu;
  sc.topology.gpu = gpu->key;
  if (tr.dtype == hw::Dtype::FP8 && gpu->peak_fp8 <= 0) {
    const toml::node* n = t.node("dtype");
    t.fail_at(n->source(), "training.dtype \"fp8\" needs FP8 tensor cores; " +
                               gpu->display_name + " has none");
  }

  // [parallel]
  Section p = sub(file, root, "parallel", "parallel", false);
  p.check_unknown(scenario_keys("parallel"));
  auto& L = sc.layout;
  constexpr std::int64_t kMaxDegree = 1 << 20;
  L.tp = static_cast<int>(p.bounded("tp", 1, 1, kMaxDegree));
  L.pp = static_cast<int>(p.bounded("pp", 1, 1, kMaxDegree));
  L.ep = static_cast<int>(p.bounded("ep", 1, 1, kMaxDegree));
  L.etp = static_cast<int>(p.bounded("etp", 0, 1, kMaxDegree));  // 0: equal to tp
  L.cp = static_cast<int>(p.bounded("cp", 1, 1, kMaxDegree));
  if (p.has("dp")) {
    L.dp = static_cast<int>(p.bounded("dp", 1, 1, kMaxDegree));
  } else {
    const std::int64_t denom = static_cast<std::int64_t>(L.tp) * L.pp * L.cp;
    L.dp = sc.gpus % denom == 0 ? static_cast<int>(std::max<std::int64_t>(1, sc.gpus / denom)) : 1;
  }
  L.sequence_parallel = p.boolean("sequence_parallel").value_or(false);
  L.virtual_stages = static_cast<int>(p.bounded("virtual_stages", 1, 1, 1024));
  L.first_stage_layers = static_cast<int>(p.bounded("first_stage_layers", 0, 0, 100000));
  L.last_stage_layers = static_cast<int>(p.bounded("last_stage_layers", 0, 0, 100000));
  L.schedule = p.choice<parallel::ScheduleKind>(
                    "schedule", {{"gpipe", parallel::ScheduleKind::GPipe},
                                 {"pipedream", parallel::ScheduleKind::PipeDream},
                                 {"2bw", parallel::ScheduleKind::TwoBW},
                                 {"1f1b", parallel::ScheduleKind::OneFOneB},
                                 {"interleaved", parallel::ScheduleKind::Interleaved},
                                 {"zb-h1", parallel::ScheduleKind::ZbH1},
                                 {"zb-h2", parallel::ScheduleKind::ZbH2},
                                 {"dualpipe", parallel::ScheduleKind::DualPipe}})
                   .value_or(L.virtual_stages > 1 ? parallel::ScheduleKind::Interleaved
                                                  : parallel::ScheduleKind::OneFOneB);
  L.zero = static_cast<int>(p.bounded("zero", 0, 0, 3));
  L.overlap_grad_reduce = p.boolean("overlap_grad_reduce").value_or(true);
  L.overlap_param_gather = p.boolean("overlap_param_gather").value_or(false);
  L.tp_comm_overlap = p.boolean("tp_comm_overlap").value_or(false);
  L.optimizer_post_validation = p.boolean("optimizer_post_validation").value_or(false);
  L.cp_comm = p.choice<parallel::Layout::CpComm>("cp_comm",
                                                 {{"p2p", parallel::Layout::CpComm::P2P},
                                                  {"all_gather", parallel::Layout::CpComm::AllGather}})
                  .value_or(parallel::Layout::CpComm::P2P);
  // 0 = Megatron's default; smaller buckets than 100k parameters only multiply tasks.
  L.dp_bucket_params = p.bounded("dp_bucket_params", 0, 100000, 1000000000000LL);

  // [simulation]
  Section s = sub(file, root, "simulation", "simulation", false);
  s.check_unknown(scenario_keys("simulation"));
  sc.fidelity = s.choice<workload::Fidelity>("fidelity", {{"analytic", workload::Fidelity::Analytic},
                                                          {"stage", workload::Fidelity::Stage},
                                                          {"full", workload::Fidelity::Full}})
                    .value_or(workload::Fidelity::Stage);
  if (sc.fidelity == workload::Fidelity::Analytic) {
    s.fail_at(s.node("fidelity")->source(),
              "simulation.fidelity \"" + std::string(workload::fidelity_name(sc.fidelity)) +
                  "\" is not simulated yet (available: \"stage\", \"full\")");
  }
  const auto seed = s.integer("seed").value_or(0);
  if (seed < 0) s.fail_at(s.node("seed")->source(), "simulation.seed must be >= 0");
  sc.seed = static_cast<std::uint64_t>(seed);
  // Asynchronous schedules have no per-step flush: measure their steady state by default.
  sc.steps = static_cast<int>(s.bounded(
      "steps", parallel::flushes(L.schedule) ? 1 : parallel::kSteadyStateSteps, 1, 64));
  if (const toml::node* st = s.node("stragglers")) {
    load_stragglers(file, *st, sc);
  }
  sc.sm_contention = s.boolean("sm_contention").value_or(true);

  // [cost]
  Section co = sub(file, root, "cost", "cost", false);
  co.check_unknown(scenario_keys("cost"));
  if (auto usd = co.real("gpu_hour_usd", 0, 1e6)) {
    // The report prices the whole run (days x GPUs x price): without the run's tokens there
    // is no run to price, and the key would do nothing.
    if (!sc.training.tokens) {
      co.fail_at(co.node("gpu_hour_usd")->source(),
                 "cost.gpu_hour_usd needs training.tokens (the run's cost is its days x GPUs x "
                 "price)");
    }
    sc.gpu_hour_usd = *usd;
  }

  // Semantic checks, pointed at the key to blame.
  try {
    sc.model.validate();
    if (check_layout) {
      L.validate(sc.model, sc.gpus, tr.global_batch, tr.micro_batch, sc.steps, check_schedule);
      // LoRA's limits include the schedule, which compare-schedules varies.
      if (check_schedule) workload::validate_training(sc);
    }
    // A job need not fill its last node (hw::whole_node_gpus); a torus must be whole.
    if (const std::string why = hw::torus_unfilled(sc.topology, sc.gpus); !why.empty()) {
      throw InputError("cluster.gpus", "cluster.gpus (" + std::to_string(sc.gpus) + ") " + why);
    }
  } catch (const InputError& e) {
    const toml::node* n = root.at_path(e.key()).node();
    const toml::node* hf = root.at_path("model.hf_config").node();
    if (n == nullptr && hf != nullptr && e.key().rfind("model.", 0) == 0) {
      // The model's shape came from the Hugging Face config: point at model.hf_config.
      const toml::source_region r = hf->source();
      throw ConfigError(file, std::max<int>(1, static_cast<int>(r.begin.line)),
                        std::max<int>(1, static_cast<int>(r.begin.column)),
                        std::string(e.what()) + " (the shape comes from model.hf_config)");
    }
    if (n == nullptr) {
      // A defaulted key: point at its section, or at the file start.
      const auto dot = e.key().find('.');
      n = dot == std::string::npos ? nullptr : root.get(e.key().substr(0, dot));
    }
    const toml::source_region r = n != nullptr ? n->source() : root.source();
    throw ConfigError(file, std::max<int>(1, static_cast<int>(r.begin.line)),
                      std::max<int>(1, static_cast<int>(r.begin.column)), e.what());
  }
  return sc;
}

}  // namespace trainsim::config
