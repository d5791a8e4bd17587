// Mixture-of-experts, expert parallelism, context parallelism and Hugging Face configs.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>

#include "config/hf_config.hpp"
#include "config/scenario.hpp"
#include "config/scenario_writer.hpp"
#include "cost/cost_model.hpp"
#include "hw/gpu.hpp"
#include "hw/topology.hpp"
#include "model/routing.hpp"
#include "net/collective.hpp"
#include "test_util.hpp"
#include "workload/builder.hpp"
#include "workload/moe.hpp"

using namespace trainsim;

namespace {

model::MoeSpec moe_of(int experts, int top_k, model::Routing r) {
  model::MoeSpec m;
  m.experts = experts;
  m.top_k = top_k;
  m.expert_ffn_hidden = 1024;
  m.routing = r;
  return m;
}

/// One MoE layer's cost inputs on two DGX H100 nodes (16 GPUs): the H100 cost model, the
/// alpha-beta collectives, and a 1024-wide SwiGLU model of `layers` layers with `moe`.
struct H100MoeBench {
  hw::TopologySpec topo_spec =
      config::load_topology(test::source_dir() / "topologies/dgx-h100.toml");
  hw::Topology topo{topo_spec, 16};
  hw::GpuSpec gpu = *hw::find_builtin_gpu("h100_sxm");
  net::AlphaBetaModel comm{topo, gpu};
  cost::CostModel cost{gpu};
  model::ModelSpec m;
  H100MoeBench(int layers, const model::MoeSpec& moe) {
    m.layers = layers;
    m.hidden = 1024;
    m.heads = 16;
    m.kv_heads = 16;
    m.ffn_hidden = 4096;
    m.vocab = 1000;
    m.seq_len = 2048;
    m.activation = model::Activation::SwiGLU;
    m.moe = moe;
  }
};

/// A small MoE scenario on 16 H100 (two nodes): 4 layers, 8 experts top-2, EP as given.
std::string moe_scenario(int ep, const std::string& moe_extra = "",
                         const std::string& parallel_extra = "") {
  return "version = 1\nname = \"moe\"\n"
         "[model]\nlayers = 4\nhidden = 1024\nheads = 16\nkv_heads = 4\nffn_hidden = 2048\n"
         "vocab = 32000\nseq_len = 2048\nactivation = \"swiglu\"\nnorm = \"rmsnorm\"\n"
         "[model.moe]\nexperts = 8\ntop_k = 2\nexpert_ffn_hidden = 1024\n" + moe_extra +
         "[training]\nglobal_batch = 32\nmicro_batch = 1\n"
         "[parallel]\ntp = 1\npp = 2\ndp = 8\nep = " + std::to_string(ep) + "\nzero = 1\n" +
         parallel_extra +
         "[cluster]\ntopology = \"" + (test::source_dir() / "topologies/dgx-h100.toml").string() +
         "\"\ngpus = 16\n";
}

workload::Scenario load(const std::string& name, const std::string& text) {
  const auto dir = test::temp_dir("moe-" + name);
  return config::load_scenario(test::write(dir / "s.toml", text));
}

std::string load_error(const std::string& name, const std::string& text) {
  try {
    (void)load(name, text);
  } catch (const config::ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(MoeRouting, BalancedAllToAllBytesMatchTheClosedForm) {
  // tokens x top-k x hidden x bytes x (EP-1)/EP in each direction, on every rank.
  const std::int64_t T = 4096;
  const int h = 7168, k = 8, ep = 64;
  const auto r = model::route_tokens(moe_of(256, k, model::Routing::Balanced), T, ep, 7, 3);
  for (int rank = 0; rank < ep; ++rank) {
    const double expected = static_cast<double>(T) * k * h * 2.0 * (ep - 1) / ep;
    EXPECT_DOUBLE_EQ(static_cast<double>(r.rows_sent(rank)) * h * 2.0, expected) << rank;
    EXPECT_DOUBLE_EQ(static_cast<double>(r.rows_received(rank)) * h * 2.0, expected) << rank;
  }
  EXPECT_DOUBLE_EQ(r.imbalance(), 1.0);
  EXPECT_EQ(r.dropped, 0);
}

TEST(MoeRouting, AllToAllCostUsesTheRoutingsPerRankBytes) {
  // The all-to-all is sized by the busiest rank's send or receive rows (self included).
  H100MoeBench b(4, moe_of(16, 2, model::Routing::Zipf));
  b.m.moe.zipf_exponent = 1.0;
  const auto& m = b.m;
  const auto& comm = b.comm;
  const auto& cost = b.cost;
  parallel::Layout L;
  L.dp = 16;
  L.ep = 8;
  for (int layer = 0; layer < 3; ++layer) {
    const auto c = workload::moe_layer_cost(m, L, workload::GemmKernels{}, 1, cost, comm, 5, layer, 0);
    const auto r = model::route_tokens(m.moe, 2048, 8, 5, layer);
    std::int64_t worst = 0;
    for (int k = 0; k < 8; ++k) {
      worst = std::max({worst, r.rows_sent(k) + r.rows_between(k, k), r.rows_processed(k)});
    }
    EXPECT_DOUBLE_EQ(c.a2a_bytes, static_cast<double>(worst) * 1024 * 2);
    EXPECT_EQ(c.rows_busiest, r.rows_processed(r.busiest_rank()));
    EXPECT_GT(c.imbalance, 1.0);  // a Zipf router is skewed
    const auto cost_of = comm.cost(net::CollectiveOp::AllToAll,
                                   static_cast<std::uint64_t>(c.a2a_bytes), L.ep_group(0, 0));
    EXPECT_EQ(c.combine, cost_of.time);
  }
}

TEST(MoeRouting, ReportedAllToAllBytesAreTheOffRankBytesInTheDispatchDtype) {
  // Balanced routing, no drops: T·k·h·bytes·(EP-1)/EP per rank, dispatch and combine; FP8
  // dispatch moves one byte per element, its combine two.
  H100MoeBench b(4, moe_of(16, 2, model::Routing::Balanced));
  const double T = 2048, k = 2, h = 1024;
  for (int ep : {2, 4, 8}) {
    parallel::Layout L;
    L.dp = 16;
    L.ep = ep;
    const auto c = workload::moe_layer_cost(b.m, L, workload::GemmKernels{}, 1, b.cost, b.comm, 5, 0, 0);
    EXPECT_DOUBLE_EQ(c.a2a_dispatch_bytes, T * k * h * 2 * (ep - 1) / ep) << ep;
    EXPECT_DOUBLE_EQ(c.a2a_combine_bytes, T * k * h * 2 * (ep - 1) / ep) << ep;
    workload::GemmKernels fp8;
    fp8.dtype = hw::Dtype::FP8;
    const auto c8 = workload::moe_layer_cost(b.m, L, fp8, 1, b.cost, b.comm, 5, 0, 0);
    EXPECT_DOUBLE_EQ(c8.a2a_dispatch_bytes, T * k * h * 1 * (ep - 1) / ep) << ep;
    EXPECT_DOUBLE_EQ(c8.a2a_combine_bytes, T * k * h * 2 * (ep - 1) / ep) << ep;
  }
  // Skewed: the busiest rank's off-rank sends or receives.
  b.m.moe.routing = model::Routing::Zipf;
  parallel::Layout L;
  L.dp = 16;
  L.ep = 8;
  const auto c = workload::moe_layer_cost(b.m, L, workload::GemmKernels{}, 1, b.cost, b.comm, 5, 2, 0);
  const auto r = model::route_tokens(b.m.moe, 2048, 8, 5, 2);
  std::int64_t worst = 0;
  for (int rank = 0; rank < 8; ++rank) {
    worst = std::max({worst, r.rows_sent(rank), r.rows_received(rank)});
  }
  EXPECT_DOUBLE_EQ(c.a2a_dispatch_bytes, static_cast<double>(worst) * h * 2);
  // The step's report: the same per MoE layer (7/8 of 2048 x 2 x 1024 x 2 B = 7 MiB).
  const auto rs = workload::simulate_step(load("a2a-report", moe_scenario(8)));
  ASSERT_TRUE(rs.moe.has_value());
  EXPECT_DOUBLE_EQ(rs.moe->a2a_dispatch_bytes_per_layer, 7.0 * 1024 * 1024);
  EXPECT_DOUBLE_EQ(rs.moe->a2a_combine_bytes_per_layer, 7.0 * 1024 * 1024);
}

TEST(Moe, DroppedRowsAreNotCountedAsHardwareFlops) {
  // Capacity factor 0.5 of balanced routing drops half the routed rows: they skip the expert
  // GEMMs, so hardware FLOPs lose that share of 18·R·f·h per MoE layer (fc1 2f x h and fc2
  // h x f, forward, dgrad and wgrad); model FLOPs keep Megatron's count.
  const auto full = workload::simulate_step(load("cf-none", moe_scenario(8)));
  const auto half = workload::simulate_step(load("cf-half", moe_scenario(8, "capacity_factor = 0.5\n")));
  ASSERT_TRUE(half.moe.has_value());
  EXPECT_NEAR(half.moe->dropped_fraction, 0.5, 1e-12);
  const double R = 32.0 * 2048 * 2, f = 1024, h = 1024;
  const double expert = 18 * R * f * h * 4;  // 4 MoE layers
  EXPECT_DOUBLE_EQ(half.model_flops, full.model_flops);
  EXPECT_NEAR(half.hardware_flops, full.hardware_flops - 0.5 * expert, 1e-9 * full.hardware_flops);
  EXPECT_NEAR(half.hfu / half.mfu, half.hardware_flops / half.model_flops, 1e-12);
}

TEST(MoeRouting, SeededDrawsAreDeterministicAndConserveTokens) {
  const auto spec = moe_of(64, 4, model::Routing::Uniform);
  const auto a = model::route_tokens(spec, 1000, 8, 42, 1);
  const auto b = model::route_tokens(spec, 1000, 8, 42, 1);
  const auto c = model::route_tokens(spec, 1000, 8, 43, 1);
  EXPECT_EQ(a.rows, b.rows);
  EXPECT_NE(a.rows, c.rows);
  std::int64_t total = 0;
  for (auto x : a.rows) total += x;
  EXPECT_EQ(total, 1000 * 4 * 8);
  EXPECT_GE(a.imbalance(), 1.0);
  EXPECT_LT(a.imbalance(), 1.2);  // 4000 rows per rank: binomial spread of a few percent
}

TEST(MoeRouting, ImbalanceFactorIsTheMaxOverMeanTokensPerRank) {
  auto spec = moe_of(16, 2, model::Routing::Imbalance);
  spec.imbalance = 2.5;
  const auto r = model::route_tokens(spec, 4000, 4, 0, 0);
  EXPECT_NEAR(r.imbalance(), 2.5, 1e-3);
  EXPECT_EQ(r.busiest_rank(), 0);
}

TEST(MoeRouting, CapacityFactorDropsTokensAboveCapacity) {
  auto spec = moe_of(8, 2, model::Routing::Zipf);
  spec.zipf_exponent = 1.5;
  spec.capacity_factor = 1.0;
  const auto r = model::route_tokens(spec, 1024, 4, 1, 0);
  EXPECT_GT(r.dropped, 0);
  const std::int64_t cap = 1024 * 2 / 8;  // ceil(cf x T x k / E)
  for (auto x : r.rows) EXPECT_LE(x, cap);
  std::int64_t kept = 0;
  for (auto x : r.rows) kept += x;
  EXPECT_EQ(kept + r.dropped, 1024 * 2 * 4);
}

TEST(Moe, OneExpertWithoutEpCostsExactlyTheDenseLayer) {
  const std::string dense = test::small_scenario();
  const std::string moe = test::replace(dense, "[training]\n",
                                        "[model.moe]\nexperts = 1\ntop_k = 1\n"
                                        "expert_ffn_hidden = 4096\n[training]\n");
  const auto rd = workload::simulate_step(load("dense", dense));
  const auto rm = workload::simulate_step(load("moe1", moe));
  EXPECT_EQ(rd.step_time, rm.step_time);
  EXPECT_DOUBLE_EQ(rd.model_flops, rm.model_flops);
  EXPECT_DOUBLE_EQ(rd.memory.total, rm.memory.total);
}

TEST(Moe, ExpertParallelismAddsFourAllToAllsPerLayerAndShardsExpertState) {
  const auto sc1 = load("ep1", moe_scenario(1));
  const auto sc8 = load("ep8", moe_scenario(8));
  const auto r1 = workload::simulate_step(sc1);
  const auto r8 = workload::simulate_step(sc8);
  // Four all-to-alls per MoE layer per microbatch (dispatch, combine, and both in backward).
  std::size_t a2a = 0;
  for (TaskId t = 0; t < r8.graph->num_tasks(); ++t) {
    if (r8.graph->task(t).category == Category::EpComm) ++a2a;
  }
  const std::size_t microbatches = 32 / 8;
  EXPECT_EQ(a2a, 4U * 4U * microbatches);  // 4 layers over the two stages
  // Parameters per GPU: dense part plus experts / ep. Memory under ZeRO-1: optimizer states
  // of dense weights over dp, of experts over the expert-DP ranks (dp / ep = 1).
  const auto& m = sc8.model;
  const double experts_per_layer = m.expert_params();  // unsharded
  const double dense_stage0 = r8.stages[0].params - 2 * experts_per_layer / 8;
  EXPECT_NEAR(r1.stages[0].params - 2 * experts_per_layer, dense_stage0, 1.0);
  EXPECT_NEAR(r8.stages[0].memory.weights, 2.0 * r8.stages[0].params, 1.0);
  const double expected_opt = 12.0 * (dense_stage0 / 8 + 2 * experts_per_layer / 8 / 1);
  EXPECT_NEAR(r8.stages[0].memory.optimizer, expected_opt, 1.0);
  ASSERT_TRUE(r8.moe.has_value());
  EXPECT_DOUBLE_EQ(r8.moe->imbalance_mean, 1.0);  // balanced by default
  EXPECT_GT(r8.breakdown.exposed_of(Category::EpComm), 0.0);
}

// Megatron-Core scales expert gradients by 1/(DP x CP) too, even when every expert lives on
// one rank of its DP group (EP = DP: nothing to reduce): the scaling kernels of a stage cover
// its dense and its expert gradients (one pass over all of them is never slower than the
// buckets one by one), and without them the step is shorter.
TEST(Moe, ExpertGradientsAreScaledEvenWithoutExpertDataParallelism) {
  auto sc = load("scale", moe_scenario(8));
  ASSERT_EQ(sc.layout.expert_dp(), 1);
  const auto r = workload::simulate_step(sc);
  const cost::CostModel cost(sc.gpu);
  std::map<std::uint32_t, Time> per_rank;
  for (TaskId t = 0; t < r.graph->num_tasks(); ++t) {
    const auto& task = r.graph->task(t);
    if (r.graph->label(task.label) != "dp grad scale") continue;
    per_rank[r.graph->stream(task.stream).rank] += task.duration;
  }
  ASSERT_EQ(per_rank.size(), r.stages.size());
  Time need = Time::zero();
  for (const auto& st : r.stages) need += cost.memory_bound(2.0 * 4.0 * st.params);
  Time have = Time::zero();
  for (const auto& [rank, t] : per_rank) have += t;
  EXPECT_GE(have, need);
  sc.training.grad_scaling = workload::GradScaling::Collective;
  EXPECT_LT(workload::simulate_step(sc).step_time, r.step_time);
}

TEST(Moe, SkewedRoutingIsSlowerThanBalanced) {
  const auto bal = workload::simulate_step(load("bal", moe_scenario(8)));
  const auto skew = workload::simulate_step(
      load("skew", moe_scenario(8, "routing = \"imbalance\"\nimbalance = 3.0\n")));
  EXPECT_GT(skew.step_time, bal.step_time);
  EXPECT_NEAR(skew.moe->imbalance_max, 3.0, 0.01);
}

TEST(Moe, EpGroupsTakeTheirRanksFromDataParallelRanksInsideANode) {
  parallel::Layout L;
  L.tp = 2;
  L.dp = 8;
  L.ep = 4;
  L.pp = 1;
  EXPECT_EQ(L.ep_group(0, 0, 0), (std::vector<int>{0, 2, 4, 6}));
  EXPECT_EQ(L.ep_group(1, 0, 1), (std::vector<int>{9, 11, 13, 15}));
  EXPECT_EQ(L.expert_dp_group(0, 0, 1), (std::vector<int>{2, 10}));
  L.cp = 2;
  L.dp = 4;
  // Flattened x = cp_i + cp * dp_i: EP 4 spans two DP ranks x two CP ranks.
  EXPECT_EQ(L.ep_group(0, 0, 0), (std::vector<int>{0, 2, 4, 6}));
  EXPECT_EQ(L.dp_cp_group(0, 0).size(), 8U);
}

// Expert TP (MoE parallel folding): expert layers number a stage's ranks again in
// Megatron-Core's order "tp-ep-dp-pp" with etp as the TP degree.
TEST(Moe, ExpertTensorParallelismRenumbersTheStagesRanksForExpertLayers) {
  parallel::Layout L;
  L.tp = 4;
  L.dp = 2;
  L.pp = 2;
  L.ep = 8;
  L.etp = 1;
  L.sequence_parallel = true;
  // ETP 1: an EP group is ep consecutive ranks, TP ranks included; nothing left to replicate.
  EXPECT_EQ(L.ep_group(0, 0, 0), (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(L.ep_group(0, 1, 0), (std::vector<int>{8, 9, 10, 11, 12, 13, 14, 15}));
  EXPECT_EQ(L.expert_dp(), 1);
  EXPECT_EQ(L.expert_dp_group(0, 1, 3), (std::vector<int>{11}));
  EXPECT_EQ(L.ep_groups(0).size(), 1U);
  // ETP 2 under TP 4, DP 4, EP 4: etp_i = g mod 2, ep_i = (g / 2) mod 4, expert-DP g / 8.
  L.dp = 4;
  L.ep = 4;
  L.etp = 2;
  EXPECT_EQ(L.expert_tp(), 2);
  EXPECT_EQ(L.expert_dp(), 2);
  EXPECT_EQ(L.ep_group(1, 0, 1), (std::vector<int>{9, 11, 13, 15}));
  EXPECT_EQ(L.expert_dp_group(0, 0, 1), (std::vector<int>{2, 10}));
  EXPECT_EQ(L.ep_groups(0).size(), 4U);  // 2 blocks x 2 expert-TP ranks
  EXPECT_EQ(L.expert_dp_groups(0).size(), 8U);
  const auto etp = L.etp_groups(1);
  ASSERT_EQ(etp.size(), 8U);
  EXPECT_EQ(etp.front(), (std::vector<int>{16, 17}));
  EXPECT_EQ(etp.back(), (std::vector<int>{30, 31}));
  // etp = tp (explicit or 0) is the default numbering: blocks of ep in x = cp_i + cp·dp_i.
  parallel::Layout D = L;
  D.etp = 0;
  parallel::Layout E = L;
  E.etp = 4;
  E.ep = 2;
  D.ep = 2;
  EXPECT_EQ(D.ep_groups(0), E.ep_groups(0));
  EXPECT_EQ(D.ep_group(1, 0, 1), (std::vector<int>{9, 13}));
  EXPECT_EQ(D.expert_dp(), 2);
}

// Each rank routes its own sequence-parallel shard with expert TP 1: under TP 2 with micro
// batch 2 a rank routes 2048 tokens, exactly what a TP 1 rank routes with micro batch 1, on
// the same EP ranks (0..7) — so every expert-side cost is the same, to the picosecond.
TEST(Moe, ExpertTpOneUnderTpTwoRoutesWhatTpOneRoutesAtHalfTheMicrobatch) {
  H100MoeBench b(4, moe_of(8, 2, model::Routing::Uniform));
  parallel::Layout L1;
  L1.dp = 16;
  L1.ep = 8;
  parallel::Layout L2;
  L2.tp = 2;
  L2.sequence_parallel = true;
  L2.dp = 8;
  L2.ep = 8;
  L2.etp = 1;
  ASSERT_EQ(L2.ep_group(0, 0), L1.ep_group(0, 0));
  for (int layer = 0; layer < 3; ++layer) {
    const auto a = workload::moe_layer_cost(b.m, L1, workload::GemmKernels{}, 1, b.cost, b.comm, 9,
                                            layer, 0);
    const auto c = workload::moe_layer_cost(b.m, L2, workload::GemmKernels{}, 2, b.cost, b.comm, 9,
                                            layer, 0);
    EXPECT_FALSE(a.local_tokens);
    EXPECT_TRUE(c.local_tokens);
    EXPECT_EQ(c.rows_busiest, a.rows_busiest);
    EXPECT_EQ(c.rows_sent, a.rows_sent);
    EXPECT_DOUBLE_EQ(c.imbalance, a.imbalance);
    EXPECT_EQ(c.router_gemm.fwd, a.router_gemm.fwd);
    EXPECT_EQ(c.expert_in.fwd, a.expert_in.fwd);
    EXPECT_EQ(c.expert_in.wgrad, a.expert_in.wgrad);
    EXPECT_EQ(c.expert_out.dgrad, a.expert_out.dgrad);
    EXPECT_EQ(c.expert_act_bwd, a.expert_act_bwd);
    EXPECT_EQ(c.permute, a.permute);
    EXPECT_EQ(c.unpermute_bwd, a.unpermute_bwd);
    EXPECT_EQ(c.sort_chunks, a.sort_chunks);
    EXPECT_DOUBLE_EQ(c.a2a_dispatch_bytes, a.a2a_dispatch_bytes);
    EXPECT_EQ(c.dispatch, a.dispatch);
    EXPECT_EQ(c.combine_bwd, a.combine_bwd);
    EXPECT_EQ(c.etp_ag, Time::zero());  // etp 1: nothing to gather
  }
  // Balanced routing: T·k·h/tp·bytes·(EP−1)/EP per rank, T the microbatch's tokens.
  b.m.moe.routing = model::Routing::Balanced;
  const auto c = workload::moe_layer_cost(b.m, L2, workload::GemmKernels{}, 2, b.cost, b.comm, 9, 0, 0);
  EXPECT_DOUBLE_EQ(c.a2a_dispatch_bytes, 2.0 * 2048 * 2 * 1024 / 2 * 2.0 * 7 / 8);
}

// Under sequence parallelism with EP (Megatron-Core's all-to-all dispatcher) the MoE block
// runs on each rank's own tokens: instead of the dense MLP's TP collectives around it (five
// per MoE layer and microbatch: all-gather and reduce-scatter forward, their conjugates and
// the wgrad re-gather backward), the rows an EP rank receives are gathered over the expert-TP
// group and reduce-scattered after the experts, forward and backward (four); expert TP 1 has
// none. EP 1 keeps the wrapped block (the all-gather dispatcher; dense-identical). Parameters
// follow the expert split.
TEST(Moe, ExpertsUnderSpRunOnTheirOwnTokensWithRowsGatheredOverExpertTp) {
  auto with = [](int tp, int dp, int ep, const std::string& etp, const std::string& moe = "") {
    std::string text = test::replace(moe_scenario(ep, "routing = \"uniform\"\n" + moe,
                                                  "sequence_parallel = true\n" + etp),
                                     "tp = 1\npp = 2\ndp = 8\n",
                                     "tp = " + std::to_string(tp) + "\npp = 2\ndp = " +
                                         std::to_string(dp) + "\n");
    return workload::simulate_step(load("etp", text));
  };
  auto count = [](const workload::StepResult& r, Category cat, const std::string& prefix) {
    std::size_t n = 0;
    for (TaskId t = 0; t < r.graph->num_tasks(); ++t) {
      const auto& task = r.graph->task(t);
      if (task.category == cat && r.graph->label(task.label).rfind(prefix, 0) == 0) ++n;
    }
    return n;
  };
  const std::size_t layers_x_mb = 4U * (32 / 4);  // 4 MoE layers, 8 microbatches per stage
  const auto wrapped = with(2, 4, 1, "");
  const auto ep4 = with(2, 4, 4, "");
  const auto etp1 = with(2, 4, 4, "etp = 1\n");
  EXPECT_EQ(count(wrapped, Category::TpComm, "etp "), 0U);
  EXPECT_EQ(count(wrapped, Category::TpComm, "tp ") - count(ep4, Category::TpComm, "tp "),
            5U * layers_x_mb);
  EXPECT_EQ(count(ep4, Category::TpComm, "etp all_gather"), 2U * layers_x_mb);
  EXPECT_EQ(count(ep4, Category::TpComm, "etp reduce_scatter"), 2U * layers_x_mb);
  EXPECT_EQ(count(etp1, Category::TpComm, "etp "), 0U);
  EXPECT_EQ(count(etp1, Category::TpComm, "tp "), count(ep4, Category::TpComm, "tp "));
  EXPECT_EQ(count(etp1, Category::EpComm, ""), count(ep4, Category::EpComm, ""));
  // Experts whole on a rank with etp 1: two of them (ep 4) hold twice the TP-split expert
  // weights of etp 2; with ep 8 one expert per rank holds as much as etp 2's two halves.
  const double expert = 3.0 * 1024 * 1024;  // SwiGLU expert, h = f = 1024
  EXPECT_NEAR(etp1.stages[0].params - ep4.stages[0].params, 2 * (2 * expert - 2 * expert / 2), 1.0);
  const auto etp1_ep8 = with(2, 4, 8, "etp = 1\n");
  EXPECT_NEAR(etp1_ep8.stages[0].params, ep4.stages[0].params, 1.0);
  // Shared experts keep the attention's TP as a sequence-parallel MLP of their own: the same
  // TP collectives as the wrapped block, wgrad re-gather included.
  const std::string shared = "shared_experts = 1\n";
  for (const std::string& etp : {std::string(), std::string("etp = 1\n")}) {
    const auto sh = with(2, 4, 4, etp, shared);
    EXPECT_EQ(count(sh, Category::TpComm, "tp "),
              count(with(2, 4, 1, "", shared), Category::TpComm, "tp "))
        << etp;
    EXPECT_EQ(count(sh, Category::TpComm, "tp all_gather (wgrad input)"),
              count(wrapped, Category::TpComm, "tp all_gather (wgrad input)"));
  }
  // TP 4, expert TP 2: the gathers run on the expert-TP pairs.
  const auto mid = with(4, 2, 4, "etp = 2\n");
  EXPECT_EQ(count(mid, Category::TpComm, "etp all_gather"), 2U * 4U * (32 / 2));
  EXPECT_GT(mid.step_time, Time::zero());
}

// The expert-TP all-gather moves the rows the busiest EP rank received, x h, over its
// expert-TP group: top-k times the block's tokens, not the tokens once.
TEST(Moe, ExpertTpGatherMovesTheReceivedRows) {
  H100MoeBench b(4, moe_of(8, 2, model::Routing::Balanced));
  parallel::Layout L;
  L.tp = 2;
  L.sequence_parallel = true;
  L.dp = 8;
  L.ep = 4;
  const auto c = workload::moe_layer_cost(b.m, L, workload::GemmKernels{}, 1, b.cost, b.comm, 3, 0, 0);
  ASSERT_TRUE(c.local_tokens);
  // Balanced: the expert-TP pair routes its two shards of T/2 tokens, T·k = 4096 rows.
  EXPECT_EQ(c.rows_busiest, 2048 * 2);
  const auto ag = b.comm.cost(net::CollectiveOp::AllGather,
                              static_cast<std::uint64_t>(c.rows_busiest * 1024 * 2),
                              L.etp_groups(0).front());
  EXPECT_EQ(c.etp_ag, ag.time);
  EXPECT_GT(c.etp_ag, Time::zero());
}

// With expert TP 1 under TP 2 and dp = 1, every TP rank holds whole experts trained on its
// own tokens: the experts have two DP ranks though dense weights have none, and their
// gradients are reduced (and ZeRO-1 shards and re-gathers them) over those ranks.
TEST(Moe, ExpertDataParallelismWithoutDenseDataParallelismReduces) {
  std::string text = test::replace(moe_scenario(1, "", "sequence_parallel = true\netp = 1\n"),
                                   "tp = 1\npp = 2\ndp = 8\n", "tp = 2\npp = 2\ndp = 1\n");
  text = test::replace(text, "gpus = 16", "gpus = 4");
  text = test::replace(text, "global_batch = 32", "global_batch = 4");
  const auto sc = load("edp", text);
  ASSERT_EQ(sc.layout.dp_cp(), 1);
  ASSERT_EQ(sc.layout.expert_dp(), 2);
  const auto r = workload::simulate_step(sc);
  std::size_t reduce = 0, gather = 0, dense_reduce = 0;
  for (TaskId t = 0; t < r.graph->num_tasks(); ++t) {
    const auto& task = r.graph->task(t);
    const std::string& l = r.graph->label(task.label);
    if (task.category != Category::DpComm || task.duration == Time::zero()) continue;
    reduce += l.rfind("expert-dp", 0) == 0 ? 1 : 0;
    gather += l == "dp all_gather params" ? 1 : 0;
    dense_reduce += l.rfind("dp reduce_scatter", 0) == 0 || l.rfind("dp all_reduce", 0) == 0 ? 1 : 0;
  }
  EXPECT_GT(reduce, 0U);
  EXPECT_GT(gather, 0U);
  EXPECT_EQ(dense_reduce, 0U);
}

TEST(Moe, LayoutRejectsIllegalExpertTensorParallelism) {
  const std::string tp2 = "tp = 2\npp = 2\ndp = 4\n";
  auto scen = [&](int ep, const std::string& extra) {
    return test::replace(moe_scenario(ep, "", extra), "tp = 1\npp = 2\ndp = 8\n", tp2);
  };
  const std::string e1 = load_error("etp3", scen(4, "sequence_parallel = true\netp = 3\n"));
  EXPECT_NE(e1.find("parallel.etp (3) must divide parallel.tp (2)"), std::string::npos) << e1;
  EXPECT_NE(e1.find("s.toml:"), std::string::npos) << e1;
  const std::string e2 = load_error("etp-nosp", scen(4, "etp = 1\n"));
  EXPECT_NE(e2.find("needs parallel.sequence_parallel = true"), std::string::npos) << e2;
  const std::string e3 =
      load_error("etp-ep", test::replace(scen(16, "sequence_parallel = true\netp = 1\n"),
                                         "experts = 8", "experts = 16"));
  EXPECT_NE(e3.find("must divide (tp / etp) x dp x cp (8)"), std::string::npos) << e3;
  // ETP 1 lets EP 8 take two TP ranks per DP rank: accepted where etp = tp refuses it.
  EXPECT_EQ(load_error("etp-ok", scen(8, "sequence_parallel = true\netp = 1\n")), "");
  EXPECT_NE(load_error("etp-no", scen(8, "sequence_parallel = true\n")).find("must divide dp x cp"),
            std::string::npos);
  const std::string dense = test::replace(test::small_scenario(), "tp = 2\n", "tp = 2\netp = 1\n");
  const std::string e4 = load_error("etp-dense", dense);
  EXPECT_NE(e4.find("the model has no experts"), std::string::npos) << e4;
}

TEST(Moe, LayoutRejectsIllegalExpertParallelism) {
  EXPECT_NE(load_error("ep3", moe_scenario(3)).find("must divide model.moe.experts"),
            std::string::npos);
  EXPECT_NE(load_error("ep16", test::replace(moe_scenario(16), "experts = 8", "experts = 16"))
                .find("must divide dp x cp"),
            std::string::npos);
  EXPECT_NE(load_error("imb", moe_scenario(8, "imbalance = 2.0\n")).find("needs routing"),
            std::string::npos);
  EXPECT_NE(load_error("imb9", moe_scenario(8, "routing = \"imbalance\"\nimbalance = 9.0\n"))
                .find("cannot exceed parallel.ep"),
            std::string::npos);
  // The factor is the routing model: without it the step was the balanced one.
  EXPECT_NE(load_error("imb_none", moe_scenario(8, "routing = \"imbalance\"\n"))
                .find("model.moe.routing = \"imbalance\" needs model.moe.imbalance"),
            std::string::npos);
}

TEST(ContextParallel, RingAttentionFlopsSplitTheCausalAttentionEvenly) {
  model::ModelSpec m;
  m.layers = 1;
  m.hidden = 4096;
  m.heads = 32;
  m.kv_heads = 8;
  m.ffn_hidden = 14336;
  m.vocab = 1000;
  m.seq_len = 131072;
  const double b = 1, s = m.seq_len, H = m.heads, d = m.head_dim();
  const double causal_full = 2.0 * b * s * s * H * d;  // (4 b s² H d) halved by the mask
  for (int cp : {2, 4, 8, 16}) {
    double sum = 0, unbalanced_max = 0;
    // The builder runs cp kernels of a causal (s/cp)² block per rank.
    const double blk = s / cp;
    const double per_rank_kernels = cp * 4.0 * b * blk * blk * H * d / 2.0;
    for (int r = 0; r < cp; ++r) {
      const double f = model::cp_attention_fwd_flops(m, 1, cp, r, true);
      sum += f;
      EXPECT_NEAR(f / (causal_full / cp), 1.0, 0.01) << cp << " " << r;
      EXPECT_NEAR(per_rank_kernels / f, 1.0, 1e-12);
      unbalanced_max = std::max(unbalanced_max, model::cp_attention_fwd_flops(m, 1, cp, r, false));
    }
    EXPECT_NEAR(sum / causal_full, 1.0, 1e-12);
    EXPECT_GE(unbalanced_max / (causal_full / cp), 1.5);  // contiguous chunks are unbalanced
  }
}

TEST(ContextParallel, CpOneIsThePlainStepAndRingStepsRunPerLayer) {
  const std::string base = test::small_scenario();
  const auto plain = workload::simulate_step(load("cp-plain", base));
  const auto cp1 = workload::simulate_step(
      load("cp1", test::replace(base, "[parallel]\n", "[parallel]\ncp = 1\ncp_comm = \"p2p\"\n")));
  EXPECT_EQ(plain.step_time, cp1.step_time);
  // CP 2 on twice the GPUs: two ring steps per attention, KV transfers on the CP stream.
  std::string cp2 = test::replace(base, "[parallel]\n", "[parallel]\ncp = 2\n");
  cp2 = test::replace(cp2, "gpus = 16", "gpus = 32");
  const auto r = workload::simulate_step(load("cp2", cp2));
  std::size_t attn_fwd = 0, kv = 0;
  for (TaskId t = 0; t < r.graph->num_tasks(); ++t) {
    const auto& task = r.graph->task(t);
    if (r.graph->label(task.label) == "attention") ++attn_fwd;
    if (task.category == Category::CpComm) ++kv;
  }
  const std::size_t passes = 4 * (16 / (2 * 4));  // layers x microbatches per pipeline
  EXPECT_EQ(attn_fwd, 2 * passes);
  EXPECT_EQ(kv, passes * (1 + 2));  // forward: 1 transfer; backward: 1 KV+dKV, 1 dKV return
  // Transformer Engine's ring merges, as the builder prices them: per attention forward the
  // KV concatenation and zeroed output, one half-KV copy per later step and one merge of
  // each step's output; per backward the KV copy, the half-KV copies and the dQ/dKV
  // accumulation of each step. Rank shapes: out = 2 x 512 x 1024/2 x 2 B, K+V twice that.
  const cost::CostModel cost(load("cp2", cp2).gpu);
  const double out = 2.0 * 512 * 512 * 2, kvb = 2.0 * out;
  Time merge_fwd, merge_bwd;
  for (TaskId t = 0; t < r.graph->num_tasks(); ++t) {
    const auto& task = r.graph->task(t);
    if (r.graph->label(task.label) == "cp attention merge") merge_fwd += task.duration;
    if (r.graph->label(task.label) == "cp attention merge bwd") merge_bwd += task.duration;
  }
  const auto n = static_cast<std::int64_t>(passes);
  EXPECT_EQ(merge_fwd, (cost.memory_bound(2 * kvb + out) + cost.memory_bound(kvb) +
                        cost.memory_bound(3 * out) * 2) * n);
  EXPECT_EQ(merge_bwd, (cost.memory_bound(2 * kvb) + cost.memory_bound(kvb) +
                        cost.memory_bound(3 * out + 3 * kvb) * 2) * n);
  // Per-token work halves: the step is faster than without CP on half the GPUs.
  EXPECT_LT(r.step_time, plain.step_time);
  EXPECT_LT(r.memory.activations, plain.memory.activations);
}

TEST(HfConfig, ShippedConfigsGiveThePublishedParameterCounts) {
  const auto dir = test::source_dir() / "scenarios/hf";
  struct Case {
    const char* file;
    double total_b, tolerance_b;
  };
  // Published totals: Mixtral 46.7B, Qwen3-30B-A3B 30.5B, DeepSeek-V3 671B (main model,
  // without the multi-token-prediction module), Llama 3 8B 8.03B.
  for (const Case& c : {Case{"mixtral-8x7b.json", 46.7, 0.1}, Case{"qwen3-30b-a3b.json", 30.5, 0.1},
                        Case{"deepseek-v3.json", 671.0, 1.0}, Case{"llama3-8b.json", 8.03, 0.01}}) {
    const auto m = config::load_hf_config(dir / c.file);
    EXPECT_NEAR((m.total_params() - m.mtp_params()) / 1e9, c.total_b, c.tolerance_b) << c.file;
  }
  const auto ds = config::load_hf_config(dir / "deepseek-v3.json");
  // DeepSeek-V3's Hugging Face card: 671B main model + 14B MTP module weights, the latter
  // stored with their own copies of the embedding and the output head (2 x V x h).
  EXPECT_EQ(ds.mtp_layers, 1);
  EXPECT_NEAR((ds.mtp_params() + 2.0 * ds.embedding_params()) / 1e9, 14.0, 0.7);
  EXPECT_EQ(ds.moe_layers(), 58);
  EXPECT_EQ(ds.moe.experts, 256);
  EXPECT_EQ(ds.moe.top_k, 8);
  EXPECT_EQ(ds.moe.shared_ffn(), 2048);
  const auto q = config::load_hf_config(dir / "qwen3-30b-a3b.json");
  EXPECT_EQ(q.head_dim(), 128);
  EXPECT_EQ(q.qkv_width(), (32 + 2 * 4) * 128);
}

TEST(HfConfig, FieldsItCannotHonourAreRejectedWithTheirLine) {
  const auto dir = test::temp_dir("hf");
  const std::string good = test::read(test::source_dir() / "scenarios/hf/llama3-8b.json");
  auto err = [&](const std::string& text) -> std::string {
    try {
      (void)config::load_hf_config(test::write(dir / "c.json", text));
    } catch (const config::ConfigError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(err(good), "");
  auto msg = err(test::replace(good, "\"vocab_size\"", "\"frobnicate\": 3,\n  \"vocab_size\""));
  EXPECT_NE(msg.find("c.json:9:3: field \"frobnicate\" is not understood"), std::string::npos) << msg;
  msg = err(test::replace(good, "\"silu\"", "\"gelu\""));
  EXPECT_NE(msg.find("hidden_act \"gelu\" is not supported"), std::string::npos) << msg;
  msg = err(test::replace(good, "\"attention_bias\": false", "\"attention_bias\": true"));
  EXPECT_NE(msg.find("biases on only some linear layers are not modelled"), std::string::npos)
      << msg;
  // Both: biases on every dense linear layer (model.bias).
  const auto both = test::write(
      dir / "both.json",
      test::replace(test::replace(good, "\"attention_bias\": false", "\"attention_bias\": true"),
                    "\"mlp_bias\": false", "\"mlp_bias\": true"));
  EXPECT_TRUE(config::load_hf_config(both).bias);
  EXPECT_FALSE(config::load_hf_config(test::write(dir / "none.json", good)).bias);
  msg = err(test::replace(good, "\"llama\"", "\"gpt2\""));
  EXPECT_NE(msg.find("model_type \"gpt2\" is not supported"), std::string::npos) << msg;
  msg = err(test::replace(good, "\"vocab_size\"", "\"sliding_window\": 4096,\n  \"vocab_size\""));
  EXPECT_NE(msg.find("sliding-window attention is not modelled"), std::string::npos) << msg;
  // Multi-token prediction belongs to DeepSeek's configs only (there it sets mtp_layers).
  msg = err(test::replace(good, "\"vocab_size\"", "\"num_nextn_predict_layers\": 1,\n  \"vocab_size\""));
  EXPECT_NE(msg.find("\"num_nextn_predict_layers\" does not belong to model_type \"llama\""),
            std::string::npos)
      << msg;
  msg = err("{ \"model_type\": ");
  EXPECT_NE(msg.find("JSON syntax error"), std::string::npos) << msg;
  // Shape fields of another family were ignored without a word (a Llama with MLA ranks, a
  // Mixtral with a DeepSeek expert size, a dense Qwen2 with a shared expert).
  msg = err(test::replace(good, "\"vocab_size\"", "\"q_lora_rank\": 1536,\n  \"vocab_size\""));
  EXPECT_NE(msg.find("c.json:9:3: field \"q_lora_rank\" does not belong to model_type \"llama\""),
            std::string::npos)
      << msg;
  const std::string mixtral = test::read(test::source_dir() / "scenarios/hf/mixtral-8x7b.json");
  EXPECT_EQ(err(mixtral), "");
  msg = err(test::replace(mixtral, "\"vocab_size\"", "\"moe_intermediate_size\": 2048,\n  \"vocab_size\""));
  EXPECT_NE(msg.find("field \"moe_intermediate_size\" does not belong to model_type \"mixtral\""),
            std::string::npos)
      << msg;
  msg = err(test::replace(test::replace(good, "\"llama\"", "\"qwen2\""), "\"vocab_size\"",
                          "\"shared_expert_intermediate_size\": 5632,\n  \"vocab_size\""));
  EXPECT_NE(msg.find("does not belong to model_type \"qwen2\""), std::string::npos) << msg;
  // Qwen2-MoE's shared expert belongs to none of the supported families (it once added a
  // shared expert to Mixtral and Qwen3-MoE).
  msg = err(test::replace(mixtral, "\"vocab_size\"",
                          "\"shared_expert_intermediate_size\": 14336,\n  \"vocab_size\""));
  EXPECT_NE(msg.find("field \"shared_expert_intermediate_size\" does not belong to model_type "
                     "\"mixtral\""),
            std::string::npos)
      << msg;
  // Settings without a cost are typed and belong to their family.
  msg = err(test::replace(good, "\"vocab_size\"", "\"n_group\": 8,\n  \"vocab_size\""));
  EXPECT_NE(msg.find("c.json:9:3: field \"n_group\" does not belong to model_type \"llama\""),
            std::string::npos)
      << msg;
  msg = err(test::replace(good, "\"vocab_size\"", "\"rope_scaling\": \"yarn\",\n  \"vocab_size\""));
  EXPECT_NE(msg.find("field \"rope_scaling\" must be an object or null"), std::string::npos) << msg;
  const std::string qwen = test::read(test::source_dir() / "scenarios/hf/qwen3-30b-a3b.json");
  EXPECT_EQ(err(qwen), "");
  msg = err(test::replace(qwen, "\"norm_topk_prob\": true", "\"norm_topk_prob\": \"yes\""));
  EXPECT_NE(msg.find("field \"norm_topk_prob\" must be true or false"), std::string::npos) << msg;
  const std::string ds = test::read(test::source_dir() / "scenarios/hf/deepseek-v3.json");
  EXPECT_EQ(err(ds), "");
  msg = err(test::replace(ds, "\"topk_group\": 4", "\"topk_group\": 99"));
  EXPECT_NE(msg.find("topk_group must be in [1, n_group]"), std::string::npos) << msg;
  // A field given twice: JSON parsers keep one of them; trainsim names the second.
  msg = err(test::replace(good, "\"vocab_size\"", "\"hidden_size\": 2048,\n  \"vocab_size\""));
  EXPECT_NE(msg.find("c.json:9:3: field \"hidden_size\" is given twice"), std::string::npos) << msg;
  // The same name in two different objects is not a duplicate.
  EXPECT_EQ(err(test::replace(good, "\"vocab_size\"",
                              "\"rope_scaling\": {\"factor\": 8.0, \"hidden_size\": 1},\n  "
                              "\"vocab_size\"")),
            "");
}

TEST(HfConfig, ShapeErrorsPointAtTheHfConfigField) {
  // kv_heads = 5 of 32 heads: the fault is in the JSON file, so the message names its line
  // and field, not the scenario's hf_config line and a scenario key it does not have.
  const auto dir = test::temp_dir("hf-shape");
  std::string cfg = test::read(test::source_dir() / "scenarios/hf/llama3-8b.json");
  cfg = test::replace(cfg, "\"num_key_value_heads\": 8", "\"num_key_value_heads\": 5");
  test::write(dir / "c.json", cfg);
  const std::string text =
      "version = 1\nname = \"hf\"\n[model]\nseq_len = 2048\nhf_config = \"c.json\"\n"
      "[training]\nglobal_batch = 16\nmicro_batch = 1\n[parallel]\ntp = 8\n"
      "[cluster]\ntopology = \"" + (test::source_dir() / "topologies/dgx-h100.toml").string() +
      "\"\ngpus = 8\n";
  const std::size_t line =
      1 + static_cast<std::size_t>(std::count(cfg.begin(), cfg.begin() + static_cast<std::ptrdiff_t>(
                                                                cfg.find("\"num_key_value_heads\"")),
                                              '\n'));
  try {
    (void)config::load_scenario(test::write(dir / "s.toml", text));
    ADD_FAILURE() << "kv_heads 5 of 32 accepted";
  } catch (const config::ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("c.json:" + std::to_string(line) +
                        ":3: num_key_value_heads: model.kv_heads (5) must divide model.heads (32)"),
              std::string::npos)
        << what;
  }
  // An integer beyond int64 is out of range, not a wrapped negative number.
  cfg = test::read(test::source_dir() / "scenarios/hf/llama3-8b.json");
  try {
    (void)config::load_hf_config(test::write(
        dir / "big.json",
        test::replace(cfg, "\"num_hidden_layers\": 32", "\"num_hidden_layers\": 9223372036854775808")));
    ADD_FAILURE() << "2^63 layers accepted";
  } catch (const config::ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("num_hidden_layers must be in [1, 100000] (got 9223372036854775808)"),
              std::string::npos)
        << what;
  }
}

TEST(HfConfig, DeepSeekMoeLayerFrequencyCountsFromLayerZero) {
  // DeepSeek's modeling code: layer i is an MoE layer iff i >= first_k_dense_replace and
  // i % moe_layer_freq == 0 (the frequency counts from layer 0, not from the first sparse
  // layer).
  const auto dir = test::temp_dir("hf-freq");
  const std::string v3 = test::read(test::source_dir() / "scenarios/hf/deepseek-v3.json");
  auto with = [&](int layers, int first_k, int freq) {
    std::string c = test::replace(v3, "\"num_hidden_layers\": 61",
                                  "\"num_hidden_layers\": " + std::to_string(layers));
    c = test::replace(c, "\"first_k_dense_replace\": 3",
                      "\"first_k_dense_replace\": " + std::to_string(first_k));
    c = test::replace(c, "\"moe_layer_freq\": 1", "\"moe_layer_freq\": " + std::to_string(freq));
    return test::write(dir / "c.json", c);
  };
  for (const auto& [layers, first_k, freq] :
       std::vector<std::array<int, 3>>{{10, 3, 2}, {10, 1, 3}, {12, 4, 2}, {10, 7, 4}, {7, 0, 1}, {61, 3, 1}}) {
    const auto m = config::load_hf_config(with(layers, first_k, freq));
    int n = 0;
    for (int i = 0; i < layers; ++i) {
      const bool deepseek = i >= first_k && i % freq == 0;
      EXPECT_EQ(m.is_moe_layer(i), deepseek) << layers << " " << first_k << " " << freq << " " << i;
      n += deepseek ? 1 : 0;
    }
    EXPECT_EQ(m.moe_layers(), n);
  }
  try {
    (void)config::load_hf_config(with(10, 9, 4));  // the first multiple of 4 from 9 is 12
    ADD_FAILURE() << "a config without MoE layers accepted";
  } catch (const config::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("no layer is an MoE layer"), std::string::npos)
        << e.what();
  }
}

TEST(HfConfig, ScenarioShapeKeysConflictWithHfConfig) {
  const std::string text = "version = 1\n[model]\nhf_config = \"" +
                           (test::source_dir() / "scenarios/hf/llama3-8b.json").string() +
                           "\"\nseq_len = 8192\nhidden = 4096\n"
                           "[training]\nglobal_batch = 8\n[cluster]\ntopology = \"" +
                           (test::source_dir() / "topologies/dgx-h100.toml").string() +
                           "\"\ngpus = 8\n";
  const auto msg = load_error("hfconf", text);
  EXPECT_NE(msg.find(":5:10: model.hidden conflicts with model.hf_config"), std::string::npos) << msg;
}

TEST(MoeScenarios, ShippedScenariosLoadAndSimulate) {
  for (const char* name : {"mixtral-8x7b-h100", "qwen3-30b-a3b-h100", "llama3-8b-128k-cp8"}) {
    const auto sc = config::load_scenario(test::source_dir() / "scenarios" / (std::string(name) + ".toml"));
    const auto r = workload::simulate_step(sc);
    EXPECT_GT(r.mfu, 0.1) << name;
    EXPECT_LT(r.mfu, 0.9) << name;
  }
}

TEST(ContextParallel, AllGatherVariantGathersKvAndScattersItsGradient) {
  std::string text = test::replace(test::small_scenario(), "[parallel]\n",
                                   "[parallel]\ncp = 2\ncp_comm = \"all_gather\"\n");
  text = test::replace(text, "gpus = 16", "gpus = 32");
  const auto r = workload::simulate_step(load("cp-ag", text));
  std::size_t ag = 0, rs = 0, attn = 0;
  for (TaskId t = 0; t < r.graph->num_tasks(); ++t) {
    const auto& label = r.graph->label(r.graph->task(t).label);
    ag += label == "cp all_gather kv" ? 1 : 0;
    rs += label == "cp reduce_scatter dkv" ? 1 : 0;
    attn += label == "attention" ? 1 : 0;
  }
  const std::size_t passes = 4 * (16 / (2 * 4));
  EXPECT_EQ(ag, 2 * passes);  // forward and backward
  EXPECT_EQ(rs, passes);
  EXPECT_EQ(attn, passes);    // one kernel over the gathered KV
}

TEST(Moe, SplitBackwardSchedulesAndTensorParallelExpertsRun) {
  // ZB-H1 splits B and W passes; TP 2 + SP wraps the MoE block in TP collectives.
  std::string text = moe_scenario(4, "routing = \"uniform\"\n",
                                  "sequence_parallel = true\nschedule = \"zb-h1\"\n");
  text = test::replace(text, "tp = 1", "tp = 2");
  text = test::replace(text, "dp = 8", "dp = 4");
  const auto sc = load("zb", text);
  const auto r = workload::simulate_step(sc);
  EXPECT_GT(r.breakdown.exposed_of(Category::EpComm), 0.0);
  // The split backward does the same work as the whole one.
  const auto whole = workload::simulate_step(load("zb-1f1b", test::replace(text, "zb-h1", "1f1b")));
  EXPECT_DOUBLE_EQ(r.stages[0].breakdown.compute, whole.stages[0].breakdown.compute);
}

TEST(Moe, SeededScenarioGivesByteIdenticalResults) {
  const auto sc = config::load_scenario(test::source_dir() / "scenarios/qwen3-30b-a3b-h100.toml");
  const auto a = workload::simulate_step(sc);
  const auto b = workload::simulate_step(sc);
  EXPECT_EQ(a.step_time, b.step_time);
  EXPECT_EQ(a.moe->imbalance_max, b.moe->imbalance_max);
  auto other = sc;
  other.seed = sc.seed + 1;
  EXPECT_NE(workload::simulate_step(other).moe->imbalance_max, a.moe->imbalance_max);
}

TEST(Moe, TensorParallelismMustDivideTheSharedExperts) {
  auto text = test::replace(moe_scenario(4, "shared_experts = 1\nshared_ffn_hidden = 1001\n"),
                            "tp = 1", "tp = 2");
  text = test::replace(text, "dp = 8", "dp = 4");
  // Megatron-Core refuses EP with TP unless sequence parallelism is on.
  EXPECT_NE(load_error("ep-tp-no-sp", text)
                .find("parallel.ep > 1 with parallel.tp > 1 needs parallel.sequence_parallel"),
            std::string::npos);
  text = test::replace(text, "tp = 2", "tp = 2\nsequence_parallel = true");
  const auto msg = load_error("shared-tp", text);
  EXPECT_NE(msg.find("parallel.tp (2) must divide the shared experts' ffn width (1001"),
            std::string::npos)
      << msg;
  EXPECT_EQ(load_error("shared-tp-ok", test::replace(text, "1001", "1000")), "");
}

TEST(Moe, ConfigErrorsNameTheKey) {
  EXPECT_NE(load_error("typo", moe_scenario(8, "top_kk = 2\n")).find("did you mean 'top_k'"),
            std::string::npos);
  EXPECT_NE(load_error("topk", test::replace(moe_scenario(8), "top_k = 2", "top_k = 9")).find("model.moe.top_k must be in [1, 8]"),
            std::string::npos);
  const std::string missing =
      "version = 1\n[model]\nhf_config = \"nope.json\"\nseq_len = 8\n[training]\nglobal_batch = 8\n"
      "[cluster]\ntopology = \"x.toml\"\ngpus = 8\n";
  EXPECT_NE(load_error("hf-missing", missing).find(":3:13: model.hf_config: no such file"),
            std::string::npos);
}

TEST(Moe, DualPipeOverlapsEachPassesAllToAllWithThePairedPassesCompute) {
  auto exposure = [](const workload::StepResult& r) {
    double total = 0;
    for (TaskId t = 0; t < r.graph->num_tasks(); ++t) {
      const auto& task = r.graph->task(t);
      if (task.category == Category::EpComm && r.graph->stream(task.stream).rank == 0) {
        total += task.duration.seconds();
      }
    }
    return std::make_pair(r.stages[0].breakdown.exposed_of(Category::EpComm), total);
  };
  // 1F1B without shared experts: every all-to-all is waited for at once, nothing hides it.
  const auto plain = workload::simulate_step(load("dp-1f1b", moe_scenario(8)));
  const auto [plain_exposed, plain_total] = exposure(plain);
  EXPECT_NEAR(plain_exposed, plain_total, 1e-9);
  // DualPipe: forward/backward pairs interleave, so part of the all-to-all time is hidden.
  const auto dual = workload::simulate_step(
      load("dp-dual", moe_scenario(8, "", "schedule = \"dualpipe\"\n")));
  const auto [dual_exposed, dual_total] = exposure(dual);
  EXPECT_GT(dual_total, 0.0);
  EXPECT_LT(dual_exposed, 0.9 * dual_total);
  // In issue order, a paired forward's expert GEMM comes after other-pass work that was
  // issued behind its dispatch.
  std::map<int, TaskId> dispatch_of;
  int interleaved = 0;
  for (TaskId t = 0; t < dual.graph->num_tasks(); ++t) {
    const auto& task = dual.graph->task(t);
    const auto& label = dual.graph->label(task.label);
    if (label == "ep all_to_all dispatch") dispatch_of[task.microbatch] = t;
    if (label == "expert_in grouped_gemm" && dispatch_of.count(task.microbatch) != 0) {
      for (TaskId u = dispatch_of[task.microbatch] + 1; u < t; ++u) {
        const auto& other = dual.graph->task(u);
        if (other.category == Category::Compute && other.microbatch != task.microbatch) {
          ++interleaved;
          break;
        }
      }
    }
  }
  EXPECT_GT(interleaved, 0);
}

// Token permutation bytes as docs say (workload/moe.hpp): Megatron-Core's unfused PyTorch ops
// vs fused kernels, and the local-expert sort only with more than one local expert.
TEST(MoeRouting, PermutationKernelsMoveTheirDocumentedBytes) {
  H100MoeBench b(2, moe_of(8, 2, model::Routing::Balanced));
  auto& m = b.m;
  const auto& comm = b.comm;
  const auto& cost = b.cost;
  parallel::Layout L;
  L.dp = 8;
  L.ep = 8;  // one local expert
  const double T = 2048, R = T * 2, row = 1024 * 2.0;
  auto c = workload::moe_layer_cost(m, L, workload::GemmKernels{}, 1, cost, comm, 1, 0, 0);
  EXPECT_EQ(c.permute, cost.memory_bound(2 * R * row));
  EXPECT_EQ(c.unpermute, cost.memory_bound((6 * R + T) * row));
  EXPECT_EQ(c.unpermute_bwd, cost.memory_bound((4 * R + 2 * T) * row));
  EXPECT_EQ(c.permute_bwd, cost.memory_bound((T + 3 * R + 3 * T) * row));
  EXPECT_EQ(c.sort_chunks, Time());  // Megatron-Core skips it with one local expert
  EXPECT_EQ(c.unsort_chunks, Time());
  m.moe.permute_fusion = true;
  c = workload::moe_layer_cost(m, L, workload::GemmKernels{}, 1, cost, comm, 1, 0, 0);
  EXPECT_EQ(c.permute, cost.memory_bound((T + R) * row));
  EXPECT_EQ(c.unpermute, cost.memory_bound((T + R) * row));
  EXPECT_EQ(c.permute_bwd, cost.memory_bound((T + R + 3 * T) * row));
  L.ep = 4;  // two local experts: their received rows are sorted and restored
  L.dp = 4;
  c = workload::moe_layer_cost(m, L, workload::GemmKernels{}, 1, cost, comm, 1, 0, 0);
  EXPECT_EQ(c.sort_chunks,
            cost.memory_bound(2.0 * static_cast<double>(c.rows_busiest) * row));
  EXPECT_GT(c.sort_chunks, Time());
}

// Selective recompute of Megatron-Core's modules (training.recompute_modules).
namespace {

std::string one_gpu_scenario(const std::string& training_extra) {
  return "version = 1\nname = \"rc\"\n"
         "[model]\nlayers = 2\nhidden = 1024\nheads = 16\nkv_heads = 4\nffn_hidden = 4096\n"
         "vocab = 32000\nseq_len = 1024\nactivation = \"swiglu\"\nnorm = \"rmsnorm\"\n"
         "[training]\nglobal_batch = 4\nmicro_batch = 1\nrecompute = \"selective\"\n" +
         training_extra + "[parallel]\ntp = 1\npp = 1\ndp = 1\n"
         "[cluster]\ntopology = \"" +
         (test::source_dir() / "topologies/single-h200.toml").string() + "\"\ngpus = 1\n";
}

double labelled(const workload::StepResult& r, const std::string& label, std::size_t* count = nullptr) {
  double sum = 0;
  std::size_t n = 0;
  for (TaskId t = 0; t < r.graph->num_tasks(); ++t) {
    const auto& task = r.graph->task(t);
    if (r.graph->label(task.label) != label) continue;
    sum += task.duration.seconds();
    ++n;
  }
  if (count != nullptr) *count = n;
  return sum;
}

}  // namespace

// Oracle: on one GPU every kernel runs on one stream, so recomputing the MLP (module "mlp")
// lengthens the step by exactly one more forward of its three kernels per layer and
// microbatch; the activations kept shrink by the MLP's tensors (gate, up, down input:
// 6 bytes x ffn per token and layer, Korthikanti et al. 2022 §4); HFU counts the MLP's
// forward FLOPs once more (6·h·ffn per token and layer for SwiGLU).
TEST(Recompute, MlpModuleRerunsTheMlpForwardAndDropsItsTensors) {
  const auto base = workload::simulate_step(load("rc-base", one_gpu_scenario("")));
  const auto mlp = workload::simulate_step(
      load("rc-mlp", one_gpu_scenario("recompute_modules = [\"core_attn\", \"mlp\"]\n")));
  double fwd = 0;
  std::size_t n = 0, k = 0;
  for (const char* op : {"mlp_gate_up", "swiglu", "mlp_down"}) {
    fwd += labelled(mlp, op, &n);
    EXPECT_DOUBLE_EQ(labelled(mlp, std::string("recompute ") + op, &k), labelled(mlp, op));
    EXPECT_EQ(k, n);
    EXPECT_EQ(n, 2U * 4U);  // 2 layers x 4 microbatches
    EXPECT_DOUBLE_EQ(labelled(base, std::string("recompute ") + op), 0.0);
  }
  EXPECT_NEAR(mlp.step_time.seconds() - base.step_time.seconds(), fwd, 1e-9);
  const double tokens = 1024;
  EXPECT_NEAR(base.stages[0].memory.activations - mlp.stages[0].memory.activations,
              2 * 6.0 * 4096 * tokens, 1.0);
  EXPECT_NEAR(mlp.hardware_flops - base.hardware_flops, 6.0 * 1024 * 4096 * 4 * tokens * 2,
              1e-6 * mlp.hardware_flops);
  // Without core_attn the attention core is kept (and not recomputed).
  const auto none = workload::simulate_step(
      load("rc-none", one_gpu_scenario("recompute_modules = [\"layernorm\"]\n")));
  EXPECT_DOUBLE_EQ(labelled(none, "recompute attention"), 0.0);
  std::size_t norms = 0;
  (void)labelled(none, "recompute attn_norm", &norms);
  EXPECT_EQ(norms, 2U * 4U);
  EXPECT_LT(none.step_time, base.step_time + Time::from_seconds(labelled(none, "recompute attn_norm") +
                                                                labelled(none, "recompute mlp_norm") + 1e-9));
}

// Module "moe" re-runs the whole MoE block in backward, its dispatch and combine included;
// "moe_act" only the experts' activation.
TEST(Recompute, MoeModulesRerunTheBlockOrItsActivation) {
  auto with = [](const std::string& modules) {
    std::string text = moe_scenario(8, "routing = \"uniform\"\n");
    text = test::replace(text, "micro_batch = 1\n",
                         "micro_batch = 1\nrecompute = \"selective\"\n" + modules);
    return workload::simulate_step(load("rc-moe", text));
  };
  auto ep_tasks = [](const workload::StepResult& r) {
    std::size_t n = 0;
    for (TaskId t = 0; t < r.graph->num_tasks(); ++t) n += r.graph->task(t).category == Category::EpComm ? 1 : 0;
    return n;
  };
  const auto base = with("");
  const auto moe = with("recompute_modules = [\"core_attn\", \"moe\"]\n");
  const auto act = with("recompute_modules = [\"core_attn\", \"moe_act\"]\n");
  const std::size_t layers_x_mb = 4U * (32 / 8);
  EXPECT_EQ(ep_tasks(moe) - ep_tasks(base), 2U * layers_x_mb);
  EXPECT_GT(moe.step_time, base.step_time);
  EXPECT_LT(moe.stages[0].memory.activations, act.stages[0].memory.activations);
  EXPECT_LT(act.stages[0].memory.activations, base.stages[0].memory.activations);
  std::size_t n_base = 0, n_act = 0;
  (void)labelled(base, "expert_act", &n_base);
  (void)labelled(act, "expert_act", &n_act);
  EXPECT_EQ(n_act - n_base, layers_x_mb);
  EXPECT_GT(moe.hardware_flops, base.hardware_flops);
  EXPECT_DOUBLE_EQ(act.hardware_flops, base.hardware_flops);  // an activation has no FLOPs
}

TEST(Recompute, ModulesAreCheckedAndWrittenBack) {
  auto err = [](const std::string& name, const std::string& extra) {
    return load_error(name, one_gpu_scenario(extra));
  };
  EXPECT_NE(err("rc-x", "recompute_modules = [\"mlp\", \"attn\"]\n").find("(got \"attn\")"),
            std::string::npos);
  EXPECT_NE(err("rc-mla", "recompute_modules = [\"mla_up_proj\"]\n")
                .find("\"mla_up_proj\" needs a model with multi-head latent attention"),
            std::string::npos);
  EXPECT_NE(err("rc-2", "recompute_modules = [\"mlp\", \"mlp\"]\n").find("twice"), std::string::npos);
  const std::string full = test::replace(one_gpu_scenario("recompute_modules = [\"mlp\"]\n"),
                                         "recompute = \"selective\"", "recompute = \"full\"");
  const std::string e = load_error("rc-full", full);
  EXPECT_NE(e.find("training.recompute_modules needs recompute = \"selective\""), std::string::npos) << e;
  EXPECT_NE(e.find("s.toml:"), std::string::npos) << e;
  // Written back, read again: the same modules and the same step.
  const auto sc = load("rc-w", one_gpu_scenario("recompute_modules = [\"mlp\", \"layernorm\"]\n"));
  const auto dir = test::temp_dir("rc-write");
  const auto back = config::load_scenario(test::write(dir / "b.toml", config::scenario_toml(sc)));
  EXPECT_TRUE(back.training.recompute_modules == sc.training.recompute_modules);
  EXPECT_FALSE(back.training.recompute_modules.core_attn);
  EXPECT_EQ(workload::simulate_step(back).step_time, workload::simulate_step(sc).step_time);
}

// mla_up_proj (DeepSeek-V3 §3.2.3): the backward re-runs MLA's two up projections before the
// attention core, and the layer keeps its latents instead of Q, K and V. Oracles on one GPU
// (every kernel back to back): the backward passes grow by exactly the up projections'
// forward time per layer, the activations shrink by 2 x heads x (2 (nope + rope) + v) x s x b
// bytes per layer, the hardware FLOPs grow by the up projections' forward FLOPs.
TEST(Recompute, MlaUpProjReRunsTheUpProjectionsAndKeepsTheLatents) {
  const auto dir = test::temp_dir("rc-mla-up");
  (void)test::write(dir / "tiny-ds.json", test::tiny_deepseek_config());
  auto scenario = [&](const std::string& name, const std::string& modules) {
    const std::string text =
        "version = 1\n[model]\nhf_config = \"tiny-ds.json\"\nseq_len = 256\n"
        "[training]\nglobal_batch = 2\nmicro_batch = 1\nrecompute = \"selective\"\n"
        "recompute_modules = [" + modules + "]\n[parallel]\ntp = 1\npp = 1\ndp = 1\n"
        "[cluster]\ntopology = \"" + (test::source_dir() / "topologies/single-h200.toml").string() +
        "\"\ngpus = 1\n";
    return config::load_scenario(test::write(dir / (name + ".toml"), text));
  };
  const auto base_sc = scenario("base", "\"layernorm\"");
  const auto up_sc = scenario("up", "\"layernorm\", \"mla_up_proj\"");
  const auto base = workload::simulate_step(base_sc);
  const auto up = workload::simulate_step(up_sc);
  auto backward_ps = [](const workload::StepResult& r) {
    std::int64_t b = 0;
    for (const auto& p : r.passes) {
      if (p.kind != parallel::PassKind::Forward) b += (p.end - p.start).count_ps();
    }
    return b;
  };
  const cost::CostModel cost(up_sc.gpu, nullptr);
  std::int64_t per_layer = 0;
  double flops = 0;
  for (const auto& op : model::mla_up_ops(up_sc.model, 1)) {
    per_layer += workload::gemm_times(cost, workload::rank_op(up_sc, op),
                                      up_sc.training.gemm_kernels())
                     .fwd.count_ps();
    flops += op.flops.fwd;
  }
  const int layers = up_sc.model.layers;
  EXPECT_GT(per_layer, 0);
  EXPECT_EQ(backward_ps(up) - backward_ps(base), 2 * layers * per_layer);  // 2 microbatches
  const double qkv = 2.0 * 8 * (2 * (32 + 16) + 32) * 256;
  EXPECT_DOUBLE_EQ(base.memory.activations - up.memory.activations, layers * qkv);
  EXPECT_NEAR((up.hardware_flops - base.hardware_flops) / (2 * layers * flops), 1.0, 1e-12);
  EXPECT_DOUBLE_EQ(up.model_flops, base.model_flops);
  // Without a q latent (DeepSeek-V2-Lite) Q's own projection from the hidden size re-runs.
  model::ModelSpec no_q = up_sc.model;
  no_q.mla.q_lora_rank = 0;
  const auto ops = model::mla_up_ops(no_q, 1);
  ASSERT_EQ(ops.size(), 2U);
  EXPECT_EQ(ops[0].name, "mla_q_proj");
  EXPECT_EQ(ops[0].k, 512);
  // Written back with the module.
  const auto again = config::load_scenario(
      test::write(dir / "again.toml", config::scenario_toml(up_sc)));
  EXPECT_TRUE(again.training.recompute_modules.mla_up_proj);
}
