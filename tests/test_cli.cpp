// The trainsim executable: exit codes, stdout/stderr and files, as a user sees them.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <set>
#include <sstream>
#include <string>
#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.hpp"

using namespace trainsim;

namespace {

using Result = test::CmdResult;

Result run(const std::string& args) { return test::run_trainsim(args); }

std::string scenario(const std::string& name) {
  return (test::source_dir() / "scenarios" / name).string();
}

}  // namespace

TEST(Cli, SimulatePrintsTheTable) {
  const auto r = run("simulate " + scenario("gpt3-175b-a100.toml"));
  EXPECT_EQ(r.code, 0) << r.err;
  for (const char* s : {"step time", "tokens/s", "MFU / HFU", "bubble fraction", "activations",
                        "exposed TP comm", "(fits, "}) {
    EXPECT_NE(r.out.find(s), std::string::npos) << s;
  }
}

TEST(Cli, JsonHasTheDesignKeysAndIsDeterministic) {
  const auto a = run("simulate --json " + scenario("gpt3-175b-a100.toml"));
  const auto b = run("simulate --json " + scenario("gpt3-175b-a100.toml"));
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  const auto j = nlohmann::json::parse(a.out);
  for (const char* k : {"step_time_s", "tokens_per_s", "model_tflops_per_gpu",
                        "hardware_tflops_per_gpu", "mfu", "hfu", "bubble_fraction", "memory_gib",
                        "fits_in_memory", "breakdown_s", "layout", "trainsim_version",
                        "time_to_train_days"}) {
    EXPECT_TRUE(j.contains(k)) << k;
  }
  for (const char* k : {"weights", "gradients", "optimizer", "activations", "total", "capacity"}) {
    EXPECT_TRUE(j["memory_gib"].contains(k)) << k;
  }
  for (const char* k : {"compute", "exposed_tp_comm", "exposed_dp_comm", "exposed_pp_comm",
                        "exposed_ep_comm", "exposed_cp_comm", "bubble", "optimizer"}) {
    EXPECT_TRUE(j["breakdown_s"].contains(k)) << k;
  }
  EXPECT_EQ(j["layout"]["tp"], 8);
  ASSERT_EQ(j["stages"].size(), 8U);
  for (const char* k : {"peak_inflight_microbatches", "weight_versions", "gradient_staleness",
                        "memory_gib", "breakdown_s"}) {
    EXPECT_TRUE(j["stages"][0].contains(k)) << k;
  }
}

TEST(Cli, TraceIsChromeTraceEventJson) {
  const auto dir = test::temp_dir("cli-trace");
  const auto trace = dir / "trace.json";
  const auto r = run("simulate " + scenario("gpt3-175b-a100.toml") + " --trace " + trace.string());
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(test::read(trace));
  ASSERT_TRUE(j.contains("traceEvents"));
  int complete = 0;
  std::set<int> pids;
  for (const auto& e : j["traceEvents"]) {
    if (e["ph"] == "X") {
      ++complete;
      pids.insert(e["pid"].get<int>());
      EXPECT_GE(e["dur"].get<double>(), 0.0);
    }
  }
  EXPECT_GT(complete, 1000);
  EXPECT_EQ(pids.size(), 8U);  // a process per pipeline stage
}

// With several steps simulated, the trace marks the window of the step the report measured,
// and the marks are that window's ends.
TEST(Cli, MultiStepTraceMarksTheMeasuredStep) {
  const auto dir = test::temp_dir("cli-trace-steps");
  const auto sc = test::write(dir / "s.toml", test::small_scenario() + "\n[simulation]\nsteps = 3\n");
  const auto trace = dir / "trace.json";
  const auto r = run("simulate " + sc.string() + " --json --trace " + trace.string());
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(test::read(trace));
  EXPECT_EQ(j["otherData"]["steps_simulated"], 3);
  EXPECT_EQ(j["otherData"]["measured_step"], 3);
  const auto window = j["otherData"]["measured_window_us"];
  ASSERT_EQ(window.size(), 2U);
  std::vector<double> marks;
  double last_end = 0;
  for (const auto& e : j["traceEvents"]) {
    if (e["ph"] == "i") {
      EXPECT_EQ(e["cat"], "step");
      marks.push_back(e["ts"].get<double>());
    }
    if (e["ph"] == "X") last_end = std::max(last_end, e["ts"].get<double>() + e["dur"].get<double>());
  }
  ASSERT_EQ(marks.size(), 2U);
  EXPECT_DOUBLE_EQ(marks[0], window[0].get<double>());
  EXPECT_DOUBLE_EQ(marks[1], window[1].get<double>());
  EXPECT_GT(marks[0], 0.0);  // two steps ran before the measured one
  EXPECT_NEAR(marks[1], last_end, 1e-6);
  // The window is one step long, as the report says.
  const double step_s = nlohmann::json::parse(r.out)["step_time_s"].get<double>();
  EXPECT_NEAR((marks[1] - marks[0]) * 1e-6, step_s, step_s * 1e-9);
}

TEST(Cli, BadInputExitsOneWithTheLocationAndWritesNothing) {
  const auto dir = test::temp_dir("cli-bad");
  const auto bad = test::write(dir / "bad.toml",
                               test::replace(test::small_scenario(), "tp = 2", "tp = 3"));
  const auto trace = dir / "trace.json";
  const auto r = run("simulate " + bad.string() + " --trace " + trace.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("bad.toml:13:6: parallel.tp (3) must divide model.heads (16)"),
            std::string::npos)
      << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_FALSE(std::filesystem::exists(trace));
  EXPECT_TRUE(std::filesystem::is_empty(dir) ||
              std::distance(std::filesystem::directory_iterator(dir),
                            std::filesystem::directory_iterator()) == 1);  // only bad.toml
}

