// trainsim-calibrate: measures GEMMs, attention, memory-bound kernels and NCCL collectives on
// the local GPUs and writes a hardware profile (profile_version = 1) for
// `[cluster] profile = "file.toml"`; --validate runs one real training step and compares it
// with the simulator. Exit codes: 0 success; 1 bad input or no CUDA device (message on
// stderr, nothing written); 2 a device-side failure.
#include <CLI/CLI.hpp>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "calibrate.hpp"
#include "config/scenario.hpp"
#include "core/error.hpp"
#include "harness.hpp"
#include "hw/profile_io.hpp"
#include "validate.hpp"
#ifdef TRAINSIM_HAVE_MPI
#include "mpi_sweep.hpp"
#endif

namespace {

constexpr int kOk = 0, kBadInput = 1, kDeviceError = 2;

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace trainsim;
  CLI::App app{"trainsim-calibrate: measure this machine's GPUs into a trainsim hardware profile"};
  std::string out_path, validate_path, profile_path, base_gpu, ops_list = "gemm,attention,memory,nccl";
  std::string dtypes_list = "bf16,fp16,fp8";
  std::vector<std::string> scenario_paths;
  bool quick = false, no_grid = false, list_ops = false;
  calib::CalibrationOptions opt;
  app.add_option("--out", out_path, "write the measured profile (TOML) here");
  app.add_option("--scenario", scenario_paths, "also measure the GEMM and attention shapes of this scenario (repeatable)");
  app.add_option("--ops", ops_list, "comma-separated sweeps to run (see --list-ops)");
  app.add_option("--dtypes", dtypes_list, "GEMM dtypes (bf16,fp16,fp8; fp8 only where supported)");
  app.add_flag("--quick", quick, "small grids (a smoke run)");
  app.add_flag("--no-default-grid", no_grid, "measure only the scenarios' shapes");
  app.add_option("--repeats", opt.timing.repeats, "timed runs per measurement (median)")->check(CLI::Range(1, 1000));
  app.add_option("--warmup", opt.timing.warmup, "untimed runs first")->check(CLI::Range(0, 1000));
  app.add_option("--max-seconds", opt.timing.max_seconds,
                 "stop repeating a measurement after this long (at least 3 timed runs; default 1)")
      ->check(CLI::Range(0.0, 3600.0));
  app.add_option("--nccl-max-bytes", opt.nccl_max_bytes, "largest collective (default 4 GiB)")->check(CLI::Range(1024.0, 1e12));
  app.add_option("--base-gpu", base_gpu, "built-in GPU key for what was not measured (default: from the device name)");
  app.add_option("--validate", validate_path, "run one real step of this one-GPU scenario and compare with the simulator");
  app.add_option("--profile", profile_path, "with --validate: predict with this profile instead of measuring one");
  app.add_flag("--list-ops", list_ops, "print the table of measurement entries and exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kOk : kBadInput;
  }
  if (list_ops) {
    for (const auto& e : calib::op_table()) std::cout << e.name << "\t" << e.what << "\n";
    return kOk;
  }

  // Inputs first: a bad file is reported the same with or without a GPU.
  std::vector<const calib::OpEntry*> selected;
  std::shared_ptr<const hw::HardwareProfile> given;
  workload::Scenario validate_sc;
  try {
    for (const auto& name : split(ops_list)) {
      const auto& t = calib::op_table();
      auto it = std::find_if(t.begin(), t.end(), [&](const auto& e) { return name == e.name; });
      if (it == t.end()) throw std::invalid_argument("--ops: unknown sweep \"" + name + "\"");
      selected.push_back(&*it);
    }
    opt.gemm_dtypes.clear();
    for (const auto& d : split(dtypes_list)) {
      if (d == "bf16") opt.gemm_dtypes.push_back(hw::Dtype::BF16);
      else if (d == "fp16") opt.gemm_dtypes.push_back(hw::Dtype::FP16);
      else if (d == "fp8") opt.gemm_dtypes.push_back(hw::Dtype::FP8);
      else throw std::invalid_argument("--dtypes: unknown dtype \"" + d + "\"");
    }
    for (const auto& p : scenario_paths) opt.scenarios.push_back(config::load_scenario(p));
    if (!validate_path.empty()) {
      validate_sc = config::load_scenario(validate_path);
      calib::check_one_gpu_scenario(validate_sc);
      opt.scenarios.push_back(validate_sc);
      if (scenario_paths.empty()) no_grid = true;  // --validate alone: its shapes only
    }
    if (!profile_path.empty()) {
      if (validate_path.empty()) throw std::invalid_argument("--profile needs --validate");
      given = std::make_shared<const hw::HardwareProfile>(hw::read_profile(profile_path));
    }
    if (out_path.empty() && validate_path.empty()) {
      throw std::invalid_argument("nothing to do: give --out FILE and/or --validate SCENARIO");
    }
    if (!out_path.empty()) {
      const auto dir = std::filesystem::absolute(out_path).parent_path();
      if (!std::filesystem::is_directory(dir)) {
        throw std::invalid_argument("--out: no such directory " + dir.string());
      }
      if (std::filesystem::is_directory(out_path)) {
        throw std::invalid_argument("--out: \"" + out_path + "\" is a directory, not a file name");
      }
    }
    if (!base_gpu.empty() && hw::find_builtin_gpu(base_gpu) == nullptr) {
      throw std::invalid_argument("--base-gpu: unknown built-in GPU \"" + base_gpu +
                                  "\" (see trainsim list-gpus)");
    }
  } catch (const config::ConfigError& e) {
    std::cerr << "trainsim-calibrate: " << e.what() << "\n";
    return kBadInput;
  } catch (const hw::ProfileError& e) {
    std::cerr << "trainsim-calibrate: " << e.what() << "\n";
    return kBadInput;
  } catch (const std::exception& e) {
    std::cerr << "trainsim-calibrate: " << e.what() << "\n";
    return kBadInput;
  }
  opt.quick = quick;
  opt.default_grid = !no_grid;

