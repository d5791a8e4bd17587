// FlashAttention-2-style forward and backward, and naive references (see kernels.hpp).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>

#include "kernels.hpp"

namespace trainsim::kernels {

namespace {

using bf16 = __nv_bfloat16;

constexpr int kTpr = 8;                 // threads per query (or key) row
constexpr int kRows = 16;               // rows per block
constexpr int kThreads = kTpr * kRows;  // 128
constexpr int kKeyTile = 64;            // keys per shared-memory tile (fwd, dQ)
constexpr int kQueryTile = 64;          // queries per shared-memory tile (dK/dV)

__device__ __forceinline__ float row_sum(float v) {
  // The 8 threads of a row are 8 consecutive lanes: butterfly inside the group.
  v += __shfl_xor_sync(0xffffffffu, v, 4);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v;
}

__device__ __forceinline__ std::size_t qidx(int b, int i, int h, int S, int H, int D) {
  return ((std::size_t(b) * S + i) * H + h) * D;
}

// Forward: a block per (16 queries, batch x head). Each query row is held by 8 threads,
// element d = e * 8 + lane of the row. K/V tiles of 64 keys go through shared memory; the
// online softmax keeps the running max m and sum l (FA2 Alg. 1).
template <int D>
__global__ void __launch_bounds__(kThreads)
    fwd_kernel(const bf16* __restrict__ Q, const bf16* __restrict__ K, const bf16* __restrict__ V,
               bf16* __restrict__ O, float* __restrict__ LSE, int S, int H, int Hkv, bool causal,
               float scale) {
  constexpr int E = D / kTpr;
  __shared__ bf16 sK[kKeyTile][D];
  __shared__ bf16 sV[kKeyTile][D];
  const int bh = blockIdx.y, b = bh / H, h = bh % H, hk = h / (H / Hkv);
  const int row = threadIdx.x / kTpr, lr = threadIdx.x % kTpr;
  const int i = blockIdx.x * kRows + row;
  const bool valid = i < S;
  float q[E], acc[E];
  for (int e = 0; e < E; ++e) {
    q[e] = valid ? __bfloat162float(Q[qidx(b, i, h, S, H, D) + e * kTpr + lr]) * scale : 0.f;
    acc[e] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  const int last_key = causal ? min(S - 1, blockIdx.x * kRows + kRows - 1) : S - 1;
  for (int kt = 0; kt <= last_key; kt += kKeyTile) {
    for (int idx = threadIdx.x; idx < kKeyTile * D; idx += kThreads) {
      const int jj = idx / D, dd = idx % D, key = kt + jj;
      const std::size_t g = qidx(b, key, hk, S, Hkv, D) + dd;
      sK[jj][dd] = key < S ? K[g] : __float2bfloat16(0.f);
      sV[jj][dd] = key < S ? V[g] : __float2bfloat16(0.f);
    }
    __syncthreads();
    const int n = min(kKeyTile, last_key + 1 - kt);
    for (int jj = 0; jj < n; ++jj) {
      float part = 0.f;
      for (int e = 0; e < E; ++e) part += q[e] * __bfloat162float(sK[jj][e * kTpr + lr]);
      const float s = row_sum(part);
      const int key = kt + jj;
      if (valid && !(causal && key > i)) {
        const float m_new = fmaxf(m, s);
        const float corr = __expf(m - m_new);
        const float p = __expf(s - m_new);
        l = l * corr + p;
        for (int e = 0; e < E; ++e) {
          acc[e] = acc[e] * corr + p * __bfloat162float(sV[jj][e * kTpr + lr]);
        }
        m = m_new;
      }
    }
    __syncthreads();
  }
  if (valid) {
    const float inv = 1.f / l;
    for (int e = 0; e < E; ++e) O[qidx(b, i, h, S, H, D) + e * kTpr + lr] = __float2bfloat16(acc[e] * inv);
    if (lr == 0) LSE[(std::size_t(b) * H + h) * S + i] = m + logf(l);
  }
}

// Delta[b, h, i] = sum_d dO * O (FA2 Alg. 2, line 4).
__global__ void delta_kernel(const bf16* __restrict__ O, const bf16* __restrict__ dO,
                             float* __restrict__ delta, int B, int S, int H, int D) {
  const std::size_t r = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= std::size_t(B) * H * S) return;
  const int i = int(r % S), h = int((r / S) % H), b = int(r / (std::size_t(S) * H));
  const std::size_t base = qidx(b, i, h, S, H, D);
  float s = 0.f;
  for (int d = 0; d < D; ++d) s += __bfloat162float(dO[base + d]) * __bfloat162float(O[base + d]);
  delta[r] = s;
}

// dK, dV: a block per (16 keys, batch x K/V head); loops over every query head of the group
// and every query (tiles of 64 through shared memory), recomputing P = exp(S - LSE).
template <int D>
__global__ void __launch_bounds__(kThreads)
    dkdv_kernel(const bf16* __restrict__ Q, const bf16* __restrict__ K, const bf16* __restrict__ V,
                const bf16* __restrict__ dO, const float* __restrict__ LSE,
                const float* __restrict__ delta, bf16* __restrict__ dK, bf16* __restrict__ dV,
                int S, int H, int Hkv, bool causal, float scale) {
  constexpr int E = D / kTpr;
  __shared__ bf16 sQ[kQueryTile][D];
  __shared__ bf16 sdO[kQueryTile][D];
  __shared__ float sL[kQueryTile], sD[kQueryTile];
  const int bh = blockIdx.y, b = bh / Hkv, hk = bh % Hkv, G = H / Hkv;
  const int row = threadIdx.x / kTpr, lr = threadIdx.x % kTpr;
  const int j = blockIdx.x * kRows + row;
  const bool valid = j < S;
  float k[E], v[E], dk[E], dv[E];
  for (int e = 0; e < E; ++e) {
    const std::size_t g = qidx(b, valid ? j : 0, hk, S, Hkv, D) + e * kTpr + lr;
    k[e] = valid ? __bfloat162float(K[g]) : 0.f;
    v[e] = valid ? __bfloat162float(V[g]) : 0.f;
    dk[e] = dv[e] = 0.f;
  }
  const int first_query = causal ? (blockIdx.x * kRows / kQueryTile) * kQueryTile : 0;
  for (int h = hk * G; h < hk * G + G; ++h) {
    for (int qt = first_query; qt < S; qt += kQueryTile) {
      for (int idx = threadIdx.x; idx < kQueryTile * D; idx += kThreads) {
        const int ii = idx / D, dd = idx % D, qi = qt + ii;
        const std::size_t g = qidx(b, qi, h, S, H, D) + dd;
        sQ[ii][dd] = qi < S ? Q[g] : __float2bfloat16(0.f);
        sdO[ii][dd] = qi < S ? dO[g] : __float2bfloat16(0.f);
      }
      for (int ii = threadIdx.x; ii < kQueryTile; ii += kThreads) {
        const int qi = qt + ii;
        const std::size_t r = (std::size_t(b) * H + h) * S + qi;
        sL[ii] = qi < S ? LSE[r] : 0.f;
        sD[ii] = qi < S ? delta[r] : 0.f;
      }
      __syncthreads();
      const int n = min(kQueryTile, S - qt);
      for (int ii = 0; ii < n; ++ii) {
        float ps = 0.f, pd = 0.f;
        for (int e = 0; e < E; ++e) {
          ps += __bfloat162float(sQ[ii][e * kTpr + lr]) * k[e];
          pd += __bfloat162float(sdO[ii][e * kTpr + lr]) * v[e];
        }
        const float s = row_sum(ps) * scale;
        const float dp = row_sum(pd);
        const int qi = qt + ii;
        if (valid && !(causal && j > qi)) {
          const float p = __expf(s - sL[ii]);
          const float ds = p * (dp - sD[ii]) * scale;
          for (int e = 0; e < E; ++e) {
            dv[e] += p * __bfloat162float(sdO[ii][e * kTpr + lr]);
            dk[e] += ds * __bfloat162float(sQ[ii][e * kTpr + lr]);
          }
        }
      }
      __syncthreads();
    }
  }
  if (valid) {
    for (int e = 0; e < E; ++e) {
      const std::size_t g = qidx(b, j, hk, S, Hkv, D) + e * kTpr + lr;
      dK[g] = __float2bfloat16(dk[e]);
      dV[g] = __float2bfloat16(dv[e]);
    }
  }
}

// dQ: a block per (16 queries, batch x head), looping over key tiles like the forward.
template <int D>
__global__ void __launch_bounds__(kThreads)
    dq_kernel(const bf16* __restrict__ Q, const bf16* __restrict__ K, const bf16* __restrict__ V,
              const bf16* __restrict__ dO, const float* __restrict__ LSE,
              const float* __restrict__ delta, bf16* __restrict__ dQ, int S, int H, int Hkv,
              bool causal, float scale) {
  constexpr int E = D / kTpr;
  __shared__ bf16 sK[kKeyTile][D];
  __shared__ bf16 sV[kKeyTile][D];
  const int bh = blockIdx.y, b = bh / H, h = bh % H, hk = h / (H / Hkv);
  const int row = threadIdx.x / kTpr, lr = threadIdx.x % kTpr;
  const int i = blockIdx.x * kRows + row;
  const bool valid = i < S;
  float q[E], go[E], dq[E];
  for (int e = 0; e < E; ++e) {
    const std::size_t g = qidx(b, valid ? i : 0, h, S, H, D) + e * kTpr + lr;
    q[e] = valid ? __bfloat162float(Q[g]) : 0.f;
    go[e] = valid ? __bfloat162float(dO[g]) : 0.f;
    dq[e] = 0.f;
  }
  const std::size_t r = (std::size_t(b) * H + h) * S + (valid ? i : 0);
  const float lse = LSE[r], dlt = delta[r];
  const int last_key = causal ? min(S - 1, blockIdx.x * kRows + kRows - 1) : S - 1;
  for (int kt = 0; kt <= last_key; kt += kKeyTile) {
    for (int idx = threadIdx.x; idx < kKeyTile * D; idx += kThreads) {
      const int jj = idx / D, dd = idx % D, key = kt + jj;
      const std::size_t g = qidx(b, key, hk, S, Hkv, D) + dd;
      sK[jj][dd] = key < S ? K[g] : __float2bfloat16(0.f);
      sV[jj][dd] = key < S ? V[g] : __float2bfloat16(0.f);
    }
    __syncthreads();
    const int n = min(kKeyTile, last_key + 1 - kt);
    for (int jj = 0; jj < n; ++jj) {
      float ps = 0.f, pd = 0.f;
      for (int e = 0; e < E; ++e) {
        ps += q[e] * __bfloat162float(sK[jj][e * kTpr + lr]);
        pd += go[e] * __bfloat162float(sV[jj][e * kTpr + lr]);
      }
      const float s = row_sum(ps) * scale;
      const float dp = row_sum(pd);
      const int key = kt + jj;
      if (valid && !(causal && key > i)) {
        const float ds = __expf(s - lse) * (dp - dlt) * scale;
        for (int e = 0; e < E; ++e) dq[e] += ds * __bfloat162float(sK[jj][e * kTpr + lr]);
      }
    }
    __syncthreads();
  }
  if (valid) {
    for (int e = 0; e < E; ++e) dQ[qidx(b, i, h, S, H, D) + e * kTpr + lr] = __float2bfloat16(dq[e]);
  }
}

// ----- naive references: one thread per row, fp32, global memory only -----

__global__ void ref_fwd_kernel(const bf16* Q, const bf16* K, const bf16* V, float* O, float* LSE,
                               int B, int S, int H, int Hkv, int D, bool causal, float scale) {
  const std::size_t r = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= std::size_t(B) * H * S) return;
  const int i = int(r % S), h = int((r / S) % H), b = int(r / (std::size_t(S) * H));
  const int hk = h / (H / Hkv);
  const int n = causal ? i + 1 : S;
  auto score = [&](int j) {
    float s = 0.f;
    for (int d = 0; d < D; ++d) {
      s += __bfloat162float(Q[qidx(b, i, h, S, H, D) + d]) *
           __bfloat162float(K[qidx(b, j, hk, S, Hkv, D) + d]);
    }
    return s * scale;
  };
  float m = -INFINITY;
  for (int j = 0; j < n; ++j) m = fmaxf(m, score(j));
  float l = 0.f;
  float* o = O + qidx(b, i, h, S, H, D);
  for (int d = 0; d < D; ++d) o[d] = 0.f;
  for (int j = 0; j < n; ++j) {
    const float p = expf(score(j) - m);
    l += p;
    for (int d = 0; d < D; ++d) o[d] += p * __bfloat162float(V[qidx(b, j, hk, S, Hkv, D) + d]);
  }
  for (int d = 0; d < D; ++d) o[d] /= l;
  LSE[r] = m + logf(l);
}

// P_ij and dP_ij of row i against key j (reference helpers).
__device__ float ref_dot(const bf16* a, const bf16* b, int D) {
  float s = 0.f;
  for (int d = 0; d < D; ++d) s += __bfloat162float(a[d]) * __bfloat162float(b[d]);
  return s;
}

// Per row: LSE and Delta_i = sum_j P_ij dP_ij (= rowsum(dO * O) in exact arithmetic).
__global__ void ref_stats_kernel(const bf16* Q, const bf16* K, const bf16* V, const bf16* dO,
                                 float* LSE, float* delta, int B, int S, int H, int Hkv, int D,
                                 bool causal, float scale) {
  const std::size_t r = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= std::size_t(B) * H * S) return;
  const int i = int(r % S), h = int((r / S) % H), b = int(r / (std::size_t(S) * H));
  const int hk = h / (H / Hkv);
  const int n = causal ? i + 1 : S;
  const bf16* q = Q + qidx(b, i, h, S, H, D);
  const bf16* go = dO + qidx(b, i, h, S, H, D);
  float m = -INFINITY;
  for (int j = 0; j < n; ++j) m = fmaxf(m, ref_dot(q, K + qidx(b, j, hk, S, Hkv, D), D) * scale);
  float l = 0.f;
  for (int j = 0; j < n; ++j) l += expf(ref_dot(q, K + qidx(b, j, hk, S, Hkv, D), D) * scale - m);
  const float lse = m + logf(l);
  float dl = 0.f;
  for (int j = 0; j < n; ++j) {
    const float p = expf(ref_dot(q, K + qidx(b, j, hk, S, Hkv, D), D) * scale - lse);
    dl += p * ref_dot(go, V + qidx(b, j, hk, S, Hkv, D), D);
  }
  LSE[r] = lse;
  delta[r] = dl;
}

