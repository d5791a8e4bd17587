// trainsim command line. The only place that prints or exits.
// Exit codes: 0 success, 1 bad input (message on stderr names what and where), 2 internal
// error. Output files are written to a temporary name and renamed only on success, so a
// failed run leaves nothing half-written.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>
#include <vector>

#include "cli/cmd_collective.hpp"
#include "cli/cmd_plan.hpp"
#include "config/scenario.hpp"
#include "core/error.hpp"
#include "core/file_write.hpp"
#include "core/task_graph.hpp"
#include "hw/gpu.hpp"
#include "report/report.hpp"
#include "report/svg.hpp"
#include "validate/validate.hpp"
#include "workload/compare.hpp"
#include "workload/builder.hpp"

namespace {

constexpr int kOk = 0;
constexpr int kBadInput = 1;
constexpr int kInternal = 2;

/// An output file that cannot be written (user error: exit 1).
class OutputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Standard output that could not be written (a full disk, a closed pipe): exit 1.
class StdoutError : public std::runtime_error {
 public:
  StdoutError() : std::runtime_error("cannot write the report to standard output") {}
};

/// Where a write to `p` lands, for comparing paths: absolute, normalized, links followed.
std::filesystem::path landing(const std::filesystem::path& p) {
  auto target = trainsim::detail::write_target(p);
  std::error_code ec;
  return target.empty() ? std::filesystem::absolute(p, ec).lexically_normal() : target;
}

/// True when `p` is the file (or pipe, or terminal) that file descriptor `fd` writes to, as
/// /dev/stdout is for 1.
bool same_file_as_fd(const std::filesystem::path& p, int fd) {
  struct stat a {};
  struct stat b {};
  return ::stat(p.c_str(), &a) == 0 && ::fstat(fd, &b) == 0 && a.st_dev == b.st_dev &&
         a.st_ino == b.st_ino;
}

/// What the command writes: its output files, checked against each other and against the
/// files it read, and written only at the end, together with its standard output (emit).
struct Outputs {
  std::vector<std::pair<std::filesystem::path, std::string>> files;
  std::vector<std::filesystem::path> targets;  ///< landing() of each file, as checked
  std::vector<std::filesystem::path> inputs;   ///< landing() of every file the run read
};
Outputs g_outputs;

void add_input(const std::filesystem::path& p) {
  if (!p.empty()) g_outputs.inputs.push_back(landing(p));
}

/// Queues output files (FileIo::write). Throws InputError when one would replace a file the
/// run read (the scenario and the files it names, plan's topologies) or is named by two
/// outputs: devices such as /dev/null, and the report's own streams, may be named any number
/// of times.
void write_files(std::vector<std::pair<std::filesystem::path, std::string>>&& files) {
  for (auto& [path, text] : files) {
    const auto target = landing(path);
    if (!trainsim::detail::is_special(path) && !same_file_as_fd(path, STDOUT_FILENO) &&
        !same_file_as_fd(path, STDERR_FILENO)) {
      for (const auto& in : g_outputs.inputs) {
        if (in == target) {
          throw trainsim::InputError(path.string(), "output \"" + path.string() +
                                                        "\" is an input of this run; it would "
                                                        "be overwritten");
        }
      }
      for (const auto& queued : g_outputs.targets) {
        if (queued == target) {
          throw trainsim::InputError(path.string(), "\"" + path.string() +
                                                        "\" is named by two outputs; give each "
                                                        "output its own file");
        }
      }
    }
    g_outputs.files.emplace_back(path, std::move(text));  // a trace can be hundreds of MB
    g_outputs.targets.push_back(target);
  }
}

/// Writes the queued files and the command's standard output all together or not at all:
/// files staged next to their targets, devices written, the report printed, and only then the
/// files renamed into place (core/file_write.hpp).
void emit(const std::string& report) {
  // An output that is the report's own stream (--trace /dev/stdout, also when standard output
  // is a file or a pipe) goes into that stream, before the report; renaming onto it or opening
  // it anew would lose one of the two.
  std::string to_stdout, to_stderr;
  std::vector<std::pair<std::filesystem::path, std::string>> others;
  for (auto& [path, text] : g_outputs.files) {
    if (same_file_as_fd(path, STDOUT_FILENO)) {
      to_stdout += text;
    } else if (same_file_as_fd(path, STDERR_FILENO)) {
      to_stderr += text;
    } else {
      others.emplace_back(std::move(path), std::move(text));
    }
  }
  trainsim::StagedFiles files(std::move(others));
  g_outputs.files.clear();
  g_outputs.targets.clear();
  if (auto failed = files.stage(); !failed.empty()) {
    throw OutputError("cannot write " + failed.string());
  }
  if (auto failed = files.write_special(); !failed.empty()) {
    throw OutputError("cannot write " + failed.string());
  }
  std::cout << to_stdout << report;
  std::cout.flush();
  std::fflush(stdout);
  if (!std::cout || std::ferror(stdout) != 0) throw StdoutError();
  if (auto failed = files.commit(); !failed.empty()) {
    throw OutputError("cannot write " + failed.string());
  }
  std::cerr << to_stderr;
  std::cerr.flush();
}

/// Sends std::cout to a buffer while a command runs, so that its report is printed by emit()
/// with its files; restores std::cout on the way out.
class CaptureStdout {
 public:
  CaptureStdout() : old_(std::cout.rdbuf(buffer_.rdbuf())) {}
  CaptureStdout(const CaptureStdout&) = delete;
  CaptureStdout& operator=(const CaptureStdout&) = delete;
  ~CaptureStdout() { std::cout.rdbuf(old_); }
  [[nodiscard]] std::string text() const { return buffer_.str(); }