  int device = 0;
  bool multi = false;  // an mpirun sweep over several ranks: collectives only
  bool speaker = true;  // the rank that prints and writes
#ifdef TRAINSIM_HAVE_MPI
  std::unique_ptr<calib::MpiSession> mpi;
  if (calib::launched_by_mpi()) {
    try {
      mpi = std::make_unique<calib::MpiSession>(&argc, &argv);
    } catch (const std::exception& e) {
      std::cerr << "trainsim-calibrate: " << e.what() << "\n";
      return kDeviceError;
    }
    multi = mpi->size() > 1;
    speaker = mpi->rank() == 0;
    if (multi && (selected.size() != 1 || std::string(selected[0]->name) != "nccl" ||
                  !validate_path.empty())) {
      if (speaker) {
        std::cerr << "trainsim-calibrate: under mpirun with more than one rank only the NCCL "
                     "sweep runs: pass --ops nccl (and no --validate)\n";
      }
      return kBadInput;
    }
  }
#endif
  if (auto why = calib::no_device_reason()) {
    std::cerr << "trainsim-calibrate: no CUDA device found (" << *why
              << "); nothing measured, nothing written\n";
    return kBadInput;
  }

  try {
#ifdef TRAINSIM_HAVE_MPI
    if (mpi) {
      int count = 1;
      calib::check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
      device = mpi->local_rank() % count;
    }
#endif
    calib::check(cudaSetDevice(device), "cudaSetDevice");
    hw::HardwareProfile prof;
    prof.provenance = calib::describe_device(device);
    std::string cmd;
    for (int i = 0; i < argc; ++i) cmd += (i == 0 ? "" : " ") + std::string(argv[i]);
    prof.provenance.command = cmd;
    prof.base_gpu = !base_gpu.empty() ? base_gpu
                                      : calib::builtin_key_for(prof.provenance.gpu_name,
                                                               prof.provenance.hbm_bytes);
    if (hw::find_builtin_gpu(prof.base_gpu) == nullptr) {
      std::cerr << "trainsim-calibrate: cannot match \"" << prof.provenance.gpu_name
                << "\" to a built-in GPU; pass --base-gpu (see trainsim list-gpus)\n";
      return kBadInput;
    }
    cudaStream_t stream = nullptr;
    calib::check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    calib::GemmRunner gemm;
    std::ostringstream quiet;
    std::ostream& log = speaker ? static_cast<std::ostream&>(std::cerr) : quiet;
    calib::Context ctx{opt, stream, gemm, log};
    log << "trainsim-calibrate: " << prof.provenance.gpu_name << " ("
        << prof.provenance.sm_count << " SMs, " << prof.provenance.device_count
        << " GPU(s)), profile base " << prof.base_gpu << "\n";
    if (!given) {
      if (multi) {
#ifdef TRAINSIM_HAVE_MPI
        log << "[nccl] across " << mpi->size() << " ranks on " << mpi->nodes() << " node(s)\n";
        calib::nccl_sweep_mpi(ctx, *mpi, prof);
#endif
      } else {
        for (const auto* e : selected) {
          log << "[" << e->name << "] " << e->what << "\n";
          e->measure(ctx, prof);
        }
      }
      prof.refit();
      if (!out_path.empty() && speaker) {
        hw::write_profile(out_path, prof);
        std::cerr << "trainsim-calibrate: wrote " << out_path << "\n";
      }
    }
    if (!validate_path.empty()) {
      auto used = given ? given : std::make_shared<const hw::HardwareProfile>(prof);
      const auto r = calib::validate_step(ctx, validate_sc, used);
      calib::print_validation(std::cout, validate_sc, r);
    }
    (void)cudaStreamDestroy(stream);
  } catch (const InputError& e) {
    std::cerr << "trainsim-calibrate: " << e.what() << "\n";
    return kBadInput;
  } catch (const std::exception& e) {
    std::cerr << "trainsim-calibrate: " << e.what() << "\n";
    return kDeviceError;
  }
  return kOk;
}