TEST(Cli, UsageErrorsExitOne) {
  EXPECT_EQ(run("simulate").code, 1);
  EXPECT_EQ(run("frobnicate").code, 1);
  EXPECT_EQ(run("simulate /nonexistent.toml").code, 1);
  const auto dir = test::temp_dir("cli-nodir");
  const auto r = run("simulate " + scenario("gpt3-175b-a100.toml") + " --trace " +
                     (dir / "no/such/dir/t.json").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--trace"), std::string::npos) << r.err;
}

TEST(Cli, AReportThatCannotBeWrittenIsAFailedRun) {
  // stdout on a full device: the table, the JSON and the collective sweep are lost, so the
  // run must not exit 0 as if they had been read.
  if (!std::filesystem::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  const auto dir = test::temp_dir("cli-full");
  for (const std::string& args :
       {"simulate " + scenario("gpt3-175b-a100.toml"),
        "simulate --json " + scenario("gpt3-175b-a100.toml"),
        "collective --op all_reduce --gpus 8 --topology " +
            (test::source_dir() / "topologies/dgx-h100.toml").string(), std::string("list-gpus")}) {
    const std::string cmd = std::string(TRAINSIM_EXE) + " " + args + " > /dev/full 2> " +
                            (dir / "err").string();
    const int status = std::system(cmd.c_str());
    ASSERT_TRUE(WIFEXITED(status)) << args;
    EXPECT_EQ(WEXITSTATUS(status), 1) << args;
    EXPECT_NE(test::read(dir / "err").find("cannot write the report to standard output"),
              std::string::npos)
        << args << ": " << test::read(dir / "err");
  }
}

TEST(Cli, OutputsAreWrittenWithTheReportOrNotAtAll) {
  // A run that fails on one output (a full device, standard output) leaves none of the
  // others behind; one output naming another's file, or a file the run read, is refused.
  if (!std::filesystem::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  const auto dir = test::temp_dir("cli-all-or-none");
  // The scenario reads a copy of the topology, which one case tries to overwrite.
  const auto topo = dir / "topo.toml";
  std::filesystem::copy_file(test::source_dir() / "topologies/dgx-a100.toml", topo,
                             std::filesystem::copy_options::overwrite_existing);
  const auto sc = test::write(
      dir / "s.toml", test::replace(test::small_scenario(),
                                    (test::source_dir() / "topologies/dgx-a100.toml").string(),
                                    topo.string()));
  const auto t = (dir / "t.json").string(), v = (dir / "p.svg").string();
  const std::string sim = std::string(TRAINSIM_EXE) + " simulate " + sc.string();
  for (const std::string& cmd :
       {sim + " --trace /dev/full --svg " + v, sim + " --trace " + t + " --svg /dev/full",
        sim + " --trace " + t + " --svg " + v + " > /dev/full"}) {
    const int status = std::system((cmd + " 2> " + (dir / "err").string()).c_str());
    ASSERT_TRUE(WIFEXITED(status)) << cmd;
    EXPECT_EQ(WEXITSTATUS(status), 1) << cmd;
    EXPECT_FALSE(std::filesystem::exists(t)) << cmd;
    EXPECT_FALSE(std::filesystem::exists(v)) << cmd;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      EXPECT_EQ(e.path().string().find(".tmp-trainsim"), std::string::npos) << e.path();
    }
  }
  const std::string text = test::read(sc);
  struct Case {
    std::string args, needle;
  };
  for (const Case& c :
       {Case{"simulate " + sc.string() + " --trace " + t + " --svg " + t, "is named by two outputs"},
        Case{"simulate " + sc.string() + " --trace " + sc.string(), "is an input of this run"},
        Case{"simulate " + sc.string() + " --svg " + topo.string(), "is an input of this run"},
        Case{"simulate " + sc.string() + " --trace \"\"", "empty file name"}}) {
    const auto r = run(c.args);
    EXPECT_EQ(r.code, 1) << c.args;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << c.args << ": " << r.err;
    EXPECT_TRUE(r.out.empty()) << c.args;
  }
  // A Hugging Face config is an input too.
  {
    const auto hf = dir / "hf.json";
    std::filesystem::copy_file(test::source_dir() / "scenarios/hf/llama3-8b.json", hf,
                               std::filesystem::copy_options::overwrite_existing);
    const auto hs = test::write(
        dir / "hf.toml",
        test::replace(test::read(sc), "layers = 4\nhidden = 1024\nheads = 16\nvocab = 32000\n",
                      "hf_config = \"hf.json\"\n"));
    const std::string json = test::read(hf);
    const auto r = run("simulate " + hs.string() + " --trace " + hf.string());
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("is an input of this run"), std::string::npos) << r.err;
    EXPECT_EQ(test::read(hf), json);
  }
  EXPECT_EQ(test::read(sc), text);  // the inputs are untouched
  EXPECT_EQ(test::read(topo), test::read(test::source_dir() / "topologies/dgx-a100.toml"));
  EXPECT_FALSE(std::filesystem::exists(t));
  // Devices may be named by several outputs.
  EXPECT_EQ(run("simulate " + sc.string() + " --trace /dev/null --svg /dev/null").code, 0);
}

TEST(Cli, OutputPathsAreComparedAndWrittenWhereTheyLand) {
  const auto dir = test::temp_dir("cli-landing");
  const auto sc = test::write(dir / "s.tmp-trainsim", test::small_scenario());
  const std::string text = test::read(sc);
  const std::string in_dir = "cd " + dir.string() + " && " + std::string(TRAINSIM_EXE) + " ";
  // A symlink loop cannot be written: exit 1, and the other output is not written either.
  std::filesystem::create_symlink("loop", dir / "loop");
  auto r = test::run_command(in_dir + "simulate s.tmp-trainsim --trace loop --svg ok.svg");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("cannot write loop"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "ok.svg"));
  // One new file under two spellings is one file named by two outputs.
  r = test::run_command(in_dir + "simulate s.tmp-trainsim --trace a.json --svg ./a.json");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("named by two outputs"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "a.json"));
  EXPECT_TRUE(r.out.empty());
  // The temporary files have names of their own: an input whose name ends like one survives.
  r = test::run_command(in_dir + "simulate s.tmp-trainsim --svg s");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(test::read(sc), text);
  EXPECT_NE(test::read(dir / "s").find("<svg"), std::string::npos);
  // An output to the report's own stream goes into it, before the report (here standard
  // output is a file, which a rename would have replaced).
  r = test::run_command(in_dir + "simulate s.tmp-trainsim --trace /dev/stdout");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("{\"traceEvents\"", 0), 0U) << r.out.substr(0, 80);
  EXPECT_NE(r.out.find("step time"), std::string::npos);
  r = test::run_command(in_dir + "simulate s.tmp-trainsim --svg /dev/stderr");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("<svg"), std::string::npos);
  EXPECT_NE(r.out.find("step time"), std::string::npos);
}

