// `trainsim search` and `trainsim plan`: the planner's subcommands (issue 8). main.cpp
// registers them and calls run(); file writing and path checks come from main's helpers so
// every subcommand writes files the same way (atomically, nothing half-written).
#pragma once

#include <CLI/CLI.hpp>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "plan/search.hpp"

namespace trainsim::cli {

/// CLI11 check of an output-file option: an empty name would write nothing, silently.
inline CLI::Validator output_file() {
  return {[](const std::string& s) { return s.empty() ? std::string("empty file name") : std::string(); },
          "FILE", "output file"};
}

struct FileIo {
  /// Writes a command's output files, all of them or none (each atomically); throws on
  /// failure.
  std::function<void(const std::vector<std::pair<std::filesystem::path, std::string>>& files)>
      write;
  /// Throws when the path's directory does not exist (before any work is done).
  std::function<void(const std::string& path, const char* option)> check;
  /// Registers a file the command read, which no output may overwrite.
  std::function<void(const std::filesystem::path& path)> input;
};

class PlanCommands {
 public:
  /// Adds the `search` and `plan` subcommands to `app`. `topology_dir` resolves bare cluster
  /// names ("dgx-h100") to topology files.
  PlanCommands(CLI::App& app, std::string topology_dir);
  /// True when the parsed command line selected one of them.
  [[nodiscard]] bool selected() const;
  /// Runs the selected subcommand. Returns the exit code; throws the library's typed errors
  /// (InputError, ConfigError) for main to map.
  int run(const FileIo& io);

 private:
  int run_search(const FileIo& io);
  int run_plan(const FileIo& io);

  std::string topology_dir_;
  CLI::App* search_ = nullptr;
  CLI::App* plan_ = nullptr;
  // search
  std::string s_file_, s_csv_, s_best_;
  int s_gpus_ = 0, s_top_ = 10, s_threads_ = 0, s_des_ = plan::SearchOptions{}.des_max;
  long long s_batch_ = 0;
  bool s_json_ = false;
  // plan
  double p_budget_ = 0;
  std::vector<std::string> p_clusters_;
  int p_gpus_ = 0, p_threads_ = 0, p_des_ = 16;
  long long p_batch_ = 1024;
  std::string p_law_ = "chinchilla", p_svg_;
  double p_usd_ = -1, p_max_days_ = -1;
  bool p_json_ = false, p_table_ = false;
};

}  // namespace trainsim::cli
