// Loading scenario (schema version 1) and topology files with TOML++ into typed structs.
//
// Every problem is reported as a ConfigError whose message starts with file:line:column:
// unknown keys (with the nearest valid key), missing keys, wrong types, bad units, bad
// enum values, and impossible layouts (pointing at the offending key).
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>

#include "core/error.hpp"
#include "hw/topology.hpp"
#include "workload/builder.hpp"

namespace trainsim::config {

/// A bad input file. what() is "file:line:column: message".
class ConfigError : public FileError {
 public:
  using FileError::FileError;
};

/// Reads a scenario file; the topology path in [cluster] resolves relative to the scenario's
/// directory. Validates the model and the layout (Layout::validate) so that an impossible
/// layout is reported with the position of its key. With `check_schedule` false the pipeline
/// schedule's own constraints are left to the caller (compare-schedules); with
/// `check_layout` false the layout and the micro batch are read but not checked against the
/// model and the cluster (search, which replaces them). Throws ConfigError.
workload::Scenario load_scenario(const std::filesystem::path& file, bool check_schedule = true,
                                 bool check_layout = true);

/// Reads a topology file (topologies/*.toml). Throws ConfigError.
hw::TopologySpec load_topology(const std::filesystem::path& file);

/// The valid keys of each scenario section, for messages and documentation.
const std::vector<std::string>& scenario_keys(const std::string& section);

/// Levenshtein distance, for "did you mean" suggestions.
std::size_t edit_distance(const std::string& a, const std::string& b);

}  // namespace trainsim::config
