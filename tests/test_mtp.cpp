// Multi-token prediction (DeepSeek-V3 report §2.2; Megatron-Core MultiTokenPredictionLayer):
// model FLOPs and parameters, the module's kernels on the last pipeline stage, its embedding
// copy, and the input checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>

#include "config/scenario.hpp"
#include "config/scenario_writer.hpp"
#include "core/error.hpp"
#include "cost/cost_model.hpp"
#include "model/transformer.hpp"
#include "test_util.hpp"
#include "workload/builder.hpp"
#include "workload/gemm_cost.hpp"
#include "workload/step_ops.hpp"

using namespace trainsim;
using workload::Scenario;
using workload::simulate_step;

namespace {

/// A GPT shape (GeLU, ffn 4h, MHA, LayerNorm) on `gpus` A100s with pp stages.
std::string gpt(int layers, int mtp, int pp, int gpus, const std::string& extra = "") {
  return "version = 1\nname = \"mtp\"\n[model]\nlayers = " + std::to_string(layers) +
         "\nhidden = 1024\nheads = 16\nvocab = 32000\nseq_len = 1024\nmtp_layers = " +
         std::to_string(mtp) + "\n" + extra +
         "[training]\nglobal_batch = 4\nmicro_batch = 2\n[parallel]\ntp = 1\npp = " +
         std::to_string(pp) + "\ndp = 1\n[cluster]\ntopology = \"" +
         (test::source_dir() / "topologies/dgx-a100.toml").string() + "\"\ngpus = " +
         std::to_string(gpus) + "\n";
}

Scenario load(const std::string& text, const std::string& name) {
  const auto dir = test::temp_dir("mtp");
  return config::load_scenario(test::write(dir / (name + ".toml"), text));
}

/// Forward and backward pass spans of microbatch 0 on the last stage, in ps.
std::pair<std::int64_t, std::int64_t> last_stage_passes(const workload::StepResult& r, int pp) {
  std::int64_t f = 0, b = 0;
  for (const auto& p : r.passes) {
    if (p.stage != pp - 1 || p.microbatch != 0) continue;
    const std::int64_t d = (p.end - p.start).count_ps();
    if (p.kind == parallel::PassKind::Forward) f += d;
    else b += d;
  }
  return {f, b};
}

}  // namespace

// Megatron's closed form per step, F = 72 B s l h^2 (1 + s/6h + V/12lh) for a GPT shape, grows
// with each MTP module by one layer (72 B s h^2 (1 + s/6h)), one more logit GEMM (6 B s h V)
// and eh_proj (6 B s 2h^2).
TEST(Mtp, ModelFlopsAddALayerAHeadAndTheProjection) {
  model::ModelSpec m;
  m.layers = 24;
  m.hidden = 2048;
  m.heads = 16;
  m.kv_heads = 16;
  m.ffn_hidden = 4 * 2048;
  m.vocab = 51200;
  m.seq_len = 2048;
  const double B = 64, s = m.seq_len, h = m.hidden, V = 51200;
  const double base = model::model_flops_per_step(m, 64);
  EXPECT_NEAR(base / (72 * B * s * 24 * h * h * (1 + s / (6 * h) + V / (12 * 24 * h))), 1.0, 1e-12);
  for (int d : {1, 2}) {
    m.mtp_layers = d;
    const double expected = d * (72 * B * s * h * h * (1 + s / (6 * h)) + 6 * B * s * h * V +
                                 6 * B * s * 2 * h * h);
    EXPECT_NEAR((model::model_flops_per_step(m, 64) - base) / expected, 1.0, 1e-12) << d;
    // Parameters: a layer, eh_proj (2h^2) and three LayerNorms (2h each) per module.
    EXPECT_DOUBLE_EQ(m.mtp_params(), d * (m.params_per_layer() + 2 * h * h + 6 * h));
  }
  // Full recompute repeats the MTP layer's forward as well.
  m.mtp_layers = 1;
  const double full = model::hardware_flops_per_step(m, 64, model::Recompute::Full);
  m.mtp_layers = 0;
  const double full0 = model::hardware_flops_per_step(m, 64, model::Recompute::Full);
  EXPECT_NEAR((full - full0) / (96 * B * s * h * h * (1 + s / (6 * h)) + 6 * B * s * h * V +
                                6 * B * s * 2 * h * h),
              1.0, 1e-12);
}

