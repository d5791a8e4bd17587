#include "core/task_graph.hpp"

#include <algorithm>
#include <sstream>

namespace trainsim {

std::string_view category_name(Category c) {
  switch (c) {
    case Category::Compute: return "compute";
    case Category::Optimizer: return "optimizer";
    case Category::TpComm: return "tp_comm";
    case Category::DpComm: return "dp_comm";
    case Category::PpComm: return "pp_comm";
    case Category::EpComm: return "ep_comm";
    case Category::CpComm: return "cp_comm";
  }
  return "?";
}

StreamId TaskGraph::add_stream(std::uint32_t rank, std::string_view name) {
  streams_.push_back(Stream{rank, intern(name), {}});
  return static_cast<StreamId>(streams_.size() - 1);
}

TaskId TaskGraph::add_task(StreamId stream, Time duration, Category category, LabelId label,
                           std::int32_t microbatch, std::int32_t chunk) {
  if (stream >= streams_.size()) throw std::invalid_argument("add_task: unknown stream");
  if (duration < Time::zero()) throw std::invalid_argument("add_task: negative duration");
  const auto id = static_cast<TaskId>(tasks_.size());
  tasks_.push_back(Task{stream, duration, category, label, kNoId, microbatch, chunk});
  streams_[stream].tasks.push_back(id);
  return id;
}

void TaskGraph::add_dependency(TaskId before, TaskId after) {
  if (before >= tasks_.size() || after >= tasks_.size() || before == after) {
    throw std::invalid_argument("add_dependency: bad task ids");
  }
  dep_from_.push_back(before);
  dep_to_.push_back(after);
}

RendezvousId TaskGraph::add_rendezvous(const std::vector<TaskId>& members) {
  if (members.empty()) throw std::invalid_argument("add_rendezvous: no members");
  const auto id = static_cast<RendezvousId>(rendezvous_.size());
  for (TaskId t : members) {
    if (t >= tasks_.size()) throw std::invalid_argument("add_rendezvous: bad task id");
    if (tasks_[t].rendezvous != kNoId) {
      throw std::invalid_argument("add_rendezvous: task already in a rendezvous");
    }
    tasks_[t].rendezvous = id;
  }
  rendezvous_.push_back(members);
  return id;
}

void TaskGraph::set_external(TaskId t, std::uint32_t external_id) {
  if (t >= tasks_.size()) throw std::invalid_argument("set_external: unknown task");
  if (external_id == kNoId) throw std::invalid_argument("set_external: external id kNoId");
  tasks_[t].external = external_id;
}

void TaskGraph::set_duration(TaskId t, Time duration) {
  if (t >= tasks_.size()) throw std::invalid_argument("set_duration: unknown task");
  if (duration < Time::zero()) throw std::invalid_argument("set_duration: negative duration");
  tasks_[t].duration = duration;
}

LabelId TaskGraph::intern(std::string_view label) {
  auto it = label_ids_.find(std::string(label));
  if (it != label_ids_.end()) return it->second;
  const auto id = static_cast<LabelId>(labels_.size());
  labels_.emplace_back(label);
  label_ids_.emplace(labels_.back(), id);
  return id;
}

namespace {
constexpr std::uint64_t kRendezvousBit = 1ULL << 63;
}

Executor::Executor(const TaskGraph& graph) : g_(graph) {
  const std::size_t n = g_.tasks_.size();
  pending_.assign(n, 0);
  succ_off_.assign(n + 1, 0);
  pred_off_.assign(n + 1, 0);
  for (std::size_t i = 0; i < g_.dep_from_.size(); ++i) {
    ++succ_off_[g_.dep_from_[i] + 1];
    ++pred_off_[g_.dep_to_[i] + 1];
    ++pending_[g_.dep_to_[i]];
  }
  for (std::size_t i = 0; i < n; ++i) {
    succ_off_[i + 1] += succ_off_[i];
    pred_off_[i + 1] += pred_off_[i];
  }
  succ_.resize(g_.dep_from_.size());
  pred_.resize(g_.dep_from_.size());
  std::vector<std::uint32_t> sfill(succ_off_.begin(), succ_off_.end() - 1);
  std::vector<std::uint32_t> pfill(pred_off_.begin(), pred_off_.end() - 1);
  for (std::size_t i = 0; i < g_.dep_from_.size(); ++i) {
    succ_[sfill[g_.dep_from_[i]]++] = g_.dep_to_[i];
    pred_[pfill[g_.dep_to_[i]]++] = g_.dep_from_[i];
  }
  head_.assign(g_.streams_.size(), 0);
  busy_.assign(g_.streams_.size(), 0);
  arrived_.assign(g_.rendezvous_.size(), 0);
  ext_left_.assign(g_.rendezvous_.size(), 0);
  running_ext_.assign(n, 0);
  start_.assign(n, Time::zero());
  end_.assign(n, Time::zero());
  last_dep_.assign(n, kNoId);
  done_.assign(n, 0);
}

void Executor::set_sm_contention(int comm_sms, int sms) {
  if (sms <= 0 || comm_sms < 0 || comm_sms >= sms) {
    throw std::invalid_argument("set_sm_contention: need 0 <= comm_sms < sms (got " +
                                std::to_string(comm_sms) + " of " + std::to_string(sms) + ")");
  }
  contention_ = comm_sms > 0;
  slow_num_ = sms - comm_sms;
  slow_den_ = sms;
  std::uint32_t ranks = 0;
  for (const Stream& st : g_.streams_) ranks = std::max(ranks, st.rank + 1);
  rank_comm_.assign(ranks, 0);
  rank_compute_.assign(ranks, {});
  const std::size_t n = g_.tasks_.size();
  work_left_.assign(n, Time::zero());
  seg_start_.assign(n, Time::zero());
  gen_.assign(n, 0);
}

bool Executor::contended(const Task& task) const {
  return contention_ && !is_comm(task.category) && task.rendezvous == kNoId &&
         task.external == kNoId;
}

Time Executor::wall_time(Time work, bool slow) const {
  if (!slow) return work;
  // ceil(work * den / num): the task ends once all its work is done.
  const std::int64_t w = work.count_ps();
  const std::int64_t q = w / slow_num_, r = w % slow_num_;
  return Time::ps(q) * slow_den_ + Time::ps((r * slow_den_ + slow_num_ - 1) / slow_num_);
}

void Executor::start_compute(Simulator& sim, TaskId t) {
  const Task& task = g_.tasks_[t];
  const std::uint32_t rank = g_.streams_[task.stream].rank;
  work_left_[t] = task.duration;
  seg_start_[t] = sim.now();
  rank_compute_[rank].push_back(t);
  sim.schedule_in(wall_time(task.duration, rank_comm_[rank] > 0), handler_,
                  (static_cast<std::uint64_t>(gen_[t]) << 32) | t);
}

void Executor::retime_rank(Simulator& sim, std::uint32_t rank, bool slow_before) {
  const bool slow_after = rank_comm_[rank] > 0;
  if (slow_before == slow_after) return;
  const Time now = sim.now();
  for (TaskId t : rank_compute_[rank]) {
    const std::int64_t elapsed = (now - seg_start_[t]).count_ps();
    // Work done at the slowed rate: floor(elapsed * num / den), exact in integers.
    const std::int64_t done =
        slow_before ? elapsed / slow_den_ * slow_num_ + elapsed % slow_den_ * slow_num_ / slow_den_
                    : elapsed;
    work_left_[t] = Time::ps(std::max<std::int64_t>(0, work_left_[t].count_ps() - done));
    seg_start_[t] = now;
    ++gen_[t];  // the pending completion event is now stale
    sim.schedule_in(wall_time(work_left_[t], slow_after), handler_,
                    (static_cast<std::uint64_t>(gen_[t]) << 32) | t);
  }
}

void Executor::comm_started(Simulator& sim, TaskId t) {
  const Task& task = g_.tasks_[t];
  if (!contention_ || !is_comm(task.category)) return;
  const std::uint32_t rank = g_.streams_[task.stream].rank;
  if (rank_comm_[rank]++ == 0) retime_rank(sim, rank, false);
}

void Executor::comm_finished(Simulator& sim, TaskId t) {
  const Task& task = g_.tasks_[t];
  if (!contention_ || !is_comm(task.category)) return;
  const std::uint32_t rank = g_.streams_[task.stream].rank;
  if (--rank_comm_[rank] == 0) retime_rank(sim, rank, true);
}

void Executor::run(Simulator& sim) {
  handler_ = sim.add_handler(this);
  finished_ = 0;
  makespan_ = sim.now();
  for (StreamId s = 0; s < g_.streams_.size(); ++s) try_start(sim, s);
  sim.run();
  if (finished_ != g_.tasks_.size()) throw DeadlockError(describe_stuck());
  if (sim.pending() != 0) {
    throw InternalError("self-check: " + std::to_string(sim.pending()) +
                        " events left in the queue after the last task finished");
  }
  if (sim.now() < makespan_) {
    throw InternalError("self-check: the clock (" + std::to_string(sim.now().count_ps()) +
                        " ps) ended before the last task (" +
                        std::to_string(makespan_.count_ps()) + " ps)");
  }
  verify_schedule(g_, start_, end_, done_, makespan_);
}

void Executor::corrupt_and_verify_for_test(TaskId t, Time start, Time end) {
  if (t >= g_.tasks_.size()) throw std::invalid_argument("corrupt_and_verify_for_test: bad id");
  start_[t] = start;
  end_[t] = end;
  verify_schedule(g_, start_, end_, done_, makespan_);
}

namespace {
std::string describe_task(const TaskGraph& g, TaskId t) {
  const Task& task = g.task(t);
  std::string s = "'" + g.label(task.label) + "' (task " + std::to_string(t) + ", rank " +
                  std::to_string(g.stream(task.stream).rank) + ", stream '" +
                  g.label(g.stream(task.stream).name) + "'";
  if (task.microbatch >= 0) s += ", microbatch " + std::to_string(task.microbatch);
  s += ")";
  return s;
}
std::string ps(Time t) { return std::to_string(t.count_ps()) + " ps"; }
}  // namespace

void verify_schedule(const TaskGraph& g, std::span<const Time> start, std::span<const Time> end,
                     std::span<const std::uint8_t> done, Time makespan) {
  const std::size_t n = g.tasks_.size();
  if (start.size() != n || end.size() != n || (!done.empty() && done.size() != n)) {
    throw InternalError("self-check: schedule has " + std::to_string(start.size()) +
                        " starts and " + std::to_string(end.size()) + " ends for " +
                        std::to_string(n) + " tasks");
  }
  auto fail = [&](const std::string& rule, TaskId t) {
    throw InternalError("self-check failed: " + rule + ": " + describe_task(g, t) + " ran [" +
                        ps(start[t]) + ", " + ps(end[t]) + "]");
  };
  for (TaskId t = 0; t < n; ++t) {
    if (!done.empty() && done[t] == 0) fail("task never finished", t);
    if (start[t] < Time::zero()) fail("task started before time zero", t);
    if (end[t] < start[t]) fail("task ended before it started", t);
    if (end[t] > makespan) fail("task ended after the makespan " + ps(makespan), t);
    const Task& task = g.tasks_[t];
    // Fixed-duration tasks run at least their duration (longer when SM contention slows
    // them or a rendezvous waits for its longest member); network tasks end when told.
    if (task.external == kNoId && end[t] - start[t] < task.duration) {
      fail("task ran shorter than its duration " + ps(task.duration), t);
    }
  }
  for (std::size_t i = 0; i < g.dep_from_.size(); ++i) {
    const TaskId a = g.dep_from_[i], b = g.dep_to_[i];
    if (start[b] < end[a]) {
      fail("task started before its dependency " + describe_task(g, a) + " ended at " +
               ps(end[a]),
           b);
    }
  }
  for (const Stream& st : g.streams_) {
    for (std::size_t i = 1; i < st.tasks.size(); ++i) {
      const TaskId prev = st.tasks[i - 1], t = st.tasks[i];
      if (start[t] < end[prev]) {
        fail("stream order broken: task started before the task issued before it, " +
                 describe_task(g, prev) + ", ended at " + ps(end[prev]),
             t);
      }
    }
  }
  for (const auto& members : g.rendezvous_) {
    for (TaskId m : members) {
      if (start[m] != start[members.front()] || end[m] != end[members.front()]) {
        fail("rendezvous members did not start and end together (first member " +
                 describe_task(g, members.front()) + ")",
             m);
      }
    }
  }
}

void Executor::try_start(Simulator& sim, StreamId s) {
  if (busy_[s] != 0) return;
  const Stream& st = g_.streams_[s];
  if (head_[s] >= st.tasks.size()) return;
  const TaskId t = st.tasks[head_[s]];
  if (pending_[t] != 0) return;
  const Task& task = g_.tasks_[t];
  busy_[s] = 1;
  if (task.rendezvous == kNoId) {
    start_[t] = sim.now();
    comm_started(sim, t);
    if (task.external != kNoId) {
      start_network_task(sim, t);
      return;
    }
    if (contended(task)) {
      start_compute(sim, t);
      return;
    }
    sim.schedule_in(task.duration, handler_, t);
    return;
  }
  const auto& members = g_.rendezvous_[task.rendezvous];
  if (++arrived_[task.rendezvous] < members.size()) return;  // hold the stream, wait
  Time duration;
  std::uint32_t externals = 0;
  for (TaskId m : members) {
    start_[m] = sim.now();
    comm_started(sim, m);
    if (g_.tasks_[m].external != kNoId) {
      ++externals;
    } else {
      duration = max(duration, g_.tasks_[m].duration);
    }
  }
  if (externals > 0) {
    // Parts left: each network member, plus the timer of the fixed members.
    ext_left_[task.rendezvous] = externals + 1;
    for (TaskId m : members) {
      if (g_.tasks_[m].external != kNoId) start_network_task(sim, m);
    }
  }
  sim.schedule_in(duration, handler_, kRendezvousBit | task.rendezvous);
}

void Executor::start_network_task(Simulator& sim, TaskId t) {
  if (external_ == nullptr) {
    throw InternalError("executor: network task '" + g_.labels_[g_.tasks_[t].label] +
                        "' but no external task handler is set");
  }
  running_ext_[t] = 1;
  external_->start_external(sim, *this, t, g_.tasks_[t].external);
}

void Executor::complete(Simulator& sim, TaskId t) {
  if (t >= g_.tasks_.size() || running_ext_[t] == 0) {
    throw InternalError("executor: complete() on a task that is not a running network task");
  }
  running_ext_[t] = 0;
  const RendezvousId r = g_.tasks_[t].rendezvous;
  if (r == kNoId) {
    finish(sim, t);
    return;
  }
  if (--ext_left_[r] == 0) {
    for (TaskId m : g_.rendezvous_[r]) finish(sim, m);
  }
}

void Executor::on_event(Simulator& sim, const Event& event) {
  if ((event.payload & kRendezvousBit) != 0) {
    const auto r = static_cast<RendezvousId>(event.payload & ~kRendezvousBit);
    if (ext_left_[r] > 0 && --ext_left_[r] > 0) return;  // network members still running
    for (TaskId m : g_.rendezvous_[r]) finish(sim, m);
  } else {
    const auto t = static_cast<TaskId>(event.payload & 0xFFFFFFFFu);
    if (contention_ && contended(g_.tasks_[t])) {
      if (static_cast<std::uint32_t>(event.payload >> 32) != gen_[t]) return;  // re-timed
      const std::uint32_t rank = g_.streams_[g_.tasks_[t].stream].rank;
      auto& running = rank_compute_[rank];
      running.erase(std::find(running.begin(), running.end(), t));
    }
    finish(sim, t);
  }
}

void Executor::finish(Simulator& sim, TaskId t) {
  const Time now = sim.now();
  end_[t] = now;
  comm_finished(sim, t);
  done_[t] = 1;
  makespan_ = max(makespan_, now);
  ++finished_;
  const StreamId s = g_.tasks_[t].stream;
  busy_[s] = 0;
  ++head_[s];
  for (std::uint32_t i = succ_off_[t]; i < succ_off_[t + 1]; ++i) {
    const TaskId u = succ_[i];
    last_dep_[u] = t;  // the dependency finishing last is the one the task waited on
    if (--pending_[u] == 0) try_start(sim, g_.tasks_[u].stream);
  }
  try_start(sim, s);
}

std::string Executor::describe_stuck() const {
  std::ostringstream os;
  os << "deadlock: " << (g_.tasks_.size() - finished_) << " of " << g_.tasks_.size()
     << " tasks never ran";
  int shown = 0;
  for (StreamId s = 0; s < g_.streams_.size() && shown < 8; ++s) {
    const Stream& st = g_.streams_[s];
    if (head_[s] >= st.tasks.size()) continue;
    const TaskId t = st.tasks[head_[s]];
    const Task& task = g_.tasks_[t];
    os << "\n  rank " << st.rank << " stream '" << g_.labels_[st.name] << "' stuck at '"
       << g_.labels_[task.label] << "'";
    if (task.microbatch >= 0) os << " (microbatch " << task.microbatch << ")";
    if (pending_[t] != 0) {
      os << ": waits for " << pending_[t] << " unfinished dependencies, e.g. '";
      for (std::uint32_t i = pred_off_[t]; i < pred_off_[t + 1]; ++i) {
        const TaskId p = pred_[i];
        if (done_[p] == 0) {
          os << g_.labels_[g_.tasks_[p].label] << "' on rank "
             << g_.streams_[g_.tasks_[p].stream].rank;
          break;
        }
      }
    } else if (task.rendezvous != kNoId) {
      os << ": rendezvous with " << arrived_[task.rendezvous] << " of "
         << g_.rendezvous_[task.rendezvous].size() << " members arrived";
    }
    ++shown;
  }
  return os.str();
}

}  // namespace trainsim
