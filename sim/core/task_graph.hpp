// Task DAG on streams, and the executor that runs it on the discrete-event engine.
//
// A task has a fixed duration and runs on one stream. Streams run their tasks in issue order,
// one at a time, like CUDA streams: a task starts when (1) it is at the head of its stream,
// (2) the stream's previous task has finished and (3) all its dependencies have finished.
// A rendezvous joins tasks on several streams (the members of a collective, or the send and
// the receive of a point-to-point transfer): they start together when every member meets
// the three conditions, and finish together after the longest member duration. A member
// that has arrived holds its stream until the rendezvous completes.
#pragma once

#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/simulator.hpp"
#include "core/time.hpp"

namespace trainsim {

using TaskId = std::uint32_t;
using StreamId = std::uint32_t;
using LabelId = std::uint32_t;
using RendezvousId = std::uint32_t;
inline constexpr std::uint32_t kNoId = 0xFFFFFFFFu;

/// What a task spends its time on; the report's breakdown is keyed by it.
enum class Category : std::uint8_t {
  Compute,      ///< forward / backward kernels (including recompute)
  Optimizer,    ///< optimizer step
  TpComm,       ///< tensor/sequence-parallel collectives
  DpComm,       ///< data-parallel gradient / parameter collectives
  PpComm,       ///< pipeline point-to-point transfers
  EpComm,       ///< expert-parallel all-to-all
  CpComm,       ///< context-parallel transfers
};
std::string_view category_name(Category c);
[[nodiscard]] constexpr bool is_comm(Category c) {
  return c != Category::Compute && c != Category::Optimizer;
}

struct Task {
  StreamId stream = kNoId;
  Time duration;
  Category category = Category::Compute;
  LabelId label = kNoId;
  RendezvousId rendezvous = kNoId;
  std::int32_t microbatch = -1;  ///< builder's annotation (-1: none)
  std::int32_t chunk = -1;       ///< builder's annotation (model chunk / virtual stage)
  /// kNoId: a fixed-duration task. Otherwise a network task: its duration is ignored and it
  /// ends when the Executor's ExternalTaskHandler says so (see TaskGraph::set_external).
  std::uint32_t external = kNoId;
};

struct Stream {
  std::uint32_t rank = 0;        ///< simulated rank (a process in the trace)
  LabelId name = kNoId;
  std::vector<TaskId> tasks;     ///< in issue order
};

/// Thrown when the graph cannot finish: a dependency cycle, a stream order that contradicts
/// a dependency, or a rendezvous some member never reaches. The message names the tasks.
class DeadlockError : public InternalError {
 public:
  using InternalError::InternalError;
};

class TaskGraph;

/// The self-check every run ends with (Executor::run calls it): checks that an executed
/// schedule obeys the engine's contract, in O(tasks + dependencies + rendezvous members):
/// every task finished (end >= 0 set), start <= end, a fixed-duration task ran at least its
/// duration, no task started before a dependency ended, tasks of a stream ran in issue
/// order without overlapping, members of a rendezvous started and ended together, and no
/// task ended after `makespan`. `start` and `end` are indexed by TaskId; `done` (same size,
/// or empty for "all finished") flags the tasks that finished. Throws InternalError naming
/// the first violated rule and the op(s) (label, rank, microbatch); never returns on a
/// violation, so a broken schedule cannot become a plausible number.
void verify_schedule(const TaskGraph& g, std::span<const Time> start, std::span<const Time> end,
                     std::span<const std::uint8_t> done, Time makespan);

class TaskGraph {
 public:
  /// Adds a stream of simulated rank `rank`.
  StreamId add_stream(std::uint32_t rank, std::string_view name);
  /// Appends a task to `stream` (issue order = call order). Throws std::invalid_argument
  /// for an unknown stream.
  TaskId add_task(StreamId stream, Time duration, Category category, LabelId label,
                  std::int32_t microbatch = -1, std::int32_t chunk = -1);
  /// `after` cannot start before `before` has finished. Both must exist.
  void add_dependency(TaskId before, TaskId after);
  /// Joins tasks (on distinct streams) into one rendezvous. Each task may join at most one.
  RendezvousId add_rendezvous(const std::vector<TaskId>& members);
  /// Makes `t` a network task whose end is decided by the executor's ExternalTaskHandler,
  /// which receives `external_id` (the caller's index into its own table, e.g. of flows to
  /// run). Its fixed duration is ignored from then on. Throws std::invalid_argument for an
  /// unknown task or external_id == kNoId.
  void set_external(TaskId t, std::uint32_t external_id);
  /// Changes the duration of a fixed-duration task before it runs (e.g. a straggler's
  /// slower kernels). Throws std::invalid_argument for an unknown task or a negative time.
  void set_duration(TaskId t, Time duration);
  /// Interns a label string (task names are shared, not stored per task).
  LabelId intern(std::string_view label);

