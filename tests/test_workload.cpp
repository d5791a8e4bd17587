// The whole step: builder + engine + metrics on real scenarios.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>
#include <tuple>

#include "config/scenario.hpp"
#include "config/scenario_writer.hpp"
#include "cost/cost_model.hpp"
#include "core/error.hpp"
#include "model/memory.hpp"
#include "report/report.hpp"
#include "test_util.hpp"
#include "workload/builder.hpp"
#include "workload/compare.hpp"
#include "workload/gemm_cost.hpp"

using namespace trainsim;
using workload::Scenario;
using workload::simulate_step;

namespace {
Scenario shipped(const std::string& name) {
  return config::load_scenario(test::source_dir() / "scenarios" / (name + ".toml"));
}
Scenario small() {
  const auto dir = test::temp_dir("workload-small");
  return config::load_scenario(test::write(dir / "small.toml", test::small_scenario()));
}
double parts(const workload::StageBreakdown& b) {
  double s = b.compute + b.optimizer + b.contention + b.bubble;
  for (double e : b.exposed) s += e;
  return s;
}
}  // namespace

TEST(Workload, Gpt3StepTimeWithin15PercentOfKorthikantiTable5) {
  const auto r = simulate_step(shipped("gpt3-175b-a100"));
  const double published = 13.75;  // s, Korthikanti et al. 2022 Table 5, GPT-3 present work
  EXPECT_NEAR(r.step_time.seconds() / published, 1.0, 0.15) << r.step_time.seconds();
  EXPECT_TRUE(r.memory.fits);
}

TEST(Workload, SameScenarioGivesByteIdenticalJson) {
  const auto sc = shipped("gpt3-175b-a100");
  const auto a = report::to_json(sc, simulate_step(sc));
  const auto b = report::to_json(sc, simulate_step(sc));
  EXPECT_EQ(a, b);
}

TEST(Workload, BreakdownOfEveryStageAddsUpToTheStepTime) {
  for (const char* name : {"gpt3-175b-a100", "llama3-70b-h100"}) {
    const auto r = simulate_step(shipped(name));
    for (const auto& s : r.stages) {
      EXPECT_NEAR(parts(s.breakdown), r.step_time.seconds(), 1e-9) << name << " stage " << s.stage;
    }
    EXPECT_NEAR(parts(r.breakdown), r.step_time.seconds(), 1e-9);
  }
}

TEST(Workload, FlopsMfuAndMemoryAreConsistent) {
  const auto sc = shipped("gpt3-175b-a100");
  const auto r = simulate_step(sc);
  EXPECT_DOUBLE_EQ(r.model_flops, model::model_flops_per_step(sc.model, sc.training.global_batch));
  EXPECT_GT(r.mfu, 0.0);
  EXPECT_LE(r.mfu, r.hfu);
  EXPECT_LE(r.hfu, 1.0);
  EXPECT_NEAR(r.mfu, r.model_flops / (r.step_time.seconds() * sc.gpus * 312e12), 1e-12);
  // Step time can never beat the FLOPs at peak.
  EXPECT_GE(r.step_time.seconds(), r.hardware_flops / (sc.gpus * 312e12));
  for (const auto& s : r.stages) {
    const auto st = model::model_state_bytes(s.params, sc.layout.dp, sc.layout.zero,
                                             hw::dtype_bytes(workload::gradient_dtype(sc.training.dtype)));
    EXPECT_DOUBLE_EQ(s.memory.weights + s.memory.gradients + s.memory.optimizer, st.total());
    EXPECT_DOUBLE_EQ(s.memory.total, st.total() + s.memory.activations);
  }
  // Every TP rank holds the layer's norm weights and row-parallel biases (projection, fc2)
  // whole, as in Megatron-LM: tp - 1 extra copies of them.
  double params = 0;
  for (const auto& s : r.stages) params += s.params * sc.layout.tp;
  const double h = sc.model.hidden;
  const double replicated = sc.model.layers * (4 * h + (sc.model.bias ? 2 * h : 0.0));
  EXPECT_NEAR(params / (sc.model.total_params() + (sc.layout.tp - 1) * replicated), 1.0, 1e-9);
}