// On one GPU every kernel runs back to back, so an MTP module's passes differ from one more
// layer's by exactly its own kernels: forward the shifted tokens' embedding, enorm, hnorm,
// eh_proj and a second head (final norm, LM head, loss); backward their gradients. Oracle:
// the cost model's price of each op, summed by hand.
TEST(Mtp, OneGpuPassesDifferFromOneMoreLayerByTheModulesOwnKernels) {
  const Scenario with = load(gpt(3, 1, 1, 1), "with");
  const Scenario more = load(gpt(4, 0, 1, 1), "more");
  const auto rw = simulate_step(with);
  const auto rm = simulate_step(more);
  const auto [fw, bw] = last_stage_passes(rw, 1);
  const auto [fm, bm] = last_stage_passes(rm, 1);

  const cost::CostModel cost(with.gpu, nullptr);
  const auto kernels = with.training.gemm_kernels();
  const model::ModelSpec& md = with.model;
  const std::int64_t b = with.training.micro_batch;
  std::int64_t fwd = 0, bwd = 0;
  auto add = [&](const model::Op& op) {
    if (op.kind == model::OpKind::Gemm) {
      const auto g = workload::gemm_times(cost, op, kernels);
      fwd += g.fwd.count_ps();
      bwd += (g.dgrad + g.wgrad).count_ps();
    } else {
      fwd += cost.memory_bound(op.fwd_bytes).count_ps();
      bwd += cost.memory_bound(op.bwd_bytes).count_ps();
    }
  };
  add(model::embedding_op(md, b));
  for (const auto& op : model::mtp_ops(md, b)) add(op);  // enorm, hnorm, eh_proj
  for (const auto& op : model::head_ops(md, b)) add(op);
  // The embedding's dense weight gradient (zero-fill and main-gradient add), every microbatch.
  bwd += cost.memory_bound(workload::embedding_grad_bytes(md, 1, with.training.dtype)).count_ps();
  EXPECT_GT(fwd, 0);
  EXPECT_EQ(fw - fm, fwd);
  EXPECT_EQ(bw - bm, bwd);
}

// With pp > 1 the module sits on the last stage: the first stage's work does not change, the
// last stage holds the module's weights and a copy of the embedding table (untied: MTP looks
// tokens up in it), whose gradient is all-reduced with the first stage's.
TEST(Mtp, ModuleLivesOnTheLastStageWithAnEmbeddingCopy) {
  const auto r0 = simulate_step(load(gpt(4, 0, 2, 2), "pp0"));
  const Scenario sc = load(gpt(4, 1, 2, 2), "pp1");
  const auto r1 = simulate_step(sc);
  EXPECT_DOUBLE_EQ(r1.stages[0].params, r0.stages[0].params);
  EXPECT_DOUBLE_EQ(r1.stages[0].breakdown.compute, r0.stages[0].breakdown.compute);
  EXPECT_GT(r1.stages[1].breakdown.compute, r0.stages[1].breakdown.compute);
  const model::ModelSpec& m = sc.model;
  EXPECT_DOUBLE_EQ(r1.stages[1].params - r0.stages[1].params,
                   m.params_per_layer() + m.mtp_extra_params() + m.embedding_params());
  EXPECT_GT(r1.stages[1].memory.activations, r0.stages[1].memory.activations);
  int syncs = 0, eh_proj = 0;
  for (TaskId t = 0; t < r1.graph->num_tasks(); ++t) {
    const std::string& l = r1.graph->label(r1.graph->task(t).label);
    syncs += l.rfind("embedding grad all_reduce", 0) == 0;
    eh_proj += l == "mtp_eh_proj";
  }
  EXPECT_EQ(syncs, 2);    // one per stage, paired
  EXPECT_EQ(eh_proj, 2);  // one forward per microbatch, on the last stage only
  EXPECT_GT(r1.step_time, r0.step_time);
}