  [[nodiscard]] std::size_t num_tasks() const { return tasks_.size(); }
  [[nodiscard]] std::size_t num_streams() const { return streams_.size(); }
  [[nodiscard]] std::size_t num_dependencies() const { return dep_from_.size(); }
  [[nodiscard]] const Task& task(TaskId t) const { return tasks_[t]; }
  [[nodiscard]] const Stream& stream(StreamId s) const { return streams_[s]; }
  [[nodiscard]] const std::string& label(LabelId l) const { return labels_[l]; }
  [[nodiscard]] const std::vector<TaskId>& rendezvous_members(RendezvousId r) const {
    return rendezvous_[r];
  }
  void reserve(std::size_t tasks) { tasks_.reserve(tasks); }

 private:
  friend class Executor;
  friend void verify_schedule(const TaskGraph&, std::span<const Time>, std::span<const Time>,
                              std::span<const std::uint8_t>, Time);
  std::vector<Task> tasks_;
  std::vector<Stream> streams_;
  std::vector<std::vector<TaskId>> rendezvous_;
  std::vector<TaskId> dep_from_, dep_to_;
  std::vector<std::string> labels_;
  std::unordered_map<std::string, LabelId> label_ids_;
};

class Executor;

/// Runs the network tasks of a graph (Task::external != kNoId): the executor tells it when
/// one starts; it calls Executor::complete() when that task ends (e.g. when the flows of a
/// collective have finished on a net::FlowNetwork).
class ExternalTaskHandler {
 public:
  virtual ~ExternalTaskHandler() = default;
  /// Task `t` with external id `external_id` starts at sim.now().
  virtual void start_external(Simulator& sim, Executor& ex, TaskId t,
                              std::uint32_t external_id) = 0;
};

/// Runs a TaskGraph on a Simulator and records each task's start and end.
/// One event per task (per rendezvous) completion. Fixed-duration tasks end after their
/// duration; network tasks end when their ExternalTaskHandler calls complete(). In a
/// rendezvous with network members, all members start together and end together when every
/// network member has completed and the longest fixed member duration has elapsed.
class Executor final : public EventHandler {
 public:
  explicit Executor(const TaskGraph& graph);

  /// Sets the handler of network tasks (not owned; must outlive run()). Running a graph
  /// with network tasks and no handler throws InternalError.
  void set_external_handler(ExternalTaskHandler* handler) { external_ = handler; }
  /// Ends network task `t` at sim.now(). Throws InternalError when `t` is not a running
  /// network task.
  void complete(Simulator& sim, TaskId t);

