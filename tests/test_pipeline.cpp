// Pipeline schedules run event by event with uniform stages, against closed forms.
#include <gtest/gtest.h>

#include "core/error.hpp"
#include "core/task_graph.hpp"
#include "parallel/schedule.hpp"
#include "workload/pipeline_sim.hpp"

using namespace trainsim;
using namespace trainsim::workload;
using parallel::PassKind;

namespace {

/// Each pass is one compute task of fixed duration per model chunk.
class UniformEmitter final : public PassEmitter {
 public:
  UniformEmitter(Time tf, Time tb) : tf_(tf), tb_(tb) {}
  PassRecord emit(TaskGraph& g, const StageStreams& st, int, const parallel::PipeOp& op,
                  TaskId wait_for) override {
    const bool fwd = op.kind == PassKind::Forward;
    const TaskId t = g.add_task(st.compute, fwd ? tf_ : tb_, Category::Compute,
                                g.intern(fwd ? "F" : "B"), op.microbatch, op.chunk);
    if (wait_for != kNoId) g.add_dependency(wait_for, t);
    return {t, t};
  }

 private:
  Time tf_, tb_;
};

struct Outcome {
  Time step;
  std::vector<StageBreakdown> stages;
  std::vector<int> peak_inflight;
};

Outcome run(std::vector<parallel::StageProgram> programs, int pp, int v, int m, Time tf, Time tb,
            Time p2p = Time::zero()) {
  TaskGraph g;
  PipelineSpec spec;
  spec.pp = pp;
  spec.virtual_stages = v;
  spec.microbatches = m;
  spec.programs = std::move(programs);
  spec.p2p_time = [p2p](int, int) { return p2p; };
  UniformEmitter em(tf, tb);
  const auto pg = build_pipeline(g, spec, em);
  Simulator sim;
  Executor ex(g);
  ex.run(sim);
  Outcome o;
  o.step = ex.makespan();
  const auto prev = stream_predecessors(g);
  for (int s = 0; s < pp; ++s) {
    o.stages.push_back(analyze_stage(g, ex, prev, pg.streams[s].compute, o.step));
    std::vector<Time> a, f;
    std::vector<double> bytes;
    for (std::size_t i = 0; i < pg.fwd[s].size(); ++i) {
      a.push_back(ex.start(pg.fwd[s][i].first));
      f.push_back(ex.end(pg.bwd[s][i].last));
      bytes.push_back(1.0);
    }
    o.peak_inflight.push_back(peak_in_flight(a, f, bytes).peak_count);
  }
  return o;
}

double bubble_fraction(const Outcome& o, int stage) {
  return o.stages[stage].bubble / o.stages[stage].step;
}

}  // namespace

TEST(PipelineSchedules, GPipeBubbleIsPMinusOneOverMPlusPMinusOne) {
  for (int p : {2, 4, 8}) {
    for (int m : {1, 4, 8, 32}) {
      const Time tf = Time::us(100), tb = Time::us(200);
      const auto o = run(parallel::gpipe_schedule(p, m), p, 1, m, tf, tb);
      EXPECT_EQ(o.step, (tf + tb) * (m + p - 1)) << "p=" << p << " m=" << m;
      for (int s = 0; s < p; ++s) {
        EXPECT_NEAR(bubble_fraction(o, s), double(p - 1) / (m + p - 1), 1e-3);
      }
      EXPECT_EQ(o.peak_inflight[0], m);  // GPipe holds every microbatch
    }
  }
}

TEST(PipelineSchedules, OneFOneBHasGPipesBubbleWithAtMostPInFlight) {
  for (int p : {2, 4, 8}) {
    for (int m : {1, 3, 8, 32}) {
      const Time tf = Time::us(100), tb = Time::us(200);
      const auto o = run(parallel::one_f_one_b_schedule(p, m), p, 1, m, tf, tb);
      for (int s = 0; s < p; ++s) {
        EXPECT_NEAR(bubble_fraction(o, s), double(p - 1) / (m + p - 1), 1e-3)
            << "p=" << p << " m=" << m << " stage " << s;
        EXPECT_LE(o.peak_inflight[s], std::min(p - s, m));
      }
      EXPECT_EQ(o.peak_inflight[0], std::min(p, m));
    }
  }
}

TEST(PipelineSchedules, InterleavedBubbleIsPMinusOneOverVM) {
  for (int p : {2, 4}) {
    for (int v : {2, 3}) {
      for (int m : {p, 2 * p, 4 * p}) {
        // Per-chunk times: a stage's whole forward is tf, split over v chunks.
        const Time tf = Time::us(120), tb = Time::us(240);
        const auto o = run(parallel::interleaved_schedule(p, m, v), p, v, m,
                           Time::ps(tf.count_ps() / v), Time::ps(tb.count_ps() / v));
        const double ideal = ((tf + tb) * m).seconds();
        for (int s = 0; s < p; ++s) {
          EXPECT_NEAR(o.stages[s].bubble / ideal, double(p - 1) / (v * m), 1e-3)
              << "p=" << p << " v=" << v << " m=" << m << " stage " << s;
        }
      }
    }
  }
}

TEST(PipelineSchedules, BreakdownAddsUpAndTransfersShowAsPipelineComm) {
  const int p = 4, m = 8;
  const auto free_comm = run(parallel::one_f_one_b_schedule(p, m), p, 1, m, Time::us(100),
                             Time::us(200));
  const auto with_comm = run(parallel::one_f_one_b_schedule(p, m), p, 1, m, Time::us(100),
                             Time::us(200), Time::us(30));
  EXPECT_GT(with_comm.step, free_comm.step);
  double exposed_pp = 0;
  for (const auto& st : with_comm.stages) {
    const double sum = st.compute + st.optimizer + st.bubble +
                       st.exposed_of(Category::PpComm) + st.exposed_of(Category::TpComm) +
                       st.exposed_of(Category::DpComm);
    EXPECT_NEAR(sum, st.step, 1e-12);
    exposed_pp += st.exposed_of(Category::PpComm);
  }
  EXPECT_GT(exposed_pp, 0.0);
}

TEST(PipelineSchedules, MalformedProgramIsRejected) {
  auto progs = parallel::one_f_one_b_schedule(2, 2);
  progs[1].pop_back();  // drop a backward
  EXPECT_THROW(run(progs, 2, 1, 2, Time::us(1), Time::us(2)), InputError);
}