// ZeRO-3 gathers each weight before its use: the module's own, and the shared embedding table
// again for the module's lookup (forward); the backward re-gathers the module's weights.
TEST(Mtp, ZeroThreeGathersTheModuleAndTheSharedTableAgain) {
  auto z3 = [](int mtp) {
    std::string t = gpt(4, mtp, 1, 2);
    t = test::replace(t, "dp = 1", "dp = 2\nzero = 3");
    return test::replace(t, "global_batch = 4", "global_batch = 8");
  };
  auto gathers = [](const workload::StepResult& r) {
    int n = 0;
    for (TaskId t = 0; t < r.graph->num_tasks(); ++t) {
      n += r.graph->label(r.graph->task(t).label) == "dp all_gather params";
    }
    return n;
  };
  const auto r0 = simulate_step(load(z3(0), "z3a"));
  const auto r1 = simulate_step(load(z3(1), "z3b"));
  EXPECT_EQ(gathers(r1) - gathers(r0), 2 * 3);  // 2 microbatches x (module, table, module)
  // The shared head's gradient is reduced once every head's weight gradient is in it: its
  // reduce-scatter (the largest of a microbatch: V x h) starts after the module's LM head
  // weight gradient, not after the main head's.
  const auto& g = *r1.graph;
  Time head_rs_start, last_head_wgrad;
  Time longest;
  for (TaskId t = 0; t < g.num_tasks(); ++t) {
    if (g.task(t).microbatch != 0) continue;
    const std::string& l = g.label(g.task(t).label);
    const Time d = r1.task_end[t] - r1.task_start[t];
    if (l == "dp reduce_scatter grads" && d > longest) {
      longest = d;
      head_rs_start = r1.task_start[t];
    }
    if (l == "lm_head wgrad") last_head_wgrad = std::max(last_head_wgrad, r1.task_end[t]);
  }
  EXPECT_GT(longest, Time::zero());
  EXPECT_GE(head_rs_start, last_head_wgrad);
}

// DualPipe: each end rank holds the first stage of one chain and the last of the other, so the
// module shares that rank's embedding table: no copy, no first/last embedding all-reduce.
TEST(Mtp, DualPipeEndRanksShareTheirEmbedding) {
  auto dual = [](int mtp) {
    std::string t = gpt(4, mtp, 2, 2);
    t = test::replace(t, "global_batch = 4", "global_batch = 8");
    return test::replace(t, "dp = 1", "dp = 1\nschedule = \"dualpipe\"");
  };
  const auto r0 = simulate_step(load(dual(0), "dual0"));
  const Scenario sc = load(dual(1), "dual1");
  const auto r1 = simulate_step(sc);
  const model::ModelSpec& m = sc.model;
  for (int s = 0; s < 2; ++s) {
    EXPECT_DOUBLE_EQ(r1.stages[s].params - r0.stages[s].params,
                     m.params_per_layer() + m.mtp_extra_params())
        << s;
  }
  for (TaskId t = 0; t < r1.graph->num_tasks(); ++t) {
    EXPECT_NE(r1.graph->label(r1.graph->task(t).label).rfind("embedding grad all_reduce", 0), 0U);
  }
}

