// Models from Hugging Face `config.json` files (Llama, Mistral, Mixtral, Qwen2, Qwen3,
// Qwen3-MoE and DeepSeek-V3 families), read with nlohmann-json.
#pragma once

#include <filesystem>

#include "model/transformer.hpp"

namespace trainsim::config {

/// Reads a Hugging Face config.json into a ModelSpec. seq_len is left 0: the training
/// sequence length is the scenario's (max_position_embeddings is only the longest allowed).
///
/// Mapping (transformers' configuration_<family>.py field names): num_hidden_layers ->
/// layers, hidden_size -> hidden, num_attention_heads -> heads, num_key_value_heads ->
/// kv_heads (default: heads), intermediate_size -> ffn_hidden, vocab_size, head_dim,
/// tie_word_embeddings; hidden_act "silu" -> SwiGLU MLP; RMSNorm. MoE: num_local_experts
/// (Mixtral) / num_experts (Qwen3-MoE) / n_routed_experts (DeepSeek) -> experts,
/// num_experts_per_tok -> top_k, moe_intermediate_size (Mixtral: intermediate_size) ->
/// expert_ffn_hidden, n_shared_experts x moe_intermediate_size -> shared experts (Qwen2-MoE's
/// shared_expert_intermediate_size belongs to no supported family); DeepSeek's
/// first_k_dense_replace and
/// moe_layer_freq (layer i is MoE iff i >= first_k_dense_replace and i % moe_layer_freq == 0,
/// modeling_deepseek.py) -> first_dense_layers = first_k_dense_replace rounded up to a multiple
/// of the frequency, layer_freq = moe_layer_freq; Qwen's decoder_sparse_step must be 1. MLA:
/// q_lora_rank, kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim. DeepSeek's
/// num_nextn_predict_layers -> mtp_layers (multi-token prediction modules).
/// The shape is checked (ModelSpec::validate) here: a failure names this file's field.
/// Fields that do not change the cost of a training step (rope settings, token ids,
/// initialisation, router loss coefficients, inference-only settings) are accepted. Fields
/// it cannot honour are errors: any unknown field, a model_type outside the families above,
/// hidden_act other than "silu", attention or MLP biases, sliding-window attention,
/// mlp_only_layers, quantization, a
/// DeepSeek config in which no layer is an MoE layer.
/// Throws ConfigError("file:line:col: message", the line of the offending field).
model::ModelSpec load_hf_config(const std::filesystem::path& file);

}  // namespace trainsim::config