__global__ void ref_dq_kernel(const bf16* Q, const bf16* K, const bf16* V, const bf16* dO,
                              const float* LSE, const float* delta, float* dQ, int B, int S,
                              int H, int Hkv, int D, bool causal, float scale) {
  const std::size_t r = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= std::size_t(B) * H * S) return;
  const int i = int(r % S), h = int((r / S) % H), b = int(r / (std::size_t(S) * H));
  const int hk = h / (H / Hkv);
  const int n = causal ? i + 1 : S;
  const bf16* q = Q + qidx(b, i, h, S, H, D);
  const bf16* go = dO + qidx(b, i, h, S, H, D);
  float* dq = dQ + qidx(b, i, h, S, H, D);
  for (int d = 0; d < D; ++d) dq[d] = 0.f;
  for (int j = 0; j < n; ++j) {
    const bf16* kj = K + qidx(b, j, hk, S, Hkv, D);
    const float p = expf(ref_dot(q, kj, D) * scale - LSE[r]);
    const float ds = p * (ref_dot(go, V + qidx(b, j, hk, S, Hkv, D), D) - delta[r]) * scale;
    for (int d = 0; d < D; ++d) dq[d] += ds * __bfloat162float(kj[d]);
  }
}

__global__ void ref_dkdv_kernel(const bf16* Q, const bf16* K, const bf16* V, const bf16* dO,
                                const float* LSE, const float* delta, float* dK, float* dV,
                                int B, int S, int H, int Hkv, int D, bool causal, float scale) {
  const std::size_t r = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= std::size_t(B) * Hkv * S) return;
  const int j = int(r % S), hk = int((r / S) % Hkv), b = int(r / (std::size_t(S) * Hkv));
  const int G = H / Hkv;
  const bf16* kj = K + qidx(b, j, hk, S, Hkv, D);
  const bf16* vj = V + qidx(b, j, hk, S, Hkv, D);
  float* dk = dK + qidx(b, j, hk, S, Hkv, D);
  float* dv = dV + qidx(b, j, hk, S, Hkv, D);
  for (int d = 0; d < D; ++d) dk[d] = dv[d] = 0.f;
  for (int h = hk * G; h < hk * G + G; ++h) {
    for (int i = causal ? j : 0; i < S; ++i) {
      const std::size_t ri = (std::size_t(b) * H + h) * S + i;
      const bf16* q = Q + qidx(b, i, h, S, H, D);
      const bf16* go = dO + qidx(b, i, h, S, H, D);
      const float p = expf(ref_dot(q, kj, D) * scale - LSE[ri]);
      const float ds = p * (ref_dot(go, vj, D) - delta[ri]) * scale;
      for (int d = 0; d < D; ++d) {
        dv[d] += p * __bfloat162float(go[d]);
        dk[d] += ds * __bfloat162float(q[d]);
      }
    }
  }
}