// eh_proj's TP collectives move its [b, s, 2h] input (SP all-gather forward, re-gather for
// the weight gradient, reduce-scatter of the input gradient): twice the bytes of the layers'
// [b, s, h] ones, so longer on the same group.
TEST(Mtp, ProjectionCollectivesCarryTheConcatenatedInput) {
  std::string t = gpt(2, 1, 1, 2);
  t = test::replace(t, "tp = 1", "tp = 2\nsequence_parallel = true");
  const auto r = simulate_step(load(t, "eh-tp"));
  std::map<std::string, std::pair<int, Time>> seen;  // label -> (count, duration)
  for (TaskId id = 0; id < r.graph->num_tasks(); ++id) {
    auto& e = seen[r.graph->label(r.graph->task(id).label)];
    ++e.first;
    e.second = r.task_end[id] - r.task_start[id];
  }
  for (const char* l : {"tp all_gather (eh_proj input)", "tp all_gather (eh_proj wgrad input)",
                        "tp reduce_scatter (eh_proj bwd)"}) {
    EXPECT_EQ(seen[l].first, 2) << l;  // one per microbatch
  }
  EXPECT_GT(seen["tp all_gather (eh_proj input)"].second, seen["tp all_gather"].second);
  EXPECT_GT(seen["tp reduce_scatter (eh_proj bwd)"].second,
            seen["tp reduce_scatter bwd"].second);
}

// Zero-bubble schedules split the backward into B (input gradients) and W (weight gradients):
// together they run exactly the kernels of one whole backward, the modules' included (each
// weight gradient once; the shared LM head's once per depth plus the main head's).
TEST(Mtp, ZeroBubbleSplitsRunTheSameKernelsAsOneF1B) {
  const std::string moe = "[model.moe]\nexperts = 4\ntop_k = 2\nexpert_ffn_hidden = 1024\n"
                          "shared_experts = 1\n";
  for (const std::string& extra : {std::string(), moe}) {
    auto kernels = [&](const char* schedule) {
      std::string t = gpt(4, 2, 2, 8, extra);
      t = test::replace(t, "tp = 1", "tp = 2\nsequence_parallel = true");
      t = test::replace(t, "dp = 1", std::string("dp = 2\nschedule = \"") + schedule + "\"" +
                                         (extra.empty() ? "" : "\nep = 2"));
      t = test::replace(t, "global_batch = 4", "global_batch = 16");
      const auto r = simulate_step(load(t, schedule));
      std::map<std::string, int> n;
      for (TaskId id = 0; id < r.graph->num_tasks(); ++id) {
        if (r.graph->task(id).category != Category::Compute) continue;
        ++n[r.graph->label(r.graph->task(id).label)];
      }
      return n;
    };
    const auto base = kernels("1f1b");
    EXPECT_EQ(base.at("lm_head wgrad"), 4 * 3);  // 4 microbatches x (main + 2 modules)
    EXPECT_EQ(base.at("mtp_eh_proj wgrad"), 4 * 2);
    EXPECT_EQ(kernels("zb-h1"), base) << (extra.empty() ? "dense" : "moe");
    EXPECT_EQ(kernels("zb-h2"), base) << (extra.empty() ? "dense" : "moe");
  }
}

