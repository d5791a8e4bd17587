#include <gtest/gtest.h>

#include <cmath>

#include "core/error.hpp"
#include "model/memory.hpp"
#include "model/transformer.hpp"

using namespace trainsim::model;

namespace {

ModelSpec gpt(int layers, int hidden, int heads, int seq, std::int64_t vocab) {
  ModelSpec m;
  m.name = "gpt";
  m.layers = layers;
  m.hidden = hidden;
  m.heads = heads;
  m.kv_heads = heads;
  m.ffn_hidden = 4 * hidden;
  m.vocab = vocab;
  m.seq_len = seq;
  return m;
}

// Narayanan et al. 2021 / Korthikanti et al. 2022 closed forms.
double megatron_model_flops(const ModelSpec& m, double B) {
  const double s = m.seq_len, l = m.layers, h = m.hidden, V = static_cast<double>(m.vocab);
  return 72 * B * s * l * h * h * (1 + s / (6 * h) + V / (12 * l * h));
}
double megatron_full_recompute_flops(const ModelSpec& m, double B) {
  const double s = m.seq_len, l = m.layers, h = m.hidden, V = static_cast<double>(m.vocab);
  return 96 * B * s * l * h * h * (1 + s / (6 * h) + V / (16 * l * h));
}

}  // namespace

TEST(ModelFlops, MatchesMegatronFormulaForGptShapes) {
  for (const auto& m : {gpt(96, 12288, 96, 2048, 51200), gpt(24, 2304, 24, 2048, 51200),
                        gpt(128, 25600, 160, 2048, 51200), gpt(40, 5120, 40, 4096, 131072)}) {
    for (double B : {1.0, 64.0, 1536.0}) {
      const double want = megatron_model_flops(m, B);
      EXPECT_NEAR(model_flops_per_step(m, static_cast<std::int64_t>(B)) / want, 1.0, 1e-3);
      EXPECT_NEAR(hardware_flops_per_step(m, static_cast<std::int64_t>(B), Recompute::Full) /
                      megatron_full_recompute_flops(m, B),
                  1.0, 1e-3);
      // Selective recompute repeats one attention-core forward, 4 B s^2 h per layer.
      const double s = m.seq_len;
      EXPECT_NEAR(hardware_flops_per_step(m, static_cast<std::int64_t>(B), Recompute::Selective) -
                      model_flops_per_step(m, static_cast<std::int64_t>(B)),
                  4 * B * s * s * m.hidden * m.layers, 1e-6 * megatron_model_flops(m, B));
      EXPECT_DOUBLE_EQ(hardware_flops_per_step(m, static_cast<std::int64_t>(B), Recompute::None),
                       model_flops_per_step(m, static_cast<std::int64_t>(B)));
    }
  }
}

TEST(ModelFlops, BackwardIsTwiceForwardAndSplitsIntoInputAndWeight) {
  const auto m = gpt(2, 1024, 16, 512, 1000);
  for (const Op& op : layer_ops(m, 2)) {
    EXPECT_DOUBLE_EQ(op.flops.bwd_input + op.flops.bwd_weight, 2 * op.flops.fwd) << op.name;
    if (op.kind == OpKind::Gemm) {
      EXPECT_DOUBLE_EQ(op.flops.fwd, 2.0 * op.m * op.n * op.k) << op.name;
      EXPECT_DOUBLE_EQ(op.flops.bwd_weight, op.flops.fwd) << op.name;
    }
  }
}

// Megatron-LM's unfused vocab-parallel cross entropy: 3e + 36 bytes per logit forward and
// 3e + 12 backward (transpose, fp32 cast, max, subtract, exp, sum, normalise; scale, cast,
// transpose back).
TEST(HeadOps, CrossEntropyMovesMegatronsBytesPerLogit) {
  const auto m = gpt(2, 1024, 16, 2048, 50000);
  const auto ops = head_ops(m, 3, 2);
  ASSERT_EQ(ops.size(), 3U);
  const double logits = 3.0 * 2048 * 50000;
  EXPECT_EQ(ops[2].name, "loss");
  EXPECT_DOUBLE_EQ(ops[2].fwd_bytes, logits * 42);
  EXPECT_DOUBLE_EQ(ops[2].bwd_bytes, logits * 18);
}

