// trainsim validate: rows to scenarios, per-source FLOP formulas, statistics, skipped rows.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <cmath>
#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include "config/hf_config.hpp"
#include "config/scenario.hpp"
#include "core/error.hpp"
#include "test_util.hpp"
#include "validate/validate.hpp"

using namespace trainsim;

TEST(Validate, KendallTau) {
  EXPECT_DOUBLE_EQ(*validate::kendall_tau({1, 2, 3, 4}, {10, 20, 30, 40}), 1.0);
  EXPECT_DOUBLE_EQ(*validate::kendall_tau({1, 2, 3, 4}, {4, 3, 2, 1}), -1.0);
  // One discordant pair of six: (5 - 1) / 6.
  EXPECT_NEAR(*validate::kendall_tau({1, 2, 3, 4}, {1, 2, 4, 3}), 4.0 / 6.0, 1e-12);
  // tau-b is 0/0 when a series has no two distinct values: undefined, not 0.
  EXPECT_FALSE(validate::kendall_tau({1, 2, 3}, {5, 5, 5}).has_value());
  EXPECT_FALSE(validate::kendall_tau({7, 7}, {1, 2}).has_value());
}

namespace {
/// A dense model shape: layers, hidden, heads, K/V heads, MLP width, vocabulary, sequence.
model::ModelSpec shape(int layers, int hidden, int heads, int kv_heads, int ffn,
                       std::int64_t vocab, int seq) {
  model::ModelSpec m;
  m.layers = layers;
  m.hidden = hidden;
  m.heads = heads;
  m.kv_heads = kv_heads;
  m.ffn_hidden = ffn;
  m.vocab = vocab;
  m.seq_len = seq;
  return m;
}
}  // namespace

TEST(Validate, MegatronCoreModelFlopsReduceToTheClassicFormula) {
  model::ModelSpec m = shape(24, 2048, 16, 16, 8192, 51200, 2048);
  const double B = 64, s = 2048, l = 24, h = 2048, V = 51200;
  const double classic = 72 * B * s * l * h * h * (1 + s / (6 * h) + V / (12 * l * h));
  using validate::AttentionFlops;
  // Counted in full (Megatron-LM / NeMo 2024): Narayanan et al.'s 72-form, mask or not.
  EXPECT_NEAR(validate::megatron_core_model_flops(m, 64, AttentionFlops::Full) / classic, 1.0,
              1e-12);
  // Halved for the causal mask: 6 B s^2 h l fewer FLOPs; no change for a non-causal model.
  EXPECT_NEAR(validate::megatron_core_model_flops(m, 64, AttentionFlops::CausalHalf),
              classic - 6 * B * s * s * h * l, 1.0);
  m.causal = false;
  EXPECT_NEAR(validate::megatron_core_model_flops(m, 64, AttentionFlops::CausalHalf) / classic,
              1.0, 1e-12);
}

// Oracle from the source itself: NeMo 24.07 publishes both TFLOP/s and tokens/s per GPU for
// Llama 2 70B (768 TFLOP/s, 1728 tokens/s; published_runs.toml nemo2407_llama2_70b_64gpu). Their
// ratio, 4.44e11 FLOPs per token, is the attention-in-full count (the causal half gives 4.27e11,
// 4% less), which is why validate compares these rows with AttentionFlops::Full.
TEST(Validate, NemoPublishedTokensPerSecondFixTheFlopCount) {
  model::ModelSpec m = shape(80, 8192, 64, 8, 28672, 32000, 4096);
  m.activation = model::Activation::SwiGLU;
  const double tokens = 4096;  // one sequence
  const double per_token_full =
      validate::megatron_core_model_flops(m, 1, validate::AttentionFlops::Full) / tokens;
  const double per_token_half =
      validate::megatron_core_model_flops(m, 1, validate::AttentionFlops::CausalHalf) / tokens;
  EXPECT_NEAR(1728 * per_token_full / 1e12, 768.0, 768.0 * 0.002);
  EXPECT_GT(std::abs(1728 * per_token_half / 1e12 - 768.0), 768.0 * 0.03);
}

// MLA rows are counted with MLA's projections and core, not as multi-head attention of
// hidden/heads-wide heads (that undercounted DeepSeek-V3 by 12%). Oracle: the multiply-adds
// per token written out from the DeepSeek-V3 config's dimensions.
TEST(Validate, MlaModelFlopsCountTheLatentProjections) {
  const auto m = config::load_hf_config(test::source_dir() / "scenarios/hf/deepseek-v3.json");
  model::ModelSpec md = m;
  md.seq_len = 4096;
  const double q = 7168.0 * 1536 + 1536.0 * 128 * (128 + 64);
  const double kv = 7168.0 * (512 + 64) + 512.0 * 128 * (128 + 128);
  const double o = 128.0 * 128 * 7168;
  const double core = 128.0 * (128 + 64 + 128) * 4096;  // QK^T and AV, in full
  const double mlp = 3.0 * 7168 * 18432;  // dense layers; MoE: 8 routed + 1 shared of 2048
  const double macs = 61 * (q + kv + o + core) + 61 * mlp + 7168.0 * 129280;
  md.mtp_layers = 0;
  const double per_token =
      validate::megatron_core_model_flops(md, 1, validate::AttentionFlops::Full) / 4096;
  EXPECT_NEAR(per_token / (6 * macs), 1.0, 1e-4);
  // The config's MTP module (Megatron-Core core_r0.13 num_floating_point_operations): one
  // more MoE layer, eh_proj and three norms (2h^2 + 3h), and one more logit GEMM.
  // Held on the difference, to 5e-6 of it (the norms' 3h alone are 1.3e-5 of it; the rounded
  // MLA width moves it by 2e-6).
  md.mtp_layers = 1;
  const double moe_mlp = 3.0 * 7168 * (8 * 2048 + 2048);
  const double mtp = (q + kv + o + core) + moe_mlp + 3 * 7168.0 + 2 * 7168.0 * 7168 + 7168.0 * 129280;
  const double with_mtp =
      validate::megatron_core_model_flops(md, 1, validate::AttentionFlops::Full) / 4096;
  EXPECT_NEAR((with_mtp - per_token) / (6 * mtp), 1.0, 5e-6);
}

