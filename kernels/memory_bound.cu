// Memory-bound kernels: norms, activations, softmax, cross-entropy, residual add, embedding,
// Adam, copy, and random fills (see kernels.hpp).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cmath>

#include "kernels.hpp"

namespace trainsim::kernels {

namespace {

using bf16 = __nv_bfloat16;
constexpr int kBlock = 256;
constexpr int kMaxColsPerThread = 64;  // norms: cols <= 256 * 64 = 16384

__device__ __forceinline__ float ld(const bf16* p, std::size_t i) { return __bfloat162float(p[i]); }

// Sum over the block (every thread gets the result). `sh` holds 32 floats.
__device__ float block_sum(float v, float* sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  float t = 0.f;
  for (int i = 0; i < int(blockDim.x / 32); ++i) t += sh[i];
  return t;
}

__device__ float block_max(float v, float* sh) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  float t = -INFINITY;
  for (int i = 0; i < int(blockDim.x / 32); ++i) t = fmaxf(t, sh[i]);
  return t;
}

// LayerNorm (rms = false) or RMSNorm (rms = true) forward: a block per row.
__global__ void norm_fwd_kernel(const bf16* x, const float* gamma, const float* beta, bf16* y,
                                int cols, bool rms) {
  __shared__ float sh[32];
  const std::size_t base = std::size_t(blockIdx.x) * cols;
  float s = 0.f, ss = 0.f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const float v = ld(x, base + c);
    s += v;
    ss += v * v;
  }
  const float mean = rms ? 0.f : block_sum(s, sh) / cols;
  const float msq = block_sum(ss, sh) / cols;
  const float var = rms ? msq : fmaxf(msq - mean * mean, 0.f);
  const float rstd = rsqrtf(var + 1e-5f);
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const float v = (ld(x, base + c) - mean) * rstd * gamma[c] + (rms ? 0.f : beta[c]);
    y[base + c] = __float2bfloat16(v);
  }
}

// Norm backward: blocks loop over rows; dx per row, dgamma/dbeta accumulated per thread over
// the block's rows and added once per block.
__global__ void norm_bwd_kernel(const bf16* x, const bf16* dy, const float* gamma, bf16* dx,
                                float* dgamma, float* dbeta, std::int64_t rows, int cols,
                                bool rms) {
  __shared__ float sh[32];
  float acc_g[kMaxColsPerThread], acc_b[kMaxColsPerThread];
  for (int t = 0; t < kMaxColsPerThread; ++t) acc_g[t] = acc_b[t] = 0.f;
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const std::size_t base = std::size_t(r) * cols;
    float s = 0.f, ss = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
      const float v = ld(x, base + c);
      s += v;
      ss += v * v;
    }
    const float mean = rms ? 0.f : block_sum(s, sh) / cols;
    const float msq = block_sum(ss, sh) / cols;
    const float rstd = rsqrtf((rms ? msq : fmaxf(msq - mean * mean, 0.f)) + 1e-5f);
    // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = gamma * dy (mean(g) only for LN)
    float sg = 0.f, sgx = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
      const float g = gamma[c] * ld(dy, base + c);
      const float xh = (ld(x, base + c) - mean) * rstd;
      sg += g;
      sgx += g * xh;
    }
    const float mg = rms ? 0.f : block_sum(sg, sh) / cols;
    const float mgx = block_sum(sgx, sh) / cols;
    int t = 0;
    for (int c = threadIdx.x; c < cols; c += blockDim.x, ++t) {
      const float d = ld(dy, base + c);
      const float xh = (ld(x, base + c) - mean) * rstd;
      dx[base + c] = __float2bfloat16(rstd * (gamma[c] * d - mg - xh * mgx));
      acc_g[t] += d * xh;
      acc_b[t] += d;
    }
  }
  int t = 0;
  for (int c = threadIdx.x; c < cols; c += blockDim.x, ++t) {
    atomicAdd(dgamma + c, acc_g[t]);
    if (!rms) atomicAdd(dbeta + c, acc_b[t]);
  }
}

