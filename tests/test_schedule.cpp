#include <gtest/gtest.h>

#include <set>

#include "core/error.hpp"
#include "parallel/layout.hpp"
#include "parallel/schedule.hpp"

using namespace trainsim::parallel;
using trainsim::InputError;

namespace {
PipeOp F(int mb, int c = 0) { return {PassKind::Forward, mb, c}; }
PipeOp B(int mb, int c = 0) { return {PassKind::Backward, mb, c}; }

void expect_complete(const std::vector<StageProgram>& progs, int m, int v) {
  for (const auto& prog : progs) {
    std::set<std::pair<int, int>> f, b;
    for (const auto& op : prog) {
      auto key = std::make_pair(op.microbatch, op.chunk);
      if (op.kind == PassKind::Forward) {
        EXPECT_TRUE(f.insert(key).second);
      } else {
        EXPECT_TRUE(f.count(key)) << "backward before forward";
        EXPECT_TRUE(b.insert(key).second);
      }
    }
    EXPECT_EQ(static_cast<int>(f.size()), m * v);
    EXPECT_EQ(static_cast<int>(b.size()), m * v);
  }
}
}  // namespace

TEST(Schedules, GPipeRunsAllForwardsThenAllBackwards) {
  const auto p = gpipe_schedule(3, 4);
  ASSERT_EQ(p.size(), 3U);
  EXPECT_EQ(p[1], (StageProgram{F(0), F(1), F(2), F(3), B(0), B(1), B(2), B(3)}));
  expect_complete(p, 4, 1);
}

TEST(Schedules, OneFOneBWarmsUpPMinusRankMinusOne) {
  const auto p = one_f_one_b_schedule(4, 6);
  EXPECT_EQ(p[0], (StageProgram{F(0), F(1), F(2), F(3), B(0), F(4), B(1), F(5), B(2), B(3),
                                B(4), B(5)}));
  EXPECT_EQ(p[3], (StageProgram{F(0), B(0), F(1), B(1), F(2), B(2), F(3), B(3), F(4), B(4),
                                F(5), B(5)}));
  expect_complete(p, 6, 1);
  expect_complete(one_f_one_b_schedule(8, 3), 3, 1);  // fewer microbatches than stages
}

TEST(Schedules, InterleavedFollowsMegatronOrder) {
  const auto p = interleaved_schedule(2, 4, 2);
  // Rank 0: warm-up (2-0-1)*2 + (2-1)*2 = 4 forwards, steady 1F1B, cool-down.
  EXPECT_EQ(p[0], (StageProgram{F(0, 0), F(1, 0), F(0, 1), F(1, 1), F(2, 0), B(0, 1), F(3, 0),
                                B(1, 1), F(2, 1), B(0, 0), F(3, 1), B(1, 0), B(2, 1), B(3, 1),
                                B(2, 0), B(3, 0)}));
  expect_complete(p, 4, 2);
  expect_complete(interleaved_schedule(4, 8, 3), 8, 3);
  EXPECT_THROW(interleaved_schedule(4, 6, 2), InputError);  // m % pp != 0
}

TEST(Layout, LayersSpreadWithFewerOnTheEndStages) {
  auto l = layers_per_virtual_stage(126, 16, 1);
  EXPECT_EQ(l.front(), 7);
  EXPECT_EQ(l.back(), 7);
  EXPECT_EQ(l[1], 8);
  int sum = 0;
  for (int x : l) sum += x;
  EXPECT_EQ(sum, 126);
  EXPECT_EQ(layers_per_virtual_stage(96, 8, 3), std::vector<int>(24, 4));
  EXPECT_THROW(layers_per_virtual_stage(4, 8, 1), InputError);
}