unsigned blocks_for(std::size_t n, unsigned threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

}  // namespace

std::string attention_unsupported(const AttentionShape& s) {
  if (s.head_dim != 64 && s.head_dim != 128) return "head_dim must be 64 or 128";
  if (s.batch <= 0 || s.heads <= 0 || s.kv_heads <= 0 || s.seq <= 0) return "sizes must be > 0";
  if (s.heads % s.kv_heads != 0) return "kv_heads must divide heads";
  if (std::size_t(s.batch) * s.heads > 65535u) return "batch x heads must be <= 65535";
  return {};
}

cudaError_t attention_fwd(const AttentionShape& s, const void* q, const void* k, const void* v,
                          void* o, float* lse, cudaStream_t stream) {
  if (!attention_unsupported(s).empty()) return cudaErrorInvalidValue;
  const dim3 grid(blocks_for(std::size_t(s.seq), kRows), unsigned(s.batch * s.heads));
  const float scale = 1.f / std::sqrt(float(s.head_dim));
  const auto* Q = static_cast<const bf16*>(q);
  const auto* K = static_cast<const bf16*>(k);
  const auto* V = static_cast<const bf16*>(v);
  auto* O = static_cast<bf16*>(o);
  if (s.head_dim == 64) {
    fwd_kernel<64><<<grid, kThreads, 0, stream>>>(Q, K, V, O, lse, s.seq, s.heads, s.kv_heads, s.causal, scale);
  } else {
    fwd_kernel<128><<<grid, kThreads, 0, stream>>>(Q, K, V, O, lse, s.seq, s.heads, s.kv_heads, s.causal, scale);
  }
  return cudaGetLastError();
}

