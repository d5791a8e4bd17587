// Scenario and topology loading: every kind of bad input gives file:line:column and the
// problem.
#include <gtest/gtest.h>

#include "config/scenario.hpp"
#include "config/scenario_writer.hpp"
#include "config/units.hpp"
#include "test_util.hpp"

using namespace trainsim;
using config::ConfigError;

namespace {

/// Loads `text` as a scenario and returns the error message ("" when it loads).
std::string error_of(const std::string& text, const std::string& name = "s.toml") {
  const auto dir = test::temp_dir("config");
  const auto path = test::write(dir / name, text);
  try {
    (void)config::load_scenario(path);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

std::string with(const std::string& from, const std::string& to) {
  return test::replace(test::small_scenario(), from, to);
}

}  // namespace

TEST(Units, ParseQuantities) {
  EXPECT_DOUBLE_EQ(*config::parse_bandwidth("400 Gbps"), 50e9);
  EXPECT_DOUBLE_EQ(*config::parse_bandwidth("300 GB/s"), 300e9);
  EXPECT_DOUBLE_EQ(*config::parse_duration("2 us"), 2e-6);
  EXPECT_DOUBLE_EQ(*config::parse_duration("1.5ms"), 1.5e-3);
  EXPECT_DOUBLE_EQ(*config::parse_bytes("80 GiB"), 80.0 * 1024 * 1024 * 1024);
  EXPECT_FALSE(config::parse_bandwidth("400 parsecs"));
  EXPECT_FALSE(config::parse_duration("fast"));
  EXPECT_FALSE(config::parse_bytes("-1 GB"));
}

TEST(Config, ShippedScenariosLoad) {
  for (const char* s : {"gpt3-175b-a100", "megatron-1t-a100", "llama3-70b-h100",
                        "llama3-405b-h100"}) {
    const auto sc = config::load_scenario(test::source_dir() / "scenarios" / (std::string(s) + ".toml"));
    EXPECT_GT(sc.gpus, 0) << s;
  }
  for (const char* t : {"dgx-a100", "dgx-h100", "dgx-h200", "dgx-b200"}) {
    const auto spec = config::load_topology(test::source_dir() / "topologies" / (std::string(t) + ".toml"));
    EXPECT_EQ(spec.gpus_per_node, 8) << t;
    EXPECT_GT(spec.nic_bw, 0) << t;
  }
}

TEST(Config, SmallScenarioLoadsWithDefaults) {
  EXPECT_EQ(error_of(test::small_scenario()), "");
  const auto dir = test::temp_dir("config-defaults");
  const auto sc = config::load_scenario(test::write(dir / "s.toml", test::small_scenario()));
  EXPECT_EQ(sc.model.kv_heads, 16);
  EXPECT_EQ(sc.model.ffn_hidden, 4096);
  EXPECT_EQ(sc.layout.schedule, parallel::ScheduleKind::OneFOneB);
  EXPECT_EQ(sc.gpu.key, "a100_sxm4_80gb");
}

TEST(Config, UnknownKeySuggestsTheNearestValidKey) {
  const auto msg = error_of(with("tp = 2\n", "tpp = 2\n"));
  EXPECT_NE(msg.find("s.toml:13:1: unknown key 'tpp' in [parallel]; did you mean 'tp'?"),
            std::string::npos)
      << msg;
  const auto top = error_of(with("version = 1\n", "version = 1\nsimulaton = 3\n"));
  EXPECT_NE(top.find("did you mean 'simulation'?"), std::string::npos) << top;
}

TEST(Config, MissingKeyNamesSectionAndKey) {
  const auto msg = error_of(with("layers = 4\n", ""));
  EXPECT_NE(msg.find("s.toml:3:1: missing key model.layers in [model]"), std::string::npos) << msg;
  const auto sec = error_of(with("[training]\nglobal_batch = 16\nmicro_batch = 2\n", ""));
  EXPECT_NE(sec.find("missing section [training]"), std::string::npos) << sec;
}

TEST(Config, WrongTypeIsReportedAtTheValue) {
  const auto msg = error_of(with("hidden = 1024", "hidden = \"big\""));
  EXPECT_NE(msg.find("s.toml:5:10: model.hidden must be an integer (got string)"),
            std::string::npos)
      << msg;
  const auto b = error_of(with("sequence_parallel = true", "sequence_parallel = 1"));
  EXPECT_NE(b.find("must be true or false"), std::string::npos) << b;
}

TEST(Config, BadEnumListsTheChoices) {
  const auto msg = error_of(with("[parallel]\n", "[parallel]\nschedule = \"1f2b\"\n"));
  EXPECT_NE(msg.find("parallel.schedule must be one of \"gpipe\""), std::string::npos) << msg;
  const auto bias = error_of(with("[training]\n", "[training]\nbias_kernels = \"fused\"\n"));
  EXPECT_NE(bias.find("training.bias_kernels must be one of \"epilogue\""), std::string::npos)
      << bias;
  const auto wgrad =
      error_of(with("[training]\n", "[training]\nwgrad_accumulation = \"epilogue\"\n"));
  EXPECT_NE(wgrad.find("training.wgrad_accumulation must be one of \"fused\""),
            std::string::npos)
      << wgrad;
  const auto scaling =
      error_of(with("[training]\n", "[training]\ngrad_scaling = \"avg\"\n"));
  EXPECT_NE(scaling.find("training.grad_scaling must be one of \"bucket\""), std::string::npos)
      << scaling;
  const auto flag = error_of(with("seq_len = 1024", "seq_len = 1024\nbias = \"yes\""));
  EXPECT_NE(flag.find("model.bias"), std::string::npos) << flag;
}

TEST(Config, ImpossibleLayoutsPointAtTheirKey) {
  auto msg = error_of(with("tp = 2", "tp = 3"));
  EXPECT_NE(msg.find("s.toml:13:6: parallel.tp (3) must divide model.heads (16)"),
            std::string::npos)
      << msg;
  msg = error_of(with("pp = 2", "pp = 8"));
  EXPECT_NE(msg.find("parallel.pp (8) is larger than the layer count model.layers (4)"),
            std::string::npos)
      << msg;
  msg = error_of(with("global_batch = 16", "global_batch = 12"));
  EXPECT_NE(msg.find("s.toml:10:16: training.global_batch (12) is not divisible by "
                     "training.micro_batch x parallel.dp (2 x 4)"),
            std::string::npos)
      << msg;
  msg = error_of(with("dp = 4", "dp = 2"));
  EXPECT_NE(msg.find("tp x pp x dp x cp = 2 x 2 x 2 x 1 = 8 does not equal cluster.gpus (16)"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("s.toml:19:8:"), std::string::npos) << msg;  // at cluster.gpus
  msg = error_of(with("[parallel]\n", "[parallel]\nvirtual_stages = 2\nschedule = \"1f1b\"\n"));
  EXPECT_NE(msg.find("parallel.virtual_stages > 1 needs schedule = \"interleaved\""),
            std::string::npos)
      << msg;
  msg = error_of(with("[parallel]\n", "[parallel]\noverlap_param_gather = true\n"));
  EXPECT_NE(msg.find("s.toml:13:24: parallel.overlap_param_gather needs parallel.zero >= 1"),
            std::string::npos)
      << msg;
}

TEST(Config, SyntaxErrorsVersionsAndFiles) {
  auto msg = error_of(with("layers = 4", "layers = = 4"));
  EXPECT_NE(msg.find("s.toml:4:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("TOML syntax error"), std::string::npos) << msg;
  msg = error_of(with("version = 1", "version = 2"));
  EXPECT_NE(msg.find("unsupported schema version 2"), std::string::npos) << msg;
  msg = error_of(with("topologies/dgx-a100.toml", "topologies/nope.toml"));
  EXPECT_NE(msg.find("cluster.topology: no such file"), std::string::npos) << msg;
  try {
    (void)config::load_scenario("/nonexistent/x.toml");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/x.toml:1:1: cannot open file"),
              std::string::npos);
  }
}

TEST(Config, UnsupportedFeaturesAreRejectedNotIgnored) {
  auto msg = error_of(with("[model]\n", "[model]\nhf_config = \"config.json\"\n"));
  EXPECT_NE(msg.find("hf_config"), std::string::npos) << msg;
  msg = error_of(with("[parallel]\n", "[parallel]\nep = 2\n"));
  EXPECT_NE(msg.find("parallel.ep > 1 needs a mixture-of-experts model"), std::string::npos) << msg;
  msg = error_of(test::small_scenario() + "[simulation]\nfidelity = \"analytic\"\n");
  EXPECT_NE(msg.find("not simulated yet"), std::string::npos) << msg;
  msg = error_of(with("[cluster]\n", "[cluster]\nprofile = \"tpu_v5\"\n"));
  EXPECT_NE(msg.find("unknown hardware profile \"tpu_v5\""), std::string::npos) << msg;
}

TEST(Config, TopologyErrors) {
  const auto dir = test::temp_dir("topo");
  const std::string good = test::read(test::source_dir() / "topologies/dgx-a100.toml");
  auto load = [&](const std::string& text) -> std::string {
    try {
      (void)config::load_topology(test::write(dir / "t.toml", text));
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(load(good), "");
  EXPECT_NE(load(test::replace(good, "\"200 Gbps\"", "\"200 furlongs\"")).find(
                "network.nic_bw: cannot read \"200 furlongs\" as a quantity"),
            std::string::npos);
  EXPECT_NE(load(test::replace(good, "gpu = \"a100_sxm4_80gb\"", "gpu = \"v100\"")).find(
                "unknown GPU \"v100\""),
            std::string::npos);
  EXPECT_NE(load(test::replace(good, "oversubscription = 1.0", "oversubscription = 0.5")).find(
                "network.oversubscription must be a finite number in [1, 1024]"),
            std::string::npos);
  // Keys of another fabric shape were read and never used; a zero torus link meant "the
  // default"; more cores than a spine has ports thinned every link.
  const std::string torus_text = test::read(test::source_dir() / "topologies/torus-3d-h100.toml");
  const std::string three = test::read(test::source_dir() / "topologies/dgx-h100-3tier.toml");
  EXPECT_EQ(load(torus_text), "");
  EXPECT_EQ(load(three), "");
  const std::map<std::string, std::string> refused = {
      {test::replace(good, "oversubscription = 1.0", "oversubscription = 1.0\ndims = [2, 2]"),
       "network.dims belongs to kind = \"torus\""},
      {test::replace(good, "oversubscription = 1.0", "oversubscription = 1.0\ncores = 4"),
       "network.cores belongs to a 3-tier fat tree (tiers = 3)"},
      {test::replace(torus_text, "dims = [4, 4, 4]", "dims = [4, 4, 4]\nnodes_per_su = 1"),
       "network.nodes_per_su belongs to the fat-tree kinds"},
      {test::replace(torus_text, "torus_link_bw = \"400 GB/s\"", "torus_link_bw = \"0 GB/s\""),
       "network.torus_link_bw must be between 1e+06 and 1e+15 B/s (got 0)"},
      {test::replace(three, "cores = 16", "cores = 100000"), "network.cores must be in [0, "},
      // NVLink above the GPU's datasheet links was capped to it without a word.
      {test::replace(good, "nvlink_bw = \"300 GB/s\"", "nvlink_bw = \"600 GB/s\""),
       "node.nvlink_bw 600 GB/s is above NVIDIA A100-SXM4-80GB's NVLink bandwidth of 300 GB/s"}};
  for (const auto& [text, needle] : refused) {
    const std::string msg = load(text);
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_NE(msg.find("t.toml:"), std::string::npos) << msg;
  }
  // A profile whose GPU has fewer NVLink links than the topology's node (A100 on a DGX H100
  // node): refused at cluster.profile, naming both rates.
  {
    const std::string h100 = (test::source_dir() / "topologies/dgx-h100.toml").string();
    std::string on_h100 = test::replace(
        test::small_scenario(), (test::source_dir() / "topologies/dgx-a100.toml").string(), h100);
    on_h100 = test::replace(on_h100, "[cluster]\n", "[cluster]\nprofile = \"a100_sxm4_80gb\"\n");
    try {
      (void)config::load_scenario(test::write(dir / "p.toml", on_h100));
      ADD_FAILURE() << "an A100 profile on 450 GB/s NVLink accepted";
    } catch (const ConfigError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("p.toml:"), std::string::npos) << what;
      EXPECT_NE(what.find("cluster.profile: the topology's node.nvlink_bw 450 GB/s is above"),
                std::string::npos)
          << what;
    }
  }
  // A scenario on a torus with another GPU count used to fail in the topology generator
  // with no file, line or key.
  const std::string torus = (test::source_dir() / "topologies/torus-3d-h100.toml").string();
  std::string sc = test::replace(test::small_scenario(),
                                 (test::source_dir() / "topologies/dgx-a100.toml").string(), torus);
  try {
    (void)config::load_scenario(test::write(dir / "s.toml", sc));
    ADD_FAILURE() << "16 GPUs on a 4x4x4 torus of 8-GPU nodes accepted";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("s.toml:19:8: cluster.gpus (16) must fill the torus: 64 nodes x 8 GPUs = 512"),
              std::string::npos)
        << what;
  }
}

// Writing a scenario back: every shipped scenario is written, read back and written again;
// the two texts are identical, and the smaller ones simulate to the same picosecond. A model
// from a Hugging Face config is written as that config; MLA without one (a model built in
// code) is refused, as no scenario key states it.
TEST(ScenarioWriter, ShippedScenariosRoundTripToTheSamePicosecond) {
  const auto dir = test::temp_dir("scenario-writer");
  int written = 0, simulated = 0;
  for (const auto& entry : std::filesystem::directory_iterator(test::source_dir() / "scenarios")) {
    if (entry.path().extension() != ".toml") continue;
    const auto sc = config::load_scenario(entry.path());
    const auto topo = test::source_dir() / "topologies" / sc.inputs.topology_file;
    if (sc.model.mla.enabled()) {
      auto in_code = sc;
      in_code.inputs.hf_config_path.clear();
      EXPECT_THROW((void)config::scenario_toml(in_code, topo), std::invalid_argument)
          << entry.path();
    }
    const std::string text = config::scenario_toml(sc, topo);
    if (!sc.inputs.hf_config_path.empty()) {
      EXPECT_NE(text.find("hf_config = "), std::string::npos) << entry.path();
      EXPECT_EQ(text.find("hidden = "), std::string::npos) << entry.path();
    }
    const auto path = test::write(dir / entry.path().filename(), text);
    const auto back = config::load_scenario(path);
    EXPECT_EQ(config::scenario_toml(back, topo), text) << entry.path();
    ++written;
    // The 1T and 2,048-GPU full-fidelity scenarios take seconds each; the rest are quick.
    if (sc.gpus > 1024 || sc.layout.pp > 16) continue;
    EXPECT_EQ(workload::simulate_step(back).step_time.count_ps(),
              workload::simulate_step(sc).step_time.count_ps())
        << entry.path();
    ++simulated;
  }
  EXPECT_GE(written, 13);
  EXPECT_GE(simulated, 8);
}

TEST(ScenarioWriter, WritesEveryNonDefaultSetting) {
  std::string text = test::small_scenario();
  text = test::replace(text, "micro_batch = 2\n",
                       "micro_batch = 2\ndtype = \"fp16\"\nrecompute = \"full\"\n"
                       "attention = \"unfused\"\nbias_kernels = \"separate\"\n"
                       "wgrad_accumulation = \"separate\"\ngrad_scaling = \"buffer\"\n"
                       "tokens = 1e9\n");
  text = test::replace(text, "seq_len = 1024\n", "seq_len = 1024\nbias = true\nhead_dim = 128\n");
  text = test::replace(text, "sequence_parallel = true\n",
                       "sequence_parallel = true\noverlap_grad_reduce = false\n");
  text += "[cost]\ngpu_hour_usd = 2.5\n";
  const auto dir = test::temp_dir("scenario-writer-keys");
  const auto sc = config::load_scenario(test::write(dir / "s.toml", text));
  const auto back = config::load_scenario(test::write(
      dir / "back.toml",
      config::scenario_toml(sc, test::source_dir() / "topologies/dgx-a100.toml")));
  EXPECT_EQ(back.training.dtype, hw::Dtype::FP16);
  EXPECT_EQ(back.training.recompute, model::Recompute::Full);
  EXPECT_FALSE(back.training.flash_attention);
  EXPECT_FALSE(back.training.bias_in_epilogue);
  EXPECT_FALSE(back.training.fused_wgrad_accumulation);
  EXPECT_EQ(back.training.grad_scaling, workload::GradScaling::Buffer);
  EXPECT_DOUBLE_EQ(*back.training.tokens, 1e9);
  EXPECT_TRUE(back.model.bias);
  EXPECT_EQ(back.model.head_size, 128);
  EXPECT_DOUBLE_EQ(*back.gpu_hour_usd, 2.5);
  EXPECT_EQ(back.layout.sequence_parallel, sc.layout.sequence_parallel);
  EXPECT_EQ(back.layout.dp, sc.layout.dp);
}

// Names survive the round trip whatever they hold: a leading newline (a TOML multi-line
// string drops the newline right after its opening quotes), quotes, backslashes, tabs,
// control characters and non-ASCII text.
TEST(ScenarioWriter, OddNamesRoundTrip) {
  const auto dir = test::temp_dir("scenario-writer-names");
  const auto topo = test::source_dir() / "topologies/dgx-a100.toml";
  // As written in the scenario file (TOML basic-string escapes).
  const std::vector<std::string> names = {
      "\\nleading newline", "\\r\\nleading CR LF", "two\\nlines", "'single' \\\"double\\\"",
      "back\\\\slash\\ttab \\u00e9 \\u0007 bell", "ends in quotes \\\"\\\"\\\"", "'''"};
  for (const auto& escaped : names) {
    const std::string text = test::replace(test::small_scenario(), "name = \"small\"\n",
                                           "name = \"" + escaped + "\"\n");
    const auto sc = config::load_scenario(test::write(dir / "s.toml", text));
    const std::string written = config::scenario_toml(sc, topo);
    const auto back = config::load_scenario(test::write(dir / "back.toml", written));
    EXPECT_EQ(back.name, sc.name) << escaped << "\n" << written;
    EXPECT_EQ(back.model.name, sc.model.name) << escaped;
    EXPECT_EQ(config::scenario_toml(back, topo), written) << escaped;
  }
}
