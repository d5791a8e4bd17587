#include "workload/gemm_cost.hpp"

#include <stdexcept>

namespace trainsim::workload {

hw::Dtype gradient_dtype(hw::Dtype training) {
  return training == hw::Dtype::FP16 ? hw::Dtype::FP16 : hw::Dtype::FP32;
}

GemmTimes gemm_times(const cost::CostModel& cost, const model::Op& op, const GemmKernels& kernels,
                     int row_output_split) {
  const std::int64_t m = op.m, n = op.n, k = op.k;
  const double md = static_cast<double>(m), nd = static_cast<double>(n),
               kd = static_cast<double>(k);
  const hw::Dtype dtype = kernels.dtype;
  const hw::Dtype grad = gradient_dtype(dtype);
  GemmTimes g;
  g.fwd = cost.gemm(m, n, k, dtype);
  g.dgrad = cost.gemm(m, k, n, dtype);
  if (kernels.frozen_weights) {
    // No weight or bias gradient; FP8 casts the incoming gradient once, plain (read 2,
    // write 1 bytes per element), for dgrad.
    if (dtype == hw::Dtype::FP8) {
      g.dgrad += cost.memory_bound(3 * md * nd);
      if (op.name == "proj") g.fwd += cost.memory_bound(4 * md * kd);
    }
    if (op.bias && !kernels.bias_in_epilogue && op.bias_add_kernel) {
      const double e = hw::dtype_bytes(dtype == hw::Dtype::FP8 ? hw::Dtype::BF16 : dtype);
      g.fwd += cost.memory_bound(2 * md * nd * e);
    }
    return g;
  }
  if (kernels.fused_wgrad_accumulation) {
    g.wgrad = cost.gemm(k, n, m, dtype, 1,
                        grad == hw::Dtype::FP32 ? cost::Epilogue::AccumulateFp32
                                                : cost::Epilogue::Accumulate16);
  } else {
    g.wgrad = cost.gemm(k, n, m, dtype) +
              cost.memory_bound(kd * nd * (2.0 + 2.0 * hw::dtype_bytes(grad)));
  }
  if (dtype == hw::Dtype::FP8) {
    g.dgrad += cost.memory_bound(4 * md * nd);
    if (op.name == "proj") g.fwd += cost.memory_bound(4 * md * kd);
  }
  if (op.bias && !kernels.bias_in_epilogue) {
    const double e = hw::dtype_bytes(dtype == hw::Dtype::FP8 ? hw::Dtype::BF16 : dtype);
    const double rows = md / (op.shard == model::Shard::Row ? row_output_split : 1);
    g.wgrad += cost.memory_bound(rows * nd * e);
    if (op.bias_add_kernel) g.fwd += cost.memory_bound(2 * md * nd * e);
  }
  return g;
}

GemmTimes lora_adapter_times(const cost::CostModel& cost, const model::Op& op, int r,
                             hw::Dtype training) {
  if (r < 1) throw std::invalid_argument("lora_adapter_times: rank must be >= 1");
  const std::int64_t m = op.m, n = op.n, k = op.k;
  const hw::Dtype dt = training == hw::Dtype::FP16 ? hw::Dtype::FP16 : hw::Dtype::BF16;
  const double e = hw::dtype_bytes(dt);
  const double md = static_cast<double>(m), nd = static_cast<double>(n),
               kd = static_cast<double>(k);
  const cost::Epilogue acc = gradient_dtype(training) == hw::Dtype::FP32
                                 ? cost::Epilogue::AccumulateFp32
                                 : cost::Epilogue::Accumulate16;
  GemmTimes g;
  g.fwd = cost.gemm(m, r, k, dt) + cost.gemm(m, n, r, dt) + cost.memory_bound(3 * md * nd * e);
  g.dgrad = cost.gemm(m, r, n, dt) + cost.gemm(m, k, r, dt) + cost.memory_bound(3 * md * kd * e);
  g.wgrad = cost.gemm(r, n, m, dt, 1, acc) + cost.gemm(k, r, m, dt, 1, acc);
  return g;
}

}  // namespace trainsim::workload