// Communication kernels holding SMs only ever slow the step, and switching it off gives the
// contention-free step, whose breakdown has no contention.
TEST(Workload, SmContentionOnlySlowsAndCanBeSwitchedOff) {
  auto sc = small();
  const auto with = simulate_step(sc);
  sc.sm_contention = false;
  const auto without = simulate_step(sc);
  EXPECT_GT(with.step_time, without.step_time);
  EXPECT_GT(with.breakdown.contention, 0.0);
  EXPECT_EQ(without.breakdown.contention, 0.0);
  EXPECT_EQ(without.step_time.count_ps(), 11644687661);  // the golden without SM contention
}

TEST(Workload, GoldenSmallScenarioExactPicoseconds) {
  auto sc = small();
  // Golden values: change only when the cost model or the graph changes on purpose.
  EXPECT_EQ(simulate_step(sc).step_time.count_ps(), 11820098071);
  // Averaging inside the collective runs no scaling kernel: the step before the per-bucket
  // gradient scaling was modelled.
  sc.training.grad_scaling = workload::GradScaling::Collective;
  EXPECT_EQ(simulate_step(sc).step_time.count_ps(), 11692482975);
}

// Megatron-LM's local DDP divides the whole fp32 gradient buffer after the backward, even with
// DP = 1: the step grows by exactly that kernel (read + write 4 bytes per parameter of the
// GPU), which sits between the last backward kernel and the optimizer. Megatron-Core scales
// buckets only when there is something to average (DP > 1), so there it equals the
// collective mode.
TEST(Workload, GradientScalingKernelsFollowTheFramework) {
  auto sc = small();
  sc.layout.tp = 8;
  sc.layout.pp = sc.layout.dp = 1;
  sc.gpus = 8;
  sc.training.global_batch = 4;
  sc.training.grad_scaling = workload::GradScaling::Collective;
  const auto none = simulate_step(sc);
  sc.training.grad_scaling = workload::GradScaling::Bucket;
  EXPECT_EQ(simulate_step(sc).step_time, none.step_time);
  sc.training.grad_scaling = workload::GradScaling::Buffer;
  const auto buffer = simulate_step(sc);
  const cost::CostModel cost(sc.gpu);
  ASSERT_EQ(none.stages.size(), 1U);
  EXPECT_EQ(buffer.step_time - none.step_time,
            cost.memory_bound(2.0 * 4.0 * none.stages[0].params));

  // With DP 4 and the reduction after the backward, Megatron-Core scales every bucket first.
  auto dp = small();
  dp.layout.overlap_grad_reduce = false;
  dp.training.grad_scaling = workload::GradScaling::Collective;
  const auto avg = simulate_step(dp);
  dp.training.grad_scaling = workload::GradScaling::Bucket;
  EXPECT_GT(simulate_step(dp).step_time, avg.step_time);
  // Local DDP cannot overlap its all-reduce with the backward: the combination is bad input.
  dp.training.grad_scaling = workload::GradScaling::Buffer;
  dp.layout.overlap_grad_reduce = true;
  try {
    (void)simulate_step(dp);
    FAIL() << "buffer scaling with overlapped reduction was accepted";
  } catch (const InputError& e) {
    EXPECT_EQ(e.key(), "training.grad_scaling");
  }
}

// Every schedule runs with every scaling mode, and the scaling kernels only ever add time: with
// fixed stream orders the step is a longest path, monotone in task durations (SM contention,
// which re-times kernels while communication runs, is off so that this holds exactly).
TEST(Workload, GradientScalingOnlyAddsTimeUnderEverySchedule) {
  using parallel::ScheduleKind;
  for (ScheduleKind kind : {ScheduleKind::GPipe, ScheduleKind::OneFOneB, ScheduleKind::Interleaved,
                            ScheduleKind::ZbH1, ScheduleKind::ZbH2, ScheduleKind::DualPipe,
                            ScheduleKind::PipeDream}) {
    for (bool overlap : {true, false}) {
      auto sc = small();
      sc.sm_contention = false;
      sc.training.global_batch = 32;  // 4 microbatches: DualPipe needs 2 x pp
      sc.layout.schedule = kind;
      sc.layout.virtual_stages = kind == ScheduleKind::Interleaved ? 2 : 1;
      sc.layout.overlap_grad_reduce = overlap;
      if (kind == ScheduleKind::PipeDream) sc.steps = 2;
      const std::string what = std::string(parallel::schedule_name(kind)) +
                               (overlap ? " overlapped" : " after the backward");
      sc.training.grad_scaling = workload::GradScaling::Collective;
      const auto none = simulate_step(sc);
      sc.training.grad_scaling = workload::GradScaling::Bucket;
      EXPECT_GT(simulate_step(sc).step_time, none.step_time) << what;
      if (!overlap) {
        sc.training.grad_scaling = workload::GradScaling::Buffer;
        EXPECT_GT(simulate_step(sc).step_time, none.step_time) << what;
      }
    }
  }
}

