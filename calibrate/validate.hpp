// The small-real-run check (trainsim-calibrate --validate SCENARIO): one real training step
// on one GPU, built from the same per-op shapes the simulator uses
// (workload::microbatch_kernels / optimizer_kernel, which share rank_op with the step
// builder): cuBLASLt GEMMs, the kernels/ attention, norms, activations, residual adds,
// embedding, cross-entropy and Adam, on one stream in the simulator's order, microbatches
// times over. It times the step (CUDA events, median of repeats) and prints it against the
// simulator's prediction with the given profile and with the built-in one.
#pragma once

#include <iosfwd>

#include "calibrate.hpp"

namespace trainsim::calib {

struct ValidationResult {
  double measured_s = 0;           ///< one real step, median
  double predicted_s = 0;          ///< simulate_step with the profile
  double predicted_builtin_s = 0;  ///< simulate_step with the built-in GPU model
  double measured_gemm_s = 0, measured_attention_s = 0, measured_memory_s = 0;
  double predicted_gemm_s = 0, predicted_attention_s = 0, predicted_memory_s = 0;
  [[nodiscard]] double error() const { return predicted_s / measured_s - 1; }
};

/// Throws InputError (key parallel.tp) unless the scenario runs on one GPU (tp = pp = dp = 1,
/// cluster.gpus = 1). Host-only: main checks it before looking for a device.
void check_one_gpu_scenario(const workload::Scenario& sc);

/// Runs the check. Throws InputError when the scenario is not a one-GPU layout
/// (tp = pp = dp = 1, cluster.gpus = 1), DeviceError on a CUDA failure.
ValidationResult validate_step(Context& ctx, const workload::Scenario& sc,
                               std::shared_ptr<const hw::HardwareProfile> profile);

/// The measured-vs-predicted table.
void print_validation(std::ostream& os, const workload::Scenario& sc, const ValidationResult& r);

}  // namespace trainsim::calib
