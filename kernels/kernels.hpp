// trainsim_kernels: the CUDA kernels trainsim-calibrate measures and --validate runs.
//
// Host-callable launchers (plain C++; the .cu files hold the kernels). Every tensor is
// row-major, 16-bit activations are bf16 (__nv_bfloat16 stored as uint16_t bits), statistics
// and optimizer state fp32. Launchers enqueue on `stream` and return the launch error
// (cudaSuccess when the launch was accepted); sizes must be > 0.
//
// Attention (FlashAttention-2 algorithm, Dao 2023, arXiv:2307.08691, Alg. 1 and 2, written
// for clarity rather than speed: FP32 CUDA-core math, no tensor cores): Q [B, S, H, D],
// K and V [B, S, Hkv, D] (GQA: query head h reads K/V head h / (H / Hkv)), O [B, S, H, D],
// LSE [B, H, S] (natural-log log-sum-exp of each score row, saved for the backward).
// Scores are scaled by 1/sqrt(D); causal masks key j > query i. D is 64 or 128.
// The forward tiles 16 query rows per block against 64-key tiles in shared memory with the
// online softmax; the backward runs FA2's dK/dV pass (a block per 16 keys looping over the
// queries of every head of its K/V group) and a separate dQ pass (a block per 16 queries),
// both recomputing P from LSE, after a pass computing Delta = rowsum(dO * O).
// The naive reference kernels (one thread per output row, fp32 throughout) check them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <cuda_runtime_api.h>

