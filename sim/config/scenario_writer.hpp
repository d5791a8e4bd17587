// Writing a scenario back as a scenario file (schema version 1): the inverse of load_scenario
// for every scenario whose model is given by its shape, so that a scenario built in code (a
// validate row, a search result) can be simulated, inspected and edited like a shipped one.
#pragma once

#include <filesystem>
#include <string>

#include "workload/builder.hpp"

namespace trainsim::config {

/// The scenario as TOML text that load_scenario reads back into the same simulation (same
/// step time to the picosecond): every key of [model] (and [model.moe]), [training],
/// [parallel], [cluster], [simulation] and [cost] written explicitly, defaults included.
/// `topology` and `profile` are written as given ([cluster] topology; profile when non-empty:
/// a measured profile file); empty, they default to the files the scenario was loaded from
/// (Scenario::Inputs, absolute paths), and profile then to the built-in GPU key sc.gpu.key
/// when no measured profile was loaded. Relative paths resolve against the written file's
/// directory when it is loaded.
/// A model loaded from a Hugging Face config (Scenario::Inputs::hf_config_path) is written as
/// model.hf_config (absolute path) with name, seq_len and causal, and [model.moe]'s routing
/// keys only.
/// Throws std::invalid_argument for a model with multi-head latent attention but no
/// hf_config_path (MLA comes only from a Hugging Face config), when no topology path is known, and when
/// the profile does not match the scenario: none although sc.profile is set (a measured
/// profile), one although it is not, or not a ".toml" file name.
std::string scenario_toml(const workload::Scenario& sc, const std::filesystem::path& topology = {},
                          const std::filesystem::path& profile = {});

}  // namespace trainsim::config