TEST(Workload, OneFOneBHoldsAtMostPMicrobatchesGPipeHoldsAll) {
  auto sc = small();
  sc.training.global_batch = 64;  // m = 64 / (2 x 4) = 8 microbatches
  const auto r1 = simulate_step(sc);
  EXPECT_EQ(r1.microbatches, 8);
  EXPECT_LE(r1.stages[0].peak_inflight, sc.layout.pp);
  sc.layout.schedule = parallel::ScheduleKind::GPipe;
  const auto rg = simulate_step(sc);
  EXPECT_EQ(rg.stages[0].peak_inflight, 8);
  EXPECT_GT(rg.memory.activations, r1.memory.activations);
}

TEST(Workload, OverlappingGradientReductionNeverSlowsTheStep) {
  auto sc = small();
  sc.layout.overlap_grad_reduce = false;
  const auto serial = simulate_step(sc);
  sc.layout.overlap_grad_reduce = true;
  const auto overlapped = simulate_step(sc);
  EXPECT_LE(overlapped.step_time, serial.step_time);
  EXPECT_GT(serial.breakdown.exposed_of(Category::DpComm), 0.0);
}

TEST(Workload, ZeroStagesShrinkModelStateMemory) {
  auto sc = small();
  sc.layout.pp = 1;  // ZeRO-2/3 need pp = 1
  sc.layout.dp = 8;
  double prev = 1e30;
  for (int z = 0; z <= 3; ++z) {
    sc.layout.zero = z;
    const auto r = simulate_step(sc);
    const double state = r.memory.weights + r.memory.gradients + r.memory.optimizer;
    EXPECT_LT(state, prev) << "zero " << z;
    prev = state;
  }
}

TEST(Workload, RecomputeTradesTimeForMemory) {
  auto sc = small();
  sc.training.recompute = model::Recompute::None;
  const auto none = simulate_step(sc);
  sc.training.recompute = model::Recompute::Full;
  const auto full = simulate_step(sc);
  EXPECT_GT(full.step_time, none.step_time);
  EXPECT_LT(full.memory.activations, none.memory.activations);
  // Narayanan et al. 2021 Eq. 3: 96 B s l h^2 (1 + s/6h + V/16lh) with full recompute, whose
  // attention term 16 B s^2 l h counts the causal core in full; a causal FlashAttention kernel
  // runs half of it, so the hardware FLOPs have s/12h where Eq. 3 has s/6h.
  const auto& m = sc.model;
  const double B = sc.training.global_batch, s = m.seq_len, l = m.layers, h = m.hidden;
  EXPECT_NEAR(full.hardware_flops /
                  (96 * B * s * l * h * h * (1 + s / (12 * h) + m.vocab / (16 * l * h))),
              1.0, 1e-3);
  EXPECT_NEAR(model::hardware_flops_per_step(m, sc.training.global_batch, model::Recompute::Full) /
                  (96 * B * s * l * h * h * (1 + s / (6 * h) + m.vocab / (16 * l * h))),
              1.0, 1e-3);
}

