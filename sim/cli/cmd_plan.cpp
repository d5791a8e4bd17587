#include "cli/cmd_plan.hpp"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "config/scenario.hpp"
#include "config/scenario_writer.hpp"
#include "core/error.hpp"
#include "hw/gpu.hpp"
#include "plan/distributed.hpp"
#include "plan/planner.hpp"
#include "plan/search.hpp"

namespace trainsim::cli {

namespace {

/// A progress bar on stderr, only when it is a terminal (and only on MPI rank 0).
std::function<void(const char*, std::size_t, std::size_t)> progress_bar(const plan::Communicator& c) {
  if (c.rank() != 0 || isatty(STDERR_FILENO) == 0) return {};
  return [](const char* phase, std::size_t done, std::size_t total) {
    const double f = total == 0 ? 1.0 : std::min(1.0, static_cast<double>(done) / static_cast<double>(total));
    const int w = 40;
    const int filled = static_cast<int>(f * w);
    std::fprintf(stderr, "\r%-9s [%s%s] %5.1f%% (%zu/%zu)", phase,
                 std::string(static_cast<std::size_t>(filled), '#').c_str(),
                 std::string(static_cast<std::size_t>(w - filled), ' ').c_str(), 100 * f, done,
                 total);
    if (done >= total) std::fputc('\n', stderr);
    std::fflush(stderr);
  };
}

std::string fmt_limit(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

/// The cluster of a --cluster name (a topology file, or a shipped topology's name); registers
/// the file as an input of the run when `io` is given.
plan::ClusterChoice load_cluster(const std::string& name, int gpus, const std::string& dir,
                                 const FileIo* io = nullptr) {
  std::filesystem::path p(name);
  if (!std::filesystem::exists(p)) {
    const std::filesystem::path q = std::filesystem::path(dir) / (name + ".toml");
    if (std::filesystem::exists(q)) p = q;
  }
  if (!std::filesystem::exists(p)) {
    throw InputError("--cluster", "--cluster: no topology file \"" + name + "\" (nor " + dir +
                                      "/" + name + ".toml)");
  }
  plan::ClusterChoice c;
  c.name = name;
  c.topology = config::load_topology(p);
  if (io != nullptr && io->input) io->input(p);
  const hw::GpuSpec* gpu = hw::find_builtin_gpu(c.topology.gpu);
  if (gpu == nullptr) throw InputError("--cluster", "--cluster " + name + ": unknown GPU");
  c.gpu = *gpu;
  c.gpus = gpus;
  if (gpus < 1) throw InputError("--gpus", "--gpus (" + std::to_string(gpus) + ") must be >= 1");
  if (const std::string why = hw::torus_unfilled(c.topology, gpus); !why.empty()) {
    throw InputError("--gpus", "--gpus (" + std::to_string(gpus) + ") " + why);
  }
  return c;
}

/// A number option that must be finite and at least `lo` (above it when `strict`). CLI11's
/// PositiveNumber lets "inf" and "nan" through (and reports 0 as "not in range 0 to ..."); a
/// value outside the range used to be read as "not given" or to fail far from the option.
CLI::Validator finite_number(double lo, bool strict) {
  const std::string want = std::string(strict ? "> " : ">= ") + fmt_limit(lo);
  return CLI::Validator(
      [lo, strict, want](std::string& text) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(text.c_str(), &end);
        const bool parsed = end != text.c_str() && *end == '\0';
        if (!parsed || !std::isfinite(v) || v < lo || (strict && v == lo)) {
          return "must be a finite number " + want + " (got " + text + ")";
        }
        return {};
      },
      "NUMBER " + want);
}

/// --global-batch: 1 .. plan::kMaxGlobalBatch sequences (the search enumerates the divisors
/// of the batch; far beyond any published run, every layout exceeds the simulator's limits).
void check_global_batch(long long b) {
  if (b < 1 || b > plan::kMaxGlobalBatch) {
    throw InputError("--global-batch", "--global-batch must be between 1 and " +
                                           std::to_string(plan::kMaxGlobalBatch) +
                                           " (2^40) sequences (got " + std::to_string(b) + ")");
  }
}

}  // namespace

PlanCommands::PlanCommands(CLI::App& app, std::string topology_dir)
    : topology_dir_(std::move(topology_dir)) {
  search_ = app.add_subcommand(
      "search", "Search every parallel layout of a scenario; rank the best by simulation");
  search_->add_option("FILE", s_file_, "Scenario file (its model, cluster and batch)")->required();
  search_->add_option("--gpus", s_gpus_, "GPU count (default: the scenario's)")
      ->check(CLI::Range(1, 1 << 24));
  search_->add_option("--global-batch", s_batch_, "Sequences per step (default: the scenario's)");
  search_->add_option("--top", s_top_, "Layouts to print (default 10)")
      ->check(CLI::Range(1, 1 << 30));
  search_->add_option("--csv", s_csv_, "Write every enumerated layout, with why it was rejected")
      ->check(output_file());
  search_->add_flag("--json", s_json_, "Print JSON (candidates_evaluated, rejected, top)");
  search_->add_option("--write-best", s_best_,
                      "Write the best layout as a scenario file (simulate it, edit it)")
      ->check(output_file());
  search_->add_option("--threads", s_threads_, "Threads per process (default 0: all cores)")
      ->check(CLI::Range(0, 4096));
  search_->add_option("--des", s_des_, "Most discrete-event simulations (default " + std::to_string(s_des_) + ")")
      ->check(CLI::Range(1, 1 << 30));

  plan_ = app.add_subcommand("plan", "Compute-optimal model, tokens, layout, days and cost for a "
                                     "FLOP budget");
  plan_->add_option("--budget", p_budget_, "Training FLOPs (e.g. 1e24)")
      ->check(finite_number(0, true));
  plan_->add_option("--cluster", p_clusters_,
                    "Topology file or name in topologies/ (repeat to compare clusters)");
  plan_->add_option("--gpus", p_gpus_, "GPUs per cluster")->check(CLI::Range(1, 1 << 24));
  plan_->add_option("--law", p_law_, "chinchilla | epoch | kaplan (default chinchilla)");
  plan_->add_option("--gpu-hour-usd", p_usd_, "Price of one GPU-hour (default: no cost)")
      ->check(finite_number(0, false));
  plan_->add_option("--max-days", p_max_days_, "Flag clusters slower than this")
      ->check(finite_number(0, false));
  plan_->add_option("--global-batch", p_batch_,
                    "Sequences of 2048 tokens per step (default: DeepSeek LLM's batch-size "
                    "law for the budget; 1024 for --table)");
  plan_->add_option("--svg", p_svg_, "Draw IsoFLOP curves and days vs N")->check(output_file());
  plan_->add_flag("--json", p_json_, "Print JSON");
  plan_->add_flag("--table", p_table_,
                  "Seed table: published models vs compute-optimal allocations");
  plan_->add_option("--threads", p_threads_, "Threads per process (default 0: all cores)")
      ->check(CLI::Range(0, 4096));
  plan_->add_option("--des", p_des_, "Most simulations per layout search (default 16)")
      ->check(CLI::Range(1, 1 << 30));
}

bool PlanCommands::selected() const { return search_->parsed() || plan_->parsed(); }

int PlanCommands::run(const FileIo& io) {
  plan::MpiSession mpi;
  return search_->parsed() ? run_search(io) : run_plan(io);
}

int PlanCommands::run_search(const FileIo& io) {
  const auto& comm = plan::Communicator::world();
  const bool root = comm.rank() == 0;
  if (root) {
    io.check(s_csv_, "--csv");
    io.check(s_best_, "--write-best");
  }
  // The scenario's own layout and micro batch are replaced by the search: not checked here.
  auto sc = config::load_scenario(s_file_, /*check_schedule=*/true, /*check_layout=*/false);
  io.input(s_file_);
  for (const auto& read : sc.inputs.read_files()) io.input(read);
  if (s_gpus_ > 0) {
    if (const std::string why = hw::torus_unfilled(sc.topology, s_gpus_); !why.empty()) {
      throw InputError("--gpus", "--gpus (" + std::to_string(s_gpus_) + ") " + why);
    }
    sc.gpus = s_gpus_;
    for (const workload::Straggler& s : sc.stragglers) {
      if (s.gpu >= sc.gpus) {
        throw InputError("--gpus", "--gpus (" + std::to_string(s_gpus_) +
                                       ") leaves out GPU " + std::to_string(s.gpu) +
                                       " of simulation.stragglers (GPUs 0.." +
                                       std::to_string(s_gpus_ - 1) + " run the job)");
      }
    }
  }
  if (search_->count("--global-batch") > 0) {  // 0 or less is refused, not "not given"
    check_global_batch(s_batch_);
    sc.training.global_batch = s_batch_;
  }
  if (!s_best_.empty()) {
    // The winner differs from `sc` only in its layout: if `sc` cannot be written (an MLA
    // model, a profile without a path), neither can the winner. Say so before searching.
    try {
      (void)config::scenario_toml(sc);
    } catch (const std::invalid_argument& e) {
      throw InputError("--write-best", std::string("--write-best: ") + e.what());
    }
  }
  plan::SearchOptions opt;
  opt.threads = s_threads_;
  opt.des_max = s_des_;
  opt.progress = progress_bar(comm);
  const auto r = plan::search(sc, opt, comm);
  if (!root) return 0;
  const std::string out = s_json_ ? plan::search_json(sc, r, s_top_) : plan::search_text(sc, r, s_top_);
  std::string best_text;
  if (!s_best_.empty()) {
    auto best = plan::apply(sc, r.all[r.ranking.front()].c);
    best.name = sc.name + "-best";
    best_text = config::scenario_toml(best);
  }
  std::vector<std::pair<std::filesystem::path, std::string>> files;
  if (!s_csv_.empty()) files.emplace_back(s_csv_, plan::search_csv(sc, r));
  if (!s_best_.empty()) files.emplace_back(s_best_, best_text);
  io.write(files);  // queued: written with the report, all or nothing
  std::cout << out;
  if (!s_json_ && !s_csv_.empty()) std::cout << "  every layout written to " << s_csv_ << "\n";
  if (!s_json_ && !s_best_.empty()) std::cout << "  best layout written to " << s_best_ << "\n";
  std::cout.flush();
  return 0;
}

int PlanCommands::run_plan(const FileIo& io) {
  const auto& comm = plan::Communicator::world();
  const bool root = comm.rank() == 0;
  if (p_table_) {
    // The seed table plans published models on one cluster: options it would not use are
    // refused rather than dropped (it used to exit 0 without the --svg file, with the first
    // of several clusters, and without the price or --max-days).
    for (const char* name : {"--budget", "--svg", "--gpu-hour-usd", "--max-days"}) {
      if (plan_->count(name) > 0) {
        throw InputError(name, std::string(name) + " does not apply to plan --table (it takes "
                                                   "--cluster, --gpus, --law, --global-batch, "
                                                   "--des, --threads and --json)");
      }
    }
    if (p_clusters_.size() > 1) {
      throw InputError("--cluster", "plan --table takes one --cluster (got " +
                                        std::to_string(p_clusters_.size()) +
                                        "); run it once per cluster");
    }
  }
  if (root) io.check(p_svg_, "--svg");
  plan::PlanInputs in;
  in.law = plan::parse_law(p_law_);
  if (p_usd_ >= 0) in.gpu_hour_usd = p_usd_;
  if (p_max_days_ >= 0) in.max_days = p_max_days_;
  check_global_batch(p_batch_);
  in.global_batch = p_batch_;
  in.search.reduced_space = true;
  in.search.des_max = p_des_;
  in.search.des_round = std::min(p_des_, 8);
  in.search.threads = p_threads_;
  if (p_table_) {
    const std::string name = p_clusters_.empty() ? "dgx-a100" : p_clusters_.front();
    const auto cluster = load_cluster(name, p_gpus_ > 0 ? p_gpus_ : 1024, topology_dir_);
    const auto rows = plan::seed_table(cluster, in, comm);
    if (root) {
      std::cout << (p_json_ ? plan::table_json(rows, cluster, in.law)
                            : plan::table_text(rows, cluster, in.law));
    }
    return 0;
  }
  if (!(p_budget_ > 0)) throw InputError("--budget", "--budget FLOPS is required (e.g. 1e24)");
  if (p_clusters_.empty()) throw InputError("--cluster", "--cluster TOPOLOGY is required");
  if (p_gpus_ < 1) throw InputError("--gpus", "--gpus N is required");
  in.budget_flops = p_budget_;
  if (plan_->get_option("--global-batch")->count() == 0) {
    in.global_batch = plan::optimal_global_batch(p_budget_, 2048);
    in.global_batch_from_law = true;
  }
  std::vector<plan::ClusterChoice> clusters;
  for (const auto& c : p_clusters_) clusters.push_back(load_cluster(c, p_gpus_, topology_dir_, &io));
  const auto p = plan::make_plan(in, clusters, comm);
  std::string svg;
  if (!p_svg_.empty()) {
    svg = plan::isoflop_svg(p, plan::days_vs_params(p, clusters.front(), in, comm));
  }
  if (!root) return 0;
  if (!p_svg_.empty()) io.write({{p_svg_, svg}});
  std::cout << (p_json_ ? plan::plan_json(p) : plan::plan_text(p));
  if (!p_json_ && !p_svg_.empty()) std::cout << "  IsoFLOP picture written to " << p_svg_ << "\n";
  return 0;
}

}  // namespace trainsim::cli