cudaError_t attention_bwd(const AttentionShape& s, const void* q, const void* k, const void* v,
                          const void* o, const void* d_o, const float* lse, float* delta,
                          void* dq, void* dk, void* dv, cudaStream_t stream) {
  if (!attention_unsupported(s).empty()) return cudaErrorInvalidValue;
  const float scale = 1.f / std::sqrt(float(s.head_dim));
  const auto* Q = static_cast<const bf16*>(q);
  const auto* K = static_cast<const bf16*>(k);
  const auto* V = static_cast<const bf16*>(v);
  const auto* dO = static_cast<const bf16*>(d_o);
  delta_kernel<<<blocks_for(s.lse_elems(), 256), 256, 0, stream>>>(
      static_cast<const bf16*>(o), dO, delta, s.batch, s.seq, s.heads, s.head_dim);
  const dim3 gkv(blocks_for(std::size_t(s.seq), kRows), unsigned(s.batch * s.kv_heads));
  const dim3 gq(blocks_for(std::size_t(s.seq), kRows), unsigned(s.batch * s.heads));
  auto* dK = static_cast<bf16*>(dk);
  auto* dV = static_cast<bf16*>(dv);
  auto* dQ = static_cast<bf16*>(dq);
  if (s.head_dim == 64) {
    dkdv_kernel<64><<<gkv, kThreads, 0, stream>>>(Q, K, V, dO, lse, delta, dK, dV, s.seq, s.heads, s.kv_heads, s.causal, scale);
    dq_kernel<64><<<gq, kThreads, 0, stream>>>(Q, K, V, dO, lse, delta, dQ, s.seq, s.heads, s.kv_heads, s.causal, scale);
  } else {
    dkdv_kernel<128><<<gkv, kThreads, 0, stream>>>(Q, K, V, dO, lse, delta, dK, dV, s.seq, s.heads, s.kv_heads, s.causal, scale);
    dq_kernel<128><<<gq, kThreads, 0, stream>>>(Q, K, V, dO, lse, delta, dQ, s.seq, s.heads, s.kv_heads, s.causal, scale);
  }
  return cudaGetLastError();
}