// A missing runs file, a folder given as the runs file, and a topology folder that does not
// exist are bad input at once (they were "0:0: TOML syntax error: File could not be opened",
// "no [[run]] rows in the file", and every row skipped with exit 0).
TEST(Validate, MissingFilesAreBadInput) {
  const std::filesystem::path topo = test::source_dir() / "topologies";
  const auto dir = test::temp_dir("validate-missing");
  try {
    (void)validate::run_validation(dir / "none.toml", topo, "");
    ADD_FAILURE() << "accepted a missing runs file";
  } catch (const config::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("none.toml:1:1: cannot open file"), std::string::npos)
        << e.what();
  }
  try {
    (void)validate::run_validation(dir, topo, "");
    ADD_FAILURE() << "accepted a directory";
  } catch (const config::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("is a directory"), std::string::npos) << e.what();
  }
  const auto runs = test::write(dir / "runs.toml", "[[run]]\nid = \"a\"\ngroup = \"g\"\n");
  try {
    (void)validate::run_validation(runs, dir / "no-such-folder", "");
    ADD_FAILURE() << "accepted a missing topology folder";
  } catch (const InputError& e) {
    EXPECT_EQ(e.key(), "--topologies");
  }
}

TEST(Validate, RowsAreSimulatedScoredOrSkippedWithAReason) {
  const auto dir = test::temp_dir("validate");
  const auto runs = test::write(dir / "runs.toml", R"toml([[group]]
id = "g"
title = "test group"

[[run]]
id = "ok_time"
group = "g"
model = "GPT small"
num_layers = 4
hidden_size = 1024
num_heads = 16
seq_len = 1024
vocab_size = 32000
global_batch_size = 16
micro_batch_size = 2
tp = 2
pp = 2
dp = 4
gpu = "NVIDIA A100-SXM4-80GB"
num_gpus = 16
iteration_time_s = 0.01

[[run]]
id = "ok_tflops"
group = "g"
model = "GPT small"
num_layers = 4
hidden_size = 1024
num_heads = 16
seq_len = 1024
vocab_size = 32000
global_batch_size = 32
tp = 2
pp = 2
dp = 4
gpu = "NVIDIA A100-SXM4-80GB"
tflops_kind = "paper Eq.3 (includes recompute forward)"
tflops_per_gpu = 100.0

[[run]]
id = "lora_row"
group = "g"
model = "x"
task = "LoRA"
num_layers = 4
hidden_size = 1024
num_heads = 16
seq_len = 1024
global_batch_size = 16
tp = 1
pp = 1
dp = 8
cp = 2
gpu = "NVIDIA H100-SXM5-80GB"
tflops_per_gpu = 500.0

[[run]]
id = "tpu_row"
group = "g"
model = "x"
num_layers = 4
hidden_size = 1024
num_heads = 16
seq_len = 1024
global_batch_size = 16
tp = 1
pp = 1
dp = 8
gpu = "TPU"
iteration_time_s = 1.0
)toml");
  const auto report = validate::run_validation(runs, test::source_dir() / "topologies", "");
  ASSERT_EQ(report.rows.size(), 4U);
  EXPECT_TRUE(report.rows[0].ok);
  EXPECT_EQ(report.rows[0].metric, "iteration_time_s");
  EXPECT_NEAR(report.rows[0].error, report.rows[0].predicted / 0.01 - 1, 1e-12);
  EXPECT_TRUE(report.rows[1].ok);
  EXPECT_EQ(report.rows[1].formula, "Narayanan et al. 2021 Eq. 3");
  EXPECT_NE(report.rows[1].assumptions.find("micro batch 1"), std::string::npos);
  EXPECT_FALSE(report.rows[2].ok);
  EXPECT_NE(report.rows[2].reason.find("LoRA"), std::string::npos);
  EXPECT_FALSE(report.rows[3].ok);
  EXPECT_NE(report.rows[3].reason.find("TPU"), std::string::npos);
  ASSERT_EQ(report.groups.size(), 1U);
  EXPECT_EQ(report.groups[0].rows_ok, 2);
  EXPECT_EQ(report.groups[0].rows_skipped, 2);
  EXPECT_NEAR(report.groups[0].mape,
              (std::abs(report.rows[0].error) + std::abs(report.rows[1].error)) / 2, 1e-12);
  const auto j = nlohmann::json::parse(validate::report_json(report));
  ASSERT_EQ(j["rows"].size(), 4U);
  for (const char* k : {"id", "group", "metric", "published", "predicted", "error", "status"}) {
    EXPECT_TRUE(j["rows"][0].contains(k)) << k;
  }
  EXPECT_EQ(j["rows"][2]["status"], "skipped");
  EXPECT_TRUE(j["rows"][2].contains("reason"));
  for (const char* k : {"group", "rows_ok", "rows_skipped", "mape", "median_ape", "max_ape",
                        "kendall_tau"}) {
    EXPECT_TRUE(j["groups"][0].contains(k)) << k;
  }
  const auto md = validate::report_markdown(report, "runs.toml --markdown v.md");
  EXPECT_NE(md.find("| g | 2 | 2 |"), std::string::npos);
}