TEST(Workload, HfuCountsTheHalfOfCausalAttentionThatRunsAndStaysAtMostOne) {
  // A short model at 256k tokens: the attention core is most of the work. The model-FLOP
  // convention counts it in full, so MFU may pass HFU (here, by half the core), never HFU 1.
  auto text = test::replace(test::small_scenario(), "seq_len = 1024", "seq_len = 262144");
  text = test::replace(text, "global_batch = 16", "global_batch = 8");
  text = test::replace(text, "micro_batch = 2", "micro_batch = 1");
  text = test::replace(text, "dp = 4", "dp = 2");
  text = test::replace(text, "gpus = 16", "gpus = 8");
  const auto dir = test::temp_dir("workload-hfu");
  auto sc = config::load_scenario(test::write(dir / "long.toml", text));
  const auto causal = simulate_step(sc);
  EXPECT_LE(causal.hfu, 1.0);
  EXPECT_GT(causal.mfu, causal.hfu);
  const double masked =
      model::causal_masked_flops_per_step(sc.model, sc.training.global_batch, sc.training.recompute);
  const double s = sc.model.seq_len, B = sc.training.global_batch;
  // Half of Q·K^T and P·V (4 B s^2 h per layer forward) over forward and backward (x3).
  EXPECT_NEAR(masked / (0.5 * 3 * 4 * B * s * s * sc.model.hidden * sc.model.layers), 1.0, 1e-12);
  EXPECT_NEAR(causal.hardware_flops, causal.model_flops - masked, 1e-9 * causal.model_flops);
  sc.model.causal = false;
  const auto full = simulate_step(sc);
  EXPECT_DOUBLE_EQ(full.hardware_flops, full.model_flops);
  EXPECT_DOUBLE_EQ(full.model_flops, causal.model_flops);
  EXPECT_LE(full.hfu, 1.0);
  // The unfused path computes the masked scores too.
  sc.model.causal = true;
  sc.training.flash_attention = false;
  EXPECT_DOUBLE_EQ(simulate_step(sc).hardware_flops, causal.model_flops);
}

TEST(Workload, LargestScenarioSimulates) {
  const auto r = simulate_step(shipped("llama3-405b-h100"));
  EXPECT_GT(r.step_time.seconds(), 0);
  EXPECT_EQ(r.stages.size(), 16U);
  // 126 layers over 64 virtual stages: two each, one fewer on the first and the last.
  EXPECT_EQ(r.stages.front().layers, 7);
  EXPECT_EQ(r.stages.back().layers, 7);
  EXPECT_EQ(r.stages[1].layers, 8);
}

// Regression tests for defects found in review.

TEST(Workload, CollectivesAreCostedWhereEachStagesGroupSits) {
  // 4 GPUs per node, tp 1, pp 4, dp 3 on 12 GPUs: stage 0's DP group {0,1,2} is inside node
  // 0, stage 1's {3,4,5} spans nodes 0 and 1 and pays for the (slow) network.
  auto sc = small();
  sc.topology.gpus_per_node = 4;
  sc.topology.nics_per_node = 4;
  sc.topology.nodes_per_su = 4;
  sc.topology.nic_bw = 1e9;
  sc.gpus = 12;
  sc.model.layers = 8;
  sc.layout.tp = 1;
  sc.layout.sequence_parallel = false;
  sc.layout.pp = 4;
  sc.layout.dp = 3;
  sc.training.global_batch = 12;
  sc.training.micro_batch = 1;
  sc.layout.overlap_grad_reduce = false;
  const auto r = workload::simulate_step(sc);
  EXPECT_GT(r.stages[1].breakdown.exposed_of(Category::DpComm),
            5 * r.stages[0].breakdown.exposed_of(Category::DpComm));
}

TEST(Workload, ExposedDpCommunicationIsNotCountedAsBubbleWithoutPipeline) {
  auto sc = small();
  sc.layout.pp = 1;
  sc.layout.dp = 8;
  sc.training.global_batch = 16;
  sc.layout.overlap_grad_reduce = false;
  sc.layout.dp_bucket_params = 100000;  // many buckets: a long chain on the DP stream
  for (int zero : {0, 1}) {
    sc.layout.zero = zero;
    const auto r = workload::simulate_step(sc);
    EXPECT_EQ(r.breakdown.bubble, 0.0) << "zero " << zero;
    EXPECT_GT(r.breakdown.exposed_of(Category::DpComm), 0.0);
  }
}

TEST(Workload, OverlappedParameterGatherHidesBehindTheFirstForward) {
  auto sc = small();
  sc.layout.pp = 1;
  sc.layout.dp = 8;
  sc.layout.zero = 1;
  sc.layout.dp_bucket_params = 1000000;
  sc.layout.overlap_param_gather = false;
  const auto serial = workload::simulate_step(sc);
  sc.layout.overlap_param_gather = true;
  const auto overlapped = workload::simulate_step(sc);
  EXPECT_LT(overlapped.step_time, serial.step_time);
}