TEST(Cli, InputsThatAreNotRegularFilesAreNamedForWhatTheyAre) {
  if (!std::filesystem::exists("/dev/null")) GTEST_SKIP() << "no /dev/null";
  auto r = run("simulate /dev/null");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("/dev/null:1:1: cannot open file (is not a regular file"), std::string::npos)
      << r.err;
  const auto dir = test::temp_dir("cli-hf-dir");
  const auto sc = test::write(dir / "s.toml",
                              test::replace(test::small_scenario(), "layers = 4\nhidden = 1024\n"
                                            "heads = 16\nvocab = 32000\n", "hf_config = \".\"\n"));
  r = run("simulate " + sc.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("is a directory"), std::string::npos) << r.err;
}

// Sizes inside their ranges can still make a step longer than Time holds (2^63 ps, 106
// days): the error names the file and the keys to look at, exit 1, nothing on stdout.
TEST(Cli, AStepBeyondTimesRangeNamesTheFile) {
  const auto dir = test::temp_dir("cli-time-range");
  std::string text = test::read(test::source_dir() / "scenarios/schedules-teaching-4stage.toml");
  text = test::replace(text, "seq_len = 2048", "seq_len = 100000000");
  text = test::replace(text, "\"../topologies/dgx-a100.toml\"",
                       "\"" + (test::source_dir() / "topologies/dgx-a100.toml").string() + "\"");
  const auto file = test::write(dir / "s.toml", text);
  const auto r = run("simulate " + file.string());
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find(file.string() + ": a simulated time is out of range"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("model.seq_len"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty());
}

TEST(Cli, VersionAndGpuList) {
  const auto v = run("--version");
  EXPECT_EQ(v.code, 0);
  EXPECT_NE(v.out.find("trainsim"), std::string::npos);
  const auto g = run("list-gpus");
  EXPECT_EQ(g.code, 0);
  EXPECT_NE(g.out.find("h100_sxm"), std::string::npos);
  // The columns line up whatever the longest name (GB200's pushed its row right).
  std::istringstream lines(g.out);
  std::string line;
  std::set<std::size_t> sms_column;
  while (std::getline(lines, line)) sms_column.insert(line.find(" SMs"));
  EXPECT_EQ(sms_column.size(), 1u) << g.out;
  // A first word that is no command is named, not "a subcommand is required".
  const auto u = run("nosuchcmd");
  EXPECT_EQ(u.code, 1);
  EXPECT_NE(u.err.find("unknown command \"nosuchcmd\" (commands: simulate,"), std::string::npos)
      << u.err;
}

// Every kind of bad input, through the executable: exit code 1, one line on stderr with
// file:line:column and the problem, nothing on stdout.
struct BadInput {
  const char* what;
  const char* from;
  const char* to;
  const char* message;
};

void PrintTo(const BadInput& b, std::ostream* os) { *os << b.what; }

class CliBadInput : public ::testing::TestWithParam<BadInput> {};

TEST_P(CliBadInput, ExitsOneWithLocationAndMessage) {
  const BadInput& c = GetParam();
  const auto dir = test::temp_dir(std::string("cli-badinput-") + c.what);
  const auto file = test::write(dir / "s.toml", test::replace(test::small_scenario(), c.from, c.to));
  const auto r = run("simulate " + file.string());
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find(file.string() + ":"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

INSTANTIATE_TEST_SUITE_P(
    AllKinds, CliBadInput,
    ::testing::Values(
        BadInput{"unknown_key", "tp = 2", "tpp = 2", ":13:1: unknown key 'tpp' in [parallel]; did you mean 'tp'?"},
        BadInput{"missing_key", "vocab = 32000\n", "", ":3:1: missing key model.vocab in [model]"},
        BadInput{"wrong_type", "layers = 4", "layers = 4.5", ":4:10: model.layers must be an integer (got float)"},
        BadInput{"bad_enum", "[training]\n", "[training]\ndtype = \"fp64\"\n", "training.dtype must be one of"},
        BadInput{"tp_not_dividing_heads", "tp = 2", "tp = 3", ":13:6: parallel.tp (3) must divide model.heads (16)"},
        BadInput{"pp_larger_than_layers", "pp = 2", "pp = 8", ":14:6: parallel.pp (8) is larger than the layer count"},
        BadInput{"batch_not_divisible", "global_batch = 16", "global_batch = 20", ":10:16: training.global_batch (20) is not divisible"},
        BadInput{"world_size_mismatch", "gpus = 16", "gpus = 32", ":19:8: tp x pp x dp x cp = 2 x 2 x 4 x 1 = 16 does not equal cluster.gpus (32)"},
        BadInput{"negative", "micro_batch = 2", "micro_batch = -2", ":11:15: training.micro_batch must be in [1, 16] (got -2)"},
        BadInput{"syntax", "heads = 16", "heads = ", "TOML syntax error"},
        BadInput{"missing_topology", "dgx-a100.toml", "dgx-z100.toml", "cluster.topology: no such file"},
        BadInput{"fp8_on_a100", "[training]\n", "[training]\ndtype = \"fp8\"\n", "needs FP8 tensor cores"},
        BadInput{"virtual_stages_without_interleaving", "[parallel]\n", "[parallel]\nvirtual_stages = 2\nschedule = \"1f1b\"\n", "parallel.virtual_stages > 1 needs schedule = \"interleaved\""},
        BadInput{"ep_without_moe", "[parallel]\n", "[parallel]\nep = 2\n", "parallel.ep > 1 needs a mixture-of-experts model"},
        BadInput{"seq_len_not_divisible_by_tp_with_sp", "seq_len = 1024", "seq_len = 1023", ":16:21: parallel.sequence_parallel: model.seq_len / parallel.cp (1023) must be divisible by parallel.tp (2)"},
        // Options that would do nothing, and options that depend on each other.
        BadInput{"price_without_tokens", "gpus = 16\n", "gpus = 16\n[cost]\ngpu_hour_usd = 2.5\n", "cost.gpu_hour_usd needs training.tokens"},
        BadInput{"tp_comm_overlap_at_tp_1", "tp = 2\npp = 2\ndp = 4\nsequence_parallel = true\n", "tp = 1\npp = 2\ndp = 8\ntp_comm_overlap = true\n", ":16:19: parallel.tp_comm_overlap needs tp > 1"},
        BadInput{"cp_all_gather_at_cp_1", "dp = 4\n", "dp = 4\ncp_comm = \"all_gather\"\n", ":16:11: parallel.cp_comm = \"all_gather\" needs cp > 1"},
        BadInput{"param_gather_overlap_under_zero_3", "tp = 2\npp = 2\ndp = 4\n", "tp = 2\npp = 1\ndp = 8\nzero = 3\noverlap_param_gather = true\n", ":17:24: parallel.overlap_param_gather applies to ZeRO-1 and ZeRO-2"},
        BadInput{"straggler_twice", "[cluster]\n", "[simulation]\nfidelity = \"full\"\nstragglers = [{gpu = 1, speed = 0.5}, {gpu = 1, speed = 0.9}]\n[cluster]\n", "simulation.stragglers names gpu 1 twice"},
        BadInput{"shared_ffn_without_shared_experts", "seq_len = 1024\n", "seq_len = 1024\n[model.moe]\nexperts = 4\nshared_ffn_hidden = 512\n", ": model.moe.shared_ffn_hidden (512) sizes shared experts, but model.moe.shared_experts is 0"},
        BadInput{"lora_with_zero_bubble", "sequence_parallel = true\n", "sequence_parallel = true\nschedule = \"zb-h1\"\n[training.lora]\nrank = 8\n", ": training.lora: LoRA with schedule \"zb-h1\""},
        BadInput{"lora_rank_beyond_full_rank", "[cluster]\n", "[training.lora]\nrank = 4096\n[cluster]\n", ": training.lora.rank (4096) exceeds the full rank of the targeted weights (1024)"},
        BadInput{"buffer_grad_scaling_with_overlap", "micro_batch = 2\n", "micro_batch = 2\ngrad_scaling = \"buffer\"\n", ": training.grad_scaling = \"buffer\""}),
    [](const ::testing::TestParamInfo<BadInput>& i) { return std::string(i.param.what); });

TEST(Cli, UnwritableTraceIsBadInputAndPrintsNoReport) {
  const auto dir = test::temp_dir("cli-trace-dir");
  const auto r = run("simulate " + scenario("gpt3-175b-a100.toml") + " --trace " + dir.string());
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("is a directory"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty());
  const auto r2 = run("simulate " + dir.string());
  EXPECT_EQ(r2.code, 1);
  EXPECT_NE(r2.err.find("is a directory"), std::string::npos) << r2.err;
}

namespace {
/// Checks that every tag is closed in order (self-closing allowed); a small XML oracle.
bool well_formed(const std::string& xml) {
  std::vector<std::string> stack;
  for (std::size_t i = xml.find('<'); i != std::string::npos; i = xml.find('<', i + 1)) {
    if (xml.compare(i, 2, "<?") == 0) continue;
    const std::size_t end = xml.find('>', i);
    if (end == std::string::npos) return false;
    const std::string tag = xml.substr(i + 1, end - i - 1);
    if (tag.empty()) return false;
    if (tag[0] == '/') {
      if (stack.empty() || stack.back() != tag.substr(1)) return false;
      stack.pop_back();
    } else if (tag.back() != '/') {
      stack.push_back(tag.substr(0, tag.find_first_of(" \n")));
    }
  }
  return stack.empty();
}
std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto i = text.find(what); i != std::string::npos; i = text.find(what, i + 1)) ++n;
  return n;
}
}  // namespace

TEST(Cli, SvgIsWellFormedWithOneBoxPerPass) {
  const auto dir = test::temp_dir("cli-svg");
  const auto svg = dir / "p.svg";
  const auto r = run("simulate " + scenario("schedules-teaching-4stage.toml") + " --svg " +
                     svg.string());
  ASSERT_EQ(r.code, 0) << r.err;
  const auto text = test::read(svg);
  EXPECT_TRUE(well_formed(text));
  EXPECT_EQ(count(text, "<rect class=\"op\""), 4U * 8U * 2U);  // 4 stages x 8 microbatches x F, B
  EXPECT_GT(count(text, "<line class=\"p2p\""), 0U);
}

TEST(Cli, CompareSchedulesPrintsEveryScheduleAndStacksTimelines) {
  const auto dir = test::temp_dir("cli-compare");
  const auto svg = dir / "grid.svg";
  const auto r = run("compare-schedules " + scenario("schedules-teaching-4stage.toml") +
                     " --svg " + svg.string());
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* s : {"gpipe", "1f1b", "interleaved (v=2)", "zb-h1", "zb-h2", "dualpipe",
                        "pipedream", "2bw", "vs 1F1B"}) {
    EXPECT_NE(r.out.find(s), std::string::npos) << s;
  }
  const auto text = test::read(svg);
  EXPECT_TRUE(well_formed(text));
  EXPECT_EQ(count(text, "<g class=\"run\">"), 8U);
}