// Megatron-Core's --decoder-first/last-pipeline-num-layers: the ends as given, the middle
// stages the rest evenly, which must divide (DeepSeek-V3's 61 layers on PP 8: 7 + 6 x 8 + 6).
TEST(Layout, FirstAndLastStageLayersAsGivenTheMiddleEven) {
  EXPECT_EQ(layers_per_virtual_stage(61, 8, 1, 7, 6), (std::vector<int>{7, 8, 8, 8, 8, 8, 8, 6}));
  EXPECT_EQ(layers_per_virtual_stage(61, 8, 1, 5, 0), (std::vector<int>{5, 8, 8, 8, 8, 8, 8, 8}));
  EXPECT_EQ(layers_per_virtual_stage(61, 8, 1, 0, 12), (std::vector<int>{7, 7, 7, 7, 7, 7, 7, 12}));
  EXPECT_EQ(layers_per_virtual_stage(10, 2, 1, 4, 6), (std::vector<int>{4, 6}));
  // With v model chunks per rank the ends are per rank, spread over the rank's chunks, in
  // virtual-stage order (chunk x pp + rank): pp 4, v 2, 32 layers, first 2, last 6 -> the
  // middle ranks get 24 / (2 x 2) = 6 per chunk.
  EXPECT_EQ(layers_per_virtual_stage(32, 4, 2, 2, 6),
            (std::vector<int>{1, 6, 6, 3, 1, 6, 6, 3}));
  auto key = [](int layers, int stages, int first, int last) {
    try {
      (void)layers_per_virtual_stage(layers, stages, 1, first, last);
    } catch (const InputError& e) {
      return e.key();
    }
    return std::string("none");
  };
  EXPECT_EQ(key(61, 8, 5, 5), "parallel.first_stage_layers");  // 51 over 6 middle stages
  EXPECT_EQ(key(61, 8, 0, 5), "none");  // 56 over 7: 8 each
  EXPECT_EQ(key(61, 8, 0, 6), "parallel.last_stage_layers");   // 55 over 7
  EXPECT_EQ(key(10, 2, 4, 5), "parallel.first_stage_layers");  // one layer left for no stage
  EXPECT_EQ(key(10, 1, 4, 0), "parallel.first_stage_layers");  // one stage
  EXPECT_EQ(key(8, 4, 3, 3), "none");  // 2 layers for 2 stages
  EXPECT_EQ(key(8, 4, 4, 3), "parallel.first_stage_layers");   // 1 layer for 2 stages
  auto key_v = [](int layers, int pp, int v, int first, int last) {
    try {
      (void)layers_per_virtual_stage(layers, pp, v, first, last);
    } catch (const InputError& e) {
      return e.key();
    }
    return std::string("none");
  };
  EXPECT_EQ(key_v(24, 2, 2, 3, 3), "parallel.first_stage_layers");  // 3 over 2 chunks
  EXPECT_EQ(key_v(24, 2, 2, 4, 3), "parallel.last_stage_layers");
  EXPECT_EQ(key_v(24, 2, 2, 4, 20), "none");
  EXPECT_EQ(key_v(30, 4, 2, 2, 6), "parallel.first_stage_layers");  // 22 over 4 chunks
  EXPECT_EQ(key_v(8, 4, 1, -1, 0), "parallel.first_stage_layers");
  EXPECT_EQ(key_v(8, 4, 1, 0, -2), "parallel.last_stage_layers");
}

TEST(Layout, RankOrderIsTpFastestThenDpThenPp) {
  Layout L;
  L.tp = 8;
  L.dp = 2;
  L.pp = 4;
  EXPECT_EQ(L.rank(3, 0, 0, 0), 3);
  EXPECT_EQ(L.rank(0, 0, 1, 0), 8);
  EXPECT_EQ(L.rank(0, 0, 0, 1), 16);
  EXPECT_EQ(L.tp_group(1, 2), (std::vector<int>{40, 41, 42, 43, 44, 45, 46, 47}));
  EXPECT_EQ(L.dp_group(5, 3), (std::vector<int>{53, 61}));
}

namespace {
trainsim::model::ModelSpec small() {
  trainsim::model::ModelSpec m;
  m.layers = 8;
  m.hidden = 1024;
  m.heads = 16;
  m.kv_heads = 16;
  m.ffn_hidden = 4096;
  m.vocab = 1000;
  m.seq_len = 512;
  return m;
}
std::string key_of(const Layout& L, int gpus, std::int64_t gb, std::int64_t mb) {
  try {
    L.validate(small(), gpus, gb, mb);
  } catch (const InputError& e) {
    return e.key();
  }
  return "";
}
}  // namespace

TEST(Layout, ImpossibleLayoutsNameTheKey) {
  Layout ok;
  ok.tp = 4;
  ok.pp = 2;
  ok.dp = 2;
  EXPECT_EQ(key_of(ok, 16, 16, 1), "");
  Layout L = ok;
  L.tp = 3;
  L.dp = 1;
  EXPECT_EQ(key_of(L, 6, 16, 1), "parallel.tp");  // 3 does not divide 16 heads
  L = ok;
  L.pp = 16;
  L.tp = 1;
  EXPECT_EQ(key_of(L, 32, 16, 1), "parallel.pp");  // more stages than layers
  EXPECT_EQ(key_of(ok, 32, 16, 1), "cluster.gpus");  // 4 x 2 x 2 != 32
  EXPECT_EQ(key_of(ok, 16, 15, 1), "training.global_batch");
  L = ok;
  L.virtual_stages = 2;
  EXPECT_EQ(key_of(L, 16, 16, 1), "parallel.virtual_stages");  // needs interleaved
  L.schedule = ScheduleKind::Interleaved;
  EXPECT_EQ(key_of(L, 16, 16, 1), "");
  L.virtual_stages = 1;
  EXPECT_EQ(key_of(L, 16, 16, 1), "parallel.virtual_stages");  // interleaving needs v >= 2
  L.virtual_stages = 2;
  EXPECT_EQ(key_of(L, 16, 10, 1), "parallel.schedule");  // 5 microbatches, pp 2
  L = ok;
  L.zero = 2;
  EXPECT_EQ(key_of(L, 16, 16, 1), "parallel.zero");  // ZeRO-2/3 with pipeline parallelism
  L.pp = 1;
  L.dp = 4;
  EXPECT_EQ(key_of(L, 16, 16, 1), "");
  EXPECT_EQ(key_of(ok, 16, 16 * 1024 * 1024, 1), "training.global_batch");  // too many tasks
}