 private:
  std::ostringstream buffer_;
  std::streambuf* old_;
};

/// Fails early (before simulating) when an output path's directory does not exist.
void check_writable(const std::string& path, const char* option) {
  if (path.empty()) return;
  const std::filesystem::path p(path);
  const auto dir = p.has_parent_path() ? p.parent_path() : std::filesystem::path(".");
  std::error_code ec;
  if (std::filesystem::is_directory(p, ec)) {
    throw trainsim::InputError(option, std::string(option) + ": \"" + path +
                                           "\" is a directory, not a file name");
  }
  if (!std::filesystem::is_directory(dir, ec)) {
    throw trainsim::InputError(option, std::string(option) + ": directory \"" + dir.string() +
                                           "\" does not exist");
  }
}

int run_simulate(const std::string& file, bool json, const std::string& trace,
                 const std::string& svg, std::optional<trainsim::report::OpsRequest> ops) {
  check_writable(trace, "--trace");
  check_writable(svg, "--svg");
  const auto scenario = trainsim::config::load_scenario(file);
  add_input(file);
  for (const auto& read : scenario.inputs.read_files()) add_input(read);
  const auto result = trainsim::workload::simulate_step(scenario);
  if (ops) (void)trainsim::report::op_times(result, ops->stage);  // a bad stage fails first
  // Render everything before writing anything.
  std::string trace_text =
      trace.empty() ? std::string() : trainsim::report::to_chrome_trace(scenario, result);
  std::string svg_text =
      svg.empty() ? std::string()
                  : trainsim::report::pipeline_svg({{scenario.name + " — " +
                                                         std::string(trainsim::parallel::schedule_name(
                                                             scenario.layout.schedule)),
                                                     &result}});
  // Queued, then written with the report (emit): all of it or nothing.
  std::vector<std::pair<std::filesystem::path, std::string>> outputs;
  if (!trace.empty()) outputs.emplace_back(trace, std::move(trace_text));
  if (!svg.empty()) outputs.emplace_back(svg, std::move(svg_text));
  write_files(std::move(outputs));
  if (json) {
    std::cout << trainsim::report::to_json(scenario, result, ops);
  } else {
    trainsim::report::print_table(std::cout, scenario, result);
    if (ops) trainsim::report::print_ops(std::cout, result, ops->stage, ops->top);
    if (!trace.empty()) {
      std::cout << "  trace written to " << trace << " (open in https://ui.perfetto.dev)\n";
    }
    if (!svg.empty()) std::cout << "  pipeline picture written to " << svg << "\n";
  }
  return kOk;
}

int run_compare(const std::string& file, const std::string& svg) {
  check_writable(svg, "--svg");
  const auto scenario = trainsim::config::load_scenario(file, /*check_schedule=*/false);
  add_input(file);
  for (const auto& read : scenario.inputs.read_files()) add_input(read);
  const auto runs = trainsim::workload::compare_schedules(scenario);
  std::vector<trainsim::report::SvgRun> pictures;
  for (const auto& run : runs) {
    if (run.result) pictures.push_back({run.name, &*run.result});
  }
  const std::string svg_text = svg.empty() ? std::string() : trainsim::report::pipeline_svg(pictures);
  if (!svg.empty()) write_files({{svg, svg_text}});
  trainsim::report::print_comparison(std::cout, scenario, runs);
  if (!svg.empty()) std::cout << "\n  timelines written to " << svg << "\n";
  return kOk;
}

/// `w` as one word of a POSIX shell command line: quoted when it holds anything but letters,
/// digits and -_./=:+,@%.
std::string shell_word(const std::string& w) {
  const bool plain = !w.empty() && std::all_of(w.begin(), w.end(), [](unsigned char c) {
    return std::isalnum(c) != 0 || std::string_view("-_./=:+,@%").find(static_cast<char>(c)) !=
                                       std::string_view::npos;
  });
  if (plain) return w;
  std::string q = "'";
  for (char c : w) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

int run_validate(const std::string& file, const std::string& group, bool json,
                 const std::string& csv, const std::string& markdown, const std::string& topo,
                 const std::string& scenarios) {
  check_writable(csv, "--csv");
  check_writable(markdown, "--markdown");
  if (!scenarios.empty()) {
    std::error_code ec;
    if (!std::filesystem::is_directory(scenarios, ec)) {
      throw trainsim::InputError("--scenarios", "--scenarios: directory \"" + scenarios +
                                                    "\" does not exist");
    }
    if (::access(scenarios.c_str(), W_OK | X_OK) != 0) {
      throw trainsim::InputError("--scenarios", "--scenarios: cannot write to directory \"" +
                                                    scenarios + "\"");
    }
  }
  add_input(file);
  const auto report = trainsim::validate::run_validation(file, topo, group);
  for (const auto& t : report.topology_files) add_input(t);
  for (const auto& h : report.hf_config_files) add_input(h);
  if (report.rows.empty()) {
    throw trainsim::InputError("--group", "no rows" + (group.empty() ? std::string() :
                                                       " in group \"" + group + "\""));
  }
  const std::string csv_text = csv.empty() ? "" : trainsim::validate::report_csv(report);
  const std::string md_text =
      markdown.empty() ? ""
                       : trainsim::validate::report_markdown(
                             report, shell_word(file) +
                                         (group.empty() ? "" : " --group " + shell_word(group)) +
                                         (topo == TRAINSIM_TOPOLOGY_DIR
                                              ? ""
                                              : " --topologies " + shell_word(topo)) +
                                         " --markdown " + shell_word(markdown));
  // Row file names are checked before anything is written.
  const auto row_files = scenarios.empty()
                             ? std::vector<std::pair<std::filesystem::path, std::string>>()
                             : trainsim::validate::row_scenario_files(report, scenarios);
  for (const auto& [path, text] : row_files) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) {
      throw trainsim::InputError("--scenarios", "--scenarios: \"" + path.string() +
                                                    "\" is a directory, not a file name");
    }
  }
  auto outputs = row_files;
  if (!csv.empty()) outputs.emplace_back(csv, csv_text);
  if (!markdown.empty()) outputs.emplace_back(markdown, md_text);
  write_files(std::move(outputs));
  const std::size_t written = row_files.size();
  if (json) {
    std::cout << trainsim::validate::report_json(report);
  } else {
    trainsim::validate::print_report(std::cout, report);
    if (!scenarios.empty()) {
      std::cout << "\n  " << written << " row scenarios written to " << scenarios
                << " (trainsim simulate DIR/ROW.toml --ops 20)\n";
    }
  }
  return kOk;
}