TEST(Workload, TiedEmbeddingsSyncBetweenFirstAndLastStage) {
  auto sc = small();
  const auto untied = workload::simulate_step(sc);
  sc.model.tied_embeddings = true;
  const auto tied = workload::simulate_step(sc);
  EXPECT_GT(tied.step_time, untied.step_time);  // one more all-reduce before the optimizer
  bool found = false;
  for (TaskId t = 0; t < tied.graph->num_tasks(); ++t) {
    found = found || tied.graph->label(tied.graph->task(t).label).find("embedding grad") == 0;
  }
  EXPECT_TRUE(found);
  // The last stage keeps a copy of the embedding as its output layer: as many parameters
  // as an untied LM head.
  EXPECT_NEAR(tied.stages.back().params, untied.stages.back().params, 1.0);
}

// Narayanan et al. 2021 Figure 12: on GPT-3 with 96 GPUs (TP 8, PP 12) the interleaved
// schedule beats 1F1B at small global batch, and the gap shrinks as the batch grows.
TEST(Schedules, InterleavedBeats1F1BAndTheGapShrinksWithBatch) {
  auto sc = shipped("schedules-gpt3-96gpu");
  auto gain = [&](std::int64_t global_batch) {
    sc.training.global_batch = global_batch;
    sc.layout.schedule = parallel::ScheduleKind::OneFOneB;
    sc.layout.virtual_stages = 1;
    const double plain = workload::simulate_step(sc).step_time.seconds();
    sc.layout.schedule = parallel::ScheduleKind::Interleaved;
    sc.layout.virtual_stages = 4;
    const double interleaved = workload::simulate_step(sc).step_time.seconds();
    return plain / interleaved - 1;
  };
  const double small = gain(12), large = gain(60);
  EXPECT_GT(small, 0.10);
  EXPECT_GT(large, 0.0);
  EXPECT_LT(large, small);
}

TEST(Schedules, EveryScheduleRunsTheTeachingScenario) {
  const auto runs = workload::compare_schedules(shipped("schedules-teaching-4stage"));
  ASSERT_EQ(runs.size(), 8U);
  double one_f_one_b = 0;
  for (const auto& r : runs) {
    ASSERT_TRUE(r.result.has_value()) << r.name << ": " << r.skipped;
    for (const auto& s : r.result->stages) {
      EXPECT_NEAR(parts(s.breakdown), s.breakdown.step, 1e-9) << r.name;
    }
    if (r.schedule == parallel::ScheduleKind::OneFOneB) {
      one_f_one_b = r.result->step_time.seconds();
      EXPECT_EQ(r.result->stages[0].peak_inflight, 4);
    }
    if (r.schedule == parallel::ScheduleKind::GPipe) {
      EXPECT_EQ(r.result->stages[0].peak_inflight, 8);
    }
    if (r.schedule == parallel::ScheduleKind::PipeDream) {
      EXPECT_EQ(r.result->stages[0].weight_versions, 4);  // one per microbatch in flight
      EXPECT_EQ(r.result->stages[0].staleness, 3);
      EXPECT_EQ(r.result->stages[3].staleness, 0);
    }
    if (r.schedule == parallel::ScheduleKind::TwoBW) {
      EXPECT_EQ(r.result->stages[0].weight_versions, 2);
      EXPECT_EQ(r.result->stages[0].staleness, 1);
    }
    if (r.schedule == parallel::ScheduleKind::DualPipe) {
      // Two chunks per rank: twice the parameters of 1F1B's stage.
      EXPECT_NEAR(r.result->stages[1].params, 2 * runs[1].result->stages[1].params, 1.0);
    }
  }
  EXPECT_GT(one_f_one_b, 0);
}

TEST(Schedules, ConstraintsAreRejectedWithTheKey) {
  auto sc = shipped("schedules-teaching-4stage");
  sc.layout.schedule = parallel::ScheduleKind::DualPipe;
  sc.training.global_batch = 6;  // 6 microbatches < 2 x pp
  try {
    (void)workload::simulate_step(sc);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(e.key(), "parallel.schedule");
    EXPECT_NE(std::string(e.what()).find("at least 2 x pp"), std::string::npos);
  }
  sc = shipped("schedules-teaching-4stage");
  sc.layout.schedule = parallel::ScheduleKind::PipeDream;
  sc.layout.zero = 1;
  EXPECT_THROW((void)workload::simulate_step(sc), InputError);
}

