// Property tests of the physics: monotonicity, conservation, bounds, symmetry and fidelity
// agreement over many seeded random small scenarios and collectives (issue 9 item 1).
//
// Every property is an oracle that holds for any correct simulator of this model, whatever
// the calibration: faster hardware cannot slow a step, a bigger message cannot make a
// collective faster, the time-attribution parts add up to the window, nothing beats the
// peak FLOP/s or a link's bandwidth. The random draws use fixed seeds, so a failure names
// its seed and the scenario text reproduces it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "config/scenario.hpp"
#include "hw/gpu.hpp"
#include "hw/topology.hpp"
#include "model/transformer.hpp"
#include "net/collective.hpp"
#include "test_util.hpp"
#include "workload/builder.hpp"

namespace trainsim {
namespace {

using workload::Fidelity;
using workload::Scenario;
using workload::simulate_step;
using workload::StepResult;

constexpr int kScenarios = 40;  // random scenarios per property

/// A random small dense GPT scenario on DGX A100 or H100 nodes (8 or 16 GPUs): 2-4 layers,
/// hidden 512/1024, seq 256/512, every TP/PP/DP split of the GPUs with TP inside a node.
struct Draw {
  std::string text;
  int tp = 1, pp = 1, dp = 1, gpus = 8, layers = 2, hidden = 512, seq = 256, mb = 1, m = 1;
  int mtp = 0;  ///< multi-token prediction modules
  bool sp = false;
  std::string topo;
};

std::string scenario_text(const Draw& d) {
  std::string t = "version = 1\nname = \"prop\"\n[model]\n";
  t += "layers = " + std::to_string(d.layers) + "\n";
  t += "hidden = " + std::to_string(d.hidden) + "\n";
  t += "heads = 8\nvocab = 32000\n";
  t += "seq_len = " + std::to_string(d.seq) + "\n";
  if (d.mtp > 0) t += "mtp_layers = " + std::to_string(d.mtp) + "\n";
  t += "[training]\n";
  t += "global_batch = " + std::to_string(d.mb * d.dp * d.m) + "\n";
  t += "micro_batch = " + std::to_string(d.mb) + "\n";
  t += "[parallel]\n";
  t += "tp = " + std::to_string(d.tp) + "\npp = " + std::to_string(d.pp) +
       "\ndp = " + std::to_string(d.dp) + "\n";
  if (d.sp) t += "sequence_parallel = true\n";
  t += "[cluster]\ntopology = \"" + (test::source_dir() / "topologies" / d.topo).string() +
       "\"\n";
  t += "gpus = " + std::to_string(d.gpus) + "\n";
  return t;
}

Draw draw(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto pick = [&](std::vector<int> v) {
    return v[std::uniform_int_distribution<std::size_t>(0, v.size() - 1)(rng)];
  };
  Draw d;
  d.topo = pick({0, 1}) == 0 ? "dgx-a100.toml" : "dgx-h100.toml";
  d.gpus = pick({8, 16});
  d.tp = pick({1, 2, 4, 8});
  d.pp = d.tp * 2 <= d.gpus ? pick({1, 2}) : 1;
  d.dp = d.gpus / (d.tp * d.pp);
  d.layers = d.pp * pick({1, 2});
  d.hidden = pick({512, 1024});
  d.seq = pick({256, 512});
  d.mb = pick({1, 2});
  d.m = d.pp * pick({1, 2});
  d.sp = d.tp > 1 && pick({0, 1}) == 1;
  d.mtp = pick({0, 0, 1});  // drawn last: the draws above stay what they were
  d.text = scenario_text(d);
  return d;
}

Scenario load(const Draw& d, const std::string& tag) {
  const auto dir = test::temp_dir("prop-" + tag);
  return config::load_scenario(test::write(dir / "s.toml", d.text));
}

double seconds(const Scenario& sc) { return simulate_step(sc).step_time.seconds(); }

/// `faster` must not be slower than `base` (1 ps and 1e-12 relative of rounding allowed).
void expect_not_slower(double faster, double base, const std::string& what, const Draw& d) {
  EXPECT_LE(faster, base * (1 + 1e-12) + 1e-12) << what << "\n" << d.text;
}

// ---------------------------------------------------------------- monotonicity: hardware

TEST(PropertyMonotonicity, FasterHardwareNeverMakesAStepSlower) {
  int faster_peak = 0, faster_hbm = 0;
  for (int i = 0; i < kScenarios; ++i) {
    const Draw d = draw(1000 + static_cast<std::uint64_t>(i));
    const Scenario sc = load(d, "mono-hw");
    const double base = seconds(sc);
    for (double f : {1.25, 2.0}) {
      Scenario nic = sc;
      nic.topology.nic_bw *= f;
      expect_not_slower(seconds(nic), base, "NIC bandwidth x" + std::to_string(f), d);

      // NVLink: with the measured NVLink ramp (GpuSpec::nvlink_ramp_*) in place; the tuner
      // compares algorithms with the ramp applied (docs/trust.md "Findings"), so more NVLink
      // bandwidth never picks a slower algorithm.
      Scenario nvl = sc;
      nvl.topology.nvlink_bw *= f;
      nvl.gpu.nvlink_bw *= f;
      nvl.gpu.nccl_nvlink_bw *= f;
      expect_not_slower(seconds(nvl), base, "NVLink bandwidth x" + std::to_string(f), d);

      Scenario hbm = sc;
      hbm.gpu.hbm_bw *= f;
      const double t_hbm = seconds(hbm);
      expect_not_slower(t_hbm, base, "HBM bandwidth x" + std::to_string(f), d);
      faster_hbm += t_hbm < base ? 1 : 0;

      Scenario peak = sc;
      peak.gpu.peak_bf16 *= f;
      peak.gpu.peak_fp16 *= f;
      peak.gpu.peak_fp8 *= f;
      peak.gpu.peak_fp32 *= f;
      for (auto& curve : peak.gpu.attention) {
        for (double& r : curve.fwd_tflops) r *= f;
        for (double& r : curve.bwd_tflops) r *= f;
      }
      const double t_peak = seconds(peak);
      expect_not_slower(t_peak, base, "peak FLOP/s x" + std::to_string(f), d);
      faster_peak += t_peak < base ? 1 : 0;
    }
  }
  // The knobs reach the cost model: doubling them made most steps strictly faster.
  EXPECT_GT(faster_peak, kScenarios);
  EXPECT_GT(faster_hbm, kScenarios);
}

// ------------------------------------------------------------- monotonicity: workload size

TEST(PropertyMonotonicity, LongerSequenceOrBiggerModelNeverMakesAStepFaster) {
  for (int i = 0; i < kScenarios; ++i) {
    Draw d = draw(2000 + static_cast<std::uint64_t>(i));
    d.seq = 256;
    d.hidden = 512;
    d.layers = d.pp;
    d.text = scenario_text(d);
    const double base = seconds(load(d, "mono-size"));
    Draw longer = d;
    longer.seq = 512;
    longer.text = scenario_text(longer);
    const double t_seq = seconds(load(longer, "mono-size"));
    EXPECT_GT(t_seq, base) << "seq 256 -> 512\n" << longer.text;
    Draw wider = d;
    wider.hidden = 1024;
    wider.text = scenario_text(wider);
    EXPECT_GT(seconds(load(wider, "mono-size")), base) << "hidden 512 -> 1024\n" << wider.text;
    Draw deeper = d;
    deeper.layers = 2 * d.pp;
    deeper.text = scenario_text(deeper);
    EXPECT_GT(seconds(load(deeper, "mono-size")), base) << "layers x2\n" << deeper.text;
  }
}

// ------------------------------------------------------------ collectives: size, bytes, links

struct Net {
  hw::TopologySpec spec;
  hw::Topology topo;
  const hw::GpuSpec& gpu;
  net::AlphaBetaModel model;
  Net(const char* file, int gpus)
      : spec(config::load_topology(test::source_dir() / "topologies" / file)),
        topo(spec, gpus),
        gpu(*hw::find_builtin_gpu(spec.gpu)),
        model(topo, gpu) {}
};

constexpr net::CollectiveOp kOps[] = {net::CollectiveOp::AllReduce, net::CollectiveOp::AllGather,
                                      net::CollectiveOp::ReduceScatter,
                                      net::CollectiveOp::AllToAll, net::CollectiveOp::SendRecv};

/// Random groups on a 4-node cluster: inside one node, one GPU per node (a rail), whole
/// nodes, and scattered sets; SendRecv groups are pairs.
std::vector<std::vector<int>> random_groups(std::mt19937_64& rng, net::CollectiveOp op,
                                            int gpus, int per_node) {
  std::vector<std::vector<int>> groups;
  std::vector<int> all(static_cast<std::size_t>(gpus));
  for (int g = 0; g < gpus; ++g) all[static_cast<std::size_t>(g)] = g;
  if (op == net::CollectiveOp::SendRecv) {
    groups.push_back({0, 1});
    groups.push_back({0, per_node});
    for (int k = 0; k < 3; ++k) {
      std::shuffle(all.begin(), all.end(), rng);
      groups.push_back({all[0], all[1]});
    }
    return groups;
  }
  for (int n : {2, 4, per_node}) {
    std::vector<int> g;
    for (int i = 0; i < n; ++i) g.push_back(i);
    groups.push_back(g);
  }
  std::vector<int> rail, nodes2;
  for (int node = 0; node < gpus / per_node; ++node) rail.push_back(node * per_node + 3);
  for (int i = 0; i < 2 * per_node; ++i) nodes2.push_back(i);
  groups.push_back(rail);
  groups.push_back(nodes2);
  std::vector<int> two_per_node;  // every node, two GPUs each: hierarchical all_reduce
  for (int node = 0; node < gpus / per_node; ++node) {
    two_per_node.push_back(node * per_node);
    two_per_node.push_back(node * per_node + 1);
  }
  groups.push_back(two_per_node);
  for (int k = 0; k < 3; ++k) {
    std::shuffle(all.begin(), all.end(), rng);
    const int n = std::uniform_int_distribution<int>(2, gpus)(rng);
    groups.emplace_back(all.begin(), all.begin() + n);
  }
  return groups;
}

/// Sizes from 1 B to 16 GiB: powers of two with random jitter, ascending.
std::vector<std::uint64_t> random_sizes(std::mt19937_64& rng) {
  std::vector<std::uint64_t> sizes;
  for (int e = 0; e <= 34; ++e) {
    const auto base = std::uint64_t{1} << e;
    sizes.push_back(base);
    sizes.push_back(base + std::uniform_int_distribution<std::uint64_t>(0, base)(rng));
  }
  std::sort(sizes.begin(), sizes.end());
  return sizes;
}

TEST(PropertyCollective, LargerMessageNeverMakesACollectiveFaster) {
  std::mt19937_64 rng(3000);
  for (const char* file : {"dgx-a100.toml", "dgx-h100.toml"}) {
    const Net n(file, 32);
    for (const auto op : kOps) {
      for (const auto& group : random_groups(rng, op, 32, 8)) {
        Time prev = Time::zero();
        std::uint64_t prev_size = 0;
        for (const std::uint64_t s : random_sizes(rng)) {
          const Time t = n.model.cost(op, s, group).time;
          EXPECT_GE(t, prev) << file << " " << net::op_name(op) << " n=" << group.size() << ": "
                             << s << " B took " << t.seconds() << " s < " << prev_size
                             << " B's " << prev.seconds() << " s";
          prev = t;
          prev_size = s;
        }
      }
    }
  }
}

/// Bytes the algorithm moves in total (all flows), from its definition: a ring moves each of
/// its nsteps chunks of S/n over n edges (all_reduce 2(n-1), all_gather / reduce_scatter
/// n-1 steps), i.e. n x busbw_factor x S; hierarchical all_reduce and PAT the same total
/// (intra ring reduce-scatter + per-rail all-reduce + intra all-gather = 2(n-1) S); pairwise
/// all_to_all sends S/n to each of n-1 peers from each rank; NVLS all_reduce sends S/n
/// between every ordered pair ((n-1) S: the switch reduces); send_recv moves S once.
/// Returns a negative value for Tree (checked on its inter-node edges instead).
double expected_total_bytes(const net::CollectivePlan& p, net::CollectiveOp op, double s, int n) {
  using net::Algorithm;
  switch (p.cost.algorithm) {
    case Algorithm::Ring:
    case Algorithm::Hierarchical:
    case Algorithm::PAT:
    case Algorithm::Pairwise: return n * net::busbw_factor(op, n) * s;
    case Algorithm::NVLS: return (n - 1) * s;
    case Algorithm::P2P: return s;
    case Algorithm::Tree:
    case Algorithm::None: break;
  }
  return -1;
}

TEST(PropertyCollective, PlanFlowsMoveTheAlgorithmsBytesAndRespectLinkBandwidth) {
  std::mt19937_64 rng(4000);
  int checked = 0, trees = 0;
  for (const char* file : {"dgx-a100.toml", "dgx-h100.toml"}) {
    const Net n(file, 32);
    for (const auto op : kOps) {
      for (const auto& group : random_groups(rng, op, 32, 8)) {
        for (const std::uint64_t size : {std::uint64_t{4096}, std::uint64_t{1} << 20,
                                         std::uint64_t{96} << 20, std::uint64_t{1} << 32}) {
          const auto p = n.model.plan(op, size, group);
          const int gs = static_cast<int>(group.size());
          const double s = static_cast<double>(size);
          double total = 0, inter = 0, bound = 0;
          for (const auto& ph : p.phases) {
            std::map<std::uint32_t, double> load;  // bytes per directed link in the phase
            for (const auto& f : ph.flows) {
              total += f.bytes;
              if (n.topo.node_of(f.src) != n.topo.node_of(f.dst)) inter += f.bytes;
              for (const std::uint32_t l : n.topo.route(f.src, f.dst).links) load[l] += f.bytes;
            }
            double phase_bound = 0;
            for (const auto& [l, b] : load) {
              phase_bound = std::max(phase_bound, b / n.topo.link(l).bandwidth);
            }
            bound += phase_bound;
          }
          const std::string what = std::string(file) + " " + std::string(net::op_name(op)) +
                                   " " + std::string(net::algorithm_name(p.cost.algorithm)) +
                                   " n=" + std::to_string(gs) + " S=" + std::to_string(size);
          const double want = expected_total_bytes(p, op, s, gs);
          if (p.cost.algorithm == net::Algorithm::Hierarchical) {
            // Intra-node ring reduce_scatter and all_gather: (c - 1) S per node of c members;
            // the per-rail all_reduce of S / ppn: 2 (nodes - 1) S in all when every node has
            // ppn members (NCCL's hierarchical layout; uneven nodes only approximate it).
            std::map<int, int> per_node;
            for (int g : group) ++per_node[n.topo.node_of(g)];
            double intra = 0;
            bool uniform = true;
            for (const auto& [node, c] : per_node) {
              intra += (c - 1) * s;
              uniform = uniform && c == per_node.begin()->second;
            }
            ASSERT_EQ(p.phases.size(), 3U) << what;
            for (const std::size_t ph : {std::size_t{0}, std::size_t{2}}) {
              double b = 0;
              for (const auto& f : p.phases[ph].flows) b += f.bytes;
              EXPECT_NEAR(b, intra, 1e-9 * intra + 1) << what << " phase " << ph;
            }
            if (uniform) {
              EXPECT_NEAR(total, want, 1e-9 * want + 1) << what;
            }
            ++checked;
          } else if (want >= 0) {
            EXPECT_NEAR(total, want, 1e-9 * want + 1) << what;
            ++checked;
          } else if (p.cost.algorithm == net::Algorithm::Tree) {
            // Two mirrored trees over the nodes, S/2 each, up and down every node edge.
            std::vector<int> nodes;
            for (int g : group) nodes.push_back(n.topo.node_of(g));
            std::sort(nodes.begin(), nodes.end());
            const auto nn = std::unique(nodes.begin(), nodes.end()) - nodes.begin();
            EXPECT_NEAR(inter, 2.0 * static_cast<double>(nn - 1) * s, 1e-9 * s + 1) << what;
            ++trees;
          }
          // Bound: no phase ends before its busiest link has carried its bytes.
          EXPECT_GE(p.cost.time.seconds(), bound * (1 - 1e-9)) << what;
        }
      }
    }
  }
  EXPECT_GT(checked, 100);
  EXPECT_GT(trees, 0);
}

// Regression (found by the property above): the hierarchical all_reduce's intra-node
// reduce_scatter / all_gather flows carried (ppn-1) S / ppn^2 per ring edge, ppn times too
// little, so full fidelity saw 1/ppn of its NVLink load under contention.
TEST(PropertyCollective, HierarchicalIntraNodePhasesCarryTheRingBytes) {
  int found = 0;
  for (const char* file : {"dgx-a100.toml", "dgx-h100.toml"}) {
    const Net n(file, 32);
    for (const int ppn : {2, 4, 8}) {
      std::vector<int> group;  // 4 nodes x ppn GPUs
      for (int node = 0; node < 4; ++node) {
        for (int i = 0; i < ppn; ++i) group.push_back(node * 8 + i);
      }
      for (int e = 12; e <= 34; ++e) {
        const std::uint64_t size = std::uint64_t{1} << e;
        const auto p = n.model.plan(net::CollectiveOp::AllReduce, size, group);
        if (p.cost.algorithm != net::Algorithm::Hierarchical) continue;
        ++found;
        ASSERT_EQ(p.phases.size(), 3U);
        // Per node: a ring of ppn edges, each carrying ppn - 1 steps of S / ppn.
        EXPECT_EQ(p.phases[0].flows.size(), static_cast<std::size_t>(4 * ppn));
        for (const auto& f : p.phases[0].flows) {
          EXPECT_DOUBLE_EQ(f.bytes, (ppn - 1.0) / ppn * static_cast<double>(size));
        }
      }
    }
  }
  EXPECT_GT(found, 0);
}

// ------------------------------------------------------------------- symmetry: collectives

TEST(PropertySymmetry, PermutingOrTranslatingAGroupChangesNoCollective) {
  std::mt19937_64 rng(5000);
  const Net n("dgx-a100.toml", 32);
  for (const auto op : kOps) {
    for (auto group : random_groups(rng, op, 32, 8)) {
      for (const std::uint64_t size : {std::uint64_t{8192}, std::uint64_t{64} << 20}) {
        const Time t = n.model.cost(op, size, group).time;
        // Relabelling: the same GPUs listed in another order.
        auto shuffled = group;
        std::shuffle(shuffled.begin(), shuffled.end(), rng);
        EXPECT_EQ(n.model.cost(op, size, shuffled).time, t) << net::op_name(op);
        // Identical GPUs: the group moved by whole nodes (wrapping around the cluster).
        bool single_node_span = true;
        for (int g : group) single_node_span = single_node_span && g < 16;
        if (!single_node_span) continue;
        auto moved = group;
        for (int& g : moved) g += 16;
        EXPECT_EQ(n.model.cost(op, size, moved).time, t) << net::op_name(op) << " moved";
      }
    }
  }
}

// --------------------------------------------------------- conservation and bounds: steps

TEST(PropertyConservation, BreakdownPartsAddUpToTheWindowOnEveryStage) {
  for (int i = 0; i < kScenarios; ++i) {
    const Draw d = draw(6000 + static_cast<std::uint64_t>(i));
    const Scenario sc = load(d, "cons");
    for (bool contention : {true, false}) {
      Scenario c = sc;
      c.sm_contention = contention;
      const StepResult r = simulate_step(c);
      ASSERT_EQ(r.stages.size(), static_cast<std::size_t>(d.pp));
      for (const auto& st : r.stages) {
        const auto& b = st.breakdown;
        double sum = b.compute + b.optimizer + b.contention + b.bubble;
        for (double e : b.exposed) {
          EXPECT_GE(e, 0) << d.text;
          sum += e;
        }
        EXPECT_GE(b.compute, 0);
        EXPECT_GE(b.contention, 0);
        EXPECT_GE(b.bubble, -1e-15);
        if (!contention) {
          EXPECT_EQ(b.contention, 0) << d.text;
        }
        EXPECT_NEAR(sum, b.step, 1e-12 + 1e-9 * b.step) << "stage " << st.stage << "\n" << d.text;
        EXPECT_NEAR(b.step, r.step_time.seconds(), 1e-12 + 1e-9 * b.step) << d.text;
        // Memory: the total is the sum of its parts, and fits compares it with capacity.
        const auto& m = st.memory;
        EXPECT_DOUBLE_EQ(m.total, m.weights + m.gradients + m.optimizer + m.activations);
        EXPECT_EQ(m.fits, m.total <= m.capacity);
      }
    }
  }
}

TEST(PropertyBounds, StepTimeIsAtLeastTheFlopsAtPeakAndMfuAtMostOne) {
  for (int i = 0; i < kScenarios; ++i) {
    const Draw d = draw(7000 + static_cast<std::uint64_t>(i));
    const Scenario sc = load(d, "bounds");
    const StepResult r = simulate_step(sc);
    const double t = r.step_time.seconds();
    const double peak = sc.gpu.peak_bf16;  // the scenarios train in bf16
    EXPECT_GE(t, r.model_flops / (sc.gpus * peak)) << d.text;
    EXPECT_GE(t, r.hardware_flops / (sc.gpus * peak)) << d.text;
    // What runs covers the model FLOPs but the masked half of causal FlashAttention.
    const double masked = sc.training.flash_attention
                              ? model::causal_masked_flops_per_step(
                                    sc.model, sc.training.global_batch, sc.training.recompute)
                              : 0.0;
    EXPECT_GE(r.hardware_flops + masked, r.model_flops * (1 - 1e-12));
    EXPECT_GT(r.mfu, 0);
    EXPECT_LE(r.mfu, 1) << d.text;
    EXPECT_LE(r.hfu, 1) << d.text;
    EXPECT_NEAR(r.mfu, r.model_flops / (t * sc.gpus * peak), 1e-9 * r.mfu) << d.text;
    // Compute time alone is bounded by the FLOPs at peak on every stage... summed over the
    // stages, the compute a GPU does covers its share of the hardware FLOPs.
    double compute = 0;
    for (const auto& st : r.stages) compute += st.breakdown.compute + st.breakdown.contention;
    EXPECT_GE(compute * (sc.gpus / d.pp), r.hardware_flops / peak * (1 - 1e-9)) << d.text;
    const auto& m = r.memory;
    EXPECT_DOUBLE_EQ(m.total, m.weights + m.gradients + m.optimizer + m.activations);
  }
}

// --------------------------------------------------------------- symmetry and fidelity: steps

TEST(PropertySymmetry, SimulatingTheSameScenarioTwiceGivesTheSameTimeline) {
  const Draw d = draw(8000);
  const Scenario sc = load(d, "sym");
  const StepResult a = simulate_step(sc);
  const StepResult b = simulate_step(sc);
  EXPECT_EQ(a.step_time, b.step_time);
  EXPECT_EQ(a.task_start, b.task_start);
  EXPECT_EQ(a.task_end, b.task_end);
}

TEST(PropertyFidelity, FullNeverBeatsStageAndAgreesWithinOnePercentWithoutContention) {
  for (int i = 0; i < kScenarios / 2; ++i) {
    Draw d = draw(9000 + static_cast<std::uint64_t>(i));
    Scenario stage = load(d, "fid");
    Scenario full = stage;
    full.fidelity = Fidelity::Full;
    const double ts = seconds(stage), tf = seconds(full);
    // Stage fidelity prices every collective as if it had the network alone.
    EXPECT_GE(tf, ts * (1 - 1e-9)) << d.text;
    // No contention: TP inside a node, PP across nodes (8 rails), DP 1.
    d.tp = 8;
    d.pp = 2;
    d.dp = 1;
    d.gpus = 16;
    d.layers = 2 * (1 + (i % 2));
    d.m = 2 + 2 * (i % 2);
    d.sp = i % 2 == 1;
    d.text = scenario_text(d);
    stage = load(d, "fid");
    full = stage;
    full.fidelity = Fidelity::Full;
    const double s2 = seconds(stage), f2 = seconds(full);
    EXPECT_NEAR(f2, s2, 0.01 * s2) << d.text;
  }
}

}  // namespace
}  // namespace trainsim
