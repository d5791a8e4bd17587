// `trainsim collective`: nccl-tests-like sweep, JSON rows, flow mode, bad input.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "test_util.hpp"

namespace trainsim {
namespace {

using Result = test::CmdResult;

Result run(const std::string& args) { return test::run_trainsim(args, "cli-collective"); }

std::string topo(const std::string& name) {
  return (test::source_dir() / "topologies" / name).string();
}

TEST(CliCollective, JsonRowsFollowTheSweepAndNcclTestsDefinitions) {
  const Result r = run("collective --op all_reduce --gpus 8 --topology " + topo("dgx-h100.toml") +
                       " --sizes 1KiB:16GiB --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  const auto& rows = j.at("rows");
  ASSERT_EQ(rows.size(), 25U);  // 2^10 .. 2^34
  std::uint64_t expect = 1024;
  for (const auto& row : rows) {
    EXPECT_EQ(row.at("size_bytes").get<std::uint64_t>(), expect);
    const double t = row.at("time_s").get<double>();
    const double algbw = row.at("algbw_gbps").get<double>();
    EXPECT_NEAR(algbw, static_cast<double>(expect) / t / 1e9, 1e-9 * algbw);
    EXPECT_NEAR(row.at("busbw_gbps").get<double>(), algbw * 2.0 * 7 / 8, 1e-9 * algbw);
    expect *= 2;
  }
  EXPECT_EQ(rows.front().at("algorithm"), "ring");
  EXPECT_EQ(rows.back().at("algorithm"), "nvls");
  // hardware.md §3.2: 8 x H100 NVLS all_reduce, 473-482 GB/s busbw at 16 GiB.
  EXPECT_NEAR(rows.back().at("busbw_gbps").get<double>(), 477.5, 0.1 * 477.5);
}

TEST(CliCollective, TablePrintsTimeBandwidthsAndAlgorithm) {
  const Result r = run("collective --op all_gather --gpus 16 --topology " + topo("dgx-a100.toml") +
                       " --sizes 1MiB:4MiB");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("size(B)      time(us)  algbw(GB/s)  busbw(GB/s)  algorithm"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("1048576"), std::string::npos);
  EXPECT_NE(r.out.find("4194304"), std::string::npos);
  EXPECT_NE(r.out.find("ring/"), std::string::npos);
}

TEST(CliCollective, FlowModeAgreesWithoutContentionAndCountsRecomputations) {
  const std::string args = "collective --op all_gather --gpus 32 --topology " +
                           topo("dgx-a100.toml") + " --sizes 256MiB --json";
  const Result ab = run(args);
  const Result fl = run(args + " --flows");
  ASSERT_EQ(ab.code, 0) << ab.err;
  ASSERT_EQ(fl.code, 0) << fl.err;
  const auto a = nlohmann::json::parse(ab.out);
  const auto f = nlohmann::json::parse(fl.out);
  const double ta = a["rows"][0]["time_s"].get<double>();
  const double tf = f["rows"][0]["time_s"].get<double>();
  EXPECT_NEAR(tf, ta, 0.01 * ta);
  EXPECT_GT(f["flow_recomputations"].get<int>(), 0);
  EXPECT_GT(f["events"].get<int>(), 0);
}

TEST(CliCollective, TorusRunsOnItsFirstGpus) {
  // A torus is built whole; fewer GPUs than it has used to fail in the topology generator.
  const Result r = run("collective --op all_reduce --gpus 64 --sizes 1GiB --flows --topology " +
                       topo("torus-3d-h100.toml"));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("1073741824"), std::string::npos) << r.out;
}

TEST(CliCollective, APartlyUsedLastNodeBringsOnlyItsGpusNics) {
  // 12 GPUs on 8-GPU nodes used to be refused; they run on node 0 and half of node 1, so a
  // 1 GiB all-reduce crosses the network (slower than on 8 GPUs), and node 1 brings 4 of its
  // 8 NICs, which bound the inter-node traffic: slower than 16 GPUs on two whole nodes too.
  auto time_us = [](int gpus) {
    const Result r = run("collective --op all_reduce --gpus " + std::to_string(gpus) +
                         " --sizes 1GiB --json --topology " + topo("dgx-h100.toml"));
    EXPECT_EQ(r.code, 0) << r.err;
    return nlohmann::json::parse(r.out)["rows"][0]["time_s"].get<double>();
  };
  const double t8 = time_us(8), t12 = time_us(12), t16 = time_us(16);
  EXPECT_GT(t12, t8);
  EXPECT_GT(t12, t16);
}

TEST(CliCollective, AllToAllSharesTheBusiestNicOfAPartlyUsedNode) {
  // 13 GPUs on 8-GPU nodes with 4 NICs: node 1's 5 ranks sit on NICs 0,1,2,3,0, so NIC 0
  // carries two of them. Stage priced each at 4/5 of a NIC (17.6 ms against the flows'
  // 28.1 ms); it now takes the busiest NIC, as the flows do.
  const auto dir = test::temp_dir("a2a-nics4");
  std::string t = test::read(test::source_dir() / "topologies/dgx-h100.toml");
  t = test::replace(t, "nics = 8", "nics = 4");
  const std::string path = test::write(dir / "nics4.toml", t).string();
  auto time_s = [&](const std::string& extra) {
    const Result r = run("collective --op all_to_all --gpus 13 --sizes 1GiB --json --topology " +
                         path + extra);
    EXPECT_EQ(r.code, 0) << r.err;
    return nlohmann::json::parse(r.out)["rows"][0]["time_s"].get<double>();
  };
  const double stage = time_s(""), flows = time_s(" --flows");
  EXPECT_NEAR(stage / flows, 1.0, 0.01) << stage << " s against " << flows << " s";
}

TEST(CliCollective, BadInputExitsOneNamingTheOption) {
  const std::string t = " --topology " + topo("dgx-h100.toml");
  struct Case {
    std::string args, needle;
  };
  const Case cases[] = {
      {"collective --op all_sum --gpus 8" + t, "--op: unknown collective \"all_sum\""},
      {"collective --op all_reduce --gpus 8 --sizes 2KiB:1KiB" + t, "--sizes"},
      {"collective --op all_reduce --gpus 8 --sizes 1.5B" + t, "--sizes: cannot read"},
      {"collective --op sendrecv --gpus 1" + t, "sendrecv needs at least 2 GPUs"},
      {"collective --op all_reduce --gpus 1" + t, "all_reduce needs at least 2 GPUs"},
      {"collective --op all_to_all --gpus 1" + t, "all_to_all needs at least 2 GPUs"},
      {"collective --op all_reduce --gpus 8 --topology /nonexistent.toml", "nonexistent"},
      {"collective --op all_reduce --gpus 1024 --topology " + topo("torus-3d-h100.toml"),
       "--gpus 1024 is more than the torus"},
      // 8,192^2 flows would need ~13 GB: refused before any is started.
      {"collective --op all_to_all --gpus 8192 --sizes 1KiB --flows" + t,
       "--flows: 67100672 flows for one all_to_all over 8192 GPUs (limit 8000000)"},
  };
  for (const auto& c : cases) {
    const Result r = run(c.args);
    EXPECT_EQ(r.code, 1) << c.args;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_TRUE(r.out.empty()) << c.args;
  }
}

TEST(CliCollective, SimulateInFullFidelityReportsFlowsAndTheSlowestRank) {
  const auto dir = test::temp_dir("cli-full");
  const auto file = test::write(
      dir / "full.toml", test::small_scenario() +
                             "[simulation]\nfidelity = \"full\"\n"
                             "stragglers = [{ gpu = 5, speed = 0.9 }, { gpu = 12, nic_bandwidth = 0.5 }]\n");
  const Result j = run("simulate " + file.string() + " --json");
  ASSERT_EQ(j.code, 0) << j.err;
  const auto report = nlohmann::json::parse(j.out);
  const auto& sim = report.at("simulation");
  EXPECT_EQ(sim.at("fidelity"), "full");
  EXPECT_GT(sim.at("flows").get<int>(), 0);
  EXPECT_GT(sim.at("flow_recomputations").get<int>(), 0);
  EXPECT_EQ(sim.at("slowest_rank").at("gpu").get<int>(), 12);
  EXPECT_DOUBLE_EQ(sim.at("slowest_rank").at("nic_bandwidth").get<double>(), 0.5);
  const Result t = run("simulate " + file.string());
  ASSERT_EQ(t.code, 0) << t.err;
  EXPECT_NE(t.out.find("slowest rank: GPU 12 (stage "), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("max-min recomputations"), std::string::npos) << t.out;
}

}  // namespace
}  // namespace trainsim