__device__ __forceinline__ float gelu_t(float x, float* dgelu) {
  const float k0 = 0.7978845608028654f, k1 = 0.044715f;
  const float u = k0 * (x + k1 * x * x * x);
  const float t = tanhf(u);
  if (dgelu != nullptr) *dgelu = 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * k0 * (1.f + 3.f * k1 * x * x);
  return 0.5f * x * (1.f + t);
}

__global__ void gelu_fwd_kernel(const bf16* x, bf16* y, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    y[i] = __float2bfloat16(gelu_t(ld(x, i), nullptr));
  }
}

__global__ void gelu_bwd_kernel(const bf16* x, const bf16* dy, bf16* dx, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    float d = 0.f;
    (void)gelu_t(ld(x, i), &d);
    dx[i] = __float2bfloat16(d * ld(dy, i));
  }
}

__global__ void swiglu_fwd_kernel(const bf16* x, bf16* y, std::int64_t rows, int cols) {
  const std::int64_t n = rows * cols;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / cols, c = i % cols;
    const float a = ld(x, std::size_t(r) * 2 * cols + c);
    const float u = ld(x, std::size_t(r) * 2 * cols + cols + c);
    y[i] = __float2bfloat16(a / (1.f + __expf(-a)) * u);
  }
}

__global__ void swiglu_bwd_kernel(const bf16* x, const bf16* dy, bf16* dx, std::int64_t rows,
                                  int cols) {
  const std::int64_t n = rows * cols;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / cols, c = i % cols;
    const std::size_t ga = std::size_t(r) * 2 * cols + c, gu = ga + cols;
    const float a = ld(x, ga), u = ld(x, gu), d = ld(dy, i);
    const float sg = 1.f / (1.f + __expf(-a));
    dx[ga] = __float2bfloat16(d * u * sg * (1.f + a * (1.f - sg)));
    dx[gu] = __float2bfloat16(d * a * sg);
  }
}

// Row softmax (labels == nullptr, writes y) or cross-entropy (writes loss / dlogits).
__global__ void softmax_kernel(const bf16* x, bf16* y, const std::int32_t* labels, float* loss,
                               int cols) {
  __shared__ float sh[32];
  const std::size_t base = std::size_t(blockIdx.x) * cols;
  float m = -INFINITY;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) m = fmaxf(m, ld(x, base + c));
  m = block_max(m, sh);
  float s = 0.f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) s += __expf(ld(x, base + c) - m);
  s = block_sum(s, sh);
  if (loss != nullptr) {
    if (threadIdx.x == 0) loss[blockIdx.x] = m + logf(s) - ld(x, base + labels[blockIdx.x]);
    return;
  }
  const int label = labels != nullptr ? labels[blockIdx.x] : -1;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    y[base + c] = __float2bfloat16(__expf(ld(x, base + c) - m) / s - (c == label ? 1.f : 0.f));
  }
}

__global__ void add_kernel(const bf16* a, const bf16* b, bf16* y, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    y[i] = __float2bfloat16(ld(a, i) + ld(b, i));
  }
}

__global__ void embedding_fwd_kernel(const bf16* table, const std::int32_t* ids, bf16* out,
                                     std::int64_t tokens, int hidden) {
  const std::int64_t n = tokens * hidden;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    out[i] = table[std::size_t(ids[i / hidden]) * hidden + i % hidden];
  }
}

__global__ void embedding_bwd_kernel(const bf16* dout, const std::int32_t* ids, float* dtable,
                                     std::int64_t tokens, int hidden) {
  const std::int64_t n = tokens * hidden;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    atomicAdd(dtable + std::size_t(ids[i / hidden]) * hidden + i % hidden, ld(dout, i));
  }
}