TEST(Schedules, ParameterGatherWithoutOverlapDelaysTheNextStep) {
  auto sc = small();
  sc.layout.zero = 1;
  sc.layout.pp = 1;
  sc.layout.dp = 8;
  sc.layout.dp_bucket_params = 1000000;
  sc.steps = 3;
  sc.layout.overlap_param_gather = false;
  const auto serial = workload::simulate_step(sc);
  sc.layout.overlap_param_gather = true;
  const auto overlapped = workload::simulate_step(sc);
  EXPECT_LT(overlapped.step_time, serial.step_time);
  EXPECT_GT(serial.breakdown.exposed_of(Category::DpComm), 0.0);
}

// Regression: with fewer microbatches than stages, 2BW's steady state drifts by microseconds
// from step to step (the last stage's span between its updates was 23.018 ms, the step 23.011
// ms), and each stage was analysed over its own span, so its breakdown did not add up to the
// step time the report divides by. Every stage is now analysed over one step time.
TEST(Schedules, AsynchronousStagesAddUpToTheStepTimeWhenStepsDrift) {
  const auto dir = test::temp_dir("workload-async-drift");
  // Also `steps = 1`: the first step of a schedule that never flushes, which the stages finish
  // at different times (a stage's parts added up to its own end, up to 28% short of the step).
  for (const char* batch : {"global_batch = 2", "global_batch = 4",
                            "global_batch = 4\n[simulation]\nsteps = 1"}) {
    const std::string text = "version = 1\n[model]\nlayers = 12\nhidden = 2048\nheads = 16\n"
                             "vocab = 32000\nseq_len = 2048\n[parallel]\ntp = 1\npp = 4\n"
                             "dp = 2\nschedule = \"2bw\"\n[cluster]\ntopology = \"" +
                             (test::source_dir() / "topologies/dgx-a100.toml").string() +
                             "\"\ngpus = 8\n[training]\nmicro_batch = 1\n" + std::string(batch) +
                             "\n";
    const auto r = simulate_step(config::load_scenario(test::write(dir / "s.toml", text)));
    ASSERT_GT(r.steps_simulated, 1) << batch;
    const double step = r.step_time.seconds();
    for (const auto& s : r.stages) {
      EXPECT_NEAR(s.breakdown.step, step, 1e-12) << batch << " stage " << s.stage;
      EXPECT_NEAR(parts(s.breakdown), step, 1e-12) << batch << " stage " << s.stage;
    }
    EXPECT_NEAR(parts(r.breakdown), step, 1e-12) << batch;
  }
}

TEST(Schedules, AsynchronousSteadyStateIsNotTheDrain) {
  // 2BW in steady state: the slowest stage (the last, with the LM head) never waits.
  auto sc = shipped("schedules-teaching-4stage");
  sc.layout.schedule = parallel::ScheduleKind::TwoBW;
  sc.steps = 3;
  const auto r = workload::simulate_step(sc);
  EXPECT_EQ(r.steps_simulated, 4);
  EXPECT_EQ(r.measured_step, 3);
  EXPECT_NEAR(r.stages.back().breakdown.bubble / r.stages.back().breakdown.step, 0.0, 0.01);
  // Every stage runs all m forwards inside the measured step.
  const double f_b_last = r.stages.back().breakdown.compute;
  for (const auto& s : r.stages) EXPECT_GT(s.breakdown.compute, 0.6 * f_b_last);
}

