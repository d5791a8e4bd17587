#include "calibrate.hpp"

#include <algorithm>
#include <cmath>
#include <ostream>
#include <set>
#include <tuple>

#include "kernels.hpp"
#include "nccl_sweep.hpp"
#include "workload/step_ops.hpp"

namespace trainsim::calib {

namespace {

const char* fmt_dtype(hw::Dtype d) { return hw::dtype_name(d).data(); }

// ----- GEMM -----

void measure_gemm(Context& ctx, hw::HardwareProfile& out) {
  std::set<std::tuple<std::int64_t, std::int64_t, std::int64_t>> shapes;
  if (ctx.opt.default_grid) {
    // Families (n, k) of square-ish transformer widths, each over a range of token counts m.
    const std::vector<std::int64_t> widths =
        ctx.opt.quick ? std::vector<std::int64_t>{1024, 4096}
                      : std::vector<std::int64_t>{1024, 2048, 4096, 8192};
    const std::vector<std::int64_t> ms = ctx.opt.quick
                                             ? std::vector<std::int64_t>{1024, 8192}
                                             : std::vector<std::int64_t>{256, 1024, 4096, 16384};
    for (auto n : widths) {
      for (auto k : widths) {
        for (auto m : ms) shapes.insert({m, n, k});
      }
    }
  }
  for (const auto& sc : ctx.opt.scenarios) {
    for (const auto& s : gemm_shapes_to_measure(sc)) shapes.insert({s.m, s.n, s.k});
  }
  for (hw::Dtype dt : ctx.opt.gemm_dtypes) {
    if (!ctx.gemm.supports(dt)) {
      ctx.log << "  gemm " << fmt_dtype(dt) << ": not supported on this GPU, skipped\n";
      continue;
    }
    std::size_t measured = 0;
    for (const auto& [m, n, k] : shapes) {
      // FP8 cuBLASLt kernels need k and the leading dimensions to be multiples of 16.
      if (dt == hw::Dtype::FP8 && (m % 16 != 0 || n % 16 != 0 || k % 16 != 0)) continue;
      try {
        out.gemm.push_back({dt, m, n, k, ctx.gemm.time(dt, m, n, k, ctx.stream, ctx.opt.timing)});
        ++measured;
      } catch (const DeviceError& e) {
        // No cuBLASLt algorithm for this shape and dtype: leave it to the roofline.
        ctx.log << "  gemm " << fmt_dtype(dt) << " m=" << m << " n=" << n << " k=" << k
                << " skipped: " << e.what() << "\n";
      }
    }
    ctx.log << "  gemm " << fmt_dtype(dt) << ": " << measured << " of " << shapes.size()
            << " shapes\n";
  }
}

// ----- attention -----

void measure_attention(Context& ctx, hw::HardwareProfile& out) {
  std::set<std::tuple<bool, int, int, int, int, int>> cases;  // causal, d, seq, b, h, hkv
  if (ctx.opt.default_grid) {
    const std::vector<int> seqs = ctx.opt.quick ? std::vector<int>{512, 2048}
                                                : std::vector<int>{512, 1024, 2048, 4096, 8192};
    for (bool causal : {true, false}) {
      for (int d : {64, 128}) {
        for (int s : seqs) {
          // 16 query heads sharing 4 K/V heads (GQA), 16k tokens: several full waves.
          cases.insert({causal, d, s, std::max(1, 16384 / s), 16, 4});
        }
      }
    }
  }
  for (const auto& sc : ctx.opt.scenarios) {
    // The rank's attention (heads split by TP) at the scenario's sequence length, with
    // enough sequences for full waves, and at half and double the length.
    const auto& m = sc.model;
    const int tp = sc.layout.tp;
    const int heads = std::max(1, m.heads / tp), kv = std::max(1, m.kv_heads / tp);
    const int d = static_cast<int>(m.head_dim());
    if (d != 64 && d != 128) {
      ctx.log << "  attention: " << sc.name << " has head_dim " << d
              << " (the kernels do 64 and 128), skipped\n";
      continue;
    }
    for (int s : {m.seq_len / 2, m.seq_len, m.seq_len * 2}) {
      if (s < 128) continue;
      const int batch = std::max<int>(static_cast<int>(sc.training.micro_batch),
                                      std::max(1, 16384 / s));
      cases.insert({m.causal, d, s, batch, heads, heads % kv == 0 ? kv : heads});
    }
  }
  for (const auto& [causal, d, s, b, h, hkv] : cases) {
    out.attention.push_back(time_attention(ctx, b, h, hkv, s, d, causal));
  }
  out.attention_impl = kernels::kAttentionImpl;
  ctx.log << "  attention: " << cases.size() << " cases (" << kernels::kAttentionImpl << ")\n";
}

// ----- memory-bound kernels -----

void measure_memory(Context& ctx, hw::HardwareProfile& out) {
  const std::vector<double> totals =
      ctx.opt.quick ? std::vector<double>{1 << 22, 1 << 28}
                    : std::vector<double>{1 << 20, 1 << 23, 1 << 26, 1 << 29, 1u << 31, 8.0 * (1u << 30)};
  const int cols = 4096;
  DeviceBuffer x, y, dy, f1, f2, f3;
  DeviceBuffer gamma(cols * sizeof(float)), beta(cols * sizeof(float));
  check(kernels::fill_random(gamma.get(), cols, kernels::Elem::FP32, 7, 1.0f, ctx.stream), "fill");
  check(kernels::fill_random(beta.get(), cols, kernels::Elem::FP32, 8, 1.0f, ctx.stream), "fill");
  for (double total : totals) {
    // Each op moves `total` bytes of HBM traffic (reads + writes) at this size.
    const auto bytes = static_cast<std::size_t>(total);
    x.grow(bytes);
    y.grow(bytes);
    dy.grow(bytes);
    check(kernels::fill_random(x.get(), std::int64_t(bytes / 2), kernels::Elem::BF16, 3, 2.0f,
                               ctx.stream),
          "fill");
    auto record = [&](const char* op, double moved, const std::function<void(cudaStream_t)>& f) {
      out.memory.push_back({op, moved, median_seconds(f, ctx.stream, ctx.opt.timing)});
    };
    // copy: read n/2 bytes, write n/2 bytes.
    record("copy", total, [&](cudaStream_t s) {
      check(kernels::copy(x.get(), y.get(), bytes / 2, s), "copy");
    });
    // Norms, softmax: [rows, 4096] bf16 in and out: 4 bytes per element.
    const std::int64_t rows = std::max<std::int64_t>(1, std::int64_t(total / 4 / cols));
    const double row_bytes = 4.0 * double(rows) * cols;
    record("layernorm", row_bytes, [&](cudaStream_t s) {
      check(kernels::layernorm_fwd(x.get(), gamma.as<float>(), beta.as<float>(), y.get(), rows,
                                   cols, s),
            "layernorm");
    });
    record("rmsnorm", row_bytes, [&](cudaStream_t s) {
      check(kernels::rmsnorm_fwd(x.get(), gamma.as<float>(), y.get(), rows, cols, s), "rmsnorm");
    });
    record("softmax", row_bytes, [&](cudaStream_t s) {
      check(kernels::softmax_fwd(x.get(), y.get(), rows, cols, s), "softmax");
    });
    record("gelu", row_bytes, [&](cudaStream_t s) {
      check(kernels::gelu_fwd(x.get(), y.get(), rows * cols, s), "gelu");
    });
    // SwiGLU: reads [rows, 2c], writes [rows, c]: 6 bytes per output element.
    const std::int64_t srows = std::max<std::int64_t>(1, std::int64_t(total / 6 / cols));
    record("swiglu", 6.0 * double(srows) * cols, [&](cudaStream_t s) {
      check(kernels::swiglu_fwd(x.get(), y.get(), srows, cols, s), "swiglu");
    });
    // Adam: 28 bytes per parameter.
    const auto params = std::max<std::int64_t>(1, std::int64_t(total / 28));
    f1.grow(std::size_t(params) * 4);
    f2.grow(std::size_t(params) * 4);
    f3.grow(std::size_t(params) * 4);
    check(kernels::fill_random(f1.get(), params, kernels::Elem::FP32, 4, 1.0f, ctx.stream), "fill");
    check(kernels::fill_random(f2.get(), params, kernels::Elem::FP32, 5, 0.1f, ctx.stream), "fill");
    check(kernels::fill_random(f3.get(), params, kernels::Elem::FP32, 6, 0.1f, ctx.stream), "fill");
    check(cudaMemsetAsync(f3.get(), 0, std::size_t(params) * 4, ctx.stream), "memset v");
    int step = 1;
    record("adam", 28.0 * double(params), [&](cudaStream_t s) {
      check(kernels::adam_step(f1.as<float>(), f2.as<float>(), f3.as<float>(), x.get(), y.get(),
                               params, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, step++, s),
            "adam");
    });
  }
  ctx.log << "  memory-bound: 7 ops x " << totals.size() << " sizes\n";
}

void measure_nccl(Context& ctx, hw::HardwareProfile& out) {
  nccl_sweep(ctx, out);
}

}  // namespace

std::vector<workload::GemmShape> gemm_shapes_to_measure(const workload::Scenario& sc) {
  return workload::scenario_gemm_shapes_around(sc);
}

hw::AttentionPoint time_attention(const Context& ctx, int batch, int heads, int kv_heads,
                                  int seq, int head_dim, bool causal) {
  kernels::AttentionShape sh{batch, heads, kv_heads, seq, head_dim, causal};
  if (auto why = kernels::attention_unsupported(sh); !why.empty()) {
    throw DeviceError("attention shape not supported: " + why);
  }
  const std::size_t qb = sh.q_elems() * 2, kb = sh.kv_elems() * 2, lb = sh.lse_elems() * 4;
  DeviceBuffer q(qb), k(kb), v(kb), o(qb), d_o(qb), dq(qb), dk(kb), dv(kb), lse(lb), delta(lb);
  check(kernels::fill_random(q.get(), std::int64_t(sh.q_elems()), kernels::Elem::BF16, 11, 1.0f, ctx.stream), "fill");
  check(kernels::fill_random(k.get(), std::int64_t(sh.kv_elems()), kernels::Elem::BF16, 12, 1.0f, ctx.stream), "fill");
  check(kernels::fill_random(v.get(), std::int64_t(sh.kv_elems()), kernels::Elem::BF16, 13, 1.0f, ctx.stream), "fill");
  check(kernels::fill_random(d_o.get(), std::int64_t(sh.q_elems()), kernels::Elem::BF16, 14, 1.0f, ctx.stream), "fill");
  hw::AttentionPoint p;
  p.causal = causal;
  p.head_dim = head_dim;
  p.batch = batch;
  p.heads = heads;
  p.kv_heads = kv_heads;
  p.seq = seq;
  p.fwd_seconds = median_seconds(
      [&](cudaStream_t s) {
        check(kernels::attention_fwd(sh, q.get(), k.get(), v.get(), o.get(), lse.as<float>(), s),
              "attention_fwd");
      },
      ctx.stream, ctx.opt.timing);
  p.bwd_seconds = median_seconds(
      [&](cudaStream_t s) {
        check(kernels::attention_bwd(sh, q.get(), k.get(), v.get(), o.get(), d_o.get(),
                                     lse.as<float>(), delta.as<float>(), dq.get(), dk.get(),
                                     dv.get(), s),
              "attention_bwd");
      },
      ctx.stream, ctx.opt.timing);
  return p;
}

const std::vector<OpEntry>& op_table() {
  static const std::vector<OpEntry> table = {
      {"gemm", "cuBLASLt GEMMs (bf16, fp16, fp8 where supported): default grid + scenario shapes",
       &measure_gemm},
      {"attention", "FlashAttention-2-style kernels (kernels/), fwd + bwd, causal or not, d 64/128, GQA",
       &measure_attention},
      {"memory", "memory-bound kernels (kernels/): copy, LayerNorm, RMSNorm, softmax, GeLU, SwiGLU, Adam",
       &measure_memory},
      {"nccl", "NCCL collectives across the local GPUs, 1 KiB .. 4 GiB, nccl-tests algbw/busbw",
       &measure_nccl},
  };
  return table;
}

}  // namespace trainsim::calib
