#include "workload/pipeline_sim.hpp"

#include <algorithm>
#include <map>
#include <string>
#include <tuple>

#include "core/error.hpp"

namespace trainsim::workload {

using parallel::PassKind;
using parallel::PipeOp;

PipelineGraph build_pipeline(TaskGraph& g, const PipelineSpec& spec, PassEmitter& emitter) {
  // Slots per microbatch: one per model chunk a rank holds.
  const int pp = spec.pp, v = spec.dual ? 2 : spec.virtual_stages, m = spec.microbatches;
  if (static_cast<int>(spec.programs.size()) != pp) {
    throw InputError("parallel.schedule", "schedule has a program for " +
                                              std::to_string(spec.programs.size()) +
                                              " stages, expected " + std::to_string(pp));
  }
  PipelineGraph out;
  const auto slots = static_cast<std::size_t>(m) * static_cast<std::size_t>(v);
  out.fwd.assign(static_cast<std::size_t>(pp), std::vector<PassRecord>(slots));
  out.bwd.assign(static_cast<std::size_t>(pp), std::vector<PassRecord>(slots));
  out.wgt.assign(static_cast<std::size_t>(pp), std::vector<PassRecord>(slots));
  out.last_compute.assign(static_cast<std::size_t>(pp), kNoId);
  const PipelineShape shape = shape_of(spec);
  for (int s = 0; s < pp; ++s) {
    const auto r = static_cast<std::uint32_t>(s);
    StageStreams st;
    st.compute = g.add_stream(r, "compute");
    st.tp = g.add_stream(r, "tp_comm");
    st.dp = g.add_stream(r, "dp_comm");
    if (spec.ep_stream) st.ep = g.add_stream(r, "ep_comm");
    if (spec.cp_stream) st.cp = g.add_stream(r, "cp_comm");
    for (int c = 0; c < shape.chains(); ++c) {
      const std::string sfx = shape.chains() > 1 ? (c == 0 ? " (chain 0)" : " (chain 1)") : "";
      const auto cc = static_cast<std::size_t>(c);
      st.fwd_send[cc] = g.add_stream(r, "pp_send_fwd" + sfx);
      st.fwd_recv[cc] = g.add_stream(r, "pp_recv_fwd" + sfx);
      st.bwd_send[cc] = g.add_stream(r, "pp_send_bwd" + sfx);
      st.bwd_recv[cc] = g.add_stream(r, "pp_recv_bwd" + sfx);
    }
    out.streams.push_back(st);
  }
  const LabelId l_recv_f = g.intern("recv activations"), l_send_f = g.intern("send activations");
  const LabelId l_recv_b = g.intern("recv gradients"), l_send_b = g.intern("send gradients");
  // Unpaired halves of transfers: (direction, microbatch, target virtual stage) -> task.
  std::map<std::tuple<int, int, int>, TaskId> pending;
  auto pair = [&](int dir, int mb, int target_vs, TaskId t) {
    auto key = std::make_tuple(dir, mb, target_vs);
    auto it = pending.find(key);
    if (it == pending.end()) {
      pending.emplace(key, t);
    } else {
      g.add_rendezvous({it->second, t});
      pending.erase(it);
    }
  };
  for (int s = 0; s < pp; ++s) {
    const StageStreams& st = out.streams[static_cast<std::size_t>(s)];
    for (const PipeOp& op : spec.programs[static_cast<std::size_t>(s)]) {
      if (op.microbatch < 0 || op.microbatch >= m || op.chunk < 0 || op.chunk >= v) {
        throw InputError("parallel.schedule", "schedule names microbatch " +
                                                  std::to_string(op.microbatch) + " chunk " +
                                                  std::to_string(op.chunk) + " out of range");
      }
      const int vs = shape.vs_of(s, op.chunk);
      const auto chain = static_cast<std::size_t>(vs / shape.chain_length());
      const bool first = shape.first_of_chain(vs), last = shape.last_of_chain(vs);
      const int prev = first ? s : shape.rank_of(vs - 1);
      const int next = last ? s : shape.rank_of(vs + 1);
      const auto idx = static_cast<std::size_t>(op.microbatch) * static_cast<std::size_t>(v) +
                        static_cast<std::size_t>(op.chunk);
      TaskId wait = kNoId;
      PassRecord rec;
      if (op.kind == PassKind::Forward) {
        if (out.fwd[static_cast<std::size_t>(s)][idx].last != kNoId) {
          throw InputError("parallel.schedule", "schedule repeats a forward pass");
        }
        if (!first) {
          wait = g.add_task(st.fwd_recv[chain], spec.p2p_time(prev, s), Category::PpComm, l_recv_f,
                            op.microbatch, op.chunk);
          pair(0, op.microbatch, vs, wait);
        }
        rec = emitter.emit(g, st, s, op, wait);
        out.fwd[static_cast<std::size_t>(s)][idx] = rec;
        if (!last) {
          const TaskId send = g.add_task(st.fwd_send[chain], spec.p2p_time(s, next), Category::PpComm,
                                         l_send_f, op.microbatch, op.chunk);
          g.add_dependency(rec.last, send);
          pair(0, op.microbatch, vs + 1, send);
        }
      } else if (op.kind == PassKind::BackwardWeight) {
        if (out.bwd[static_cast<std::size_t>(s)][idx].last == kNoId ||
            out.wgt[static_cast<std::size_t>(s)][idx].last != kNoId) {
          throw InputError("parallel.schedule", "schedule runs a weight-gradient pass before "
                                                "its input-gradient pass, or twice, on stage " +
                                                    std::to_string(s));
        }
        rec = emitter.emit(g, st, s, op, kNoId);
        out.wgt[static_cast<std::size_t>(s)][idx] = rec;
      } else {
        if (out.fwd[static_cast<std::size_t>(s)][idx].last == kNoId ||
            out.bwd[static_cast<std::size_t>(s)][idx].last != kNoId) {
          throw InputError("parallel.schedule", "schedule runs a backward pass before its "
                                                "forward, or twice, on stage " + std::to_string(s));
        }
        if (!last) {
          wait = g.add_task(st.bwd_recv[chain], spec.p2p_time(next, s), Category::PpComm, l_recv_b,
                            op.microbatch, op.chunk);
          pair(1, op.microbatch, vs, wait);
        }
        rec = emitter.emit(g, st, s, op, wait);
        out.bwd[static_cast<std::size_t>(s)][idx] = rec;
        if (!first) {
          const TaskId send = g.add_task(st.bwd_send[chain], spec.p2p_time(s, prev), Category::PpComm,
                                         l_send_b, op.microbatch, op.chunk);
          g.add_dependency(rec.last, send);
          pair(1, op.microbatch, vs - 1, send);
        }
      }
      out.last_compute[static_cast<std::size_t>(s)] = rec.last;
    }
    std::vector<bool> split_slot(slots, false);
    for (const PipeOp& op : spec.programs[static_cast<std::size_t>(s)]) {
      if (op.kind == PassKind::BackwardInput) {
        split_slot[static_cast<std::size_t>(op.microbatch) * static_cast<std::size_t>(v) +
                   static_cast<std::size_t>(op.chunk)] = true;
      }
    }
    for (std::size_t i = 0; i < slots; ++i) {
      const bool split = split_slot[i];
      // DualPipe: a microbatch runs one of the two chunks (its direction's), never both.
      const std::size_t other = i % 2 == 0 ? i + 1 : i - 1;
      if (spec.dual && out.fwd[static_cast<std::size_t>(s)][i].last == kNoId &&
          out.fwd[static_cast<std::size_t>(s)][other].last != kNoId) {
        continue;
      }
      if (out.fwd[static_cast<std::size_t>(s)][i].last == kNoId ||
          out.bwd[static_cast<std::size_t>(s)][i].last == kNoId ||
          (split && out.wgt[static_cast<std::size_t>(s)][i].last == kNoId)) {
        throw InputError("parallel.schedule", "schedule misses a pass of microbatch " +
                                                  std::to_string(i / static_cast<std::size_t>(v)) +
                                                  " on stage " + std::to_string(s));
      }
    }
  }
  if (!pending.empty()) {
    throw InputError("parallel.schedule", "schedule leaves " + std::to_string(pending.size()) +
                                              " point-to-point transfers unmatched");
  }
  return out;
}

std::vector<TaskId> stream_predecessors(const TaskGraph& g) {
  std::vector<TaskId> prev(g.num_tasks(), kNoId);
  for (StreamId s = 0; s < g.num_streams(); ++s) {
    const auto& tasks = g.stream(s).tasks;
    for (std::size_t i = 1; i < tasks.size(); ++i) prev[tasks[i]] = tasks[i - 1];
  }
  return prev;
}

StageBreakdown analyze_stage(const TaskGraph& g, const Executor& ex,
                             const std::vector<TaskId>& prev_on_stream, StreamId compute_stream,
                             Time begin, Time step_time) {
  StageBreakdown out;
  const std::uint32_t rank = g.stream(compute_stream).rank;
  std::array<Time, 7> exposed{};
  Time bubble, compute, optimizer, contention;
  // Attributes the idle interval [a, b) that ended when task `x` (a predecessor) finished.
  auto attribute = [&](Time a, Time b, TaskId x) {
    // Each step moves to a predecessor that ended no later, so the walk ends.
    while (a < b) {
      if (x == kNoId || g.stream(g.task(x).stream).rank != rank || !is_comm(g.task(x).category)) {
        break;
      }
      const Time s = max(a, ex.start(x));
      exposed[static_cast<std::size_t>(g.task(x).category)] += b - s;
      b = s;
      if (!(a < b)) return;
      const Task& tx = g.task(x);
      const TaskId dep = ex.last_dependency(x);
      const TaskId prev = prev_on_stream[x];
      // When this rank's member of a rendezvous was ready (its dependencies and its stream),
      // it waited for the peers: that part is bubble; before it, follow the local cause.
      Time ready;
      if (dep != kNoId) ready = max(ready, ex.end(dep));
      if (prev != kNoId) ready = max(ready, ex.end(prev));
      if (tx.rendezvous != kNoId && ready < ex.start(x)) {
        bool remote = false;
        for (TaskId mbr : g.rendezvous_members(tx.rendezvous)) {
          remote = remote || g.stream(g.task(mbr).stream).rank != rank;
        }
        if (remote) {
          const Time r = max(a, ready);
          bubble += b - r;
          b = r;
          if (!(a < b)) return;
        }
      }
      if (dep != kNoId && ex.end(dep) == b) {
        x = dep;
      } else if (prev != kNoId && ex.end(prev) == b) {
        x = prev;
      } else {
        break;
      }
    }
    if (a < b) bubble += b - a;
  };
  Time cursor = begin;
  for (TaskId t : g.stream(compute_stream).tasks) {
    if (ex.end(t) <= begin) continue;
    if (ex.start(t) < begin) {
      // A kernel running when the window opens: its part inside the window is its work.
      const Time part = min(ex.end(t), step_time) - begin;
      if (g.task(t).category == Category::Optimizer) {
        optimizer += part;
      } else {
        compute += part;
      }
      cursor = begin + part;
      continue;
    }
    if (step_time < ex.end(t)) break;
    if (cursor < ex.start(t)) attribute(cursor, ex.start(t), ex.last_dependency(t));
    if (g.task(t).category == Category::Optimizer) {
      optimizer += g.task(t).duration;
    } else {
      compute += g.task(t).duration;
    }
    const Time ran = ex.end(t) - ex.start(t);
    if (g.task(t).duration < ran) contention += ran - g.task(t).duration;
    cursor = ex.end(t);
  }
  // After the last kernel: communication still running on this rank (gradient reduction
  // or parameter gathers after the optimizer) is exposed; the rest is waiting for other
  // stages to finish.
  TaskId last_task = kNoId;
  for (StreamId s = 0; s < g.num_streams(); ++s) {
    if (g.stream(s).rank != rank || g.stream(s).tasks.empty()) continue;
    const TaskId t = g.stream(s).tasks.back();
    if (last_task == kNoId || ex.end(t) > ex.end(last_task)) last_task = t;
  }
  if (last_task != kNoId && cursor < ex.end(last_task) && ex.end(last_task) <= step_time) {
    attribute(cursor, ex.end(last_task), last_task);
    cursor = ex.end(last_task);
  }
  if (cursor < step_time) bubble += step_time - cursor;
  out.compute = compute.seconds();
  out.optimizer = optimizer.seconds();
  out.contention = contention.seconds();
  for (std::size_t i = 0; i < exposed.size(); ++i) out.exposed[i] = exposed[i].seconds();
  out.bubble = bubble.seconds();
  out.step = (step_time - begin).seconds();
  return out;
}

PeakResult peak_in_flight(const std::vector<Time>& alloc, const std::vector<Time>& free,
                          const std::vector<double>& bytes) {
  struct Ev {
    Time t;
    int kind;  // 0 = free, 1 = alloc: frees first at equal times
    std::size_t i;
  };
  std::vector<Ev> evs;
  evs.reserve(alloc.size() * 2);
  for (std::size_t i = 0; i < alloc.size(); ++i) {
    evs.push_back({alloc[i], 1, i});
    evs.push_back({free[i], 0, i});
  }
  std::sort(evs.begin(), evs.end(), [](const Ev& a, const Ev& b) {
    return std::tie(a.t, a.kind, a.i) < std::tie(b.t, b.kind, b.i);
  });
  PeakResult r;
  double cur = 0;
  int count = 0;
  for (const Ev& e : evs) {
    if (e.kind == 1) {
      cur += bytes[e.i];
      ++count;
    } else {
      cur -= bytes[e.i];
      --count;
    }
    r.peak_bytes = std::max(r.peak_bytes, cur);
    r.peak_count = std::max(r.peak_count, count);
  }
  return r;
}

}  // namespace trainsim::workload
