// Assembling a pipeline-parallel step as a task graph, and reading the timeline back.
//
// build_pipeline() walks each stage's schedule program and emits, per pass, the point-to-
// point receive, the pass's own tasks (through a PassEmitter) and the send, with sends and
// receives joined as rendezvous on dedicated streams. What a pass contains (one task in the
// schedule tests, every layer op and TP collective in the real workload) is the emitter's
// business. analyze_stage() turns the executed timeline of one stage into the "where the
// time went" breakdown, whose parts add up to the step time.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <vector>

#include "core/task_graph.hpp"
#include "parallel/schedule.hpp"

namespace trainsim::workload {

/// The streams of one simulated rank (one pipeline stage in stage fidelity).
struct StageStreams {
  StreamId compute = kNoId, tp = kNoId, dp = kNoId;
  /// Expert-parallel all-to-all and context-parallel KV transfers (kNoId when unused).
  StreamId ep = kNoId, cp = kNoId;
  /// Point-to-point streams per chain (DualPipe has two chains running in opposite
  /// directions; every other schedule one).
  std::array<StreamId, 2> fwd_send{kNoId, kNoId}, fwd_recv{kNoId, kNoId};
  std::array<StreamId, 2> bwd_send{kNoId, kNoId}, bwd_recv{kNoId, kNoId};
};

/// First and last task of an emitted pass.
struct PassRecord {
  TaskId first = kNoId, last = kNoId;
};

class PassEmitter {
 public:
  virtual ~PassEmitter() = default;
  /// Emits the tasks of pass `op` on `stage`. The first task must depend on `wait_for` when
  /// it is not kNoId (the receive of the pass's input). Returns the first and last task; the
  /// send of the pass's output will depend on `last`.
  virtual PassRecord emit(TaskGraph& g, const StageStreams& streams, int stage,
                          const parallel::PipeOp& op, TaskId wait_for) = 0;
};

/// Placement of model chunks on pipeline ranks. A chain is the path of one microbatch through
/// the whole model: `chain_length` virtual stages, the first holding the embedding and the
/// last the LM head. Megatron's layouts have one chain of pp * v virtual stages (virtual
/// stage chunk * pp + rank); DualPipe has two chains of pp, one per direction.
struct PipelineShape {
  int pp = 1;
  int virtual_stages = 1;
  bool dual = false;  ///< DualPipe: chunk 0 runs ranks 0..pp-1, chunk 1 runs pp-1..0

  [[nodiscard]] int chain_length() const { return dual ? pp : pp * virtual_stages; }
  [[nodiscard]] int chains() const { return dual ? 2 : 1; }
  /// Virtual stage of (rank, chunk); chain = vs / chain_length().
  [[nodiscard]] int vs_of(int rank, int chunk) const {
    return dual ? (chunk == 0 ? rank : 2 * pp - 1 - rank) : chunk * pp + rank;
  }
  [[nodiscard]] int rank_of(int vs) const {
    return dual ? (vs < pp ? vs : 2 * pp - 1 - vs) : vs % pp;
  }
  [[nodiscard]] bool first_of_chain(int vs) const { return vs % chain_length() == 0; }
  [[nodiscard]] bool last_of_chain(int vs) const {
    return vs % chain_length() == chain_length() - 1;
  }
  /// Position in its chain (0 .. chain_length-1): which layers the virtual stage holds.
  [[nodiscard]] int position(int vs) const { return vs % chain_length(); }
};

struct PipelineSpec {
  int pp = 1;
  int virtual_stages = 1;
  bool dual = false;
  int microbatches = 1;
  std::vector<parallel::StageProgram> programs;  ///< one per stage
  /// Transfer time of one activation (or gradient) between two stages.
  std::function<Time(int from_stage, int to_stage)> p2p_time;
  bool ep_stream = false;  ///< give each stage an "ep_comm" stream (MoE with ep > 1)
  bool cp_stream = false;  ///< give each stage a "cp_comm" stream (cp > 1)
};

struct PipelineGraph {
  std::vector<StageStreams> streams;            ///< per stage
  /// Per stage, indexed by microbatch * v + chunk: the forward, backward (whole, or input
  /// part) and weight-gradient pass records (`wgt` empty where the backward is not split).
  std::vector<std::vector<PassRecord>> fwd, bwd, wgt;
  /// The task after which a slot's activations are freed: end of W if split, else of B.
  [[nodiscard]] TaskId release(int stage, std::size_t slot) const {
    const auto& w = wgt[static_cast<std::size_t>(stage)][slot];
    return w.last != kNoId ? w.last : bwd[static_cast<std::size_t>(stage)][slot].last;
  }
  std::vector<TaskId> last_compute;             ///< per stage, last task of its program
};

[[nodiscard]] inline PipelineShape shape_of(const PipelineSpec& s) {
  return PipelineShape{s.pp, s.virtual_stages, s.dual};
}

/// Emits the whole pipeline (ranks 0..pp-1) into `g`. Throws InputError when a program is
/// malformed (a backward before its forward, a pass missing or repeated).
PipelineGraph build_pipeline(TaskGraph& g, const PipelineSpec& spec, PassEmitter& emitter);

/// Where one rank's step time went. All fields in seconds; the parts add up to `step`.
struct StageBreakdown {
  double compute = 0;    ///< forward/backward kernels incl. recompute
  double optimizer = 0;
  /// Compute and optimizer time lost to communication kernels holding SMs while they
  /// overlap (Executor::set_sm_contention): the tasks' run time beyond their duration.
  double contention = 0;
  std::array<double, 7> exposed{};  ///< indexed by Category: exposed communication
  double bubble = 0;     ///< idle waiting for other stages (pipeline fill/drain)
  double step = 0;
  [[nodiscard]] double exposed_of(Category c) const {
    return exposed[static_cast<std::size_t>(c)];
  }
};

/// Attributes every idle gap of the compute stream to what the next kernel waited for: the
/// running part of a communication task on the rank (exposed communication of its kind), or,
/// when the wait leads to another rank (a receive waiting for its sender), the bubble.
/// `prev_on_stream` comes from stream_predecessors(g).
/// The window [begin, end) is the step analysed: [0, makespan) for one step, or in steady
/// state one step time ending where this stage's last step ends (a kernel running at `begin`
/// counts its part inside the window); `step` in the result is its length.
StageBreakdown analyze_stage(const TaskGraph& g, const Executor& ex,
                             const std::vector<TaskId>& prev_on_stream, StreamId compute_stream,
                             Time begin, Time end);

/// For each task, the task issued before it on its stream (kNoId for the first).
std::vector<TaskId> stream_predecessors(const TaskGraph& g);

/// Peak over time of the sum of `bytes[i]` over intervals [alloc[i], free[i]): at equal
/// times frees come first. Also gives the peak count of open intervals.
struct PeakResult {
  double peak_bytes = 0;
  int peak_count = 0;
};
PeakResult peak_in_flight(const std::vector<Time>& alloc, const std::vector<Time>& free,
                          const std::vector<double>& bytes);

}  // namespace trainsim::workload