namespace trainsim::kernels {

/// Name of the attention implementation, recorded in profiles.
inline constexpr const char* kAttentionImpl =
    "trainsim kernels/attention.cu: FlashAttention-2 algorithm (tiled, online softmax, "
    "LSE-based backward), FP32 CUDA-core math, bf16 storage";

struct AttentionShape {
  int batch = 1, heads = 1, kv_heads = 1, seq = 1, head_dim = 128;
  bool causal = true;
  [[nodiscard]] std::size_t q_elems() const {
    return std::size_t(batch) * seq * heads * head_dim;
  }
  [[nodiscard]] std::size_t kv_elems() const {
    return std::size_t(batch) * seq * kv_heads * head_dim;
  }
  [[nodiscard]] std::size_t lse_elems() const { return std::size_t(batch) * heads * seq; }
  /// FlashAttention benchmark convention: 4*b*s^2*h*d, halved when causal.
  [[nodiscard]] double fwd_flops() const {
    const double f = 4.0 * batch * double(heads) * double(seq) * double(seq) * head_dim;
    return causal ? f / 2 : f;
  }
};

/// Returns an empty string when the shape is supported, else the reason.
std::string attention_unsupported(const AttentionShape& s);

/// O, LSE from Q, K, V. bf16 q/k/v/o, fp32 lse.
cudaError_t attention_fwd(const AttentionShape& s, const void* q, const void* k, const void* v,
                          void* o, float* lse, cudaStream_t stream);
/// dQ, dK, dV (bf16) from Q, K, V, O, dO (bf16) and LSE; `delta` is fp32 scratch of
/// lse_elems(). dK/dV accumulate over the query heads of each K/V head.
cudaError_t attention_bwd(const AttentionShape& s, const void* q, const void* k, const void* v,
                          const void* o, const void* d_o, const float* lse, float* delta,
                          void* dq, void* dk, void* dv, cudaStream_t stream);
/// Naive references: fp32 outputs (o, lse; dq, dk, dv) for checking.
cudaError_t attention_fwd_reference(const AttentionShape& s, const void* q, const void* k,
                                    const void* v, float* o, float* lse, cudaStream_t stream);
cudaError_t attention_bwd_reference(const AttentionShape& s, const void* q, const void* k,
                                    const void* v, const void* d_o, float* dq, float* dk,
                                    float* dv, cudaStream_t stream);

/// Memory-bound kernels over `rows` x `cols` bf16 tensors (fp32 math, fp32 gamma/beta):
/// LayerNorm y = (x - mean) / sqrt(var + 1e-5) * gamma + beta; RMSNorm y = x / rms * gamma;
/// their backward dx (and, accumulated over rows in fp32, dgamma; dbeta for LayerNorm).
cudaError_t layernorm_fwd(const void* x, const float* gamma, const float* beta, void* y,
                          std::int64_t rows, int cols, cudaStream_t stream);
cudaError_t layernorm_bwd(const void* x, const void* dy, const float* gamma, void* dx,
                          float* dgamma, float* dbeta, std::int64_t rows, int cols,
                          cudaStream_t stream);
cudaError_t rmsnorm_fwd(const void* x, const float* gamma, void* y, std::int64_t rows, int cols,
                        cudaStream_t stream);
cudaError_t rmsnorm_bwd(const void* x, const void* dy, const float* gamma, void* dx,
                        float* dgamma, std::int64_t rows, int cols, cudaStream_t stream);
/// GeLU (tanh approximation, as Megatron's bias-gelu) over n elements, and its backward.
cudaError_t gelu_fwd(const void* x, void* y, std::int64_t n, cudaStream_t stream);
cudaError_t gelu_bwd(const void* x, const void* dy, void* dx, std::int64_t n,
                     cudaStream_t stream);
/// SwiGLU: x is [rows, 2*cols] = [gate | up]; y [rows, cols] = silu(gate) * up; backward
/// gives dx [rows, 2*cols].
cudaError_t swiglu_fwd(const void* x, void* y, std::int64_t rows, int cols, cudaStream_t stream);
cudaError_t swiglu_bwd(const void* x, const void* dy, void* dx, std::int64_t rows, int cols,
                       cudaStream_t stream);
/// Row softmax of [rows, cols] (fp32 math).
cudaError_t softmax_fwd(const void* x, void* y, std::int64_t rows, int cols,
                        cudaStream_t stream);
/// Cross-entropy of logits [rows, cols] against labels: loss[row] (fp32); backward writes
/// dlogits = softmax - onehot (bf16).
cudaError_t cross_entropy_fwd(const void* logits, const std::int32_t* labels, float* loss,
                              std::int64_t rows, int cols, cudaStream_t stream);
cudaError_t cross_entropy_bwd(const void* logits, const std::int32_t* labels, void* dlogits,
                              std::int64_t rows, int cols, cudaStream_t stream);
/// y = a + b (bf16, residual connections).
cudaError_t add(const void* a, const void* b, void* y, std::int64_t n, cudaStream_t stream);
/// Embedding lookup: out[t, :] = table[ids[t], :] (bf16), and its backward (fp32 atomic adds
/// into dtable).
cudaError_t embedding_fwd(const void* table, const std::int32_t* ids, void* out,
                          std::int64_t tokens, int hidden, cudaStream_t stream);
cudaError_t embedding_bwd(const void* dout, const std::int32_t* ids, float* dtable,
                          std::int64_t tokens, int hidden, cudaStream_t stream);
/// Adam step (Kingma & Ba 2015, bias-corrected, decoupled weight decay): fp32 master
/// weights, m, v updated in place from bf16 gradients; bf16 weights written. 28 bytes per
/// parameter of HBM traffic (the simulator's constant).
cudaError_t adam_step(float* master, float* m, float* v, const void* grad, void* weight,
                      std::int64_t n, float lr, float beta1, float beta2, float eps,
                      float weight_decay, int step, cudaStream_t stream);
/// dst = src (bytes).
cudaError_t copy(const void* src, void* dst, std::size_t bytes, cudaStream_t stream);

/// Fills n elements with uniform values in [-scale, scale] from a counter-based hash of
/// (seed, index); never all zeros. bf16, fp16 (2 bytes), fp8 e4m3 (1 byte) or fp32.
enum class Elem { BF16, FP16, FP8E4M3, FP32 };
cudaError_t fill_random(void* p, std::int64_t n, Elem e, std::uint64_t seed, float scale,
                        cudaStream_t stream);
/// Fills token ids in [0, vocab).
cudaError_t fill_ids(std::int32_t* p, std::int64_t n, int vocab, std::uint64_t seed,
                     cudaStream_t stream);
/// Converts n bf16 values to fp32 (for checks).
cudaError_t bf16_to_float(const void* src, float* dst, std::int64_t n, cudaStream_t stream);

}  // namespace trainsim::kernels