cudaError_t attention_fwd_reference(const AttentionShape& s, const void* q, const void* k,
                                    const void* v, float* o, float* lse, cudaStream_t stream) {
  if (!attention_unsupported(s).empty()) return cudaErrorInvalidValue;
  const float scale = 1.f / std::sqrt(float(s.head_dim));
  ref_fwd_kernel<<<blocks_for(s.lse_elems(), 128), 128, 0, stream>>>(
      static_cast<const bf16*>(q), static_cast<const bf16*>(k), static_cast<const bf16*>(v), o,
      lse, s.batch, s.seq, s.heads, s.kv_heads, s.head_dim, s.causal, scale);
  return cudaGetLastError();
}

cudaError_t attention_bwd_reference(const AttentionShape& s, const void* q, const void* k,
                                    const void* v, const void* d_o, float* dq, float* dk,
                                    float* dv, cudaStream_t stream) {
  if (!attention_unsupported(s).empty()) return cudaErrorInvalidValue;
  const float scale = 1.f / std::sqrt(float(s.head_dim));
  float* stats = nullptr;
  if (cudaError_t e = cudaMallocAsync(&stats, 2 * s.lse_elems() * sizeof(float), stream);
      e != cudaSuccess) {
    return e;
  }
  float* lse = stats;
  float* delta = stats + s.lse_elems();
  const auto* Q = static_cast<const bf16*>(q);
  const auto* K = static_cast<const bf16*>(k);
  const auto* V = static_cast<const bf16*>(v);
  const auto* dO = static_cast<const bf16*>(d_o);
  ref_stats_kernel<<<blocks_for(s.lse_elems(), 128), 128, 0, stream>>>(
      Q, K, V, dO, lse, delta, s.batch, s.seq, s.heads, s.kv_heads, s.head_dim, s.causal, scale);
  ref_dq_kernel<<<blocks_for(s.lse_elems(), 128), 128, 0, stream>>>(
      Q, K, V, dO, lse, delta, dq, s.batch, s.seq, s.heads, s.kv_heads, s.head_dim, s.causal,
      scale);
  const std::size_t kv_rows = std::size_t(s.batch) * s.kv_heads * s.seq;
  ref_dkdv_kernel<<<blocks_for(kv_rows, 128), 128, 0, stream>>>(
      Q, K, V, dO, lse, delta, dk, dv, s.batch, s.seq, s.heads, s.kv_heads, s.head_dim,
      s.causal, scale);
  const cudaError_t launch = cudaGetLastError();
  const cudaError_t freed = cudaFreeAsync(stats, stream);
  return launch != cudaSuccess ? launch : freed;
}

}  // namespace trainsim::kernels
