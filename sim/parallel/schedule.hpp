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

enum class PassKind : std::uint8_t { Forward, Backward };

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

/// The program of a layout's schedule; throws InputError for schedules not simulated yet.
std::vector<StageProgram> make_schedule(const Layout& layout, int microbatches);

}  // namespace trainsim::parallel
