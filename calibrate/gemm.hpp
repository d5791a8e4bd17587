// cuBLASLt GEMMs as the simulator describes them: C[m x n] = A[m x k] * B[k x n] with
// 16-bit (bf16, fp16) or fp8 e4m3 inputs, fp32 accumulation and 16-bit output (bf16 for
// fp8 inputs). Laid out as cuBLASLt's "TN" column-major case (A transposed, which FP8
// requires): D[m x n] = A^T[m x k] * B[k x n] with A stored k x m, B k x n, D m x n.
// The algorithm is cuBLASLt's first heuristic with a 32 MiB workspace, as frameworks use.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <tuple>

#include "harness.hpp"
#include "hw/gpu.hpp"

namespace trainsim::calib {

class GemmRunner {
 public:
  GemmRunner();
  ~GemmRunner();
  GemmRunner(const GemmRunner&) = delete;
  GemmRunner& operator=(const GemmRunner&) = delete;

  /// Whether the current device can run `dtype` GEMMs (FP8: compute capability >= 8.9).
  [[nodiscard]] bool supports(hw::Dtype dtype) const;
  /// Makes the operand buffers large enough for (m, n, k) and fills them with random values.
  void prepare(hw::Dtype dtype, std::int64_t m, std::int64_t n, std::int64_t k,
               cudaStream_t stream);
  /// Enqueues the GEMM on `stream` (operands from prepare(); prepare first).
  void run(hw::Dtype dtype, std::int64_t m, std::int64_t n, std::int64_t k, cudaStream_t stream);
  /// prepare + median time of run.
  double time(hw::Dtype dtype, std::int64_t m, std::int64_t n, std::int64_t k,
              cudaStream_t stream, const TimingOptions& t);

 private:
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  const Plan& plan(hw::Dtype dtype, std::int64_t m, std::int64_t n, std::int64_t k);

  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer a_, b_, c_, workspace_;
  std::map<std::tuple<int, std::int64_t, std::int64_t, std::int64_t>, Plan> plans_;
  int filled_dtype_ = -1;
  std::size_t filled_a_ = 0, filled_b_ = 0;
  int cc_ = 0;
};

}  // namespace trainsim::calib