namespace {
/// A small valid GPT row on 8 A100 with the given id, group and extra lines.
std::string small_row(const std::string& id, const std::string& group, const std::string& extra) {
  return "[[run]]\nid = \"" + id + "\"\ngroup = \"" + group + "\"\nmodel = \"GPT small\"\n" +
         "num_layers = 2\nhidden_size = 512\nnum_heads = 8\nseq_len = 512\nvocab_size = 1000\n"
         "global_batch_size = 8\ntp = 1\npp = 1\ndp = 8\ngpu = \"NVIDIA A100-SXM4-80GB\"\n" +
         extra + "\n";
}

std::string validation_error(const std::filesystem::path& runs) {
  try {
    (void)validate::run_validation(runs, test::source_dir() / "topologies", "");
  } catch (const config::ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

// Rows may state multi-token prediction modules and uneven pipeline ends; bad values skip
// the row naming the field and line, and a split that does not divide is skipped with the
// layout's reason.
TEST(Validate, RowsStateMtpModulesAndUnevenPipelineEnds) {
  const auto dir = test::temp_dir("validate-mtp");
  const std::string piped = "iteration_time_s = 1.0\n";
  auto pp2 = [](std::string row) {
    row = test::replace(row, "num_layers = 2", "num_layers = 4");
    row = test::replace(row, "pp = 1", "pp = 2");
    return test::replace(row, "dp = 8", "dp = 4");
  };
  const auto runs = test::write(
      dir / "runs.toml",
      pp2(small_row("plain", "g", piped)) + pp2(small_row("mtp", "g", piped + "mtp_layers = 1")) +
          pp2(small_row("mtp0", "g", piped + "mtp_layers = 0")) +
          pp2(small_row("mtp_frac", "g", piped + "mtp_layers = 1.5")) +
          pp2(small_row("ends", "g", piped + "first_stage_layers = 1")) +
          pp2(small_row("ends_bad", "g", piped + "first_stage_layers = 4")) +
          pp2(small_row("ends_zero", "g", piped + "last_stage_layers = -1")));
  const auto report = validate::run_validation(runs, test::source_dir() / "topologies", "");
  std::map<std::string, const validate::RowResult*> by_id;
  for (const auto& r : report.rows) by_id[r.id] = &r;
  ASSERT_EQ(by_id.size(), 7U);
  for (const char* ok : {"plain", "mtp", "mtp0", "ends"}) {
    EXPECT_TRUE(by_id.at(ok)->ok) << ok << ": " << by_id.at(ok)->reason;
  }
  EXPECT_GT(by_id.at("mtp")->predicted, by_id.at("plain")->predicted);  // iteration time
  EXPECT_EQ(by_id.at("mtp0")->predicted, by_id.at("plain")->predicted);
  EXPECT_NE(by_id.at("ends")->predicted, by_id.at("plain")->predicted);
  EXPECT_NE(by_id.at("mtp_frac")->reason.find("mtp_layers = 1.5 (line "), std::string::npos)
      << by_id.at("mtp_frac")->reason;
  EXPECT_NE(by_id.at("ends_bad")->reason.find("first_stage_layers"), std::string::npos)
      << by_id.at("ends_bad")->reason;
  EXPECT_NE(by_id.at("ends_bad")->reason.find("(line "), std::string::npos)
      << by_id.at("ends_bad")->reason;
  EXPECT_NE(by_id.at("ends_zero")->reason.find("last_stage_layers = -1 (line "), std::string::npos)
      << by_id.at("ends_zero")->reason;
}

// Rows may name selective recompute's modules (Megatron-Core --recompute-modules); unknown
// names, or modules without selective recompute, skip the row with its line, and a module
// the model cannot have (mla_up_proj without MLA) with the scenario check's reason.
TEST(Validate, RowsNameSelectiveRecomputeModules) {
  const auto dir = test::temp_dir("validate-rcm");
  const std::string t = "iteration_time_s = 1.0\n";
  const std::string sel = t + "recompute = \"selective\"\n";
  const auto runs = test::write(
      dir / "runs.toml",
      small_row("attn", "g", sel) + small_row("mlp", "g", sel + "recompute_modules = \"mlp\"") +
          small_row("both", "g", sel + "recompute_modules = \"core_attn, mlp layernorm\"") +
          small_row("mla", "g", sel + "recompute_modules = \"mla_up_proj, mlp\"") +
          small_row("typo", "g", sel + "recompute_modules = \"mpl\"") +
          small_row("array", "g", sel + "recompute_modules = [\"MLP\", \"layernorm\"]") +
          small_row("tabs", "g", sel + "recompute_modules = \"mlp\\tlayernorm\"") +
          small_row("dup", "g", sel + "recompute_modules = \"mlp, MLP\"") +
          small_row("num", "g", sel + "recompute_modules = 3") +
          small_row("empty", "g", sel + "recompute_modules = \" , \"") +
          small_row("none", "g", t + "recompute = \"none\"\nrecompute_modules = \"mlp\""));
  const auto report = validate::run_validation(runs, test::source_dir() / "topologies", "");
  std::map<std::string, const validate::RowResult*> by_id;
  for (const auto& r : report.rows) by_id[r.id] = &r;
  ASSERT_EQ(by_id.size(), 11U);
  for (const char* ok : {"attn", "mlp", "both", "array", "tabs"}) {
    EXPECT_TRUE(by_id.at(ok)->ok) << ok << ": " << by_id.at(ok)->reason;
  }
  // Recomputing the MLP costs more than the attention core; both modules more still.
  EXPECT_GT(by_id.at("mlp")->predicted, by_id.at("attn")->predicted);
  EXPECT_GT(by_id.at("both")->predicted, by_id.at("mlp")->predicted);
  EXPECT_NE(by_id.at("both")->scenario_toml.find("recompute_modules"), std::string::npos);
  // mla_up_proj is simulated, for models with MLA: this GPT row has none.
  EXPECT_NE(by_id.at("mla")->reason.find("\"mla_up_proj\" needs a model with multi-head latent"),
            std::string::npos)
      << by_id.at("mla")->reason;
  EXPECT_NE(by_id.at("typo")->reason.find("\"mpl\""), std::string::npos) << by_id.at("typo")->reason;
  // The scenario's array form, any case, any white space: the same modules.
  EXPECT_EQ(by_id.at("array")->predicted, by_id.at("tabs")->predicted);
  EXPECT_NE(by_id.at("dup")->reason.find("names \"mlp\" twice"), std::string::npos)
      << by_id.at("dup")->reason;
  EXPECT_NE(by_id.at("num")->reason.find("must be a string or an array of strings"),
            std::string::npos)
      << by_id.at("num")->reason;
  EXPECT_NE(by_id.at("mla")->reason.find("(line "), std::string::npos) << by_id.at("mla")->reason;
  EXPECT_NE(by_id.at("empty")->reason.find("names no module"), std::string::npos)
      << by_id.at("empty")->reason;
  EXPECT_NE(by_id.at("none")->reason.find("needs recompute = \"selective\""), std::string::npos)
      << by_id.at("none")->reason;
  for (const char* bad : {"typo", "empty", "none", "dup", "num"}) {
    EXPECT_NE(by_id.at(bad)->reason.find("(line "), std::string::npos) << bad;
  }
}

TEST(Validate, ImpossibleRowValuesAreSkippedWithTheReason) {
  // A published value of 0, below 0, NaN or infinite, and counts that are fractions or beyond
  // int, were scored (error +inf%, nan%) or truncated and wrapped into another run.
  const auto dir = test::temp_dir("validate-impossible");
  const auto runs = test::write(
      dir / "runs.toml",
      small_row("zero", "g", "iteration_time_s = 0.0") +
          small_row("negative", "g", "iteration_time_s = -1.0") +
          small_row("nan", "g", "tflops_per_gpu = nan") +
          small_row("inf", "g", "tflops_per_gpu = inf") +
          small_row("layer_bwd", "g", "fwd_ms = 1.0\nbwd_ms = 0.0") +
          test::replace(small_row("frac", "g", "iteration_time_s = 1.0"), "num_layers = 2",
                        "num_layers = 2.5") +
          test::replace(small_row("huge", "g", "iteration_time_s = 1.0"), "tp = 1",
                        "tp = 4294967304") +
          small_row("lpvs", "g", "iteration_time_s = 1.0\nlayers_per_virtual_stage = 0") +
          small_row("ok", "g", "iteration_time_s = 1.0"));
  const auto report = validate::run_validation(runs, test::source_dir() / "topologies", "");
  ASSERT_EQ(report.rows.size(), 9U);
  const std::map<std::string, std::string> expected = {
      {"zero", "the published iteration_time_s must be a finite number > 0 (got 0)"},
      {"negative", "the published iteration_time_s must be a finite number > 0 (got -1)"},
      {"nan", "the published tflops_per_gpu must be a finite number > 0 (got nan)"},
      {"inf", "the published tflops_per_gpu must be a finite number > 0 (got inf)"},
      {"layer_bwd", "the published layer_ms must be a finite number > 0 (got 0)"},
      {"frac", "whole numbers in [1, 2147483647]: num_layers = 2.5 (line "},
      {"huge", "whole numbers in [1, 2147483647]: tp = 4.29497e+09 (line "},
      {"lpvs", "whole numbers in [1, 2147483647]: layers_per_virtual_stage = 0 (line "}};
  for (const auto& row : report.rows) {
    if (row.id == "ok") {
      EXPECT_TRUE(row.ok) << row.reason;
      continue;
    }
    EXPECT_FALSE(row.ok) << row.id;
    EXPECT_NE(row.reason.find(expected.at(row.id)), std::string::npos) << row.id << ": " << row.reason;
  }
  ASSERT_EQ(report.groups.size(), 1U);
  EXPECT_EQ(report.groups[0].rows_ok, 1);
  EXPECT_EQ(report.groups[0].rows_skipped, 8);
  EXPECT_TRUE(std::isfinite(report.groups[0].mape));
}

TEST(Validate, EveryRunEntryIsARowWithItsOwnId) {
  const auto dir = test::temp_dir("validate-ids");
  const std::string a = small_row("a", "g", "iteration_time_s = 1.0");
  auto msg = validation_error(test::write(dir / "dup.toml", a + small_row("b", "g", "iteration_time_s = 1.0") + a));
  EXPECT_NE(msg.find("dup.toml:" + std::to_string(2 + 2 * 15) + ":6: run.id: \"a\" is already the id "
                     "of the row at line 2"),
            std::string::npos)
      << msg;
  msg = validation_error(test::write(dir / "noid.toml", test::replace(a, "id = \"a\"\n", "")));
  EXPECT_NE(msg.find("noid.toml:1:1: run.id: each [[run]] row needs a non-empty string id"),
            std::string::npos)
      << msg;
  msg = validation_error(test::write(dir / "mixed.toml", "run = [ { id = \"x\", group = \"g\" }, 5, \"junk\" ]\n"));
  EXPECT_NE(msg.find("mixed.toml:1:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("run: each entry must be a table"), std::string::npos) << msg;
}

TEST(Validate, CsvAndMarkdownKeepOddIdsInTheirCells) {
  // An id with a comma or a quote, a group with a '|', a long group name: each stays one
  // field (RFC 4180 quoting) or one cell ('|' escaped), and a tied group has no tau.
  const auto dir = test::temp_dir("validate-odd");
  const std::string long_group(300, 'g');
  const auto runs = test::write(
      dir / "runs.toml",
      small_row("a,b \\\"q\\\"", "c|d", "iteration_time_s = 1.0") +
          small_row("e", "c|d", "iteration_time_s = 2.0") +
          small_row("f", long_group, "iteration_time_s = 1.0"));
  const auto report = validate::run_validation(runs, test::source_dir() / "topologies", "");
  ASSERT_EQ(report.rows.size(), 3U);
  EXPECT_EQ(report.rows[0].id, "a,b \"q\"");
  const std::string csv = validate::report_csv(report);
  EXPECT_NE(csv.find("\n\"a,b \"\"q\"\"\",c|d,iteration_time_s,"), std::string::npos) << csv;
  const std::string md = validate::report_markdown(report, "runs.toml --markdown v.md");
  EXPECT_NE(md.find("| a,b \"q\" | iteration_time_s |"), std::string::npos) << md;
  EXPECT_NE(md.find("| c\\|d | 2 | 0 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| " + long_group + " | 1 | 0 | "), std::string::npos);
  std::ostringstream text;
  validate::print_report(text, report);
  EXPECT_NE(text.str().find(long_group + "    1        0 "), std::string::npos) << text.str();
  // The two c|d rows predict the same step (same shape): tau is undefined, printed as such.
  ASSERT_EQ(report.groups.size(), 2U);
  EXPECT_FALSE(report.groups[0].kendall_tau.has_value());
  EXPECT_TRUE(nlohmann::json::parse(validate::report_json(report))["groups"][0]["kendall_tau"].is_null());
}

// Korthikanti et al. 2022 Table 4: forward and backward of one 22B layer (A100, TP 8) for
// five recompute / SP variants. The issue's bound, 10% on each, is what the test holds:
// forward is within 1%, backward 4-8% short (docs/accuracy.md says why).
TEST(Validate, KorthikantiTable4PerLayerTimes) {
  const auto runs = test::source_dir() / ".." / "shared" / "validation" / "published_runs.toml";
  if (!std::filesystem::exists(runs)) GTEST_SKIP() << "no " << runs;
  const auto report = validate::run_validation(runs, test::source_dir() / "topologies",
                                               "korthikanti2022_table4");
  int rows = 0;
  for (const auto& r : report.rows) {
    ASSERT_TRUE(r.ok) << r.id << ": " << r.reason;
    ASSERT_EQ(r.metric, "layer_ms");
    ++rows;
    EXPECT_LE(std::abs(r.predicted_fwd_ms / r.published_fwd_ms - 1), 0.10) << r.id;
    EXPECT_LE(std::abs(r.predicted_bwd_ms / r.published_bwd_ms - 1), 0.10) << r.id;
    EXPECT_NEAR(r.predicted, r.predicted_fwd_ms + r.predicted_bwd_ms, 1e-9);
  }
  EXPECT_EQ(rows, 5);
}

// Regression guard on the published runs (../shared beside the repository, as in CI): the
// errors measured now (docs/validation.md). Korthikanti's Table 5 is held at the issue's 4%;
// the issue's other bounds are tighter than the guards (6/8/10%).
TEST(Validate, PublishedRunsStayWithinTheirMeasuredErrors) {
  const auto runs = test::source_dir() / ".." / "shared" / "validation" / "published_runs.toml";
  if (!std::filesystem::exists(runs)) GTEST_SKIP() << "no " << runs;
  const auto report = validate::run_validation(runs, test::source_dir() / "topologies", "");
  std::map<std::string, double> bound = {{"korthikanti2022_table5", 0.04},
                                         {"korthikanti2022_table4", 0.045},
                                         {"narayanan2021_table1", 0.16},
                                         {"megatron_core_h100", 0.11},
                                         {"nemo_2407_h100", 0.115},
                                         {"megatron_llama_example", 0.06},
                                         {"megatron_moe_mixtral", 0.23}};
  for (const auto& g : report.groups) {
    auto it = bound.find(g.group);
    if (it == bound.end()) continue;
    EXPECT_LE(g.mape, it->second) << g.group;
    EXPECT_GT(g.rows_ok, 0) << g.group;
  }
  for (const auto& r : report.rows) {
    if (!r.ok) {
      EXPECT_FALSE(r.reason.empty()) << r.id;  // never dropped silently
    }
  }
}

// The held-out runs (validation/heldout_runs.toml, compiled after the physics was built and
// never used to tune it): every row simulates or is skipped for a stated limitation, and each
// group stays within 2 points of the error measured when the file was added
// (docs/validation-heldout.md) -- a guard against a change that helps the published rows at
// these rows' expense, not a fit.
TEST(Validate, HeldOutRunsSimulateAndStayWithinTheirMeasuredErrors) {
  const auto runs = test::source_dir() / "validation" / "heldout_runs.toml";
  const auto report = validate::run_validation(runs, test::source_dir() / "topologies", "");
  const std::map<std::string, double> measured = {
      {"llama3_herd_table4", 0.113},     {"nemotron4_15b_table2", 0.345},
      {"dgxc_llama31_405b_h100", 0.049}, {"dgxc_nemotron4_340b_h100", 0.038},
      {"dgxc_nemotron4_15b_h100", 0.015}, {"bloom_176b_2022", 0.313},
      {"mtnlg_530b_2022", 0.276},        {"gptneox_20b_2022", 0.403},
      {"dgxc_llama31_8b_h100", 0.087},   {"dgxc_llama31_70b_h100", 0.030},
      {"dgxc_gpt3_175b_h100", 0.022},    {"dgxc_grok1_314b_h100", 0.193},
      {"dgxc_grok1_314b_2504", 0.101},   {"dgxc_llama31_405b_2504", 0.165},
      {"dgxc_nemotron4_2504", 0.105},    {"dgxc_deepseek_v3_2504", 0.197}};
  EXPECT_EQ(report.rows.size(), 95U);
  // Every row simulates (DeepSeek-V3's EP 64 over DP 32 needs expert TP 1, parallel.etp).
  for (const auto& r : report.rows) EXPECT_TRUE(r.ok) << r.id << ": " << r.reason;
  for (const auto& g : report.groups) {
    ASSERT_TRUE(measured.contains(g.group)) << g.group;
    EXPECT_LE(g.mape, measured.at(g.group) + 0.02) << g.group;
  }
}

namespace {

/// MAPE of the nemo_2407_h100 rows of the published runs file that `pick` selects (by their
/// fields); every picked row must simulate. Sets `rows` to their count.
double nemo_mape(const std::function<bool(const toml::table&)>& pick, int& rows) {
  const auto runs = test::source_dir() / ".." / "shared" / "validation" / "published_runs.toml";
  const toml::table file = toml::parse_file(runs.string());
  std::set<std::string> picked;
  if (const auto* all = file["run"].as_array()) {
    for (const auto& node : *all) {
      const auto* row = node.as_table();
      if (row == nullptr || (*row)["group"].value_or(std::string()) != "nemo_2407_h100") continue;
      if (pick(*row)) picked.insert((*row)["id"].value_or(std::string()));
    }
  }
  const auto report = validate::run_validation(runs, test::source_dir() / "topologies",
                                               "nemo_2407_h100");
  double sum = 0;
  rows = 0;
  for (const auto& r : report.rows) {
    if (picked.count(r.id) == 0) continue;
    EXPECT_TRUE(r.ok) << r.id << ": " << r.reason;
    sum += std::abs(r.error);
    ++rows;
  }
  return rows > 0 ? sum / rows : 0.0;
}

bool have_published_runs() {
  return std::filesystem::exists(test::source_dir() / ".." / "shared" / "validation" /
                                 "published_runs.toml");
}

}  // namespace

// The issue's NeMo subset: the nemo_2407_h100 pre-training rows that need neither MoE nor
// context parallelism (at least 8 rows), picked from the file by their fields. The issue's
// bound is 10%; this guard holds the measured 12.2% (docs/accuracy.md: not met since the
// rows are compared with NeMo's own FLOP count).
TEST(Validate, NemoPretrainingRowsWithoutMoeOrCpStayWithinTheirMeasuredError) {
  if (!have_published_runs()) GTEST_SKIP() << "no ../shared/validation";
  int n = 0;
  const double mape = nemo_mape(
      [](const toml::table& row) {
        return row["task"].value_or(std::string()) == "pretrain" && row["cp"].value_or(1) <= 1 &&
               !row.contains("moe_num_experts");
      },
      n);
  ASSERT_GE(n, 8);
  EXPECT_LE(mape, 0.13);
}

// A required field of the wrong type is named as such, with its line, not as missing.
TEST(Validate, WrongTypedFieldIsNamedNotCalledMissing) {
  const auto dir = test::temp_dir("validate-types");
  const auto runs = test::write(dir / "runs.toml", R"toml([[run]]
id = "typed"
group = "g"
model = "GPT x"
num_layers = 4
hidden_size = "big"
num_heads = 16
seq_len = 1024
tp = 1
pp = 1
dp = 8
gpu = "NVIDIA A100-SXM4-80GB"
iteration_time_s = 1.0
)toml");
  const auto report = validate::run_validation(runs, test::source_dir() / "topologies", "");
  ASSERT_EQ(report.rows.size(), 1U);
  EXPECT_FALSE(report.rows[0].ok);
  const std::string& why = report.rows[0].reason;
  EXPECT_NE(why.find("missing fields: global_batch_size"), std::string::npos) << why;
  EXPECT_NE(why.find("fields that are not numbers: hidden_size (line 6)"), std::string::npos)
      << why;
}

// Every simulated row is also a scenario file: loading it and simulating gives the row's
// prediction exactly (iteration-time rows: the step time itself).
TEST(Validate, RowScenariosReproduceThePredictions) {
  const auto runs = test::source_dir() / ".." / "shared" / "validation" / "published_runs.toml";
  if (!std::filesystem::exists(runs)) GTEST_SKIP() << "no ../shared/validation";
  const auto report = validate::run_validation(runs, test::source_dir() / "topologies",
                                               "korthikanti2022_table5");
  const auto dir = test::temp_dir("validate-scenarios");
  int checked = 0;
  for (const auto& r : report.rows) {
    if (!r.ok) {
      EXPECT_TRUE(r.scenario_toml.empty()) << r.id;
      continue;
    }
    ASSERT_FALSE(r.scenario_toml.empty()) << r.id;
    const auto sc = config::load_scenario(test::write(dir / (r.id + ".toml"), r.scenario_toml));
    EXPECT_EQ(sc.name, r.id);
    EXPECT_EQ(workload::simulate_step(sc).step_time.seconds(), r.predicted) << r.id;
    ++checked;
  }
  EXPECT_EQ(checked, 8);
}

// Issue 6's bound on the NeMo 24.07 rows with context parallelism (picked from the file by
// their cp field): MAPE <= 12%.
TEST(Validate, NemoContextParallelRowsWithinTheIssueBound) {
  if (!have_published_runs()) GTEST_SKIP() << "no ../shared/validation";
  int n = 0;
  const double mape = nemo_mape([](const toml::table& row) { return row["cp"].value_or(1) > 1; }, n);
  ASSERT_GE(n, 2);
  EXPECT_LE(mape, 0.12);
}

// Fields of the wrong type, values outside their lists and GPU names that only contain a
// profile's name were read as absent or matched by substring: the row was scored as another
// run. Each is now a skip with the reason (or, for the row's group, an error at its line).
TEST(Validate, RowsSayWhatTheyCannotBeInsteadOfFallingBackToDefaults) {
  const auto dir = test::temp_dir("validate-strict");
  const std::string t = "iteration_time_s = 1.0";
  auto gpu = [&](const std::string& id, const std::string& name) {
    return test::replace(small_row(id, "g", t), "gpu = \"NVIDIA A100-SXM4-80GB\"",
                         "gpu = \"" + name + "\"");
  };
  const auto runs = test::write(
      dir / "runs.toml",
      small_row("ok", "g", t) + small_row("mb_string", "g", t + "\nmicro_batch_size = \"4\"") +
          small_row("metric_string", "g", "tflops_per_gpu = \"150\"") +
          small_row("sp_string", "g", t + "\nsp = \"yes\"") +
          small_row("recompute_typo", "g", t + "\nrecompute = \"ful\"") +
          small_row("precision_tf32", "g", t + "\nprecision = \"tf32\"") +
          small_row("precision_odd", "g", t + "\nprecision = \"int4\"") +
          small_row("mfu_percent", "g", "mfu = 45.0") +
          small_row("mfu_beside", "g", t + "\nmfu = 1.4") +
          small_row("tiny", "g", "tflops_per_gpu = 1e-320") +
          small_row("gpn", "g", t + "\ngpus_per_node = 4") +
          test::replace(small_row("lpvs", "g", t + "\nlayers_per_virtual_stage = 3"), "pp = 1",
                        "pp = 2") +
          test::replace(small_row("none_pp2", "g", t + "\npipeline_schedule = \"none\""),
                        "pp = 1", "pp = 2") +
          test::replace(small_row("zb_many", "g", t + "\npipeline_schedule = \"ZB-H1/ZB-V\""),
                        "pp = 1", "pp = 2") +
          small_row("activation_odd", "g", t + "\nactivation = \"relu2\"") +
          gpu("rtx_a1000", "NVIDIA RTX A1000") + gpu("h100_pcie", "NVIDIA H100 PCIe") +
          gpu("h200_nvl", "H200 NVL") + gpu("a100_40", "A100 40 GB") + gpu("b200", "NVIDIA B200") +
          test::replace(small_row("huge_seq", "g", t), "seq_len = 512", "seq_len = 2000000000"));
  const auto report = validate::run_validation(runs, test::source_dir() / "topologies", "");
  const std::map<std::string, std::string> skipped{
      {"mb_string", "fields that are not numbers: micro_batch_size (line"},
      {"metric_string", "fields that are not numbers: tflops_per_gpu (line"},
      {"sp_string", "fields that are not true/false: sp (line"},
      {"recompute_typo", "recompute = \"ful\" (line"},
      {"precision_tf32", "32-bit training is not modelled"},
      {"precision_odd", "expected fp8, bf16 or fp16"},
      {"mfu_percent", "a fraction in (0, 1]"},
      {"mfu_beside", "the published mfu must be a fraction in (0, 1] (got 1.4"},
      {"tiny", "must be a finite number > 0"},
      {"gpn", "gpus_per_node = 4, but the built-in topology"},
      {"lpvs", "layers_per_virtual_stage = 3 does not split 2 layers over pp 2"},
      {"none_pp2", "pipeline_schedule \"none\""},
      {"zb_many", "names several schedules"},
      {"activation_odd", "expected \"gelu\" or \"swiglu\""},
      {"rtx_a1000", "no built-in profile matches its name"},
      {"h100_pcie", "PCIe, NVL and Grace Hopper parts"},
      {"h200_nvl", "PCIe, NVL and Grace Hopper parts"},
      {"huge_seq", ""}};
  std::map<std::string, validate::RowResult> by_id;
  for (const auto& row : report.rows) by_id[row.id] = row;
  ASSERT_EQ(by_id.size(), report.rows.size());
  for (const auto& [id, needle] : skipped) {
    ASSERT_TRUE(by_id.count(id)) << id;
    EXPECT_FALSE(by_id[id].ok) << id;
    EXPECT_NE(by_id[id].reason.find(needle), std::string::npos) << id << ": " << by_id[id].reason;
  }
  EXPECT_TRUE(by_id["ok"].ok);
  EXPECT_EQ(by_id["ok"].gpu_profile, "a100_sxm4_80gb");
  EXPECT_TRUE(by_id["a100_40"].ok) << by_id["a100_40"].reason;
  EXPECT_EQ(by_id["a100_40"].gpu_profile, "a100_sxm4_40gb");
  EXPECT_TRUE(by_id["b200"].ok) << by_id["b200"].reason;
  EXPECT_EQ(by_id["b200"].gpu_profile, "b200");
  // The JSON says which profile and topology each simulated row used.
  const auto j = nlohmann::json::parse(validate::report_json(report));
  EXPECT_EQ(j["rows"][0]["gpu_profile"], "a100_sxm4_80gb");
  EXPECT_EQ(j["rows"][0]["topology"], "dgx-a100.toml");
  // The CSV keeps a skipped row's published value.
  EXPECT_NE(validate::report_csv(report).find("\nmfu_percent,g,mfu,45,,,skipped,"),
            std::string::npos);
}

// A row may take its architecture from a Hugging Face config (what its own fields cannot
// state: MLA, shared experts, dense first layers); its shape fields must agree with the file,
// and the scenario written for it names the config and reproduces the prediction.
TEST(Validate, RowsMayTakeTheirArchitectureFromAHuggingFaceConfig) {
  const auto dir = test::temp_dir("validate-hf");
  (void)test::write(dir / "tiny-deepseek.json", test::tiny_deepseek_config());
  (void)test::write(dir / "tiny-llama.json", R"({
  "model_type": "llama", "hidden_size": 512, "intermediate_size": 1024,
  "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 8,
  "vocab_size": 1000, "hidden_act": "silu"
})");
  const std::string t = "iteration_time_s = 1.0\nep = 8\n";
  auto deep = [&](const std::string& id, const std::string& extra) {
    return test::replace(small_row(id, "g", t + extra), "num_layers = 2", "num_layers = 4");
  };
  const auto runs = test::write(
      dir / "runs.toml",
      deep("hf", "hf_config = \"tiny-deepseek.json\"\nmoe_num_experts = 8\nmoe_top_k = 2") +
          deep("plain", "ffn_hidden_size = 1024\nmoe_num_experts = 8\nmoe_top_k = 2\n"
                        "moe_ffn_hidden_size = 256\nactivation = \"swiglu\"\nnorm = \"rmsnorm\"") +
          small_row("disagree", "g", t + "hf_config = \"tiny-deepseek.json\"") +
          deep("topk", "hf_config = \"tiny-deepseek.json\"\nmoe_top_k = 4") +
          deep("missing", "hf_config = \"nope.json\"") +
          deep("empty", "hf_config = \"\"") +
          deep("dense_topk", "hf_config = \"tiny-llama.json\"\nmoe_top_k = 2") +
          deep("act", "hf_config = \"tiny-deepseek.json\"\nactivation = \"gelu\""));
  const auto report = validate::run_validation(runs, test::source_dir() / "topologies", "");
  std::map<std::string, validate::RowResult> r;
  for (const auto& row : report.rows) r[row.id] = row;
  ASSERT_TRUE(r["hf"].ok) << r["hf"].reason;
  ASSERT_TRUE(r["plain"].ok) << r["plain"].reason;
  EXPECT_NE(r["hf"].predicted, r["plain"].predicted);  // MLA, a shared expert, a dense layer
  EXPECT_NE(r["hf"].assumptions.find("architecture from tiny-deepseek.json"), std::string::npos);
  const auto sc = config::load_scenario(test::write(dir / "hf.toml", r["hf"].scenario_toml));
  EXPECT_TRUE(sc.model.mla.enabled());
  EXPECT_EQ(sc.model.moe.shared_experts, 1);
  EXPECT_EQ(sc.model.moe.first_dense_layers, 1);
  EXPECT_EQ(workload::simulate_step(sc).step_time.seconds(), r["hf"].predicted);
  EXPECT_FALSE(r["disagree"].ok);
  EXPECT_NE(r["disagree"].reason.find("disagree with hf_config (line "), std::string::npos)
      << r["disagree"].reason;
  EXPECT_NE(r["disagree"].reason.find("num_layers = 2 (line "), std::string::npos);
  EXPECT_NE(r["disagree"].reason.find("but the config has 4"), std::string::npos);
  EXPECT_NE(r["topk"].reason.find("moe_top_k = 4"), std::string::npos) << r["topk"].reason;
  EXPECT_FALSE(r["missing"].ok);
  EXPECT_NE(r["missing"].reason.find("hf_config (line "), std::string::npos) << r["missing"].reason;
  EXPECT_NE(r["missing"].reason.find("nope.json"), std::string::npos);
  EXPECT_NE(r["empty"].reason.find("hf_config (line "), std::string::npos) << r["empty"].reason;
  EXPECT_NE(r["empty"].reason.find("empty path"), std::string::npos);
  // A dense config with the row's MoE fields, and a word field: named with their lines.
  EXPECT_NE(r["dense_topk"].reason.find("moe_top_k (line "), std::string::npos)
      << r["dense_topk"].reason;
  EXPECT_NE(r["act"].reason.find("activation = gelu (line "), std::string::npos) << r["act"].reason;
  EXPECT_NE(r["act"].reason.find("but the config has swiglu"), std::string::npos);
  // Every config a row names is an input of the run (no output may overwrite it).
  EXPECT_NE(std::find(report.hf_config_files.begin(), report.hf_config_files.end(),
                      std::filesystem::absolute(dir / "tiny-deepseek.json").lexically_normal()),
            report.hf_config_files.end());
}

TEST(Validate, ArchitectureScheduleAndFrameworkComeFromTheRow) {
  const auto dir = test::temp_dir("validate-arch");
  const std::string t = "iteration_time_s = 1.0";
  auto named = [&](const std::string& id, const std::string& model, const std::string& extra) {
    return test::replace(small_row(id, "g", t + extra), "model = \"GPT small\"",
                         "model = \"" + model + "\"");
  };
  auto pp2 = [&](const std::string& id, const std::string& schedule) {
    return test::replace(small_row(id, "g", t + "\nglobal_batch_size = 32"
                                              "\npipeline_schedule = \"" + schedule + "\""),
                         "pp = 1\ndp = 8", "pp = 2\ndp = 4");
  };
  const auto runs = test::write(
      dir / "runs.toml",
      named("llama", "Llama 2 7B-like", "") + named("mistral", "Mistral 7B-like", "") +
          named("swiglu_field", "My model", "\nactivation = \"swiglu\"\nnorm = \"rmsnorm\"") +
          named("unknown", "My model", "") + named("gpt", "GPT 1B", "") +
          named("bloom", "BLOOM-176B-like", "") +
          named("bloom_nobias", "BLOOM-176B-like", "\nbias = false") +
          test::replace(pp2("f1b", "1F1B"), "global_batch_size = 8\n", "") +
          test::replace(pp2("gpipe", "GPipe"), "global_batch_size = 8\n", "") +
          named("mcore_a", "GPT x", "\nframework = \"Megatron-Core r0.8.0\"") +
          named("mcore_b", "GPT x", "\nframework = \"MCore v0.9\""));
  const auto report = validate::run_validation(runs, test::source_dir() / "topologies", "");
  std::map<std::string, validate::RowResult> r;
  for (const auto& row : report.rows) {
    ASSERT_TRUE(row.ok) << row.id << ": " << row.reason;
    r[row.id] = row;
  }
  // The Llama and Mistral families and an explicit swiglu/rmsnorm are one block; an unknown
  // name is priced as GPT's block, and says so.
  EXPECT_EQ(r["mistral"].predicted, r["llama"].predicted);
  EXPECT_EQ(r["swiglu_field"].predicted, r["llama"].predicted);
  EXPECT_NE(r["unknown"].predicted, r["llama"].predicted);
  EXPECT_NE(r["unknown"].assumptions.find("unknown model family"), std::string::npos);
  EXPECT_EQ(r["llama"].assumptions.find("unknown model family"), std::string::npos);
  // BLOOM is GPT's block with its biases; a row may turn them off.
  EXPECT_EQ(r["bloom"].predicted, r["gpt"].predicted);
  EXPECT_NE(r["bloom_nobias"].predicted, r["bloom"].predicted);
  // GPipe keeps every microbatch's activations and drains later than 1F1B: another step.
  EXPECT_NE(r["gpipe"].predicted, r["f1b"].predicted);
  EXPECT_NE(r["gpipe"].scenario_toml.find("schedule = \"gpipe\""), std::string::npos);
  // Megatron-Core however spelled.
  EXPECT_EQ(r["mcore_a"].predicted, r["mcore_b"].predicted);
  EXPECT_EQ(r["mcore_a"].assumptions, r["mcore_b"].assumptions);
}

TEST(Validate, GroupsAreNamedOnceAndEveryRowHasOne) {
  const auto dir = test::temp_dir("validate-groups");
  const std::string row = small_row("a", "g", "iteration_time_s = 1.0");
  auto msg = validation_error(test::write(
      dir / "dup.toml", "[[group]]\nid = \"g\"\n\n[[group]]\nid = \"g\"\n\n" + row));
  EXPECT_NE(msg.find("dup.toml:5:6: group.id: \"g\" is already the id of the group at line 2"),
            std::string::npos)
      << msg;
  msg = validation_error(test::write(dir / "nogroup.toml",
                                     test::replace(row, "group = \"g\"\n", "")));
  EXPECT_NE(msg.find("nogroup.toml:1:1: run.group: each [[run]] row needs a non-empty string "
                     "group"),
            std::string::npos)
      << msg;
  msg = validation_error(
      test::write(dir / "numgroup.toml", test::replace(row, "group = \"g\"", "group = 7")));
  EXPECT_NE(msg.find("numgroup.toml:3:9: run.group"), std::string::npos) << msg;
}

// The second break test of the row reader: schedule, precision, recompute and family names as
// sources write them, and the rows it must not simulate.
TEST(Validate, RowNamesAsSourcesWriteThem) {
  const auto dir = test::temp_dir("validate-names");
  const std::string t = "iteration_time_s = 1.0";
  auto pp2 = [&](const std::string& id, const std::string& extra) {
    return test::replace(small_row(id, "g", t + "\nglobal_batch_size = 32" + extra),
                         "pp = 1\ndp = 8", "pp = 2\ndp = 4");
  };
  auto gb = [](std::string row) { return test::replace(row, "global_batch_size = 8\n", ""); };
  auto named = [&](const std::string& id, const std::string& model) {
    return test::replace(small_row(id, "g", t), "model = \"GPT small\"", "model = \"" + model + "\"");
  };
  const auto runs = test::write(
      dir / "runs.toml",
      gb(pp2("f1b", "\npipeline_schedule = \"1F1B\"")) +
          gb(pp2("non_interleaved", "\npipeline_schedule = \"non-interleaved 1F1B\"")) +
          gb(pp2("twobw", "\npipeline_schedule = \"PipeDream-2BW\"")) +
          gb(pp2("zbh2", "\npipeline_schedule = \"Zero Bubble H2\"")) +
          gb(pp2("zbv", "\npipeline_schedule = \"ZB-V\"")) +
          small_row("fp8_a100", "g", t + "\nprecision = \"fp8\"") +
          small_row("lightning16", "g", t + "\nprecision = \"16-mixed\"") +
          small_row("fp16", "g", t + "\nprecision = \"fp16\"") +
          small_row("full_uniform", "g", t + "\nrecompute = \"full (uniform)\"") +
          small_row("full", "g", t + "\nrecompute = \"full\"") +
          small_row("attention_odd", "g", t + "\nattention = \"fused softmax\"") +
          small_row("zero1", "g", t + "\nzero = 1") + small_row("zero0", "g", t + "\nzero = 0") +
          small_row("zero4", "g", t + "\nzero = 4") +
          small_row("zero0_gather", "g", t + "\nzero = 0\noverlap = \"param-gather\"") +
          named("llama_opt", "Llama-2 7B (optimized)") +
          named("llama", "Llama-2 7B") + named("megatron_gpt", "MegatronGPT-20B") +
          named("gpt", "GPT 20B") +
          test::replace(small_row("a100_40g", "g", t), "NVIDIA A100-SXM4-80GB", "A100-40G"));
  const auto report = validate::run_validation(runs, test::source_dir() / "topologies", "");
  std::map<std::string, validate::RowResult> r;
  for (const auto& row : report.rows) r[row.id] = row;
  for (const char* id : {"f1b", "non_interleaved", "twobw", "zbh2", "lightning16", "fp16",
                         "full_uniform", "full", "llama_opt", "llama", "megatron_gpt", "gpt",
                         "a100_40g"}) {
    EXPECT_TRUE(r[id].ok) << id << ": " << r[id].reason;
  }
  EXPECT_EQ(r["non_interleaved"].predicted, r["f1b"].predicted);
  // 2BW has no flush: its steady state (4 steps) is measured, and it beats 1F1B's flush.
  EXPECT_NE(r["twobw"].scenario_toml.find("steps = 4"), std::string::npos);
  EXPECT_LT(r["twobw"].predicted, r["f1b"].predicted);
  EXPECT_NE(r["zbh2"].scenario_toml.find("schedule = \"zb-h2\""), std::string::npos);
  EXPECT_EQ(r["lightning16"].predicted, r["fp16"].predicted);
  EXPECT_EQ(r["full_uniform"].predicted, r["full"].predicted);
  EXPECT_EQ(r["llama_opt"].predicted, r["llama"].predicted);  // "optimized" is not OPT
  EXPECT_EQ(r["megatron_gpt"].predicted, r["gpt"].predicted);  // GPT's biases
  EXPECT_EQ(r["a100_40g"].gpu_profile, "a100_sxm4_40gb");
  // A stated ZeRO stage shards the optimizer (DP 8 here) without claiming overlap.
  ASSERT_TRUE(r["zero1"].ok) << r["zero1"].reason;
  EXPECT_NE(r["zero1"].scenario_toml.find("zero = 1"), std::string::npos);
  EXPECT_NE(r["zero0"].scenario_toml.find("zero = 0"), std::string::npos);
  EXPECT_EQ(r["zero1"].scenario_toml.find("overlap_param_gather = true"), std::string::npos);
  for (const auto& [id, needle] : std::map<std::string, std::string>{
           {"zero4", "expected a ZeRO stage 0, 1, 2 or 3"},
           {"zero0_gather", "needs a sharded optimizer"},
           {"zbv", "is not modelled"},
           {"fp8_a100", "fp8"},
           {"attention_odd", "expected \"flash\" or \"unfused\""}}) {
    EXPECT_FALSE(r[id].ok) << id;
    EXPECT_NE(r[id].reason.find(needle), std::string::npos) << id << ": " << r[id].reason;
  }
}