TEST(ModelParams, KnownModels) {
  // GPT-3 175B: 12 l h^2 + V h ~ 174.6e9 (weights only).
  EXPECT_NEAR(gpt(96, 12288, 96, 2048, 51200).total_params() / 174.6e9, 1.0, 0.005);
  ModelSpec llama = gpt(80, 8192, 64, 8192, 128256);
  llama.kv_heads = 8;
  llama.ffn_hidden = 28672;
  llama.activation = Activation::SwiGLU;
  llama.norm = Norm::RMSNorm;
  EXPECT_NEAR(llama.total_params() / 70.55e9, 1.0, 0.005);  // Llama 3 70B: 70.55B
}

TEST(ModelSpec, ValidateNamesTheField) {
  auto m = gpt(2, 1024, 16, 512, 1000);
  m.heads = 15;
  try {
    m.validate();
    FAIL();
  } catch (const trainsim::InputError& e) {
    EXPECT_EQ(e.key(), "model.heads");
  }
  m = gpt(2, 1024, 16, 512, 1000);
  m.layers = 0;
  EXPECT_THROW(m.validate(), trainsim::InputError);
}

// Korthikanti et al. 2022, Table 2, bytes per layer with 16-bit activations.
TEST(ActivationMemory, MatchesKorthikantiClosedForms) {
  const auto m = gpt(96, 12288, 96, 2048, 51200);
  const double s = m.seq_len, h = m.hidden, a = m.heads;
  for (std::int64_t b : {1, 4}) {
    const double sbh = s * static_cast<double>(b) * h;
    auto act = [&](int t, bool sp, Recompute r) {
      ActivationOptions o;
      o.tp = t;
      o.sequence_parallel = sp;
      o.recompute = r;
      return activation_bytes_per_layer(m, b, o);
    };
    EXPECT_NEAR(act(1, false, Recompute::None) / (sbh * (34 + 5 * a * s / h)), 1, 1e-3);
    for (int t : {2, 8}) {
      EXPECT_NEAR(act(t, false, Recompute::None) / (sbh * (10 + 24.0 / t + 5 * a * s / (h * t))),
                  1, 1e-3);
      EXPECT_NEAR(act(t, true, Recompute::None) / (sbh / t * (34 + 5 * a * s / h)), 1, 1e-3);
      EXPECT_NEAR(act(t, false, Recompute::Selective) / (sbh * (10 + 24.0 / t)), 1, 1e-3);
      EXPECT_NEAR(act(t, true, Recompute::Selective) / (34 * sbh / t), 1, 1e-3);
      EXPECT_NEAR(act(t, false, Recompute::Full) / (2 * sbh), 1, 1e-3);
      EXPECT_NEAR(act(t, true, Recompute::Full) / (2 * sbh / t), 1, 1e-3);
    }
  }
}

TEST(ActivationMemory, FlashAttentionStoresNoScores) {
  const auto m = gpt(4, 4096, 32, 4096, 32000);
  ActivationOptions flash;
  flash.tp = 4;
  flash.flash_attention = true;
  ActivationOptions selective;
  selective.tp = 4;
  selective.recompute = Recompute::Selective;
  EXPECT_DOUBLE_EQ(activation_bytes_per_layer(m, 2, flash),
                   activation_bytes_per_layer(m, 2, selective));
}

// ZeRO paper (Rajbhandari et al. 2020) §3.1, mixed-precision Adam, K = 12.
TEST(StateMemory, ZeroStagesMatchThePaper) {
  const double psi = 7.5e9;
  const int nd = 64;
  EXPECT_DOUBLE_EQ(model_state_bytes(psi, nd, 0).total(), 16 * psi);
  EXPECT_NEAR(model_state_bytes(psi, nd, 1).total(), 4 * psi + 12 * psi / nd, 1);
  EXPECT_NEAR(model_state_bytes(psi, nd, 2).total(), 2 * psi + 14 * psi / nd, 1);
  EXPECT_NEAR(model_state_bytes(psi, nd, 3).total(), 16 * psi / nd, 1);
  // Megatron-LM's distributed-optimizer guide: bf16 weights with fp32 gradients are 18 bytes
  // per parameter, 6 + 12/d with the optimizer sharded.
  EXPECT_DOUBLE_EQ(model_state_bytes(psi, nd, 0, 4).total(), 18 * psi);
  EXPECT_NEAR(model_state_bytes(psi, nd, 1, 4).total(), 6 * psi + 12 * psi / nd, 1);
  EXPECT_THROW(model_state_bytes(psi, nd, 1, 0), std::invalid_argument);
  EXPECT_THROW(model_state_bytes(psi, nd, 4), std::invalid_argument);
  EXPECT_THROW(model_state_bytes(psi, 0, 1), std::invalid_argument);
}