// The header names every parallel degree (TP x PP x DP x CP = GPUs): a CP 2 layout on 16 GPUs
// was printed as "TP 2+SP, PP 2, DP 2", eight GPUs.
TEST(Cli, CompareSchedulesHeaderNamesContextParallelism) {
  const auto dir = test::temp_dir("cli-compare-cp");
  const auto file =
      test::write(dir / "s.toml", test::replace(test::small_scenario(), "dp = 4", "dp = 2\ncp = 2"));
  const auto r = run("compare-schedules " + file.string());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("TP 2+SP, PP 2, DP 2, CP 2, global batch"), std::string::npos) << r.out;
}

// Output files are renamed into place, but not onto a symlink (which kept its old target and
// became a regular file) nor onto a FIFO or device (a reader of the pipe got nothing, and as
// root `--trace /dev/null` replaced /dev/null with a regular file).
TEST(Cli, OutputThroughASymlinkOrIntoAFifoKeepsTheLinkAndThePipe) {
  const auto dir = test::temp_dir("cli-out-special");
  const auto file = test::write(dir / "s.toml", test::small_scenario());
  const auto target = test::write(dir / "target.svg", "old");
  const auto link = dir / "link.svg";
  std::filesystem::create_symlink(target, link);
  const auto r = run("simulate " + file.string() + " --svg " + link.string());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::is_symlink(link));
  EXPECT_NE(test::read(target).find("</svg>"), std::string::npos);
  // A dangling link (relative, target not created yet) gets its target written; the link
  // used to be replaced by a regular file.
  const auto dangling = dir / "link2.svg";
  std::filesystem::create_symlink("target2.svg", dangling);
  const auto r2 = run("simulate " + file.string() + " --svg " + dangling.string());
  ASSERT_EQ(r2.code, 0) << r2.err;
  EXPECT_TRUE(std::filesystem::is_symlink(dangling));
  EXPECT_NE(test::read(dir / "target2.svg").find("</svg>"), std::string::npos);

  const auto fifo = dir / "pipe.svg";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const auto got = dir / "got.svg";
  // A reader drains the pipe while trainsim writes to it (bounded, should it never be written).
  const auto p = test::run_command("{ (timeout 20 cat " + fifo.string() + " > " + got.string() +
                                       " &) ; " + TRAINSIM_EXE + " simulate " + file.string() +
                                       " --svg " + fifo.string() + "; }",
                                   "cli-out-fifo");
  ASSERT_EQ(p.code, 0) << p.err;
  struct stat st {};
  ASSERT_EQ(::lstat(fifo.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  for (int i = 0; i < 50 && test::read(got).find("</svg>") == std::string::npos; ++i) {
    ::usleep(100000);
  }
  EXPECT_NE(test::read(got).find("</svg>"), std::string::npos);
}

// The README shows the quick start's output verbatim; keep it true.
TEST(Cli, ReadmeQuickStartOutputIsCurrent) {
  const std::string readme = test::read(test::source_dir() / "README.md");
  const std::string start = "```\ntrainsim ";
  const auto a = readme.find(start);
  ASSERT_NE(a, std::string::npos);
  const auto b = readme.find("```", a + 4);
  ASSERT_NE(b, std::string::npos);
  const auto r = run("simulate " + scenario("gpt3-175b-a100.toml"));
  ASSERT_EQ(r.code, 0);
  EXPECT_EQ(readme.substr(a + 4, b - a - 4), r.out);
}

TEST(Cli, CompareSchedulesSkipsRatherThanRejectsTheBaseSchedule) {
  const auto dir = test::temp_dir("cli-compare-base");
  // dualpipe needs an even number of microbatches >= 2 pp: 4 microbatches with pp 4 do not.
  const auto file = test::write(
      dir / "s.toml",
      test::replace(test::replace(test::read(scenario("schedules-teaching-4stage.toml")),
                                  "schedule = \"1f1b\"", "schedule = \"dualpipe\""),
                    "global_batch = 8", "global_batch = 4"));
  test::write(dir / "s.toml", test::replace(test::read(dir / "s.toml"), "../topologies",
                                            (test::source_dir() / "topologies").string()));
  EXPECT_EQ(run("simulate " + file.string()).code, 1);
  const auto r = run("compare-schedules " + file.string());
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("dualpipe"), std::string::npos);
  EXPECT_NE(r.out.find("skipped"), std::string::npos);
}