__global__ void adam_kernel(float* master, float* m, float* v, const bf16* grad, bf16* weight,
                            std::int64_t n, float lr, float b1, float b2, float eps, float wd,
                            float c1, float c2) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const float g = ld(grad, i);
    const float mi = b1 * m[i] + (1.f - b1) * g;
    const float vi = b2 * v[i] + (1.f - b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    float w = master[i];
    w -= lr * ((mi / c1) / (sqrtf(vi / c2) + eps) + wd * w);
    master[i] = w;
    weight[i] = __float2bfloat16(w);
  }
}

__global__ void copy16_kernel(const int4* src, int4* dst, std::size_t n) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    dst[i] = src[i];
  }
}

__global__ void copy1_kernel(const unsigned char* src, unsigned char* dst, std::size_t n) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    dst[i] = src[i];
  }
}

__device__ __forceinline__ float hash_uniform(std::uint64_t seed, std::uint64_t i) {
  // splitmix64 of (seed, index) -> [-1, 1), away from 0 so that no value is zero.
  std::uint64_t z = seed * 0x9E3779B97F4A7C15ull + i + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  const float u = float(z >> 40) * (1.0f / 16777216.0f);  // [0, 1)
  const float s = u * 2.f - 1.f;
  return s >= 0.f ? fmaxf(s, 1.f / 64) : fminf(s, -1.f / 64);
}

__global__ void fill_kernel(void* p, std::int64_t n, int elem, std::uint64_t seed, float scale) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const float v = hash_uniform(seed, std::uint64_t(i)) * scale;
    switch (elem) {
      case 0: static_cast<bf16*>(p)[i] = __float2bfloat16(v); break;
      case 1: static_cast<__half*>(p)[i] = __float2half(v); break;
      case 2: static_cast<__nv_fp8_e4m3*>(p)[i] = __nv_fp8_e4m3(v); break;
      default: static_cast<float*>(p)[i] = v; break;
    }
  }
}

__global__ void ids_kernel(std::int32_t* p, std::int64_t n, int vocab, std::uint64_t seed) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const float u = (hash_uniform(seed, std::uint64_t(i)) + 1.f) * 0.5f;
    p[i] = min(vocab - 1, int(u * float(vocab)));
  }
}

__global__ void to_float_kernel(const bf16* s, float* d, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    d[i] = __bfloat162float(s[i]);
  }
}

// Grid of a grid-stride elementwise kernel: enough blocks to fill the GPU several times.
unsigned grid_for(std::int64_t n) {
  const std::int64_t blocks = (n + kBlock - 1) / kBlock;
  return static_cast<unsigned>(blocks < 65536 ? (blocks > 0 ? blocks : 1) : 65536);
}

bool bad_rows(std::int64_t rows, int cols) {
  return rows <= 0 || cols <= 0 || rows > 2147483647LL;
}

}  // namespace

cudaError_t layernorm_fwd(const void* x, const float* gamma, const float* beta, void* y,
                          std::int64_t rows, int cols, cudaStream_t stream) {
  if (bad_rows(rows, cols)) return cudaErrorInvalidValue;
  norm_fwd_kernel<<<unsigned(rows), kBlock, 0, stream>>>(static_cast<const bf16*>(x), gamma, beta,
                                                         static_cast<bf16*>(y), cols, false);
  return cudaGetLastError();
}

cudaError_t rmsnorm_fwd(const void* x, const float* gamma, void* y, std::int64_t rows, int cols,
                        cudaStream_t stream) {
  if (bad_rows(rows, cols)) return cudaErrorInvalidValue;
  norm_fwd_kernel<<<unsigned(rows), kBlock, 0, stream>>>(static_cast<const bf16*>(x), gamma,
                                                         nullptr, static_cast<bf16*>(y), cols, true);
  return cudaGetLastError();
}

namespace {
cudaError_t norm_bwd(const void* x, const void* dy, const float* gamma, void* dx, float* dgamma,
                     float* dbeta, std::int64_t rows, int cols, bool rms, cudaStream_t stream) {
  if (bad_rows(rows, cols) || cols > kBlock * kMaxColsPerThread) return cudaErrorInvalidValue;
  const unsigned grid = static_cast<unsigned>(rows < 1024 ? rows : 1024);
  norm_bwd_kernel<<<grid, kBlock, 0, stream>>>(static_cast<const bf16*>(x),
                                               static_cast<const bf16*>(dy), gamma,
                                               static_cast<bf16*>(dx), dgamma, dbeta, rows, cols, rms);
  return cudaGetLastError();
}
}  // namespace

