// Helpers shared by the tests: temporary scenario files and running the CLI.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <sys/wait.h>
#include <unistd.h>

#include "hw/topology.hpp"

namespace trainsim::test {

inline std::filesystem::path source_dir() { return TRAINSIM_SOURCE_DIR; }

/// DGX A100 nodes (8 x A100, NVLink 3 at 300 GB/s, 8 x HDR 200 Gb/s NICs), SU of 20 nodes.
inline hw::TopologySpec dgx_a100_spec() {
  hw::TopologySpec s;
  s.name = "dgx_a100_test";
  s.gpu = "a100_sxm4_80gb";
  s.gpus_per_node = 8;
  s.nvlink_bw = 300e9;
  s.nvlink_latency = 0.7e-6;
  s.nics_per_node = 8;
  s.nic_bw = 25e9;
  s.nic_efficiency = 0.96;
  s.link_latency = 0.6e-6;
  s.nodes_per_su = 20;
  s.spines = 0;
  s.oversubscription = 1.0;
  return s;
}

/// The per-process root of test files; removed when the test process exits.
struct TempRoot {
  std::filesystem::path path = std::filesystem::temp_directory_path() /
                               ("trainsim-test-" + std::to_string(::getpid()));
  ~TempRoot() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};
inline TempRoot temp_root;

/// A fresh directory for one test's files.
inline std::filesystem::path temp_dir(const std::string& name) {
  auto dir = temp_root.path / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

inline std::filesystem::path write(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

inline std::string read(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// A small valid scenario: 4-layer GPT on 16 A100 (TP 2 + SP, PP 2, DP 4).
inline std::string small_scenario() {
  return "version = 1\n"
         "name = \"small\"\n"
         "[model]\n"
         "layers = 4\n"
         "hidden = 1024\n"
         "heads = 16\n"
         "vocab = 32000\n"
         "seq_len = 1024\n"
         "[training]\n"
         "global_batch = 16\n"
         "micro_batch = 2\n"
         "[parallel]\n"
         "tp = 2\n"
         "pp = 2\n"
         "dp = 4\n"
         "sequence_parallel = true\n"
         "[cluster]\n"
         "topology = \"" + (source_dir() / "topologies/dgx-a100.toml").string() + "\"\n"
         "gpus = 16\n";
}

/// A small DeepSeek-V3-family Hugging Face config: MLA (q latent 128, kv latent 64, heads of
/// 32 + 16 rope / 32 v), 4 layers (the first dense), 8 routed experts top-2 plus 1 shared.
inline std::string tiny_deepseek_config() {
  return R"({
  "model_type": "deepseek_v3", "hidden_size": 512, "intermediate_size": 1024,
  "moe_intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
  "num_key_value_heads": 8, "n_shared_experts": 1, "n_routed_experts": 8,
  "num_experts_per_tok": 2, "first_k_dense_replace": 1, "moe_layer_freq": 1,
  "q_lora_rank": 128, "kv_lora_rank": 64, "qk_nope_head_dim": 32, "qk_rope_head_dim": 16,
  "v_head_dim": 32, "vocab_size": 1000, "hidden_act": "silu", "tie_word_embeddings": false
})";
}

/// Replaces the first occurrence of `from` in `text` by `to`.
inline std::string replace(std::string text, const std::string& from, const std::string& to) {
  const auto pos = text.find(from);
  if (pos != std::string::npos) text.replace(pos, from.size(), to);
  return text;
}

/// Exit code and captured output of a shell command.
struct CmdResult {
  int code = -1;
  std::string out, err;
};

/// Runs `cmd_line` through the shell with stdout and stderr captured in a temporary folder.
inline CmdResult run_command(const std::string& cmd_line, const std::string& tag = "cmd") {
  const auto dir = temp_dir(tag);
  const std::string cmd =
      cmd_line + " > " + (dir / "out").string() + " 2> " + (dir / "err").string();
  const int status = std::system(cmd.c_str());
  CmdResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read(dir / "out");
  r.err = read(dir / "err");
  return r;
}

#ifdef TRAINSIM_EXE
/// Runs the trainsim executable with `args`.
inline CmdResult run_trainsim(const std::string& args, const std::string& tag = "cli-run") {
  return run_command(std::string(TRAINSIM_EXE) + " " + args, tag);
}
#endif

}  // namespace trainsim::test