// The op table: on every stage, the compute and optimizer ops add up to the stage's compute,
// optimizer and SM-contention time (the parts of "where the time went" that are kernels on
// the compute stream); the table is sorted by time; a stage that does not exist is bad input.
TEST(Cli, OpsTableAddsUpToTheStageKernelTime) {
  const auto r = run("simulate --json --ops 0 --ops-stage 3 " + scenario("gpt3-175b-a100.toml"));
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_TRUE(j.contains("ops"));
  EXPECT_EQ(j["ops"]["stage"], 3);
  const auto& b = j["stages"][3]["breakdown_s"];
  double kernels = 0, prev = 1e30;
  int wgrad = 0;
  for (const auto& o : j["ops"]["ops"]) {
    const double t = o["time_s"].get<double>();
    EXPECT_LE(t, prev) << o["op"];
    prev = t;
    if (o["category"] == "compute" || o["category"] == "optimizer") kernels += t;
    if (o["op"] == "mlp_fc1 wgrad") wgrad = o["count"].get<int>();
  }
  EXPECT_NEAR(kernels,
              b["compute"].get<double>() + b["optimizer"].get<double>() +
                  b["sm_contention"].get<double>(),
              1e-9);
  // 12 layers on the stage (96 / 8), 64 microbatches: one fc1 weight gradient per pair.
  EXPECT_EQ(wgrad, 12 * 64);

  const auto table = run("simulate --ops 5 " + scenario("gpt3-175b-a100.toml"));
  ASSERT_EQ(table.code, 0) << table.err;
  EXPECT_NE(table.out.find("ops of stage 0"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("more ops)"), std::string::npos) << table.out;

  const auto bad = run("simulate --ops 5 --ops-stage 8 " + scenario("gpt3-175b-a100.toml"));
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("--ops-stage: stage 8 is not a pipeline stage (0..7)"),
            std::string::npos)
      << bad.err;
  EXPECT_TRUE(bad.out.empty()) << bad.out;
}

