#include "config/hf_config.hpp"

#include <algorithm>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <vector>

#include "config/scenario.hpp"
#include "core/file_check.hpp"

namespace trainsim::config {

namespace {

using nlohmann::json;

/// Fields accepted without effect on the cost of a training step.
const std::set<std::string>& no_cost_fields() {
  static const std::set<std::string> f = {
      "architectures", "auto_map", "bos_token_id", "eos_token_id", "pad_token_id",
      "initializer_range", "max_position_embeddings", "rope_theta", "rope_scaling",
      "rms_norm_eps", "torch_dtype", "dtype", "transformers_version", "use_cache",
      "attention_dropout", "output_router_logits", "router_aux_loss_coef", "router_jitter_noise",
      "norm_topk_prob", "routed_scaling_factor", "scoring_func", "topk_method", "n_group",
      "topk_group", "aux_loss_alpha", "seq_aux", "ep_size", "max_window_layers",
      "use_sliding_window", "sliding_window", "attention_bias", "mlp_bias", "pretraining_tp",
      "mlp_only_layers", "rope_interleave", "model_type",
      "hidden_act", "tie_word_embeddings", "head_dim", "_name_or_path", "qkv_bias"};
  return f;
}

const std::set<std::string>& mapped_fields() {
  static const std::set<std::string> f = {
      "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
      "intermediate_size", "vocab_size", "num_local_experts", "num_experts", "n_routed_experts",
      "num_experts_per_tok", "moe_intermediate_size", "n_shared_experts",
      "shared_expert_intermediate_size", "first_k_dense_replace", "moe_layer_freq",
      "decoder_sparse_step", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
      "qk_rope_head_dim", "v_head_dim", "num_nextn_predict_layers"};
  return f;
}

class Reader {
 public:
  Reader(std::string file, std::string text, json j)
      : file_(std::move(file)), text_(std::move(text)), j_(std::move(j)) {}

