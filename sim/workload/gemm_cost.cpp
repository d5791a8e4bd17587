#include "workload/gemm_cost.hpp"

namespace trainsim::workload {

GemmTimes gemm_times(const cost::CostModel& cost, const model::Op& op, hw::Dtype dtype,
                     bool bias_in_epilogue, int row_output_split) {
  const std::int64_t m = op.m, n = op.n, k = op.k;
  const double md = static_cast<double>(m), nd = static_cast<double>(n),
               kd = static_cast<double>(k);
  GemmTimes g;
  g.fwd = cost.gemm(m, n, k, dtype);
  g.dgrad = cost.gemm(m, k, n, dtype);
  g.wgrad = cost.gemm(k, n, m, dtype, 1, cost::Epilogue::AccumulateFp32);
  if (dtype == hw::Dtype::FP8) {
    g.dgrad += cost.memory_bound(4 * md * nd);
    if (op.name == "proj") g.fwd += cost.memory_bound(4 * md * kd);
  }
  if (op.bias && !bias_in_epilogue) {
    const double e = hw::dtype_bytes(dtype == hw::Dtype::FP8 ? hw::Dtype::BF16 : dtype);
    const double rows = md / (op.shard == model::Shard::Row ? row_output_split : 1);
    g.wgrad += cost.memory_bound(rows * nd * e);
    if (op.bias_add_kernel) g.fwd += cost.memory_bound(2 * md * nd * e);
  }
  return g;
}

}  // namespace trainsim::workload