// validate --scenarios DIR writes one scenario file per simulated row, which simulate runs;
// a directory that does not exist is bad input before anything is simulated or written.
TEST(Cli, ValidateWritesRowScenarios) {
  const auto runs = test::source_dir() / ".." / "shared" / "validation" / "published_runs.toml";
  if (!std::filesystem::exists(runs)) GTEST_SKIP() << "no ../shared/validation";
  const auto dir = test::temp_dir("cli-validate-scenarios");
  const auto r = run("validate " + runs.string() + " --group korthikanti2022_table4 --scenarios " +
                     dir.string());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("5 row scenarios written to"), std::string::npos) << r.out;
  const auto row = dir / "korthikanti2022_t4_selective_sequence.toml";
  ASSERT_TRUE(std::filesystem::exists(row));
  const auto sim = run("simulate " + row.string());
  EXPECT_EQ(sim.code, 0) << sim.err;

  const auto csv = dir / "rows.csv";
  const auto bad = run("validate " + runs.string() + " --csv " + csv.string() +
                       " --scenarios " + (dir / "missing").string());
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("--scenarios: directory"), std::string::npos) << bad.err;
  EXPECT_FALSE(std::filesystem::exists(csv));
}

namespace {

/// A [[run]] row of a small GPT on 8 A100 that validate simulates, with `id` (TOML-escaped)
/// and `global_batch` sequences per step.
std::string run_row(const std::string& id, int global_batch = 16) {
  return "[[run]]\nid = \"" + id + "\"\ngroup = \"g\"\nmodel = \"GPT small\"\n"
         "num_layers = 2\nhidden_size = 512\nnum_heads = 8\nseq_len = 512\nvocab_size = 32000\n"
         "global_batch_size = " + std::to_string(global_batch) + "\nmicro_batch_size = 2\n"
         "tp = 1\npp = 1\ndp = 8\ngpu = \"NVIDIA A100-SXM4-80GB\"\niteration_time_s = 1.0\n";
}

}  // namespace

// A row's hf_config is an input of the run: a row scenario that would land on it is refused
// and nothing is written (it was replaced by the scenario, which then named itself).
TEST(Cli, ValidateDoesNotOverwriteARowsHfConfig) {
  const auto dir = test::temp_dir("cli-validate-hf-input");
  std::filesystem::copy_file(test::source_dir() / "scenarios/hf/llama3-8b.json", dir / "cfg.toml",
                             std::filesystem::copy_options::overwrite_existing);
  const std::string before = test::read(dir / "cfg.toml");
  const std::string row =
      test::replace(test::replace(run_row("cfg"), "id = \"cfg\"\n",
                                  "id = \"cfg\"\nhf_config = \"cfg.toml\"\n"),
                    "num_layers = 2\nhidden_size = 512\nnum_heads = 8\nseq_len = 512\nvocab_size = 32000\n",
                    "num_layers = 32\nhidden_size = 4096\nnum_heads = 32\nseq_len = 512\n");
  const auto runs = test::write(dir / "runs.toml", row);
  const auto r = run("validate " + runs.string() + " --scenarios " + dir.string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.err.find("is an input of this run"), std::string::npos) << r.err;
  EXPECT_EQ(test::read(dir / "cfg.toml"), before);
}