// An MoE model's MTP layer is an MoE layer (the last layer's kind): its experts join the last
// stage's expert weights and its all-to-alls run there.
TEST(Mtp, MoeModulesRouteTheirTokensOnTheLastStage) {
  const std::string moe = "[model.moe]\nexperts = 8\ntop_k = 2\nexpert_ffn_hidden = 1024\n";
  std::string t0 = gpt(4, 0, 2, 16, moe), t1 = gpt(4, 1, 2, 16, moe);
  t0 = test::replace(t0, "dp = 1", "dp = 8\nep = 8");
  t1 = test::replace(t1, "dp = 1", "dp = 8\nep = 8");
  t0 = test::replace(t0, "global_batch = 4", "global_batch = 32");
  t1 = test::replace(t1, "global_batch = 4", "global_batch = 32");
  const auto r0 = simulate_step(load(t0, "moe0"));
  const auto r1 = simulate_step(load(t1, "moe1"));
  ASSERT_TRUE(r1.moe);
  // The routing statistics average over the decoder's MoE layers and the module's.
  EXPECT_EQ(r1.moe->moe_layers, r0.moe->moe_layers + 1);
  auto dispatches = [](const workload::StepResult& r) {
    int n = 0;
    for (TaskId t = 0; t < r.graph->num_tasks(); ++t) {
      n += r.graph->label(r.graph->task(t).label) == "ep all_to_all dispatch";
    }
    return n;
  };
  // Two microbatches per pipeline, 4 + 1 MoE layers instead of 4.
  EXPECT_EQ(dispatches(r1) - dispatches(r0), 2);
  EXPECT_GT(r1.stages[1].params - r0.stages[1].params, 8.0 / 8 * 2 * 1024 * 1024);
}

TEST(Mtp, BadInputNamesTheKeyAndLine) {
  const auto dir = test::temp_dir("mtp-bad");
  auto err = [&](const std::string& text) {
    try {
      (void)config::load_scenario(test::write(dir / "s.toml", text));
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string neg = err(gpt(4, -1, 1, 1));
  EXPECT_NE(neg.find("s.toml:9"), std::string::npos) << neg;
  EXPECT_NE(neg.find("mtp_layers"), std::string::npos) << neg;
  // LoRA's model covers dense models without MTP.
  const std::string lora = err(gpt(4, 1, 1, 1) + "[training.lora]\nrank = 8\n");
  EXPECT_NE(lora.find("multi-token prediction"), std::string::npos) << lora;
}

// A scenario written back (trainsim search --write-best, validate --write-scenarios) keeps the
// modules, also when it overrides a Hugging Face config's count.
TEST(Mtp, WrittenScenariosKeepTheModules) {
  Scenario sc = load(gpt(4, 2, 1, 1), "write");
  const auto dir = test::temp_dir("mtp-write");
  const Scenario again =
      config::load_scenario(test::write(dir / "again.toml", config::scenario_toml(sc)));
  EXPECT_EQ(again.model.mtp_layers, 2);
  const auto hf = test::source_dir() / "scenarios/hf/deepseek-v3.json";
  std::string text = test::read(test::source_dir() / "scenarios/deepseek-v3-h800.toml");
  text = test::replace(text, "hf/deepseek-v3.json", hf.string());
  text = test::replace(text, "seq_len = 4096", "seq_len = 4096\nmtp_layers = 0");
  text = test::replace(text, "../topologies", (test::source_dir() / "topologies").string());
  const Scenario ds = config::load_scenario(test::write(dir / "ds.toml", text));
  EXPECT_EQ(ds.model.mtp_layers, 0);
  const Scenario ds_again =
      config::load_scenario(test::write(dir / "ds-again.toml", config::scenario_toml(ds)));
  EXPECT_EQ(ds_again.model.mtp_layers, 0);
}

// Calibration measures eh_proj's shapes; the one-GPU comparison step (trainsim-calibrate
// --validate) lists dense layers only and refuses the modules rather than leave them out.
TEST(Mtp, CalibrationShapesIncludeTheProjectionAndTheOneGpuStepRefusesModules) {
  const Scenario sc = load(gpt(4, 1, 1, 1), "calib");
  const auto shapes = workload::scenario_gemm_shapes(sc);
  const std::int64_t tokens = 2048;  // micro batch 2 x seq 1024
  EXPECT_TRUE(std::find(shapes.begin(), shapes.end(),
                        workload::GemmShape{tokens, 1024, 2048}) != shapes.end());
  try {
    (void)workload::microbatch_kernels(sc);
    ADD_FAILURE() << "the one-GPU step listed a model with MTP";
  } catch (const InputError& e) {
    EXPECT_EQ(e.key(), "model.mtp_layers");
  }
}
