// Reproducibility (issue 9 item 5): reports name the trainsim version, the FNV-1a 64 hashes
// of the scenario and topology bytes and a measured profile's provenance; the same inputs
// give byte-identical output across runs and thread counts.
#include <gtest/gtest.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <sys/wait.h>

#include "config/scenario.hpp"
#include "core/hash.hpp"
#include "hw/profile_io.hpp"
#include "test_util.hpp"

using namespace trainsim;

namespace {

struct Out {
  int code = -1;
  std::string out, err;
};

Out cli(const std::string& args, const std::string& tag) {
  const auto dir = test::temp_dir("repro-" + tag);
  const std::string cmd = std::string(TRAINSIM_EXE) + " " + args + " > " +
                          (dir / "out").string() + " 2> " + (dir / "err").string();
  const int status = std::system(cmd.c_str());
  Out r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = test::read(dir / "out");
  r.err = test::read(dir / "err");
  return r;
}

std::string shipped(const std::string& name) {
  return (test::source_dir() / "scenarios" / name).string();
}

}  // namespace

TEST(Fnv1a64, MatchesTheReferenceTestVectors) {
  // draft-eastlake-fnv §8 / the reference implementation's test vectors.
  EXPECT_EQ(fnv1a64(""), 0xcbf29ce484222325ULL);
  EXPECT_EQ(fnv1a64("a"), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(fnv1a64("foobar"), 0x85944171f73967e8ULL);
  EXPECT_EQ(hex64(0xaf63dc4c8601ec8cULL), "af63dc4c8601ec8c");
  EXPECT_EQ(hex64(1), "0000000000000001");
}

TEST(Reproducibility, SimulateTwiceGivesByteIdenticalTableAndJson) {
  const std::string file = shipped("gpt3-175b-a100.toml");
  const auto t1 = cli("simulate " + file, "t1");
  const auto t2 = cli("simulate " + file, "t2");
  ASSERT_EQ(t1.code, 0) << t1.err;
  EXPECT_EQ(t1.out, t2.out);
  const auto j1 = cli("simulate --json " + file, "j1");
  const auto j2 = cli("simulate --json " + file, "j2");
  ASSERT_EQ(j1.code, 0) << j1.err;
  EXPECT_EQ(j1.out, j2.out);
  // The report names its inputs: version, scenario and topology bytes.
  const auto j = nlohmann::json::parse(j1.out);
  EXPECT_EQ(j["trainsim_version"], TRAINSIM_VERSION);
  const auto& in = j["inputs"];
  EXPECT_EQ(in["scenario_fnv1a64"], hex64(fnv1a64(test::read(file))));
  EXPECT_EQ(in["topology"], "dgx-a100.toml");
  EXPECT_EQ(in["topology_fnv1a64"],
            hex64(fnv1a64(test::read(test::source_dir() / "topologies/dgx-a100.toml"))));
  EXPECT_FALSE(in.contains("profile"));
  EXPECT_NE(t1.out.find("inputs     scenario fnv1a64 " + in["scenario_fnv1a64"].get<std::string>() +
                        ", topology dgx-a100.toml fnv1a64 "),
            std::string::npos)
      << t1.out;
}

TEST(Reproducibility, OneByteOfTheScenarioChangesItsHashNotTheResult) {
  const auto dir = test::temp_dir("repro-byte");
  const std::string text = test::small_scenario();
  const auto a = test::write(dir / "a.toml", text);
  const auto b = test::write(dir / "b.toml", text + "# a comment\n");
  const auto ja = nlohmann::json::parse(cli("simulate --json " + a.string(), "ba").out);
  const auto jb = nlohmann::json::parse(cli("simulate --json " + b.string(), "bb").out);
  EXPECT_NE(ja["inputs"]["scenario_fnv1a64"], jb["inputs"]["scenario_fnv1a64"]);
  EXPECT_EQ(ja["inputs"]["topology_fnv1a64"], jb["inputs"]["topology_fnv1a64"]);
  EXPECT_EQ(ja["step_time_ps"], jb["step_time_ps"]);
}

TEST(Reproducibility, MeasuredProfileProvenanceIsReported) {
  const auto dir = test::temp_dir("repro-profile");
  hw::HardwareProfile p;
  p.base_gpu = "a100_sxm4_80gb";
  p.provenance.gpu_name = "NVIDIA A100-SXM4-80GB";
  p.provenance.host = "node17";
  p.provenance.date = "2026-11-30T12:00:00Z";
  p.provenance.driver = "13.0";
  p.provenance.cuda_runtime = "13.0";
  p.provenance.command = "trainsim-calibrate (synthetic, tests/test_reproducibility.cpp)";
  p.gemm.push_back({hw::Dtype::BF16, 2048, 1536, 512, 40e-6});
  p.refit();
  hw::write_profile(dir / "p.toml", p);
  const auto scn = test::write(dir / "s.toml", test::small_scenario() + "profile = \"p.toml\"\n");
  const auto j = cli("simulate --json " + scn.string(), "pj");
  ASSERT_EQ(j.code, 0) << j.err;
  const auto pr = nlohmann::json::parse(j.out)["inputs"]["profile"];
  EXPECT_EQ(pr["file"], "p.toml");
  EXPECT_EQ(pr["fnv1a64"], hex64(fnv1a64(test::read(dir / "p.toml"))));
  EXPECT_EQ(pr["host"], "node17");
  EXPECT_EQ(pr["date"], "2026-11-30T12:00:00Z");
  EXPECT_EQ(pr["gpu_name"], "NVIDIA A100-SXM4-80GB");
  const auto t = cli("simulate " + scn.string(), "pt");
  EXPECT_NE(t.out.find("profile    p.toml fnv1a64 " + pr["fnv1a64"].get<std::string>() +
                       ": NVIDIA A100-SXM4-80GB on node17, 2026-11-30T12:00:00Z"),
            std::string::npos)
      << t.out;
}

TEST(Reproducibility, SearchPrintsTheSameWithOneOrTwoThreads) {
  // The small scenario keeps this cheap under ASan (the GPT-3 search takes minutes there).
  const auto dir = test::temp_dir("repro-search");
  const auto file = test::write(dir / "s.toml", test::small_scenario());
  const std::string args = "search " + file.string() + " --top 5 --des 16";
  const auto one = cli(args + " --threads 1", "s1");
  const auto two = cli(args + " --threads 2", "s2");
  ASSERT_EQ(one.code, 0) << one.err;
  EXPECT_EQ(one.out, two.out);
  const auto j1 = cli(args + " --json --threads 1", "sj1");
  const auto j2 = cli(args + " --json --threads 2", "sj2");
  ASSERT_EQ(j1.code, 0) << j1.err;
  EXPECT_EQ(j1.out, j2.out);
}