// The Markdown page names the command that made it, as a shell would take it back: the
// group, a non-default topology folder, and paths with spaces or quotes quoted.
TEST(Cli, ValidateMarkdownNamesItsCommand) {
  const auto dir = test::temp_dir("cli-validate-md-command") / "a b";
  std::filesystem::create_directories(dir);
  const auto runs = test::write(dir / "runs.toml", run_row("a"));
  const auto topos = dir / "topos";
  std::filesystem::create_directories(topos);
  std::filesystem::copy_file(test::source_dir() / "topologies/dgx-a100.toml",
                             topos / "dgx-a100.toml");
  const auto md = dir / "it's.md";
  const auto r = run("validate '" + runs.string() + "' --group g --topologies '" +
                     topos.string() + "' --markdown \"" + md.string() + "\"");
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string text = test::read(md);
  EXPECT_NE(text.find("`trainsim validate '" + runs.string() + "' --group g --topologies '" +
                      topos.string() + "' --markdown '" + dir.string() + "/it'\\''s.md'`"),
            std::string::npos)
      << text.substr(0, 400);
}

// The topology files validate loads from --topologies are inputs of the run too: an output
// named like one is refused, and the file is left as it was.
TEST(Cli, ValidateRefusesToOverwriteATopologyItRead) {
  const auto dir = test::temp_dir("cli-validate-topology-input");
  const auto topos = dir / "topologies";
  std::filesystem::create_directories(topos);
  for (const char* f : {"dgx-a100.toml", "dgx-h100.toml"}) {
    std::filesystem::copy_file(test::source_dir() / "topologies" / f, topos / f,
                               std::filesystem::copy_options::overwrite_existing);
  }
  const auto runs = test::write(dir / "runs.toml", run_row("a"));
  const std::string a100 = test::read(topos / "dgx-a100.toml");
  const auto r = run("validate " + runs.string() + " --topologies " + topos.string() +
                     " --csv " + (topos / "dgx-a100.toml").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.err.find("is an input of this run"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_EQ(test::read(topos / "dgx-a100.toml"), a100);
  // A topology no row loaded is not an input.
  EXPECT_EQ(run("validate " + runs.string() + " --topologies " + topos.string() + " --csv " +
                (topos / "dgx-h100.toml").string())
                .code,
            0);
}

// A command with several outputs writes all of them or none: when one cannot be written (here
// a full device), the others are not left behind, nor their temporary files.
TEST(Cli, OneUnwritableOutputLeavesNoOtherOutputBehind) {
  if (!std::filesystem::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  const auto dir = test::temp_dir("cli-all-or-none");
  const auto runs = test::write(dir / "runs.toml", run_row("a"));
  auto only_inputs = [&] {
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      EXPECT_EQ(e.path().filename(), "runs.toml") << e.path();
    }
  };
  auto r = run("validate " + runs.string() + " --csv " + (dir / "rows.csv").string() +
               " --scenarios " + dir.string() + " --markdown /dev/full");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.err.find("cannot write /dev/full"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  only_inputs();
  r = run("simulate " + scenario("schedules-teaching-4stage.toml") + " --trace " +
          (dir / "t.json").string() + " --svg /dev/full");
  EXPECT_EQ(r.code, 1) << r.out;
  only_inputs();
  // With the way clear, all are written.
  r = run("validate " + runs.string() + " --csv " + (dir / "rows.csv").string() +
          " --scenarios " + dir.string() + " --markdown " + (dir / "bad.md").string());
  EXPECT_EQ(r.code, 0) << r.err;
  for (const char* f : {"rows.csv", "a.toml", "bad.md"}) {
    EXPECT_TRUE(std::filesystem::exists(dir / f)) << f;
  }
}

// validate --scenarios writes DIR/<row id>.toml: a row id that is not a plain file name (a
// '/' or "..": the file would land outside DIR), two rows with one id (one file overwrote the
// other), a row file name taken by a directory, or a directory it cannot write are bad input
// found before any file is written (the CSV and the rows before the bad one were written).
TEST(Cli, ValidateScenariosRefusesBadRowFileNamesBeforeWritingAnything) {
  const auto dir = test::temp_dir("cli-validate-scenario-names");
  const auto out = dir / "out";
  std::filesystem::create_directories(out);
  const auto csv = dir / "rows.csv";
  const auto check = [&](const std::string& runs_text, const std::string& dest,
                         const std::string& message) {
    SCOPED_TRACE(message);
    for (const auto& f : {csv, out / "a.toml", dir / "escaped.toml"}) std::filesystem::remove(f);
    const auto runs = test::write(dir / "runs.toml", runs_text);
    const auto r = run("validate " + runs.string() + " --csv " + csv.string() + " --scenarios " +
                       dest);
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
    EXPECT_FALSE(std::filesystem::exists(csv));
    EXPECT_FALSE(std::filesystem::exists(out / "a.toml"));
    EXPECT_FALSE(std::filesystem::exists(dir / "escaped.toml"));
  };
  check(run_row("a") + run_row("../escaped"), out.string(),
        "row id \"../escaped\" (line 18) is not a file name");
  check(run_row("a") + run_row("sub/x"), out.string(), "row id \"sub/x\" (line 18)");
  check(run_row("a") + run_row(".."), out.string(), "row id \"..\" (line 18)");
  // Empty and duplicate ids are errors of the runs file itself, with or without --scenarios.
  check(run_row("a") + run_row(""), out.string(),
        "runs.toml:18:6: run.id: each [[run]] row needs a non-empty string id");
  check(run_row("a") + run_row("a", 32), out.string(),
        "runs.toml:18:6: run.id: \"a\" is already the id of the row at line 2");
  std::filesystem::create_directories(out / "b.toml");
  check(run_row("a") + run_row("b"), out.string(), "b.toml\" is a directory");
  std::filesystem::remove(out / "b.toml");
  if (::access("/proc/self", W_OK) != 0) {
    check(run_row("a"), "/proc/self", "--scenarios: cannot write to directory \"/proc/self\"");
  }
}

// A row whose layout cannot be simulated gets no scenario file; the rest do.
TEST(Cli, ValidateScenariosSkipsRowsThatDidNotSimulate) {
  const auto dir = test::temp_dir("cli-validate-scenario-skips");
  // 18 sequences do not split into microbatches of 2 on 8 data-parallel ranks.
  const auto runs = test::write(dir / "runs.toml", run_row("good") + run_row("bad", 18));
  const auto r = run("validate " + runs.string() + " --scenarios " + dir.string());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("1 row scenarios written"), std::string::npos) << r.out;
  EXPECT_TRUE(std::filesystem::exists(dir / "good.toml"));
  EXPECT_FALSE(std::filesystem::exists(dir / "bad.toml"));
}

// The op table of a stage covers that stage's measured step, the window its "where the time
// went" breakdown analyses, also when stages end their steps at different times: a schedule
// without a flush simulated one step (pipedream, `steps = 1`: the stages finish it at
// different times) and full fidelity with a straggler over two steps. It used to clip every
// stage to the step of the whole pipeline and count other steps' kernels.
TEST(Cli, OpsTableCoversEachStagesOwnStep) {
  const auto dir = test::temp_dir("cli-ops-windows");
  std::string base = test::read(scenario("schedules-teaching-4stage.toml"));
  base = test::replace(base, "../topologies", (test::source_dir() / "topologies").string());
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"pipedream", test::replace(base, "schedule = \"1f1b\"", "schedule = \"pipedream\"") +
                        "[simulation]\nsteps = 1\n"},
      {"straggler", base + "[simulation]\nfidelity = \"full\"\nsteps = 2\n"
                           "stragglers = [{ gpu = 5, speed = 0.5 }]\n"}};
  for (const auto& [name, text] : cases) {
    const auto file = test::write(dir / (name + ".toml"), text);
    for (int stage = 0; stage < 4; ++stage) {
      SCOPED_TRACE(name + " stage " + std::to_string(stage));
      const auto r = run("simulate --json --ops 0 --ops-stage " + std::to_string(stage) + " " +
                         file.string());
      ASSERT_EQ(r.code, 0) << r.err;
      const auto j = nlohmann::json::parse(r.out);
      const auto& b = j["stages"][stage]["breakdown_s"];
      double kernels = 0;
      for (const auto& o : j["ops"]["ops"]) {
        if (o["category"] == "compute" || o["category"] == "optimizer") {
          kernels += o["time_s"].get<double>();
        }
      }
      EXPECT_NEAR(kernels,
                  b["compute"].get<double>() + b["optimizer"].get<double>() +
                      b["sm_contention"].get<double>(),
                  1e-9);
    }
  }
}