cudaError_t layernorm_bwd(const void* x, const void* dy, const float* gamma, void* dx,
                          float* dgamma, float* dbeta, std::int64_t rows, int cols,
                          cudaStream_t stream) {
  return norm_bwd(x, dy, gamma, dx, dgamma, dbeta, rows, cols, false, stream);
}

cudaError_t rmsnorm_bwd(const void* x, const void* dy, const float* gamma, void* dx,
                        float* dgamma, std::int64_t rows, int cols, cudaStream_t stream) {
  return norm_bwd(x, dy, gamma, dx, dgamma, nullptr, rows, cols, true, stream);
}

cudaError_t gelu_fwd(const void* x, void* y, std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return cudaErrorInvalidValue;
  gelu_fwd_kernel<<<grid_for(n), kBlock, 0, stream>>>(static_cast<const bf16*>(x),
                                                      static_cast<bf16*>(y), n);
  return cudaGetLastError();
}

cudaError_t gelu_bwd(const void* x, const void* dy, void* dx, std::int64_t n,
                     cudaStream_t stream) {
  if (n <= 0) return cudaErrorInvalidValue;
  gelu_bwd_kernel<<<grid_for(n), kBlock, 0, stream>>>(
      static_cast<const bf16*>(x), static_cast<const bf16*>(dy), static_cast<bf16*>(dx), n);
  return cudaGetLastError();
}

cudaError_t swiglu_fwd(const void* x, void* y, std::int64_t rows, int cols, cudaStream_t stream) {
  if (bad_rows(rows, cols)) return cudaErrorInvalidValue;
  swiglu_fwd_kernel<<<grid_for(rows * cols), kBlock, 0, stream>>>(
      static_cast<const bf16*>(x), static_cast<bf16*>(y), rows, cols);
  return cudaGetLastError();
}

cudaError_t swiglu_bwd(const void* x, const void* dy, void* dx, std::int64_t rows, int cols,
                       cudaStream_t stream) {
  if (bad_rows(rows, cols)) return cudaErrorInvalidValue;
  swiglu_bwd_kernel<<<grid_for(rows * cols), kBlock, 0, stream>>>(
      static_cast<const bf16*>(x), static_cast<const bf16*>(dy), static_cast<bf16*>(dx), rows,
      cols);
  return cudaGetLastError();
}

cudaError_t softmax_fwd(const void* x, void* y, std::int64_t rows, int cols,
                        cudaStream_t stream) {
  if (bad_rows(rows, cols)) return cudaErrorInvalidValue;
  softmax_kernel<<<unsigned(rows), kBlock, 0, stream>>>(static_cast<const bf16*>(x),
                                                        static_cast<bf16*>(y), nullptr, nullptr, cols);
  return cudaGetLastError();
}

cudaError_t cross_entropy_fwd(const void* logits, const std::int32_t* labels, float* loss,
                              std::int64_t rows, int cols, cudaStream_t stream) {
  if (bad_rows(rows, cols)) return cudaErrorInvalidValue;
  softmax_kernel<<<unsigned(rows), kBlock, 0, stream>>>(static_cast<const bf16*>(logits), nullptr,
                                                        labels, loss, cols);
  return cudaGetLastError();
}

cudaError_t cross_entropy_bwd(const void* logits, const std::int32_t* labels, void* dlogits,
                              std::int64_t rows, int cols, cudaStream_t stream) {
  if (bad_rows(rows, cols)) return cudaErrorInvalidValue;
  softmax_kernel<<<unsigned(rows), kBlock, 0, stream>>>(static_cast<const bf16*>(logits),
                                                        static_cast<bf16*>(dlogits), labels,
                                                        nullptr, cols);
  return cudaGetLastError();
}

