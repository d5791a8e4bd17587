// `trainsim collective`: see cmd_collective.hpp. Sizes follow nccl-tests (doc/PERFORMANCE.md,
// hardware.md §3.1): all_reduce the buffer, all_gather/reduce_scatter the total, all_to_all
// the bytes each rank sends, sendrecv the bytes each rank sends to the next rank (every rank
// sends at once, as nccl-tests' sendrecv does). algbw = size / time, busbw = algbw x
// net::busbw_factor.
#include "cli/cmd_collective.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "config/scenario.hpp"
#include "config/units.hpp"
#include "core/error.hpp"
#include "core/simulator.hpp"
#include "hw/gpu.hpp"
#include "hw/topology.hpp"
#include "net/collective.hpp"
#include "net/flow_network.hpp"
#include "net/plan_runner.hpp"

namespace trainsim::cli {

namespace {

/// Most flows one --flows collective may start (see CollectiveCommand::run).
constexpr std::uint64_t kMaxFlows = 8'000'000;

struct Row {
  std::uint64_t bytes = 0;
  double time_s = 0;
  double algbw = 0;
  double busbw = 0;
  std::string algorithm;
  std::string protocol;
};

net::CollectiveOp parse_op(const std::string& s) {
  if (s == "all_reduce") return net::CollectiveOp::AllReduce;
  if (s == "all_gather") return net::CollectiveOp::AllGather;
  if (s == "reduce_scatter") return net::CollectiveOp::ReduceScatter;
  if (s == "all_to_all") return net::CollectiveOp::AllToAll;
  if (s == "sendrecv") return net::CollectiveOp::SendRecv;
  throw InputError("--op", "--op: unknown collective \"" + s +
                               "\" (all_reduce, all_gather, reduce_scatter, all_to_all, sendrecv)");
}

std::uint64_t parse_size(const std::string& text) {
  std::string t = text;
  // Accept "1KiB" as well as "1 KiB": insert the space parse_bytes expects.
  const auto unit = t.find_first_not_of("0123456789.");
  if (unit != std::string::npos && unit > 0 && t[unit] != ' ') t.insert(unit, " ");
  if (unit == std::string::npos) t += " B";
  const auto v = config::parse_bytes(t);
  if (!v || !(*v >= 1.0) || *v > 1e15 || std::floor(*v) != *v) {
    throw InputError("--sizes", "--sizes: cannot read \"" + text +
                                    "\" as a whole number of bytes >= 1 (e.g. 1KiB, 64MiB, 16GiB)");
  }
  return static_cast<std::uint64_t>(*v);
}

std::vector<std::uint64_t> parse_sizes(const std::string& spec, double factor) {
  if (!(factor > 1.0) || !std::isfinite(factor)) {
    throw InputError("--factor", "--factor must be > 1 (got " + std::to_string(factor) + ")");
  }
  const auto colon = spec.find(':');
  const std::uint64_t lo = parse_size(spec.substr(0, colon));
  const std::uint64_t hi = colon == std::string::npos ? lo : parse_size(spec.substr(colon + 1));
  if (hi < lo) throw InputError("--sizes", "--sizes: the last size is below the first");
  std::vector<std::uint64_t> out;
  for (double s = static_cast<double>(lo); s <= static_cast<double>(hi) * (1 + 1e-12);
       s *= factor) {
    out.push_back(static_cast<std::uint64_t>(std::llround(s)));
    if (out.size() > 200) throw InputError("--sizes", "--sizes: more than 200 sizes");
  }
  return out;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace

std::unique_ptr<CollectiveCommand> add_collective_command(CLI::App& app) {
  auto cmd = std::make_unique<CollectiveCommand>();
  CLI::App* sub = app.add_subcommand(
      "collective", "Sweep one collective over message sizes, like nccl-tests");
  cmd->app = sub;
  sub->add_option("--op", cmd->op,
                  "all_reduce | all_gather | reduce_scatter | all_to_all | sendrecv")
      ->required();
  sub->add_option("--gpus", cmd->gpus, "GPUs (ranks 0..N-1 of the topology)")->required();
  sub->add_option("--topology", cmd->topology, "Topology file (topologies/*.toml)")->required();
  sub->add_option("--sizes", cmd->sizes, "MIN:MAX sizes in bytes, e.g. 1KiB:16GiB (or one size)");
  sub->add_option("--factor", cmd->factor, "Size multiplier between rows (nccl-tests -f)");
  sub->add_flag("--json", cmd->json, "Print JSON: rows of size_bytes, time_s, algbw_gbps, ...");
  sub->add_flag("--flows", cmd->flows,
                "Run each collective's flows on the topology graph with max-min link sharing "
                "(contention between channels and ECMP collisions) instead of the alpha-beta "
                "model alone");
  return cmd;
}

int CollectiveCommand::run(std::ostream& out) const {
  const net::CollectiveOp op_kind = parse_op(op);
  const std::vector<std::uint64_t> size_list = parse_sizes(sizes, factor);
  const hw::TopologySpec spec = config::load_topology(topology);
  if (gpus < 1 || gpus > (1 << 24)) {
    throw InputError("--gpus", "--gpus must be in [1, 16777216] (got " + std::to_string(gpus) + ")");
  }
  if (gpus < 2) {
    // One rank communicates with nobody: NCCL's one-rank collective is a local copy (or
    // nothing, in place), and busbw's factor is 0, so there is no communication to report.
    throw InputError("--gpus", "--gpus: " + std::string(op) +
                                   " needs at least 2 GPUs (one rank has no peer to "
                                   "communicate with)");
  }
  int cluster = hw::whole_node_gpus(spec, gpus);  // the last node may be partly used
  if (spec.kind == "torus") {
    // A torus exists only whole: build all of it and run on its first `gpus` GPUs.
    std::int64_t nodes = 1;
    for (const int d : spec.dims) nodes *= d;
    if (gpus > nodes * spec.gpus_per_node) {
      throw InputError("--gpus", "--gpus " + std::to_string(gpus) + " is more than the torus of " +
                                     topology + " has (" + std::to_string(nodes) + " nodes x " +
                                     std::to_string(spec.gpus_per_node) + " GPUs)");
    }
    cluster = static_cast<int>(nodes * spec.gpus_per_node);
  }
  const hw::Topology topo(spec, cluster);
  const hw::GpuSpec& gpu = *hw::find_builtin_gpu(spec.gpu);
  const net::AlphaBetaModel model(topo, gpu);
  std::vector<int> group(static_cast<std::size_t>(gpus));
  for (int i = 0; i < gpus; ++i) group[static_cast<std::size_t>(i)] = i;

  if (flows && op_kind == net::CollectiveOp::AllToAll) {
    // Pairwise all_to_all runs n(n-1) flows, each ~200 bytes while it runs (4,096 GPUs:
    // 16.8M flows, ~50 s and ~8 GB here); refuse before building a plan that would not fit.
    const auto count = static_cast<std::uint64_t>(gpus) * static_cast<std::uint64_t>(gpus - 1);
    if (count > kMaxFlows) {
      throw InputError("--flows", "--flows: " + std::to_string(count) + " flows for one " + op +
                                      " over " + std::to_string(gpus) + " GPUs (limit " +
                                      std::to_string(kMaxFlows) +
                                      "); use fewer --gpus or the alpha-beta model");
    }
  }
  std::vector<Row> rows;
  std::uint64_t events = 0, recomputations = 0;
  for (const std::uint64_t bytes : size_list) {
    // The collectives to price: one, or for sendrecv one transfer per rank to the next. Only
    // --flows expands them into flows (a pairwise all_to_all has n(n-1) of them).
    std::vector<std::vector<int>> groups;
    if (op_kind == net::CollectiveOp::SendRecv) {
      for (int i = 0; i < gpus; ++i) groups.push_back({i, (i + 1) % gpus});
    } else {
      groups.push_back(group);
    }
    std::vector<net::CollectiveCost> costs;
    std::vector<net::CollectivePlan> plans;
    for (const auto& g : groups) {
      if (flows) {
        plans.push_back(model.plan(op_kind, bytes, g));
        costs.push_back(plans.back().cost);
      } else {
        costs.push_back(model.cost(op_kind, bytes, g));
      }
    }
    Row row;
    row.bytes = bytes;
    row.algorithm = net::algorithm_name(costs.front().algorithm);
    row.protocol = net::protocol_name(costs.front().protocol);
    for (const auto& c : costs) row.time_s = std::max(row.time_s, c.time.seconds());
    if (flows) {
      Simulator sim;
      net::FlowNetwork network(sim, net::link_capacities(topo));
      Time end;
      for (const auto& p : plans) {
        net::run_plan(network, topo, p, [&end](Simulator& s) { end = max(end, s.now()); });
      }
      sim.run();
      row.time_s = end.seconds();
      events += sim.events_processed();
      recomputations += network.recomputations();
    }
    if (row.time_s > 0) {
      row.algbw = static_cast<double>(bytes) / row.time_s;
      row.busbw = row.algbw * net::busbw_factor(op_kind, op_kind == net::CollectiveOp::SendRecv
                                                             ? 2
                                                             : gpus);
    }
    rows.push_back(row);
  }

  const std::string model_name = flows ? "flows (max-min on the topology graph)"
                                       : "alpha-beta (NCCL tuning model)";
  if (json) {
    nlohmann::ordered_json j;
    j["op"] = op;
    j["gpus"] = gpus;
    j["nodes"] = (gpus + spec.gpus_per_node - 1) / spec.gpus_per_node;
    j["topology"] = spec.name;
    j["gpu"] = gpu.display_name;
    j["model"] = flows ? "flows" : "alpha_beta";
    j["rows"] = nlohmann::ordered_json::array();
    for (const Row& r : rows) {
      nlohmann::ordered_json o;
      o["size_bytes"] = r.bytes;
      o["time_s"] = r.time_s;
      o["algbw_gbps"] = r.algbw / 1e9;
      o["busbw_gbps"] = r.busbw / 1e9;
      o["algorithm"] = r.algorithm;
      o["protocol"] = r.protocol;
      j["rows"].push_back(o);
    }
    if (flows) {
      j["events"] = events;
      j["flow_recomputations"] = recomputations;
    }
    out << j.dump(2) << "\n";
    return 0;
  }
  out << "# trainsim collective: " << op << ", " << gpus << " x " << gpu.display_name << " on "
      << spec.name << "\n";
  out << "# model: " << model_name << "; algbw = size / time, busbw = algbw x "
      << fmt("%.4g", op_kind == net::CollectiveOp::SendRecv ? 1.0
                                                             : net::busbw_factor(op_kind, gpus))
      << " (nccl-tests)\n";
  out << "#\n#          size(B)      time(us)  algbw(GB/s)  busbw(GB/s)  algorithm\n";
  for (const Row& r : rows) {
    char line[160];
    std::snprintf(line, sizeof line, "%18llu  %12.2f  %11.2f  %11.2f  %s/%s\n",
                  static_cast<unsigned long long>(r.bytes), r.time_s * 1e6, r.algbw / 1e9,
                  r.busbw / 1e9, r.algorithm.c_str(), r.protocol.c_str());
    out << line;
  }
  if (flows) {
    out << "# " << events << " events, " << recomputations << " flow recomputations\n";
  }
  return 0;
}

}  // namespace trainsim::cli