// The op table's columns stay aligned when an op's name is longer than the name column
// (DualPipe's "grad all_reduce with mirror rank (DualPipe)", 43 characters).
TEST(Cli, OpsTableColumnsStayAlignedWithLongOpNames) {
  const auto dir = test::temp_dir("cli-ops-long-names");
  std::string text = test::read(scenario("schedules-teaching-4stage.toml"));
  text = test::replace(text, "../topologies", (test::source_dir() / "topologies").string());
  text = test::replace(text, "schedule = \"1f1b\"", "schedule = \"dualpipe\"");
  text = test::replace(text, "global_batch = 8", "global_batch = 16");
  const auto r = run("simulate --ops 0 " + test::write(dir / "s.toml", text).string());
  ASSERT_EQ(r.code, 0) << r.err;
  const auto table = r.out.find("    op ");
  ASSERT_NE(table, std::string::npos) << r.out;
  std::istringstream lines(r.out.substr(table));
  std::string header, line;
  std::getline(lines, header);
  const auto kind_col = header.find("kind");
  const auto count_end = header.find("count") + 5;
  bool long_name = false;
  while (std::getline(lines, line) && line.rfind("    ", 0) == 0 && line.find('(') != 4) {
    long_name = long_name || line.find("mirror rank (DualPipe)") != std::string::npos;
    // The kind column starts where the header says, after at least one space.
    ASSERT_GT(line.size(), count_end) << line;
    EXPECT_EQ(line[kind_col - 1], ' ') << line;
    EXPECT_NE(line[kind_col], ' ') << line;
    EXPECT_TRUE(std::isdigit(static_cast<unsigned char>(line[count_end - 1]))) << line;
  }
  EXPECT_TRUE(long_name) << r.out;
}

// --ops-stage without --ops is bad input (it printed no table and said nothing), and a
// negative --ops / --ops-stage is refused with a readable range.
TEST(Cli, OpsStageNeedsOps) {
  const auto file = scenario("schedules-teaching-4stage.toml");
  const auto alone = run("simulate --ops-stage 2 " + file);
  EXPECT_EQ(alone.code, 1);
  EXPECT_NE(alone.err.find("--ops-stage requires --ops"), std::string::npos) << alone.err;
  EXPECT_TRUE(alone.out.empty()) << alone.out;
  for (const char* bad : {"--ops -1", "--ops 1 --ops-stage -1"}) {
    const auto r = run(std::string("simulate ") + bad + " " + file);
    EXPECT_EQ(r.code, 1) << bad;
    EXPECT_NE(r.err.find("not in range 0 to 2147483647"), std::string::npos) << r.err;
  }
}
