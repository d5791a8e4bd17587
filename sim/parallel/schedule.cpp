#include "parallel/schedule.hpp"

#include <algorithm>
#include <string>

#include "core/error.hpp"

namespace trainsim::parallel {

const char* pass_letter(PassKind k) {
  switch (k) {
    case PassKind::Forward: return "F";
    case PassKind::Backward:
    case PassKind::BackwardInput: return "B";
    case PassKind::BackwardWeight: return "W";
  }
  return "?";
}

namespace {
/// Rank i of a zero-bubble schedule whose B lags F by `b_lag` and W lags F by `w_lag`.
StageProgram zero_bubble_program(int m, int b_lag, int w_lag) {
  StageProgram prog;
  for (int x = 0; x < m + w_lag; ++x) {
    if (x < m) prog.push_back({PassKind::Forward, x, 0});
    const int b = x - b_lag, w = x - w_lag;
    if (b >= 0 && b < m) prog.push_back({PassKind::BackwardInput, b, 0});
    if (w >= 0 && w < m) prog.push_back({PassKind::BackwardWeight, w, 0});
  }
  return prog;
}

void check(int pp, int m) {
  if (pp < 1 || m < 1) {
    throw InputError("parallel.pp", "pipeline needs pp >= 1 and microbatches >= 1 (pp=" +
                                        std::to_string(pp) + ", m=" + std::to_string(m) + ")");
  }
}
}  // namespace

std::vector<StageProgram> gpipe_schedule(int pp, int m) {
  check(pp, m);
  std::vector<StageProgram> out(static_cast<std::size_t>(pp));
  for (auto& prog : out) {
    for (int i = 0; i < m; ++i) prog.push_back({PassKind::Forward, i, 0});
    for (int i = 0; i < m; ++i) prog.push_back({PassKind::Backward, i, 0});
  }
  return out;
}

std::vector<StageProgram> one_f_one_b_schedule(int pp, int m) {
  check(pp, m);
  std::vector<StageProgram> out(static_cast<std::size_t>(pp));
  for (int r = 0; r < pp; ++r) {
    auto& prog = out[static_cast<std::size_t>(r)];
    const int warmup = std::min(pp - r - 1, m);
    const int steady = m - warmup;
    for (int i = 0; i < warmup; ++i) prog.push_back({PassKind::Forward, i, 0});
    for (int i = 0; i < steady; ++i) {
      prog.push_back({PassKind::Forward, warmup + i, 0});
      prog.push_back({PassKind::Backward, i, 0});
    }
    for (int i = steady; i < m; ++i) prog.push_back({PassKind::Backward, i, 0});
  }
  return out;
}

std::vector<StageProgram> interleaved_schedule(int pp, int m, int v) {
  check(pp, m);
  if (v < 1) throw InputError("parallel.virtual_stages", "virtual_stages must be >= 1");
  if (m % pp != 0) {
    throw InputError("parallel.schedule",
                     "interleaved schedule needs microbatches (" + std::to_string(m) +
                         ") to be a multiple of pp (" + std::to_string(pp) + ")");
  }
  const int total = m * v;
  auto fwd_op = [&](int k) {
    const int chunk = (k / pp) % v;
    const int mb = (k / (pp * v)) * pp + k % pp;
    return PipeOp{PassKind::Forward, mb, chunk};
  };
  auto bwd_op = [&](int k) {
    const int chunk = v - 1 - (k / pp) % v;
    const int mb = (k / (pp * v)) * pp + k % pp;
    return PipeOp{PassKind::Backward, mb, chunk};
  };
  std::vector<StageProgram> out(static_cast<std::size_t>(pp));
  for (int r = 0; r < pp; ++r) {
    auto& prog = out[static_cast<std::size_t>(r)];
    int warmup = (m == pp) ? total : (pp - r - 1) * 2 + (v - 1) * pp;
    warmup = std::min(warmup, total);
    const int steady = total - warmup;
    for (int k = 0; k < warmup; ++k) prog.push_back(fwd_op(k));
    for (int k = 0; k < steady; ++k) {
      prog.push_back(fwd_op(warmup + k));
      prog.push_back(bwd_op(k));
    }
    for (int k = steady; k < total; ++k) prog.push_back(bwd_op(k));
  }
  return out;
}

std::vector<StageProgram> zb_h1_schedule(int pp, int m) {
  check(pp, m);
  std::vector<StageProgram> out;
  for (int i = 0; i < pp; ++i) out.push_back(zero_bubble_program(m, pp - 1 - i, pp - 1));
  return out;
}

std::vector<StageProgram> zb_h2_schedule(int pp, int m) {
  check(pp, m);
  std::vector<StageProgram> out;
  for (int i = 0; i < pp; ++i) out.push_back(zero_bubble_program(m, 2 * (pp - 1 - i), 2 * (pp - 1)));
  return out;
}

std::vector<StageProgram> dualpipe_schedule(int pp, int m) {
  check(pp, m);
  if (pp % 2 != 0 || m % 2 != 0 || m < 2 * pp) {
    throw InputError("parallel.schedule",
                     "schedule \"dualpipe\" needs an even pp (" + std::to_string(pp) +
                         ") and an even number of microbatches of at least 2 x pp (" +
                         std::to_string(m) + ")");
  }
  const int half = m / 2, half_ranks = pp / 2;
  std::vector<StageProgram> out(static_cast<std::size_t>(pp));
  for (int r = 0; r < pp; ++r) {
    auto& prog = out[static_cast<std::size_t>(r)];
    const int h = std::min(r, pp - 1 - r);
    const int own = r < half_ranks ? 0 : 1, other = 1 - own;
    int next_f[2] = {0, 0}, next_b[2] = {0, 0};
    std::vector<PipeOp> pending_w;  // FIFO of deferred weight-gradient passes
    std::size_t w_head = 0;
    auto base = [half](int chunk) { return chunk == 0 ? 0 : half; };
    auto F = [&](int c) { prog.push_back({PassKind::Forward, base(c) + next_f[c]++, c}); };
    auto B = [&](int c, bool split) {
      const int mb = base(c) + next_b[c]++;
      prog.push_back({split ? PassKind::BackwardInput : PassKind::Backward, mb, c});
      if (split) pending_w.push_back({PassKind::BackwardWeight, mb, c});
    };
    auto W = [&]() { prog.push_back(pending_w.at(w_head++)); };
    for (int i = 0; i < 2 * (half_ranks - h - 1); ++i) F(own);
    for (int i = 0; i < h + 1; ++i) {
      F(own);
      F(other);
    }
    for (int i = 0; i < half_ranks - h - 1; ++i) {
      B(other, true);
      W();
      F(other);
    }
    for (int i = 0; i < half - pp + h + 1; ++i) {
      F(own);
      B(other, false);
      F(other);
      B(own, false);
    }
    for (int i = 0; i < half_ranks - h - 1; ++i) {
      B(other, false);
      F(other);
      B(own, false);
    }
    bool split = false;
    for (int i = 0; i < h + 1; ++i) {
      if (i == (h + 1) / 2 && h % 2 == 1) split = true;
      B(other, split);
      if (i == (h + 1) / 2 && h % 2 == 0) split = true;
      B(own, split);
    }
    for (int i = 0; i < half_ranks - h - 1; ++i) {
      W();
      B(own, true);
    }
    while (w_head < pending_w.size()) W();
  }
  return out;
}

bool flushes(ScheduleKind s) {
  return s != ScheduleKind::PipeDream && s != ScheduleKind::TwoBW;
}

std::vector<StageProgram> make_programs(const Layout& layout, int m, int steps) {
  if (steps < 1) throw InputError("simulation.steps", "simulation.steps must be >= 1");
  if (!flushes(layout.schedule)) return one_f_one_b_schedule(layout.pp, m * steps);
  const auto one = make_schedule(layout, m);
  std::vector<StageProgram> out(one.size());
  for (int k = 0; k < steps; ++k) {
    for (std::size_t s = 0; s < one.size(); ++s) {
      for (PipeOp op : one[s]) {
        op.microbatch += k * m;
        out[s].push_back(op);
      }
    }
  }
  return out;
}

std::vector<StageProgram> make_schedule(const Layout& layout, int microbatches) {
  switch (layout.schedule) {
    case ScheduleKind::GPipe: return gpipe_schedule(layout.pp, microbatches);
    case ScheduleKind::OneFOneB:
    case ScheduleKind::PipeDream:
    case ScheduleKind::TwoBW: return one_f_one_b_schedule(layout.pp, microbatches);
    case ScheduleKind::Interleaved:
      return interleaved_schedule(layout.pp, microbatches, layout.virtual_stages);
    case ScheduleKind::ZbH1: return zb_h1_schedule(layout.pp, microbatches);
    case ScheduleKind::ZbH2: return zb_h2_schedule(layout.pp, microbatches);
    case ScheduleKind::DualPipe: return dualpipe_schedule(layout.pp, microbatches);
    default:
      throw InputError("parallel.schedule", "schedule \"" +
                                                std::string(schedule_name(layout.schedule)) +
                                                "\" is not simulated yet");
  }
}

}  // namespace trainsim::parallel
