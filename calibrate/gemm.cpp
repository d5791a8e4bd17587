#include "gemm.hpp"

#include <string>

#include "kernels.hpp"

namespace trainsim::calib {

namespace {

constexpr std::size_t kWorkspace = 32u << 20;

void lt_check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    throw DeviceError(std::string(what) + ": cuBLASLt status " + std::to_string(int(s)));
  }
}

cudaDataType_t in_type(hw::Dtype d) {
  switch (d) {
    case hw::Dtype::BF16: return CUDA_R_16BF;
    case hw::Dtype::FP16: return CUDA_R_16F;
    case hw::Dtype::FP8: return CUDA_R_8F_E4M3;
    case hw::Dtype::FP32: return CUDA_R_32F;
  }
  return CUDA_R_16BF;
}

cudaDataType_t out_type(hw::Dtype d) {
  switch (d) {
    case hw::Dtype::FP16: return CUDA_R_16F;
    case hw::Dtype::FP32: return CUDA_R_32F;
    default: return CUDA_R_16BF;
  }
}

kernels::Elem elem(hw::Dtype d) {
  switch (d) {
    case hw::Dtype::BF16: return kernels::Elem::BF16;
    case hw::Dtype::FP16: return kernels::Elem::FP16;
    case hw::Dtype::FP8: return kernels::Elem::FP8E4M3;
    case hw::Dtype::FP32: return kernels::Elem::FP32;
  }
  return kernels::Elem::BF16;
}

std::size_t out_bytes(hw::Dtype d) { return d == hw::Dtype::FP32 ? 4 : 2; }

}  // namespace

GemmRunner::GemmRunner() {
  lt_check(cublasLtCreate(&handle_), "cublasLtCreate");
  workspace_.grow(kWorkspace);
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, dev), "cudaGetDeviceProperties");
  cc_ = prop.major * 10 + prop.minor;
}

GemmRunner::~GemmRunner() {
  for (auto& [key, p] : plans_) {
    (void)cublasLtMatrixLayoutDestroy(p.a);
    (void)cublasLtMatrixLayoutDestroy(p.b);
    (void)cublasLtMatrixLayoutDestroy(p.c);
    (void)cublasLtMatmulDescDestroy(p.op);
  }
  if (handle_ != nullptr) (void)cublasLtDestroy(handle_);
}

bool GemmRunner::supports(hw::Dtype dtype) const {
  return dtype != hw::Dtype::FP8 || cc_ >= 89;
}

const GemmRunner::Plan& GemmRunner::plan(hw::Dtype dtype, std::int64_t m, std::int64_t n,
                                         std::int64_t k) {
  const auto key = std::make_tuple(int(dtype), m, n, k);
  if (auto it = plans_.find(key); it != plans_.end()) return it->second;
  Plan p;
  const cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  lt_check(cublasLtMatmulDescCreate(&p.op, compute, CUDA_R_32F), "cublasLtMatmulDescCreate");
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  lt_check(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta),
           "TRANSA");
  lt_check(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb),
           "TRANSB");
  const auto um = static_cast<std::uint64_t>(m), un = static_cast<std::uint64_t>(n),
             uk = static_cast<std::uint64_t>(k);
  lt_check(cublasLtMatrixLayoutCreate(&p.a, in_type(dtype), uk, um, k), "layout A");
  lt_check(cublasLtMatrixLayoutCreate(&p.b, in_type(dtype), uk, un, k), "layout B");
  lt_check(cublasLtMatrixLayoutCreate(&p.c, out_type(dtype), um, un, m), "layout C");
  cublasLtMatmulPreference_t pref = nullptr;
  lt_check(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
  const std::size_t ws = kWorkspace;
  lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                &ws, sizeof ws),
           "workspace preference");
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.a, p.b, p.c, p.c,
                                                          pref, 1, &result, &found);
  (void)cublasLtMatmulPreferenceDestroy(pref);
  if (s != CUBLAS_STATUS_SUCCESS || found == 0) {
    (void)cublasLtMatrixLayoutDestroy(p.a);
    (void)cublasLtMatrixLayoutDestroy(p.b);
    (void)cublasLtMatrixLayoutDestroy(p.c);
    (void)cublasLtMatmulDescDestroy(p.op);
    throw DeviceError("cuBLASLt has no algorithm for " + std::string(hw::dtype_name(dtype)) +
                      " m=" + std::to_string(m) + " n=" + std::to_string(n) +
                      " k=" + std::to_string(k));
  }
  p.algo = result.algo;
  return plans_.emplace(key, p).first->second;
}

void GemmRunner::prepare(hw::Dtype dtype, std::int64_t m, std::int64_t n, std::int64_t k,
                         cudaStream_t stream) {
  const std::size_t in = static_cast<std::size_t>(hw::dtype_bytes(dtype));
  const std::size_t a = static_cast<std::size_t>(m) * static_cast<std::size_t>(k) * in;
  const std::size_t b = static_cast<std::size_t>(k) * static_cast<std::size_t>(n) * in;
  const std::size_t c = static_cast<std::size_t>(m) * static_cast<std::size_t>(n) * out_bytes(dtype);
  const bool grew = a > a_.bytes() || b > b_.bytes();
  a_.grow(a);
  b_.grow(b);
  c_.grow(c);
  if (grew || filled_dtype_ != int(dtype) || a > filled_a_ || b > filled_b_) {
    // Random values over the whole buffer (never zeros: tensor-core power and clocks
    // depend on the data).
    check(kernels::fill_random(a_.get(), std::int64_t(a_.bytes() / in), elem(dtype), 1, 1.0f,
                               stream),
          "fill A");
    check(kernels::fill_random(b_.get(), std::int64_t(b_.bytes() / in), elem(dtype), 2, 1.0f,
                               stream),
          "fill B");
    filled_dtype_ = int(dtype);
    filled_a_ = a_.bytes();
    filled_b_ = b_.bytes();
  }
  (void)plan(dtype, m, n, k);
}

void GemmRunner::run(hw::Dtype dtype, std::int64_t m, std::int64_t n, std::int64_t k,
                     cudaStream_t stream) {
  const Plan& p = plan(dtype, m, n, k);
  const float alpha = 1.0f, beta = 0.0f;
  lt_check(cublasLtMatmul(handle_, p.op, &alpha, a_.get(), p.a, b_.get(), p.b, &beta, c_.get(),
                          p.c, c_.get(), p.c, &p.algo, workspace_.get(), kWorkspace, stream),
           "cublasLtMatmul");
}

double GemmRunner::time(hw::Dtype dtype, std::int64_t m, std::int64_t n, std::int64_t k,
                        cudaStream_t stream, const TimingOptions& t) {
  prepare(dtype, m, n, k, stream);
  return median_seconds([&](cudaStream_t s) { run(dtype, m, n, k, s); }, stream, t);
}

}  // namespace trainsim::calib