int list_gpus() {
  // Columns as wide as the longest key and name.
  int key_w = 0, name_w = 0;
  for (const auto& g : trainsim::hw::builtin_gpus()) {
    key_w = std::max(key_w, static_cast<int>(g.key.size()));
    name_w = std::max(name_w, static_cast<int>(g.display_name.size()));
  }
  for (const auto& g : trainsim::hw::builtin_gpus()) {
    std::printf("%-*s  %-*s %4d SMs  %7.1f TFLOP/s bf16  %7.2f GiB HBM  %5.2f TB/s\n", key_w,
                g.key.c_str(), name_w, g.display_name.c_str(), g.sm_count, g.peak_bf16 / 1e12,
                g.hbm_bytes / (1024.0 * 1024.0 * 1024.0), g.hbm_bw / 1e12);
  }
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"trainsim: discrete-event simulator of distributed LLM training"};
  app.set_version_flag("--version", std::string("trainsim ") + TRAINSIM_VERSION);
  app.require_subcommand(1);

  auto* sim = app.add_subcommand("simulate", "Simulate one training step of a scenario");
  std::string file, trace;
  bool json = false;
  sim->add_option("FILE", file, "Scenario file (TOML, schema version 1)")->required();
  sim->add_flag("--json", json, "Print the JSON report instead of the table");
  sim->add_option("--trace", trace, "Write a Chrome trace-event JSON (opens in Perfetto)")
      ->check(trainsim::cli::output_file());
  std::string svg;
  sim->add_option("--svg", svg, "Draw the pipeline timeline as SVG")
      ->check(trainsim::cli::output_file());
  int ops_top = -1, ops_stage = 0;
  const CLI::Range non_negative(0, std::numeric_limits<int>::max());
  auto* ops_option =
      sim->add_option("--ops", ops_top,
                      "Also list the N busiest ops (kernels, collectives) of one stage's rank in "
                      "the step, with count, time and share of the step (0: all)")
          ->check(non_negative);
  sim->add_option("--ops-stage", ops_stage, "Pipeline stage of the --ops table (default 0)")
      ->check(non_negative)
      ->needs(ops_option);

  auto* cmp = app.add_subcommand("compare-schedules",
                                 "Run a scenario under every pipeline schedule it allows");
  std::string cmp_file, cmp_svg;
  cmp->add_option("FILE", cmp_file, "Scenario file")->required();
  cmp->add_option("--svg", cmp_svg, "Stack the schedules' timelines in one SVG")
      ->check(trainsim::cli::output_file());

  auto* val = app.add_subcommand("validate", "Predict published runs and report the error");
  std::string val_file, val_group, val_csv, val_md, val_topo = TRAINSIM_TOPOLOGY_DIR;
  bool val_json = false;
  val->add_option("RUNS", val_file, "Runs file (format of published_runs.toml)")->required();
  val->add_option("--group", val_group, "Only this group");
  val->add_flag("--json", val_json, "Print JSON (rows, groups)");
  val->add_option("--csv", val_csv, "Write the rows as CSV")->check(trainsim::cli::output_file());
  val->add_option("--markdown", val_md, "Write the tables as Markdown (docs/validation.md)")
      ->check(trainsim::cli::output_file());
  val->add_option("--topologies", val_topo, "Folder with dgx-a100.toml, dgx-h100.toml, ...");
  std::string val_scenarios;
  val->add_option("--scenarios", val_scenarios,
                  "Write each simulated row as a scenario file DIR/<row id>.toml");

  auto* gpus = app.add_subcommand("list-gpus", "List the built-in GPU hardware profiles");
  const auto collective = trainsim::cli::add_collective_command(app);
  trainsim::cli::PlanCommands planner(app, TRAINSIM_TOPOLOGY_DIR);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // A first word that is neither an option nor a command: name it (CLI11 would only say
    // that a subcommand is required).
    if (argc > 1 && argv[1][0] != '-' && app.get_subcommands().empty()) {
      std::string names;
      for (const CLI::App* sub : app.get_subcommands({})) {
        names += (names.empty() ? "" : ", ") + sub->get_name();
      }
      std::cerr << "error: unknown command \"" << argv[1] << "\" (commands: " << names
                << ")\nRun with --help for more information.\n";
      return kBadInput;
    }
    const int rc = app.exit(e);
    return rc == 0 ? kOk : kBadInput;
  }

  // "FILE: " of the scenario a simulate or compare-schedules run read, for errors raised
  // after loading (the loader's own carry file:line:column).
  const auto scenario_prefix = [&]() -> std::string {
    const std::string input = *sim ? file : *cmp ? cmp_file : std::string();
    return input.empty() ? std::string() : input + ": ";
  };
  try {
    std::string report;
    int rc = kInternal;
    {
      CaptureStdout capture;
      rc = [&]() -> int {
        if (*gpus) return list_gpus();
        if (*collective->app) return collective->run(std::cout);
        if (*sim) {
          std::optional<trainsim::report::OpsRequest> ops;
          if (ops_top >= 0) {
            ops = trainsim::report::OpsRequest{ops_stage, static_cast<std::size_t>(ops_top)};
          }
          return run_simulate(file, json, trace, svg, ops);
        }
        if (*cmp) return run_compare(cmp_file, cmp_svg);
        if (*val) {
          return run_validate(val_file, val_group, val_json, val_csv, val_md, val_topo,
                              val_scenarios);
        }
        if (planner.selected()) {
          const auto queue = [](const std::vector<std::pair<std::filesystem::path, std::string>>& f) {
            write_files(std::vector(f));
          };
          return planner.run({queue, check_writable, add_input});
        }
        return kInternal;
      }();
      report = capture.text();
    }
    // The files and the report together: a report that did not reach its reader (a full
    // disk, a closed pipe) is a failed run and leaves no output file behind.
    emit(report);
    return rc;
  } catch (const StdoutError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kBadInput;
  } catch (const trainsim::config::ConfigError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kBadInput;
  } catch (const trainsim::InputError& e) {
    // After loading (the loader turns its own into ConfigError with file:line:column): a
    // limit of the simulation itself, e.g. full fidelity's flow count; name the scenario.
    std::cerr << "error: " << scenario_prefix() << e.what() << "\n";
    return kBadInput;
  } catch (const OutputError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kBadInput;
  } catch (const std::overflow_error& e) {
    // Time holds +-2^63 ps (106 days); a step that long comes from the sizes, not from a
    // key that is out of its range, so the message names the file and the likely keys.
    std::cerr << "error: " << scenario_prefix() << "a simulated time is out of range (" << e.what()
              << "): the step would last beyond 106 days of simulated time; check the "
                 "scenario's sizes (model.seq_len, model.hidden, training.global_batch) and "
                 "bandwidths\n";
    return kBadInput;
  } catch (const trainsim::InternalError& e) {
    std::cerr << "internal error: " << e.what() << "\n";
    return kInternal;
  } catch (const std::invalid_argument& e) {
    std::cerr << "error: " << e.what() << "\n";
    return kBadInput;
  } catch (const std::exception& e) {
    std::cerr << "internal error: " << e.what() << "\n";
    return kInternal;
  }
  return kInternal;
}