cudaError_t add(const void* a, const void* b, void* y, std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return cudaErrorInvalidValue;
  add_kernel<<<grid_for(n), kBlock, 0, stream>>>(static_cast<const bf16*>(a),
                                                 static_cast<const bf16*>(b),
                                                 static_cast<bf16*>(y), n);
  return cudaGetLastError();
}

cudaError_t embedding_fwd(const void* table, const std::int32_t* ids, void* out,
                          std::int64_t tokens, int hidden, cudaStream_t stream) {
  if (bad_rows(tokens, hidden)) return cudaErrorInvalidValue;
  embedding_fwd_kernel<<<grid_for(tokens * hidden), kBlock, 0, stream>>>(
      static_cast<const bf16*>(table), ids, static_cast<bf16*>(out), tokens, hidden);
  return cudaGetLastError();
}

cudaError_t embedding_bwd(const void* dout, const std::int32_t* ids, float* dtable,
                          std::int64_t tokens, int hidden, cudaStream_t stream) {
  if (bad_rows(tokens, hidden)) return cudaErrorInvalidValue;
  embedding_bwd_kernel<<<grid_for(tokens * hidden), kBlock, 0, stream>>>(
      static_cast<const bf16*>(dout), ids, dtable, tokens, hidden);
  return cudaGetLastError();
}

cudaError_t adam_step(float* master, float* m, float* v, const void* grad, void* weight,
                      std::int64_t n, float lr, float beta1, float beta2, float eps,
                      float weight_decay, int step, cudaStream_t stream) {
  if (n <= 0 || step < 1) return cudaErrorInvalidValue;
  const float c1 = 1.f - std::pow(beta1, float(step));
  const float c2 = 1.f - std::pow(beta2, float(step));
  adam_kernel<<<grid_for(n), kBlock, 0, stream>>>(master, m, v, static_cast<const bf16*>(grad),
                                                  static_cast<bf16*>(weight), n, lr, beta1, beta2,
                                                  eps, weight_decay, c1, c2);
  return cudaGetLastError();
}

cudaError_t copy(const void* src, void* dst, std::size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return cudaErrorInvalidValue;
  const bool aligned = (reinterpret_cast<std::uintptr_t>(src) % 16 == 0) &&
                       (reinterpret_cast<std::uintptr_t>(dst) % 16 == 0) && bytes % 16 == 0;
  if (aligned) {
    copy16_kernel<<<grid_for(std::int64_t(bytes / 16)), kBlock, 0, stream>>>(
        static_cast<const int4*>(src), static_cast<int4*>(dst), bytes / 16);
  } else {
    copy1_kernel<<<grid_for(std::int64_t(bytes)), kBlock, 0, stream>>>(
        static_cast<const unsigned char*>(src), static_cast<unsigned char*>(dst), bytes);
  }
  return cudaGetLastError();
}

cudaError_t fill_random(void* p, std::int64_t n, Elem e, std::uint64_t seed, float scale,
                        cudaStream_t stream) {
  if (n <= 0) return cudaErrorInvalidValue;
  fill_kernel<<<grid_for(n), kBlock, 0, stream>>>(p, n, static_cast<int>(e), seed, scale);
  return cudaGetLastError();
}

cudaError_t fill_ids(std::int32_t* p, std::int64_t n, int vocab, std::uint64_t seed,
                     cudaStream_t stream) {
  if (n <= 0 || vocab <= 0) return cudaErrorInvalidValue;
  ids_kernel<<<grid_for(n), kBlock, 0, stream>>>(p, n, vocab, seed);
  return cudaGetLastError();
}

cudaError_t bf16_to_float(const void* src, float* dst, std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return cudaErrorInvalidValue;
  to_float_kernel<<<grid_for(n), kBlock, 0, stream>>>(static_cast<const bf16*>(src), dst, n);
  return cudaGetLastError();
}

}  // namespace trainsim::kernels