// Separate bias kernels (PyTorch-era Megatron-LM), DP 8 with one microbatch per rank and
// nothing overlapped (gradient all-reduce after the backward, no SM contention): the step grows by exactly the memory-bound kernels added per layer: QKV's bias
// add (read + write [T x qkv]) and the four bias-gradient reductions (read dY of QKV, fc1,
// projection, fc2). Epilogue-fused biases cost nothing.
TEST(Workload, SeparateBiasKernelsAddExactlyTheirMemoryTraffic) {
  const auto dir = test::temp_dir("workload-bias");
  std::string text = test::small_scenario();
  text = test::replace(text, "tp = 2\n", "tp = 1\n");
  text = test::replace(text, "pp = 2\n", "pp = 1\n");
  text = test::replace(text, "dp = 4\n", "dp = 8\noverlap_grad_reduce = false\n");
  text = test::replace(text, "sequence_parallel = true\n", "");
  text = test::replace(text, "gpus = 16\n", "gpus = 8\n[simulation]\nsm_contention = false\n");
  text = test::replace(text, "seq_len = 1024\n", "seq_len = 1024\nbias = true\n");
  const auto fused = config::load_scenario(test::write(dir / "fused.toml", text));
  const auto separate = config::load_scenario(test::write(
      dir / "separate.toml",
      test::replace(text, "micro_batch = 2\n", "micro_batch = 2\nbias_kernels = \"separate\"\n")));
  ASSERT_TRUE(fused.model.bias);
  ASSERT_TRUE(fused.training.bias_in_epilogue);
  ASSERT_FALSE(separate.training.bias_in_epilogue);
  const cost::CostModel cost(fused.gpu);
  const double T = 2 * 1024, h = 1024, ffn = 4096, e = 2;  // tokens, widths, bf16 bytes
  const Time per_layer = cost.memory_bound(2 * T * 3 * h * e) +  // QKV bias add
                         cost.memory_bound(T * 3 * h * e) + cost.memory_bound(T * h * e) +
                         cost.memory_bound(T * ffn * e) + cost.memory_bound(T * h * e);
  const auto a = simulate_step(fused), b = simulate_step(separate);
  EXPECT_EQ((b.step_time - a.step_time).count_ps(), (per_layer * 4).count_ps());
  // Bias parameters: QKV (3h) + projection (h) + fc1 (ffn) + fc2 (h) per layer.
  model::ModelSpec no_bias = fused.model;
  no_bias.bias = false;
  EXPECT_DOUBLE_EQ(fused.model.params_per_layer() - no_bias.params_per_layer(),
                   3 * h + h + ffn + h);
}

// Weight-gradient accumulation. Fused (the default): the wgrad GEMM's epilogue reads and
// writes the main gradient (fp32 for bf16, fp16 for fp16 training). Separate (2021
// Megatron-LM): the GEMM stores a 16-bit gradient and one add kernel reads it and the main
// gradient and writes the main gradient, k·n·(2 + 2g) bytes.
TEST(Workload, SeparateWgradAccumulationIsAStoreGemmPlusOneAddKernel) {
  const cost::CostModel cost(*hw::find_builtin_gpu("a100_sxm4_80gb"));
  model::Op op;
  op.kind = model::OpKind::Gemm;
  op.name = "mlp_fc1";
  op.m = 8192;
  op.n = 4096;
  op.k = 1024;
  for (const auto& [dtype, g, epilogue] :
       {std::tuple{hw::Dtype::BF16, 4.0, cost::Epilogue::AccumulateFp32},
        std::tuple{hw::Dtype::FP16, 2.0, cost::Epilogue::Accumulate16}}) {
    workload::GemmKernels kernels{dtype};
    const auto fused = workload::gemm_times(cost, op, kernels);
    EXPECT_EQ(fused.wgrad, cost.gemm(1024, 4096, 8192, dtype, 1, epilogue));
    kernels.fused_wgrad_accumulation = false;
    const auto separate = workload::gemm_times(cost, op, kernels);
    EXPECT_EQ(separate.wgrad, cost.gemm(1024, 4096, 8192, dtype) +
                                  cost.memory_bound(1024.0 * 4096 * (2 + 2 * g)));
    EXPECT_GT(separate.wgrad, fused.wgrad);
    EXPECT_EQ(separate.fwd, fused.fwd);
    EXPECT_EQ(separate.dgrad, fused.dgrad);
  }
}

TEST(Workload, WgradAccumulationKeySelectsTheKernels) {
  const auto dir = test::temp_dir("workload-wgrad");
  const std::string text = test::small_scenario();
  const auto fused = config::load_scenario(test::write(dir / "fused.toml", text));
  const auto separate = config::load_scenario(test::write(
      dir / "separate.toml", test::replace(text, "micro_batch = 2\n",
                                           "micro_batch = 2\nwgrad_accumulation = \"separate\"\n")));
  EXPECT_TRUE(fused.training.fused_wgrad_accumulation);
  EXPECT_FALSE(separate.training.fused_wgrad_accumulation);
  EXPECT_GT(simulate_step(separate).step_time, simulate_step(fused).step_time);
}

