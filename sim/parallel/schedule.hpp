// Pipeline schedules as per-stage op orders.
//
// A schedule says, for each pipeline rank, the order in which it runs the forward (F) and
// backward (B) passes of each (microbatch, model chunk). The engine then runs these orders
// with real point-to-point transfers and dependencies; the bubble is whatever the
// simulation produces. No schedule here contains a time or a bubble formula.
#pragma once

#include <cstdint>
#include <vector>

#include "parallel/layout.hpp"

namespace trainsim::parallel {

/// Forward (F); Backward (the whole backward of a pass); or, for zero-bubble schedules, the
/// backward split into BackwardInput (B: activation gradients, on the critical path) and
/// BackwardWeight (W: weight gradients, deferrable), after Qi et al. 2023.
enum class PassKind : std::uint8_t { Forward, Backward, BackwardInput, BackwardWeight };

/// "F", "B" (whole backward), "B" (input), "W".
const char* pass_letter(PassKind k);

struct PipeOp {
  PassKind kind = PassKind::Forward;
  int microbatch = 0;
  int chunk = 0;  ///< model chunk on this rank (virtual stage = chunk * pp + rank)
  bool operator==(const PipeOp&) const = default;
};

using StageProgram = std::vector<PipeOp>;

/// GPipe (Huang et al. 2019): all m forwards, then all m backwards, then a flush.
std::vector<StageProgram> gpipe_schedule(int pp, int microbatches);
/// 1F1B / PipeDream-Flush (Narayanan et al. 2021 §2.2.1, Megatron's non-interleaved
/// schedule): rank r runs min(pp - r - 1, m) warm-up forwards, then alternates one forward
/// and one backward, then drains the remaining backwards.
std::vector<StageProgram> one_f_one_b_schedule(int pp, int microbatches);
/// Megatron's interleaved 1F1B (Narayanan et al. 2021 §2.2.2) with v model chunks per rank:
/// virtual microbatch k runs chunk (k / pp) mod v forward (v-1 - that, backward) of
/// microbatch (k / (pp v)) pp + k mod pp; warm-up (pp - r - 1) * 2 + (v - 1) * pp.
/// Requires microbatches % pp == 0.
std::vector<StageProgram> interleaved_schedule(int pp, int microbatches, int v);

/// ZB-H1 (Qi et al. 2023, "Zero Bubble Pipeline Parallelism", §3): the 1F1B order of F and B
/// with W deferred; rank i runs, for x = 0, 1, ...: F(x), B(x - (p-1-i)), W(x - (p-1)),
/// skipping indices outside [0, m). Same in-flight activations as 1F1B (p on rank 0);
/// bubble (p-1)(T_F + T_B - T_W) against 1F1B's (p-1)(T_F + T_B + T_W).
std::vector<StageProgram> zb_h1_schedule(int pp, int microbatches);
/// ZB-H2 (same paper): rank i runs F(x), B(x - 2(p-1-i)), W(x - 2(p-1)); up to 2p-1
/// microbatches in flight on rank 0, bubble (p-1)(T_F + T_B - 2 T_W) within a step.
std::vector<StageProgram> zb_h2_schedule(int pp, int microbatches);

/// DualPipe (DeepSeek-AI 2024, DeepSeek-V3 technical report §3.2.1, Fig. 5; deepseek-ai/
/// DualPipe): microbatches 0..m/2-1 run chunk 0 on ranks 0 -> p-1, microbatches m/2..m-1 run
/// chunk 1 on ranks p-1 -> 0, so every rank holds two chunks (two copies of the parameters).
/// Rank r (h = min(r, p-1-r); "own" chunk: 0 on the first half of the ranks, 1 on the second)
/// runs: 2(p/2-h-1) forwards of its own chunk; h+1 pairs (own F, other F); p/2-h-1 of
/// (other B split as B then W, other F); m/2-p+h+1 of (own F, other B, other F, own B), the
/// overlapped forward/backward pairs; p/2-h-1 of (other B, other F, own B); h+1 of
/// (other B, own B) of which the second half split into B and W; p/2-h-1 of (W, own B split);
/// the remaining h+1 W. Requires p even, m even and m >= 2p.
std::vector<StageProgram> dualpipe_schedule(int pp, int microbatches);

/// The program of a layout's schedule; throws InputError for schedules not simulated yet.
std::vector<StageProgram> make_schedule(const Layout& layout, int microbatches);

/// Programs for `steps` consecutive training steps of `microbatches` each; microbatch ids run
/// on across steps (step k owns ids k*m .. k*m + m - 1). Flushing schedules repeat their
/// one-step program; PipeDream and PipeDream-2BW (Narayanan et al. 2019, 2021) never flush:
/// one 1F1B order runs over all steps' microbatches.
std::vector<StageProgram> make_programs(const Layout& layout, int microbatches, int steps);

/// Whether the schedule flushes the pipeline at the end of every step.
bool flushes(ScheduleKind s);

/// Steps simulated by default for a schedule without a flush (PipeDream, 2BW), whose steady
/// state is what a step of it costs; a flushing schedule's step is one step.
constexpr int kSteadyStateSteps = 4;

}  // namespace trainsim::parallel
