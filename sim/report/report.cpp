#include "report/report.hpp"

#include <algorithm>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>

#include "core/error.hpp"
#include "core/hash.hpp"

namespace trainsim::report {

using nlohmann::ordered_json;

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

ordered_json memory_json(const workload::MemoryBreakdown& m) {
  ordered_json j;
  j["weights"] = m.weights / kGiB;
  j["gradients"] = m.gradients / kGiB;
  j["optimizer"] = m.optimizer / kGiB;
  j["activations"] = m.activations / kGiB;
  j["total"] = m.total / kGiB;
  j["capacity"] = m.capacity / kGiB;
  return j;
}

ordered_json breakdown_json(const workload::StageBreakdown& b) {
  ordered_json j;
  j["compute"] = b.compute;
  j["exposed_tp_comm"] = b.exposed_of(Category::TpComm);
  j["exposed_dp_comm"] = b.exposed_of(Category::DpComm);
  j["exposed_pp_comm"] = b.exposed_of(Category::PpComm);
  j["exposed_ep_comm"] = b.exposed_of(Category::EpComm);
  j["exposed_cp_comm"] = b.exposed_of(Category::CpComm);
  j["bubble"] = b.bubble;
  j["optimizer"] = b.optimizer;
  j["sm_contention"] = b.contention;
  return j;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

/// The inputs' hashes and the measured profile's provenance (core/hash.hpp).
ordered_json inputs_json(const workload::Scenario& sc) {
  ordered_json in;
  in["scenario_fnv1a64"] = hex64(sc.inputs.scenario_fnv1a64);
  in["topology"] = sc.inputs.topology_file;
  in["topology_fnv1a64"] = hex64(sc.inputs.topology_fnv1a64);
  if (sc.profile) {
    const auto& pv = sc.profile->provenance;
    ordered_json p;
    p["file"] = sc.inputs.profile_file;
    p["fnv1a64"] = hex64(sc.inputs.profile_fnv1a64);
    p["gpu_name"] = pv.gpu_name;
    p["host"] = pv.host;
    p["date"] = pv.date;
    p["driver"] = pv.driver;
    p["cuda_runtime"] = pv.cuda_runtime;
    p["cublas"] = pv.cublas;
    p["nccl"] = pv.nccl;
    p["command"] = pv.command;
    in["profile"] = p;
  }
  return in;
}

ordered_json ops_object(const workload::StepResult& r, int stage, std::size_t top) {
  const auto ops = op_times(r, stage);
  const double step = r.step_time.seconds();
  const std::size_t n = top == 0 ? ops.size() : std::min(top, ops.size());
  ordered_json rows = ordered_json::array();
  for (std::size_t i = 0; i < n; ++i) {
    ordered_json o;
    o["op"] = ops[i].op;
    o["category"] = std::string(category_name(ops[i].category));
    o["count"] = ops[i].count;
    o["time_s"] = ops[i].busy.seconds();
    o["share_of_step"] = step > 0 ? ops[i].busy.seconds() / step : 0.0;
    rows.push_back(std::move(o));
  }
  ordered_json j;
  j["stage"] = stage;
  j["step_time_s"] = step;
  j["ops"] = std::move(rows);
  return j;
}


}  // namespace

std::string to_json(const workload::Scenario& sc, const workload::StepResult& r,
                    std::optional<OpsRequest> ops) {
  ordered_json j;
  j["trainsim_version"] = TRAINSIM_VERSION;
  if (sc.inputs.scenario_fnv1a64 != 0) j["inputs"] = inputs_json(sc);
  j["scenario"] = sc.name;
  j["model"] = sc.model.name;
  if (sc.model.mtp_layers > 0) j["mtp_layers"] = sc.model.mtp_layers;
  j["gpu"] = sc.gpu.display_name;
  j["gpus"] = sc.gpus;
  j["step_time_s"] = r.step_time.seconds();
  j["step_time_ps"] = r.step_time.count_ps();
  j["tokens_per_s"] = r.tokens_per_s;
  j["model_tflops_per_gpu"] = r.model_tflops_per_gpu;
  j["hardware_tflops_per_gpu"] = r.hardware_tflops_per_gpu;
  j["mfu"] = r.mfu;
  j["hfu"] = r.hfu;
  j["bubble_fraction"] = r.bubble_fraction;
  j["memory_gib"] = memory_json(r.memory);
  j["fits_in_memory"] = r.memory.fits;
  j["breakdown_s"] = breakdown_json(r.breakdown);
  if (r.time_to_train_days) j["time_to_train_days"] = *r.time_to_train_days;
  if (r.cost_usd) j["cost_usd"] = *r.cost_usd;
  if (r.moe) {
    ordered_json moe;
    moe["moe_layers"] = r.moe->moe_layers;
    moe["routing"] = model::routing_name(sc.model.moe.routing);
    moe["imbalance_max_over_mean_mean"] = r.moe->imbalance_mean;
    moe["imbalance_max_over_mean_worst"] = r.moe->imbalance_max;
    moe["a2a_dispatch_bytes_per_rank_per_layer"] = r.moe->a2a_dispatch_bytes_per_layer;
    moe["a2a_combine_bytes_per_rank_per_layer"] = r.moe->a2a_combine_bytes_per_layer;
    moe["dropped_fraction"] = r.moe->dropped_fraction;
    j["moe"] = moe;
  }
  const auto& L = sc.layout;
  ordered_json lay;
  lay["tp"] = L.tp;
  lay["pp"] = L.pp;
  lay["dp"] = L.dp;
  lay["ep"] = L.ep;
  lay["etp"] = L.expert_tp();
  lay["cp"] = L.cp;
  if (L.cp > 1) lay["cp_comm"] = L.cp_comm == parallel::Layout::CpComm::P2P ? "p2p" : "all_gather";
  lay["sequence_parallel"] = L.sequence_parallel;
  lay["virtual_stages"] = L.virtual_stages;
  if (L.first_stage_layers > 0) lay["first_stage_layers"] = L.first_stage_layers;
  if (L.last_stage_layers > 0) lay["last_stage_layers"] = L.last_stage_layers;
  lay["schedule"] = std::string(parallel::schedule_name(L.schedule));
  lay["zero"] = L.zero;
  lay["micro_batch"] = sc.training.micro_batch;
  lay["global_batch"] = sc.training.global_batch;
  lay["microbatches"] = r.microbatches;
  lay["recompute"] = model::recompute_name(sc.training.recompute);
  if (sc.training.lora.enabled()) lay["lora_rank"] = sc.training.lora.rank;
  j["layout"] = lay;
  ordered_json stages = ordered_json::array();
  for (const auto& s : r.stages) {
    ordered_json st;
    st["stage"] = s.stage;
    st["layers"] = s.layers;
    st["params"] = s.params;
    st["peak_inflight_microbatches"] = s.peak_inflight;
    st["weight_versions"] = s.weight_versions;
    st["gradient_staleness"] = s.staleness;
    st["memory_gib"] = memory_json(s.memory);
    st["breakdown_s"] = breakdown_json(s.breakdown);
    stages.push_back(st);
  }
  j["stages"] = stages;
  ordered_json sim;
  sim["fidelity"] = workload::fidelity_name(sc.fidelity);
  sim["steps"] = r.steps_simulated;
  sim["tasks"] = r.tasks;
  sim["events"] = r.events;
  if (sc.fidelity == workload::Fidelity::Full) {
    sim["flows"] = r.flows;
    sim["flow_recomputations"] = r.flow_recomputations;
    if (r.slowest_rank) {
      ordered_json slow;
      slow["gpu"] = r.slowest_rank->gpu;
      slow["stage"] = r.slowest_rank_stage;
      slow["speed"] = r.slowest_rank->speed;
      slow["nic_bandwidth"] = r.slowest_rank->nic_bandwidth;
      slow["nvlink_bandwidth"] = r.slowest_rank->nvlink_bandwidth;
      sim["slowest_rank"] = slow;
    }
  }
  j["simulation"] = sim;
  if (r.pricing) {
    ordered_json pr;
    pr["profile"] = r.pricing->profile_path;
    auto count = [](const cost::SourceCount& c) {
      ordered_json o;
      o["profile"] = c.profile;
      o["builtin"] = c.builtin;
      return o;
    };
    pr["gemm"] = count(r.pricing->gemm);
    pr["attention"] = count(r.pricing->attention);
    pr["memory_bound"] = count(r.pricing->memory_bound);
    pr["collective"] = count(r.pricing->collective);
    j["pricing"] = pr;
  }
  if (ops) j["ops"] = ops_object(r, ops->stage, ops->top);
  return j.dump(2, ' ', false, ordered_json::error_handler_t::replace) + "\n";
}

void print_table(std::ostream& os, const workload::Scenario& sc, const workload::StepResult& r) {
  const auto& L = sc.layout;
  os << "trainsim " << TRAINSIM_VERSION << " — " << sc.name << "\n";
  os << "  model      " << sc.model.name << ": " << fmt("%.1f", sc.model.total_params() / 1e9)
     << "B params, " << sc.model.layers << " layers"
     << (sc.model.mtp_layers > 0 ? " + " + std::to_string(sc.model.mtp_layers) + " MTP" : "")
     << ", h=" << sc.model.hidden << ", seq=" << sc.model.seq_len << "\n";
  os << "  cluster    " << sc.gpus << " x " << sc.gpu.display_name << " (" << sc.topology.name
     << ")\n";
  if (sc.inputs.scenario_fnv1a64 != 0) {
    os << "  inputs     scenario fnv1a64 " << hex64(sc.inputs.scenario_fnv1a64) << ", topology "
       << sc.inputs.topology_file << " fnv1a64 " << hex64(sc.inputs.topology_fnv1a64) << "\n";
  }
  if (sc.profile) {
    const auto& pv = sc.profile->provenance;
    // Provenance is optional in a profile: print the parts it has.
    std::string from;
    auto part = [&](const std::string& label, const std::string& v) {
      if (!v.empty()) from += (from.empty() ? "" : ", ") + label + v;
    };
    from = pv.gpu_name;
    if (!pv.host.empty()) from += (from.empty() ? "on " : " on ") + pv.host;
    part("", pv.date);
    part("driver ", pv.driver);
    part("CUDA ", pv.cuda_runtime);
    os << "  profile    " << sc.inputs.profile_file << " fnv1a64 "
       << hex64(sc.inputs.profile_fnv1a64) << (from.empty() ? "" : ": " + from) << "\n";
  }
  os << "  layout     TP " << L.tp << (L.sequence_parallel ? "+SP" : "") << ", PP " << L.pp
     << ", DP " << L.dp;
  if (L.ep > 1) os << ", EP " << L.ep;
  if (L.expert_tp() != L.tp) os << ", ETP " << L.expert_tp();
  if (L.cp > 1) {
    os << ", CP " << L.cp << (L.cp_comm == parallel::Layout::CpComm::P2P ? " (ring)" : " (all-gather)");
  }
  os << ", schedule " << parallel::schedule_name(L.schedule);
  if (L.virtual_stages > 1) os << " (v=" << L.virtual_stages << ")";
  if (L.first_stage_layers > 0) os << ", first stage " << L.first_stage_layers << " layers";
  if (L.last_stage_layers > 0) os << ", last stage " << L.last_stage_layers << " layers";
  os << ", ZeRO " << L.zero << ", recompute " << model::recompute_name(sc.training.recompute)
     << ", microbatch " << sc.training.micro_batch << " x " << r.microbatches << " per pipeline";
  if (sc.training.lora.enabled()) os << ", LoRA r=" << sc.training.lora.rank << " (frozen base)";
  os << "\n\n";
  os << "  step time              " << fmt("%10.3f s", r.step_time.seconds()) << "\n";
  os << "  throughput             " << fmt("%10.0f tokens/s", r.tokens_per_s) << "\n";
  os << "  model TFLOP/s per GPU  " << fmt("%10.1f", r.model_tflops_per_gpu) << "\n";
  os << "  hw TFLOP/s per GPU     " << fmt("%10.1f", r.hardware_tflops_per_gpu) << "\n";
  os << "  MFU / HFU              " << fmt("%9.1f%%", 100 * r.mfu) << " / "
     << fmt("%.1f%%", 100 * r.hfu) << "\n";
  os << "  bubble fraction        " << fmt("%9.1f%%", 100 * r.bubble_fraction) << "\n";
  if (r.moe) {
    os << "  MoE tokens per EP rank " << fmt("%10.3f", r.moe->imbalance_mean)
       << " max/mean (mean over " << r.moe->moe_layers << " MoE layers, worst "
       << fmt("%.3f", r.moe->imbalance_max) << ", " << model::routing_name(sc.model.moe.routing)
       << " routing)\n";
    const double mib = 1024.0 * 1024.0;
    os << "  EP all-to-all          " << fmt("%10.1f MiB", r.moe->a2a_dispatch_bytes_per_layer / mib)
       << " dispatch + " << fmt("%.1f MiB", r.moe->a2a_combine_bytes_per_layer / mib)
       << " combine to other EP ranks per rank per MoE layer (forward pass), "
       << fmt("%.2f%%", 100 * r.moe->dropped_fraction) << " dropped\n";
  }
  if (r.steps_simulated > 1) {
    os << "  steady state           step " << r.measured_step << " of " << r.steps_simulated
       << " simulated\n";
  }
  std::string versions, staleness;
  bool async = false;
  for (const auto& s : r.stages) {
    async = async || s.weight_versions > 1 || s.staleness > 0;
    if (!versions.empty()) versions.push_back(' ');
    versions.append(std::to_string(s.weight_versions));
    if (!staleness.empty()) staleness.push_back(' ');
    staleness.append(std::to_string(s.staleness));
  }
  if (async) {
    os << "  weight versions        " << versions << " (per stage)\n";
    os << "  gradient staleness     " << staleness << " updates (per stage)\n";
  }
  if (r.time_to_train_days) {
    os << "  time to train          " << fmt("%10.1f days", *r.time_to_train_days);
    if (r.cost_usd) os << fmt("  (%.3g USD)", *r.cost_usd);
    os << "\n";
  }
  const auto& m = r.memory;
  os << "\n  memory per GPU (GiB, fullest stage)\n";
  os << "    weights     " << fmt("%8.2f", m.weights / kGiB) << "\n";
  os << "    gradients   " << fmt("%8.2f", m.gradients / kGiB) << "\n";
  os << "    optimizer   " << fmt("%8.2f", m.optimizer / kGiB) << "\n";
  os << "    activations " << fmt("%8.2f", m.activations / kGiB) << "\n";
  os << "    total       " << fmt("%8.2f", m.total / kGiB) << " of "
     << fmt("%.2f", m.capacity / kGiB);
  if (m.fits) {
    os << "  (fits, " << fmt("%.2f", (m.capacity - m.total) / kGiB) << " GiB free)\n";
  } else {
    os << "  (DOES NOT FIT: " << fmt("%.3f", (m.total - m.capacity) / kGiB) << " GiB over)\n";
  }
  const auto& b = r.breakdown;
  const double step = r.step_time.seconds();
  auto line = [&](const char* name, double v) {
    os << "    " << name << fmt("%10.3f s", v) << fmt("  %5.1f%%", 100 * v / step) << "\n";
  };
  os << "\n  where the time went (mean over pipeline stages)\n";
  line("compute          ", b.compute);
  line("exposed TP comm  ", b.exposed_of(Category::TpComm));
  line("exposed DP comm  ", b.exposed_of(Category::DpComm));
  line("exposed PP comm  ", b.exposed_of(Category::PpComm));
  line("exposed EP comm  ", b.exposed_of(Category::EpComm));
  line("exposed CP comm  ", b.exposed_of(Category::CpComm));
  line("pipeline bubble  ", b.bubble);
  line("optimizer        ", b.optimizer);
  line("SM contention    ", b.contention);
  os << "\n  simulated " << r.tasks << " tasks, " << r.events << " events (fidelity "
     << workload::fidelity_name(sc.fidelity) << ")\n";
  if (sc.fidelity == workload::Fidelity::Full) {
    os << "  network: " << r.flows << " flows, " << r.flow_recomputations
       << " max-min recomputations\n";
    if (r.slowest_rank) {
      os << "  slowest rank: GPU " << r.slowest_rank->gpu << " (stage " << r.slowest_rank_stage
         << "): speed x" << r.slowest_rank->speed << ", NIC x" << r.slowest_rank->nic_bandwidth
         << ", NVLink x" << r.slowest_rank->nvlink_bandwidth << "\n";
    }
  }
  if (r.pricing) {
    const auto& p = *r.pricing;
    auto part = [&](const char* name, const cost::SourceCount& c) {
      os << "    " << name << c.profile << " from the profile, " << c.builtin
         << " built-in (roofline / datasheet)\n";
    };
    os << "  priced by measured profile " << p.profile_path << " (distinct cost queries):\n";
    part("GEMMs         ", p.gemm);
    part("attention     ", p.attention);
    part("memory-bound  ", p.memory_bound);
    part("collectives   ", p.collective);
  }
}

void print_comparison(std::ostream& os, const workload::Scenario& sc,
                      const std::vector<workload::ScheduleRun>& runs) {
  const auto& L = sc.layout;
  os << "trainsim " << TRAINSIM_VERSION << " — compare-schedules: " << sc.name << "\n";
  os << "  " << sc.model.name << " on " << sc.gpus << " x " << sc.gpu.display_name << ", TP "
     << L.tp << (L.sequence_parallel ? "+SP" : "") << ", PP " << L.pp << ", DP " << L.dp;
  if (L.ep > 1) os << ", EP " << L.ep;
  if (L.expert_tp() != L.tp) os << ", ETP " << L.expert_tp();
  if (L.cp > 1) os << ", CP " << L.cp;
  os << ", global batch " << sc.training.global_batch << ", micro batch "
     << sc.training.micro_batch << "\n\n";
  double base = 0;
  for (const auto& r : runs) {
    if (r.schedule == parallel::ScheduleKind::OneFOneB && r.result) {
      base = r.result->step_time.seconds();
    }
  }
  char line[256];
  std::snprintf(line, sizeof line, "  %-28s %10s %8s %9s %10s %8s  %s\n", "schedule", "step (s)",
                "bubble", "vs 1F1B", "mem (GiB)", "fits", "peak activations per stage (GiB)");
  os << line;
  for (const auto& r : runs) {
    if (!r.result) {
      std::snprintf(line, sizeof line, "  %-28s %s\n", r.name.c_str(),
                    ("skipped: " + r.skipped).c_str());
      os << line;
      continue;
    }
    const auto& res = *r.result;
    const double step = res.step_time.seconds();
    std::string acts;
    for (const auto& s : res.stages) {
      if (!acts.empty()) acts.push_back(' ');
      acts.append(fmt("%.1f", s.memory.activations / kGiB));
    }
    std::snprintf(line, sizeof line, "  %-28s %10.3f %7.1f%% %8.3fx %10.2f %8s  %s\n",
                  r.name.c_str(), step, 100 * res.bubble_fraction,
                  base > 0 ? base / step : 0.0, res.memory.total / kGiB,
                  res.memory.fits ? "yes" : "NO", acts.c_str());
    os << line;
  }
  os << "\n  vs 1F1B = throughput relative to 1F1B. Steady-state rows report the 4th of several "
        "simulated steps.\n";
}

std::vector<OpTime> op_times(const workload::StepResult& r, int stage) {
  if (r.graph == nullptr || stage < 0 || stage >= static_cast<int>(r.stages.size())) {
    throw InputError("--ops-stage", "--ops-stage: stage " + std::to_string(stage) +
                                        " is not a pipeline stage (0.." +
                                        std::to_string(static_cast<int>(r.stages.size()) - 1) +
                                        ")");
  }
  const TaskGraph& g = *r.graph;
  // The stage's own step (its breakdown's window), not the whole pipeline's: stages end a
  // step at different times.
  const auto& sr = r.stages[static_cast<std::size_t>(stage)];
  std::map<std::pair<LabelId, Category>, OpTime> by_op;
  for (TaskId t = 0; t < g.num_tasks(); ++t) {
    const Task& task = g.task(t);
    if (g.stream(task.stream).rank != static_cast<std::uint32_t>(stage)) continue;
    const Time start = std::max(r.task_start[t], sr.window_begin);
    const Time end = std::min(r.task_end[t], sr.window_end);
    if (end < start || (end == start && r.task_end[t] > r.task_start[t])) continue;
    OpTime& o = by_op[{task.label, task.category}];
    if (o.count == 0) {
      o.op = std::string(g.label(task.label));
      o.category = task.category;
    }
    ++o.count;
    o.busy += end - start;
  }
  std::vector<OpTime> ops;
  ops.reserve(by_op.size());
  for (auto& [key, o] : by_op) ops.push_back(std::move(o));
  std::sort(ops.begin(), ops.end(), [](const OpTime& a, const OpTime& b) {
    return a.busy != b.busy ? a.busy > b.busy : a.op < b.op;
  });
  return ops;
}

void print_ops(std::ostream& os, const workload::StepResult& r, int stage, std::size_t top) {
  const auto ops = op_times(r, stage);
  const double step = r.step_time.seconds();
  const std::size_t n = top == 0 ? ops.size() : std::min(top, ops.size());
  // The name column fits the longest name shown (at least 34 characters).
  std::size_t width = 34;
  for (std::size_t i = 0; i < n; ++i) width = std::max(width, ops[i].op.size());
  os << "\n  ops of stage " << stage << " (busy time in the step; communication overlaps compute)\n";
  os << "    " << std::string("op").append(width - 2, ' ')
     << " kind        count    time (ms)  % of step\n";
  for (std::size_t i = 0; i < n; ++i) {
    const auto& o = ops[i];
    char cols[96];
    std::snprintf(cols, sizeof cols, " %-10s %6d %12.3f %9.1f%%\n",
                  std::string(category_name(o.category)).c_str(), o.count,
                  o.busy.seconds() * 1e3, step > 0 ? 100 * o.busy.seconds() / step : 0.0);
    os << "    " << o.op << std::string(width - o.op.size(), ' ') << cols;
  }
  if (n < ops.size()) os << "    (" << ops.size() - n << " more ops)\n";
}


std::string ops_json(const workload::StepResult& r, int stage, std::size_t top) {
  return ops_object(r, stage, top).dump(2, ' ', false, ordered_json::error_handler_t::replace) +
         "\n";
}

std::string to_chrome_trace(const workload::Scenario& sc, const workload::StepResult& r) {
  // Written event by event into one string, the same bytes as dumping one JSON document:
  // a document of every task held ~10x the file's size (4.3 GB for the 1T scenario's 392 MB).
  const TaskGraph& g = *r.graph;
  std::string out;
  out.reserve(static_cast<std::size_t>(g.num_tasks()) * 150 + 4096);
  out += "{\"traceEvents\":[";
  bool first = true;
  const auto add = [&](const ordered_json& e) {
    if (!first) out += ',';
    first = false;
    out += e.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
  };
  std::vector<bool> named(static_cast<std::size_t>(sc.layout.pp), false);
  for (StreamId s = 0; s < g.num_streams(); ++s) {
    const auto& st = g.stream(s);
    if (!named[st.rank]) {
      named[st.rank] = true;
      add({{"name", "process_name"}, {"ph", "M"}, {"pid", st.rank},
           {"args", {{"name", "stage " + std::to_string(st.rank)}}}});
      add({{"name", "process_sort_index"}, {"ph", "M"}, {"pid", st.rank},
           {"args", {{"sort_index", st.rank}}}});
    }
    add({{"name", "thread_name"}, {"ph", "M"}, {"pid", st.rank}, {"tid", s},
         {"args", {{"name", g.label(st.name)}}}});
  }
  for (TaskId t = 0; t < g.num_tasks(); ++t) {
    const Task& task = g.task(t);
    const Time start = r.task_start[t], end = r.task_end[t];
    ordered_json e;
    e["name"] = g.label(task.label);
    e["cat"] = std::string(category_name(task.category));
    e["ph"] = "X";
    e["ts"] = static_cast<double>(start.count_ps()) / 1e6;
    e["dur"] = static_cast<double>((end - start).count_ps()) / 1e6;
    e["pid"] = g.stream(task.stream).rank;
    e["tid"] = task.stream;
    if (task.microbatch >= 0) {
      e["args"] = {{"microbatch", task.microbatch}, {"chunk", task.chunk}};
    }
    add(e);
  }
  // With several steps simulated (steady state, asynchronous schedules), mark the step the
  // report's metrics describe: two global instant events at the ends of its window.
  if (r.steps_simulated > 1) {
    const std::string step = "measured step " + std::to_string(r.measured_step) + " of " +
                             std::to_string(r.steps_simulated);
    for (const auto& [what, at] : {std::pair{"begins", r.window_begin},
                                   std::pair{"ends", r.window_end}}) {
      add({{"name", step + " " + what},
           {"cat", "step"},
           {"ph", "i"},
           {"s", "g"},
           {"ts", static_cast<double>(at.count_ps()) / 1e6},
           {"pid", 0},
           {"tid", 0}});
    }
  }
  const ordered_json other = {{"trainsim_version", TRAINSIM_VERSION},
                              {"scenario", sc.name},
                              {"steps_simulated", r.steps_simulated},
                              {"measured_step", r.measured_step},
                              {"measured_window_us",
                               {static_cast<double>(r.window_begin.count_ps()) / 1e6,
                                static_cast<double>(r.window_end.count_ps()) / 1e6}}};
  out += "],\"displayTimeUnit\":\"ms\",\"otherData\":";
  out += other.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
  out += "}\n";
  return out;
}

}  // namespace trainsim::report