// The embedding backward as PyTorch runs it: the scatter-add of the looked-up rows
// (model::embedding_op's bytes) plus the dense [V/t, h] table gradient, zero-filled in 16 bits
// and added into the fp32 main gradient (2 + 2 + 4 + 4 bytes per table entry), per microbatch.
TEST(Workload, EmbeddingBackwardWritesTheDenseTableGradient) {
  const auto dir = test::temp_dir("workload-embedding");
  std::string text = test::small_scenario();
  text = test::replace(text, "gpus = 16\n", "gpus = 16\n[simulation]\nsm_contention = false\n");
  const auto sc = config::load_scenario(test::write(dir / "s.toml", text));
  const auto r = simulate_step(sc);
  const cost::CostModel cost(sc.gpu);
  const double tp = sc.layout.tp, act = 2.0 * 1024 * 1024 * 2;  // micro 2 x seq 1024 x h x bf16
  // The rows' bytes are sequence-sharded under SP (model::embedding_op, rank_op).
  const Time expected = cost.memory_bound(3 * act / tp) +
                        cost.memory_bound(32000.0 * 1024 / tp * (2 + 2 + 2 * 4));
  const int microbatches = static_cast<int>(sc.training.global_batch /
                                            (sc.training.micro_batch * sc.layout.dp));
  bool found = false;
  for (const auto& o : report::op_times(r, 0)) {
    if (o.op != "embedding bwd") continue;
    found = true;
    EXPECT_EQ(o.count, microbatches);
    EXPECT_EQ(o.busy.count_ps(), (expected * microbatches).count_ps());
  }
  EXPECT_TRUE(found);
}

// Uneven pipeline ends (Megatron-Core --decoder-first/last-pipeline-num-layers): a split equal
// to the default one is the same step to the picosecond; moving a layer moves its weights
// and its time between the stages; a split that does not divide names its key and line; a
// written scenario keeps it.
TEST(Workload, FirstAndLastStageLayersMoveLayersBetweenStages) {
  const auto dir = test::temp_dir("workload-uneven");
  const std::string base = test::small_scenario();  // 4 layers, pp 2: 2 + 2 by default
  const std::string parallel = "sequence_parallel = true\n";
  auto with = [&](const std::string& keys) {
    return test::replace(base, parallel, parallel + keys);
  };
  const Scenario even = config::load_scenario(test::write(dir / "even.toml", base));
  const Scenario same = config::load_scenario(
      test::write(dir / "same.toml", with("first_stage_layers = 2\nlast_stage_layers = 2\n")));
  const Scenario moved =
      config::load_scenario(test::write(dir / "moved.toml", with("first_stage_layers = 1\n")));
  const auto r_even = simulate_step(even);
  const auto r_same = simulate_step(same);
  const auto r_moved = simulate_step(moved);
  EXPECT_EQ(r_same.step_time, r_even.step_time);
  EXPECT_EQ(r_moved.stages[0].layers, 1);
  EXPECT_EQ(r_moved.stages[1].layers, 3);
  const double layer = workload::attention_params_per_rank(even.model, 2) +
                       workload::dense_mlp_params_per_rank(even.model, 2, even.model.ffn_hidden);
  EXPECT_NEAR(r_even.stages[0].params - r_moved.stages[0].params, layer, 1e-6 * layer);
  EXPECT_NEAR(r_moved.stages[1].params - r_even.stages[1].params, layer, 1e-6 * layer);
  EXPECT_GT(r_moved.stages[1].breakdown.compute, r_even.stages[1].breakdown.compute);
  EXPECT_LT(r_moved.stages[0].breakdown.compute, r_even.stages[0].breakdown.compute);
  std::ostringstream table;
  report::print_table(table, moved, r_moved);
  EXPECT_NE(table.str().find("first stage 1 layers"), std::string::npos);
  const Scenario again =
      config::load_scenario(test::write(dir / "again.toml", config::scenario_toml(moved)));
  EXPECT_EQ(again.layout.first_stage_layers, 1);
  EXPECT_EQ(again.layout.last_stage_layers, 0);
  try {
    (void)config::load_scenario(test::write(dir / "bad.toml", with("last_stage_layers = 4\n")));
    ADD_FAILURE() << "a split leaving no layer for a stage loaded";
  } catch (const std::exception& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("bad.toml:"), std::string::npos) << what;
    EXPECT_NE(what.find("last_stage_layers"), std::string::npos) << what;
  }
}
