// libFuzzer targets for the input loaders (issue: trust): scenarios, topologies and measured
// hardware profiles. Each input is written to a file and handed to the loader the CLI uses.
// The contract under test: any bytes either load or raise a FileError (config::ConfigError,
// hw::ProfileError: exit 1 with file:line:column); anything else — a crash, a sanitizer
// report, a different exception, a hang — is a bug and aborts the run so libFuzzer keeps it.
//
// Scenario inputs live in <tmp>/scenarios/ next to <tmp>/topologies -> the repository's
// topologies/, so the shipped scenarios' relative [cluster] topology paths resolve.
// Build: scripts/fuzz.sh (clang, -fsanitize=fuzzer,address,undefined).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "config/scenario.hpp"
#include "hw/profile_io.hpp"

#ifndef TRAINSIM_FUZZ_LOADER
#error "define TRAINSIM_FUZZ_LOADER to 1 (scenario), 2 (topology) or 3 (profile)"
#endif

namespace fs = std::filesystem;

namespace {

fs::path input_path() {
  static const fs::path path = [] {
    const fs::path dir = fs::temp_directory_path() / ("trainsim-fuzz-" + std::to_string(getpid()));
    fs::create_directories(dir / "scenarios");
    std::error_code ec;
    fs::create_directory_symlink(fs::path(TRAINSIM_SOURCE_DIR) / "topologies", dir / "topologies",
                                 ec);
    return dir / "scenarios" / "input.toml";
  }();
  return path;
}

void cleanup() {
  std::error_code ec;
  fs::remove_all(input_path().parent_path().parent_path(), ec);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)input_path();
  std::atexit(cleanup);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const fs::path path = input_path();
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
#if TRAINSIM_FUZZ_LOADER == 1
    (void)trainsim::config::load_scenario(path);
#elif TRAINSIM_FUZZ_LOADER == 2
    (void)trainsim::config::load_topology(path);
#else
    (void)trainsim::hw::read_profile(path);
#endif
  } catch (const trainsim::FileError&) {
    // The documented failure (ConfigError, ProfileError): a located message, exit 1.
  } catch (const std::exception& e) {
    std::fprintf(stderr, "loader raised an undocumented exception: %s\n", e.what());
    std::abort();
  }
  return 0;
}
