// The calibration sweeps, one table entry per kind of operation (gemm, attention, memory,
// nccl), each adding measured points to a hardware profile.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "gemm.hpp"
#include "harness.hpp"
#include "hw/profile.hpp"
#include "workload/builder.hpp"
#include "workload/step_ops.hpp"

namespace trainsim::calib {

struct CalibrationOptions {
  std::vector<workload::Scenario> scenarios;  ///< their GEMM and attention shapes are measured
  bool default_grid = true;                   ///< the default GEMM / attention grids
  bool quick = false;                         ///< smaller grids (smoke runs)
  std::vector<hw::Dtype> gemm_dtypes = {hw::Dtype::BF16, hw::Dtype::FP16, hw::Dtype::FP8};
  double nccl_max_bytes = 4.0 * (1ull << 30);  ///< 4 GiB
  TimingOptions timing;
};

/// What one sweep needs.
struct Context {
  const CalibrationOptions& opt;
  cudaStream_t stream;
  GemmRunner& gemm;
  std::ostream& log;
};

/// One entry of the harness table.
struct OpEntry {
  const char* name;  ///< "gemm", "attention", "memory", "nccl"
  const char* what;  ///< one line for --help and the log
  void (*measure)(Context& ctx, hw::HardwareProfile& out);
};

/// The table, in the order the sweeps run.
const std::vector<OpEntry>& op_table();

/// GEMM shapes of a scenario to measure: every shape the simulator prices at the scenario's
/// tokens per microbatch and at half and twice of them (workload::scenario_gemm_shapes_around),
/// so that nearby micro batches interpolate: forward and dgrad over m, wgrad over k.
std::vector<workload::GemmShape> gemm_shapes_to_measure(const workload::Scenario& sc);

/// Times one attention case (forward and backward) with random inputs; fills the point.
hw::AttentionPoint time_attention(const Context& ctx, int batch, int heads, int kv_heads,
                                  int seq, int head_dim, bool causal);

}  // namespace trainsim::calib