  [[noreturn]] void fail(const std::string& key, const std::string& msg) const {
    int line = 1, col = 1;
    const auto pos = key.empty() ? std::string::npos : text_.find("\"" + key + "\"");
    if (pos != std::string::npos) locate(pos, line, col);
    throw ConfigError(file_, line, col, msg);
  }
  void locate(std::size_t pos, int& line, int& col) const {
    line = 1;
    col = 1;
    for (std::size_t i = 0; i < pos && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
  }
  bool has(const std::string& k) const { return j_.contains(k) && !j_.at(k).is_null(); }
  std::int64_t integer(const std::string& k, std::int64_t lo, std::int64_t hi) const {
    const json& v = j_.at(k);
    if (!v.is_number_integer()) fail(k, k + " must be an integer");
    // An unsigned value above INT64_MAX would wrap to a negative int64_t.
    if (v.is_number_unsigned() &&
        v.get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      fail(k, k + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "] (got " +
                  std::to_string(v.get<std::uint64_t>()) + ")");
    }
    const auto x = v.get<std::int64_t>();
    if (x < lo || x > hi) {
      fail(k, k + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "] (got " +
                  std::to_string(x) + ")");
    }
    return x;
  }
  std::int64_t integer_req(const std::string& k, std::int64_t lo, std::int64_t hi) const {
    if (!has(k)) fail("", "missing field \"" + k + "\"");
    return integer(k, lo, hi);
  }
  std::int64_t integer_or(const std::string& k, std::int64_t def, std::int64_t lo,
                          std::int64_t hi) const {
    return has(k) ? integer(k, lo, hi) : def;
  }
  bool boolean_or(const std::string& k, bool def) const {
    if (!has(k)) return def;
    if (!j_.at(k).is_boolean()) fail(k, k + " must be true or false");
    return j_.at(k).get<bool>();
  }
  std::string string_or(const std::string& k, const std::string& def) const {
    if (!has(k)) return def;
    if (!j_.at(k).is_string()) fail(k, k + " must be a string");
    return j_.at(k).get<std::string>();
  }
  const json& at(const std::string& k) const { return j_.at(k); }
  const json& root() const { return j_; }

 private:
  std::string file_, text_;
  json j_;
};

}  // namespace

model::ModelSpec load_hf_config(const std::filesystem::path& path) {
  const std::string file = path.string();
  if (const std::string why = unreadable_file_reason(path); !why.empty()) {
    throw ConfigError(file, 1, 1, "cannot open Hugging Face config (" + why + ")");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(file, 1, 1, "cannot open Hugging Face config (not readable)");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  json j;
  // A field given twice would silently keep its last value (JSON leaves duplicates to the
  // parser; nlohmann-json keeps the last): refused, like TOML's "cannot redefine".
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  const json::parser_callback_t track_keys = [&](int /*depth*/, json::parse_event_t event,
                                                 json& parsed) {
    if (event == json::parse_event_t::object_start) open_objects.emplace_back();
    if (event == json::parse_event_t::object_end && !open_objects.empty()) open_objects.pop_back();
    if (event == json::parse_event_t::key && !open_objects.empty() && duplicate.empty() &&
        !open_objects.back().insert(parsed.get<std::string>()).second) {
      duplicate = parsed.get<std::string>();
    }
    return true;
  };
  try {
    j = json::parse(text, track_keys);
  } catch (const json::parse_error& e) {
    Reader r(file, text, json::object());
    int line = 1, col = 1;
    r.locate(e.byte > 0 ? e.byte - 1 : 0, line, col);
    throw ConfigError(file, line, col, std::string("JSON syntax error: ") + e.what());
  }
  if (!duplicate.empty()) {
    const std::string quoted = "\"" + duplicate + "\"";
    const auto first = text.find(quoted);
    const auto second = first == std::string::npos ? first : text.find(quoted, first + 1);
    int line = 1, col = 1;
    Reader(file, text, json::object()).locate(second == std::string::npos ? 0 : second, line, col);
    throw ConfigError(file, line, col, "field \"" + duplicate + "\" is given twice");
  }
  if (!j.is_object()) throw ConfigError(file, 1, 1, "a Hugging Face config must be a JSON object");
  const Reader r(file, text, j);
  for (const auto& [k, v] : j.items()) {
    if (no_cost_fields().count(k) != 0 || mapped_fields().count(k) != 0) continue;
    r.fail(k, "field \"" + k + "\" is not understood: trainsim cannot honour it (it may change "
              "the model's cost), so it refuses the config rather than ignoring it");
  }
  const std::string type = r.string_or("model_type", "");
  static const std::set<std::string> families = {"llama", "mistral", "mixtral", "qwen2",
                                                 "qwen3", "qwen3_moe", "deepseek_v3"};
  if (families.count(type) == 0) {
    r.fail("model_type", "model_type \"" + type + "\" is not supported (supported: deepseek_v3, "
                         "llama, mistral, mixtral, qwen2, qwen3, qwen3_moe)");
  }
  // Values that change the cost and are not modelled.
  if (r.string_or("hidden_act", "silu") != "silu") {
    r.fail("hidden_act", "hidden_act \"" + r.string_or("hidden_act", "") +
                             "\" is not supported (only \"silu\": gated SwiGLU MLP)");
  }
  // Biases: model.bias puts them on all four dense linear layers (QKV, projection, MLP in
  // and out) at once, which is attention_bias and mlp_bias together; one without the other
  // (or Qwen's qkv_bias alone) is not expressible.
  const bool attention_bias = r.boolean_or("attention_bias", false);
  const bool mlp_bias = r.boolean_or("mlp_bias", false);
  if (attention_bias != mlp_bias || r.boolean_or("qkv_bias", false)) {
    r.fail(r.boolean_or("qkv_bias", false) ? "qkv_bias"
           : attention_bias                ? "attention_bias"
                                           : "mlp_bias",
           "biases on only some linear layers are not modelled (model.bias covers QKV, "
           "projection and MLP together: set attention_bias and mlp_bias alike)");
  }
  if (r.boolean_or("use_sliding_window", false) ||
      (type != "qwen2" && type != "qwen3" && type != "qwen3_moe" && r.has("sliding_window"))) {
    r.fail(r.has("use_sliding_window") ? "use_sliding_window" : "sliding_window",
           "sliding-window attention is not modelled (full causal attention only)");
  }
  if (r.has("mlp_only_layers") && !(r.at("mlp_only_layers").is_array() &&
                                    r.at("mlp_only_layers").empty())) {
    r.fail("mlp_only_layers", "mlp_only_layers (dense layers at given indices) is not "
                              "supported; only an empty list");
  }
  if (r.integer_or("pretraining_tp", 1, 1, 1) != 1) r.fail("pretraining_tp", "pretraining_tp must be 1");

  model::ModelSpec m;
  m.name = path.stem().string();
  m.layers = static_cast<int>(r.integer_req("num_hidden_layers", 1, 100000));
  m.hidden = static_cast<int>(r.integer_req("hidden_size", 1, 10000000));
  m.heads = static_cast<int>(r.integer_req("num_attention_heads", 1, 1000000));
  m.kv_heads = static_cast<int>(r.integer_or("num_key_value_heads", m.heads, 1, m.heads));
  m.ffn_hidden = static_cast<int>(r.integer_req("intermediate_size", 1, 100000000));
  m.vocab = r.integer_req("vocab_size", 1, 1000000000);
  m.activation = model::Activation::SwiGLU;
  m.norm = model::Norm::RMSNorm;
  m.tied_embeddings = r.boolean_or("tie_word_embeddings", false);
  m.bias = attention_bias && mlp_bias;
  if (r.has("head_dim")) m.head_size = static_cast<int>(r.integer("head_dim", 1, 100000));
  if (type == "mixtral") {
    m.moe.experts = static_cast<int>(r.integer_req("num_local_experts", 1, 1000000));
    m.moe.expert_ffn_hidden = m.ffn_hidden;
  } else if (type == "qwen3_moe") {
    m.moe.experts = static_cast<int>(r.integer_req("num_experts", 1, 1000000));
    m.moe.expert_ffn_hidden = static_cast<int>(r.integer_req("moe_intermediate_size", 1, 100000000));
    m.moe.layer_freq = static_cast<int>(r.integer_or("decoder_sparse_step", 1, 1, 100000));
    // Qwen's layer i is sparse when (i + 1) % step == 0; with step 1 that is every layer.
    if (m.moe.layer_freq != 1) {
      r.fail("decoder_sparse_step", "decoder_sparse_step != 1 is not supported");
    }
  } else if (type == "deepseek_v3") {
    m.moe.experts = static_cast<int>(r.integer_req("n_routed_experts", 1, 1000000));
    m.moe.expert_ffn_hidden = static_cast<int>(r.integer_req("moe_intermediate_size", 1, 100000000));
    m.moe.shared_experts = static_cast<int>(r.integer_or("n_shared_experts", 0, 0, 1000));
    // DeepSeek's modeling code makes layer i an MoE layer iff i >= first_k_dense_replace and
    // i % moe_layer_freq == 0: the frequency counts from layer 0, not from the first sparse
    // layer as model.moe.moe_layer_freq does. Both name the same layers once the dense prefix
    // is rounded up to a multiple of the frequency.
    const auto first_k = r.integer_or("first_k_dense_replace", 0, 0, m.layers - 1);
    m.moe.layer_freq = static_cast<int>(r.integer_or("moe_layer_freq", 1, 1, 100000));
    const auto first_moe = (first_k + m.moe.layer_freq - 1) / m.moe.layer_freq * m.moe.layer_freq;
    if (first_moe >= m.layers) {
      r.fail("moe_layer_freq", "no layer is an MoE layer: the first layer i >= "
                               "first_k_dense_replace with i % moe_layer_freq == 0 is " +
                                   std::to_string(first_moe) + ", beyond num_hidden_layers (" +
                                   std::to_string(m.layers) + ")");
    }
    m.moe.first_dense_layers = static_cast<int>(first_moe);
    m.mla.q_lora_rank = static_cast<int>(r.integer_or("q_lora_rank", 0, 0, 1000000));
    m.mla.kv_lora_rank = static_cast<int>(r.integer_req("kv_lora_rank", 1, 1000000));
    m.mla.qk_nope_head_dim = static_cast<int>(r.integer_req("qk_nope_head_dim", 1, 100000));
    m.mla.qk_rope_head_dim = static_cast<int>(r.integer_req("qk_rope_head_dim", 1, 100000));
    m.mla.v_head_dim = static_cast<int>(r.integer_req("v_head_dim", 1, 100000));
    m.kv_heads = m.heads;
    // Multi-token prediction modules (DeepSeek-V3 report §2.2; its config has 1).
    m.mtp_layers = static_cast<int>(r.integer_or("num_nextn_predict_layers", 0, 0, 1000));
  }
  if (m.moe.enabled()) {
    m.moe.top_k = static_cast<int>(r.integer_req("num_experts_per_tok", 1, m.moe.experts));
  }
  // Settings without a cost that belong to one family's router or attention are refused in
  // another family (a Llama config with DeepSeek's group routing is not a Llama), and each is
  // read with its type: a string where a number or true/false belongs is a broken config.
  {
    struct NoCost {
      const char* key;
      std::set<std::string> families;  // empty: any family
      enum { Number, Bool, ObjectOrNull, String } kind;
    };
    static const std::set<std::string> moe = {"mixtral", "qwen3_moe", "deepseek_v3"};
    static const std::vector<NoCost> typed = {
        {"output_router_logits", moe, NoCost::Bool},
        {"router_aux_loss_coef", {"mixtral", "qwen3_moe"}, NoCost::Number},
        {"router_jitter_noise", {"mixtral"}, NoCost::Number},
        {"norm_topk_prob", {"qwen3_moe", "deepseek_v3"}, NoCost::Bool},
        {"routed_scaling_factor", {"deepseek_v3"}, NoCost::Number},
        {"scoring_func", {"deepseek_v3"}, NoCost::String},
        {"topk_method", {"deepseek_v3"}, NoCost::String},
        {"n_group", {"deepseek_v3"}, NoCost::Number},
        {"topk_group", {"deepseek_v3"}, NoCost::Number},
        {"aux_loss_alpha", {"deepseek_v3"}, NoCost::Number},
        {"seq_aux", {"deepseek_v3"}, NoCost::Bool},
        {"ep_size", {"deepseek_v3"}, NoCost::Number},
        {"rope_interleave", {"deepseek_v3"}, NoCost::Bool},
        {"max_window_layers", {"qwen2", "qwen3", "qwen3_moe"}, NoCost::Number},
        {"rope_scaling", {}, NoCost::ObjectOrNull},
        {"rope_theta", {}, NoCost::Number},
        {"rms_norm_eps", {}, NoCost::Number},
        {"initializer_range", {}, NoCost::Number},
        {"max_position_embeddings", {}, NoCost::Number},
        {"attention_dropout", {}, NoCost::Number},
        {"use_cache", {}, NoCost::Bool},
        {"tie_word_embeddings", {}, NoCost::Bool}};
    for (const auto& f : typed) {
      const auto it = j.find(f.key);
      if (it == j.end()) continue;
      if (!f.families.empty() && f.families.count(type) == 0) {
        r.fail(f.key, std::string("field \"") + f.key + "\" does not belong to model_type \"" +
                          type + "\"");
      }
      const json& v = *it;
      const bool ok = f.kind == NoCost::Number         ? v.is_number()
                      : f.kind == NoCost::Bool         ? v.is_boolean()
                      : f.kind == NoCost::String       ? v.is_string()
                                                       : (v.is_object() || v.is_null());
      if (!ok) {
        r.fail(f.key, std::string("field \"") + f.key + "\" must be " +
                          (f.kind == NoCost::Number   ? "a number"
                           : f.kind == NoCost::Bool   ? "true or false"
                           : f.kind == NoCost::String ? "a string"
                                                      : "an object or null"));
      }
    }
    // DeepSeek's group-limited routing picks topk_group of n_group expert groups.
    if (j.contains("n_group") && j.contains("topk_group") &&
        !(j["topk_group"].get<double>() >= 1 &&
          j["topk_group"].get<double>() <= j["n_group"].get<double>())) {
      r.fail("topk_group", "topk_group must be in [1, n_group]");
    }
  }
  // Shape fields this family does not read (another family's) are refused, not ignored.
  static const std::map<std::string, std::set<std::string>> family_fields = {
      {"mixtral", {"num_local_experts", "num_experts_per_tok"}},
      {"qwen3_moe",
       {"num_experts", "moe_intermediate_size", "decoder_sparse_step", "num_experts_per_tok"}},
      {"deepseek_v3",
       {"n_routed_experts", "moe_intermediate_size", "n_shared_experts", "first_k_dense_replace",
        "moe_layer_freq", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
        "v_head_dim", "num_experts_per_tok", "num_nextn_predict_layers"}}};
  static const std::set<std::string> common = {"num_hidden_layers", "hidden_size",
                                               "num_attention_heads", "num_key_value_heads",
                                               "intermediate_size", "vocab_size"};
  const auto own = family_fields.find(type);
  for (const auto& [k, v] : j.items()) {
    if (mapped_fields().count(k) == 0 || common.count(k) != 0 || !r.has(k)) continue;
    if (own == family_fields.end() || own->second.count(k) == 0) {
      std::string msg = "field \"";
      msg += k;
      msg += "\" does not belong to model_type \"";
      msg += type;
      msg += "\"";
      r.fail(k, msg);
    }
  }
  // The shape's own consistency (heads divide hidden, kv heads divide heads, ...), checked here
  // so that a failure points at this file's field rather than at the scenario's hf_config line.
  try {
    model::ModelSpec shape = m;
    shape.seq_len = 1;  // set by the scenario, not by the config
    shape.validate();
  } catch (const InputError& e) {
    static const std::map<std::string, std::string> field = {
        {"model.layers", "num_hidden_layers"},
        {"model.hidden", "hidden_size"},
        {"model.heads", "num_attention_heads"},
        {"model.kv_heads", "num_key_value_heads"},
        {"model.ffn_hidden", "intermediate_size"},
        {"model.vocab", "vocab_size"},
        {"model.moe.top_k", "num_experts_per_tok"},
        {"model.moe.expert_ffn_hidden", "moe_intermediate_size"},
        {"model.moe.first_dense_layers", "first_k_dense_replace"},
        {"model.mla.kv_lora_rank", "kv_lora_rank"},
        {"model.mla.qk_nope_head_dim", "qk_nope_head_dim"},
        {"model.mla.qk_rope_head_dim", "qk_rope_head_dim"},
        {"model.mla.v_head_dim", "v_head_dim"}};
    const auto f = field.find(e.key());
    const std::string k = f == field.end() ? std::string() : f->second;
    r.fail(k, (k.empty() ? std::string() : k + ": ") + e.what());
  }
  return m;
}

}  // namespace trainsim::config