  /// Communication kernels take SMs from computation: NCCL runs each channel of a
  /// collective or transfer as one thread block that holds an SM while it runs (NCCL's
  /// NCCL_MIN/MAX_NCHANNELS and NCCL_MAX_CTAS), and DeepSeek-V3 (arXiv:2412.19437 §3.2.2)
  /// dedicates 20 of 132 SMs to its communication kernels. With this set, while any
  /// communication task (is_comm category) of a rank runs, that rank's fixed-duration compute
  /// and optimizer tasks progress at (sms - comm_sms) / sms of their rate: their remaining
  /// work is re-timed, exactly in picoseconds, whenever the rank's communication starts or
  /// stops. Rendezvous and network tasks are not slowed. Call before run(). Throws
  /// std::invalid_argument unless 0 <= comm_sms < sms.
  void set_sm_contention(int comm_sms, int sms);

  /// Runs every task from sim.now(). Throws DeadlockError (naming the stuck tasks) when the
  /// queue drains with tasks unfinished, and InternalError (naming the op) when the executed
  /// schedule fails verify_schedule — the self-check of every run.
  void run(Simulator& sim);

  /// Test hook: after run(), overwrite task `t`'s recorded times and re-run the self-check,
  /// as a corrupted engine would have left them. Throws what verify_schedule throws.
  void corrupt_and_verify_for_test(TaskId t, Time start, Time end);

  [[nodiscard]] Time start(TaskId t) const { return start_[t]; }
  [[nodiscard]] Time end(TaskId t) const { return end_[t]; }
  [[nodiscard]] Time makespan() const { return makespan_; }
  /// For each task, the predecessor that finished last (kNoId when none): the dependency the
  /// task was waiting on, used to attribute idle time.
  [[nodiscard]] TaskId last_dependency(TaskId t) const { return last_dep_[t]; }
  /// The dependencies of task `t`.
  [[nodiscard]] std::span<const TaskId> predecessors(TaskId t) const {
    return {pred_.data() + pred_off_[t], pred_off_[t + 1] - pred_off_[t]};
  }

  void on_event(Simulator& sim, const Event& event) override;

 private:
  void try_start(Simulator& sim, StreamId s);
  void start_network_task(Simulator& sim, TaskId t);
  void finish(Simulator& sim, TaskId t);
  void start_compute(Simulator& sim, TaskId t);
  void comm_started(Simulator& sim, TaskId t);
  void comm_finished(Simulator& sim, TaskId t);
  void retime_rank(Simulator& sim, std::uint32_t rank, bool slow_before);
  [[nodiscard]] Time wall_time(Time work, bool slow) const;
  [[nodiscard]] bool contended(const Task& task) const;
  [[nodiscard]] std::string describe_stuck() const;

  const TaskGraph& g_;
  std::uint32_t handler_ = kNoId;
  std::vector<std::uint32_t> pending_;            // unfinished dependencies per task
  std::vector<std::uint32_t> succ_off_;           // CSR successors
  std::vector<TaskId> succ_;
  std::vector<std::uint32_t> pred_off_;           // CSR predecessors
  std::vector<TaskId> pred_;
  std::vector<std::uint32_t> head_;               // next task index per stream
  std::vector<std::uint8_t> busy_;                // stream has a started or arrived task
  std::vector<std::uint32_t> arrived_;            // members arrived per rendezvous
  std::vector<std::uint32_t> ext_left_;           // rendezvous with network members: parts left
  std::vector<std::uint8_t> running_ext_;         // network task started, not completed
  ExternalTaskHandler* external_ = nullptr;
  // SM contention (set_sm_contention): rate while communicating = slow_num_ / slow_den_.
  bool contention_ = false;
  std::int64_t slow_num_ = 1, slow_den_ = 1;
  std::vector<std::uint32_t> rank_comm_;               // running comm tasks per rank
  std::vector<std::vector<TaskId>> rank_compute_;      // running contended tasks per rank
  std::vector<Time> work_left_, seg_start_;            // full-rate work left, since when
  std::vector<std::uint32_t> gen_;                     // completion events issued per task
  std::vector<Time> start_, end_;
  std::vector<TaskId> last_dep_;
  std::vector<std::uint8_t> done_;
  Time makespan_;
  std::size_t finished_ = 0;
};

}  // namespace trainsim
