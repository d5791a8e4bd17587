// `trainsim collective`: an nccl-tests-like sweep of one collective over a topology, with
// the alpha-beta (NCCL tuning) model or, with --flows, the max-min flow model on the graph.
#pragma once

#include <CLI/CLI.hpp>
#include <iosfwd>
#include <memory>
#include <string>

namespace trainsim::cli {

struct CollectiveCommand {
  CLI::App* app = nullptr;
  std::string op = "all_reduce";
  int gpus = 8;
  std::string topology;
  std::string sizes = "1KiB:16GiB";
  double factor = 2.0;
  bool json = false;
  bool flows = false;

  /// Runs the sweep and prints it. Throws trainsim::InputError (bad option values, naming
  /// the option) and config::ConfigError (bad topology file).
  int run(std::ostream& out) const;
};

/// Registers the `collective` subcommand on `app`. The returned object holds the parsed
/// options and must outlive app.parse().
std::unique_ptr<CollectiveCommand> add_collective_command(CLI::App& app);

}  // namespace trainsim::cli
