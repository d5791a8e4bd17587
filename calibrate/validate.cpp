#include "validate.hpp"

#include <cstdio>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "kernels.hpp"
#include "workload/step_ops.hpp"

namespace trainsim::calib {

namespace {

enum class Kind { Gemm, Attention, Memory };

struct Launch {
  Kind kind;
  std::function<void(cudaStream_t)> run;
};

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace

void check_one_gpu_scenario(const workload::Scenario& sc) {
  const auto& L = sc.layout;
  if (L.tp != 1 || L.dp != 1 || L.pp != 1 || sc.gpus != 1) {
    throw InputError("parallel.tp", "--validate runs one GPU: the scenario needs tp = pp = dp = 1 "
                                    "and cluster.gpus = 1");
  }
}

ValidationResult validate_step(Context& ctx, const workload::Scenario& sc,
                               std::shared_ptr<const hw::HardwareProfile> profile) {
  check_one_gpu_scenario(sc);
  const auto& mdl = sc.model;
  const std::vector<workload::StepKernel> mb = workload::microbatch_kernels(sc);
  const workload::StepKernel opt = workload::optimizer_kernel(sc);
  const std::int64_t microbatches = sc.training.global_batch / sc.training.micro_batch;
  const hw::Dtype dt = sc.training.dtype;
  if (!ctx.gemm.supports(dt)) throw InputError("training.dtype", "this GPU has no such GEMMs");

  const std::int64_t T = sc.training.micro_batch * mdl.seq_len;
  const std::int64_t H = mdl.hidden, F = mdl.ffn_hidden, V = mdl.vocab;
  const std::size_t act_elems = static_cast<std::size_t>(T * std::max({H, 2 * F, V}));
  DeviceBuffer x(act_elems * 2), y(act_elems * 2), dy(act_elems * 2), dx(act_elems * 2);
  DeviceBuffer gamma(std::size_t(H) * 4), beta(std::size_t(H) * 4), dgamma(std::size_t(H) * 4),
      dbeta(std::size_t(H) * 4);
  DeviceBuffer ids(std::size_t(T) * 4), labels(std::size_t(T) * 4), loss(std::size_t(T) * 4);
  DeviceBuffer table(std::size_t(V * H) * 2), dtable(std::size_t(V * H) * 4);
  kernels::AttentionShape ash{static_cast<int>(sc.training.micro_batch), mdl.heads, mdl.kv_heads,
                              mdl.seq_len, mdl.head_dim(), mdl.causal};
  if (auto why = kernels::attention_unsupported(ash); !why.empty()) {
    throw InputError("model.heads", "the attention kernels cannot run this model: " + why);
  }
  const std::size_t qb = ash.q_elems() * 2, kb = ash.kv_elems() * 2, lb = ash.lse_elems() * 4;
  DeviceBuffer q(qb), k(kb), v(kb), o(qb), d_o(qb), dq(qb), dk(kb), dv(kb), lse(lb), delta(lb);
  const auto params = static_cast<std::int64_t>(opt.bytes / 28.0);
  DeviceBuffer master(std::size_t(params) * 4), m1(std::size_t(params) * 4),
      m2(std::size_t(params) * 4), grad(std::size_t(params) * 2), weight(std::size_t(params) * 2);

  const cudaStream_t st = ctx.stream;
  auto fill = [&](DeviceBuffer& b, kernels::Elem e, std::size_t elem_bytes, std::uint64_t seed,
                  float scale) {
    check(kernels::fill_random(b.get(), std::int64_t(b.bytes() / elem_bytes), e, seed, scale, st),
          "fill");
  };
  fill(x, kernels::Elem::BF16, 2, 21, 1.0f);
  fill(dy, kernels::Elem::BF16, 2, 22, 1.0f);
  fill(gamma, kernels::Elem::FP32, 4, 23, 1.0f);
  fill(beta, kernels::Elem::FP32, 4, 24, 1.0f);
  fill(table, kernels::Elem::BF16, 2, 25, 1.0f);
  fill(q, kernels::Elem::BF16, 2, 26, 1.0f);
  fill(k, kernels::Elem::BF16, 2, 27, 1.0f);
  fill(v, kernels::Elem::BF16, 2, 28, 1.0f);
  fill(d_o, kernels::Elem::BF16, 2, 29, 1.0f);
  fill(master, kernels::Elem::FP32, 4, 30, 1.0f);
  fill(m1, kernels::Elem::FP32, 4, 31, 0.1f);
  fill(m2, kernels::Elem::FP32, 4, 32, 0.1f);
  fill(grad, kernels::Elem::BF16, 2, 33, 0.1f);
  check(kernels::fill_ids(ids.as<std::int32_t>(), T, static_cast<int>(V), 34, st), "ids");
  check(kernels::fill_ids(labels.as<std::int32_t>(), T, static_cast<int>(V), 35, st), "labels");
  check(cudaMemsetAsync(m2.get(), 0, m2.bytes(), st), "memset");
  // LSE for the backward comes from a real forward.
  check(kernels::attention_fwd(ash, q.get(), k.get(), v.get(), o.get(), lse.as<float>(), st),
        "attention_fwd");

  // The GEMM operands: prepare every shape first (buffers grow to the largest, then fill).
  for (const auto& kk : mb) {
    if (kk.op.kind == model::OpKind::Gemm) ctx.gemm.prepare(dt, kk.m, kk.n, kk.k, st);
  }
  for (const auto& kk : mb) {
    if (kk.op.kind == model::OpKind::Gemm) ctx.gemm.prepare(dt, kk.m, kk.n, kk.k, st);
  }

  const bool rms = mdl.norm == model::Norm::RMSNorm;
  const int hc = static_cast<int>(H), fc = static_cast<int>(F), vc = static_cast<int>(V);
  int adam_step = 1;
  std::vector<Launch> step;
  for (const auto& kk : mb) {
    const bool bwd = kk.pass == workload::StepPass::BackwardInput;
    switch (kk.op.kind) {
      case model::OpKind::Gemm: {
        const std::int64_t gm = kk.m, gn = kk.n, gk = kk.k;
        step.push_back({Kind::Gemm, [&, gm, gn, gk](cudaStream_t s) { ctx.gemm.run(dt, gm, gn, gk, s); }});
        break;
      }
      case model::OpKind::Attention:
        if (bwd) {
          step.push_back({Kind::Attention, [&](cudaStream_t s) {
                            check(kernels::attention_bwd(ash, q.get(), k.get(), v.get(), o.get(),
                                                         d_o.get(), lse.as<float>(),
                                                         delta.as<float>(), dq.get(), dk.get(),
                                                         dv.get(), s),
                                  "attention_bwd");
                          }});
        } else {
          step.push_back({Kind::Attention, [&](cudaStream_t s) {
                            check(kernels::attention_fwd(ash, q.get(), k.get(), v.get(), o.get(),
                                                         lse.as<float>(), s),
                                  "attention_fwd");
                          }});
        }
        break;
      case model::OpKind::Norm:
        step.push_back({Kind::Memory, [&, bwd](cudaStream_t s) {
                          cudaError_t e;
                          if (bwd) {
                            e = rms ? kernels::rmsnorm_bwd(x.get(), dy.get(), gamma.as<float>(), dx.get(), dgamma.as<float>(), T, hc, s)
                                    : kernels::layernorm_bwd(x.get(), dy.get(), gamma.as<float>(), dx.get(), dgamma.as<float>(), dbeta.as<float>(), T, hc, s);
                          } else {
                            e = rms ? kernels::rmsnorm_fwd(x.get(), gamma.as<float>(), y.get(), T, hc, s)
                                    : kernels::layernorm_fwd(x.get(), gamma.as<float>(), beta.as<float>(), y.get(), T, hc, s);
                          }
                          check(e, "norm");
                        }});
        break;
      case model::OpKind::Activation:
        if (mdl.activation == model::Activation::SwiGLU) {
          step.push_back({Kind::Memory, [&, bwd](cudaStream_t s) {
                            check(bwd ? kernels::swiglu_bwd(x.get(), dy.get(), dx.get(), T, fc, s)
                                      : kernels::swiglu_fwd(x.get(), y.get(), T, fc, s),
                                  "swiglu");
                          }});
        } else {
          step.push_back({Kind::Memory, [&, bwd](cudaStream_t s) {
                            check(bwd ? kernels::gelu_bwd(x.get(), dy.get(), dx.get(), T * F, s)
                                      : kernels::gelu_fwd(x.get(), y.get(), T * F, s),
                                  "gelu");
                          }});
        }
        break;
      case model::OpKind::Embedding:
        if (kk.pass == workload::StepPass::BackwardWeight) {
          // The dense table gradient (workload::embedding_grad_bytes): the real step streams
          // the fp32 table gradient once (a zero-fill), 4 of the model's 12 bytes per entry.
          step.push_back({Kind::Memory, [&](cudaStream_t s) {
                            check(cudaMemsetAsync(dtable.get(), 0, dtable.bytes(), s), "memset");
                          }});
          break;
        }
        step.push_back({Kind::Memory, [&, bwd](cudaStream_t s) {
                          check(bwd ? kernels::embedding_bwd(dy.get(), ids.as<std::int32_t>(), dtable.as<float>(), T, hc, s)
                                    : kernels::embedding_fwd(table.get(), ids.as<std::int32_t>(), y.get(), T, hc, s),
                                "embedding");
                        }});
        break;
      case model::OpKind::Loss:
        step.push_back({Kind::Memory, [&, bwd](cudaStream_t s) {
                          check(bwd ? kernels::cross_entropy_bwd(x.get(), labels.as<std::int32_t>(), dx.get(), T, vc, s)
                                    : kernels::cross_entropy_fwd(x.get(), labels.as<std::int32_t>(), loss.as<float>(), T, vc, s),
                                "cross_entropy");
                        }});
        break;
      case model::OpKind::Elementwise:
        step.push_back({Kind::Memory, [&](cudaStream_t s) {
                          check(kernels::add(x.get(), dy.get(), y.get(), T * H, s), "add");
                        }});
        break;
    }
  }
  const Launch adam{Kind::Memory, [&](cudaStream_t s) {
                      check(kernels::adam_step(master.as<float>(), m1.as<float>(), m2.as<float>(),
                                               grad.get(), weight.get(), params, 1e-4f, 0.9f,
                                               0.95f, 1e-8f, 0.1f, adam_step++, s),
                            "adam");
                    }};

  auto run_step = [&](cudaStream_t s, const Kind* only) {
    for (std::int64_t i = 0; i < microbatches; ++i) {
      for (const auto& l : step) {
        if (only == nullptr || l.kind == *only) l.run(s);
      }
    }
    if (only == nullptr || *only == Kind::Memory) adam.run(s);
  };
  // Whole steps: at least one warm-up, at least 3 and at most 7 timed runs.
  TimingOptions t = ctx.opt.timing;
  t.warmup = std::max(1, std::min(t.warmup, 2));
  t.repeats = std::max(3, std::min(t.repeats, 7));
  ValidationResult r;
  r.measured_s = median_seconds([&](cudaStream_t s) { run_step(s, nullptr); }, st, t);
  const Kind kinds[] = {Kind::Gemm, Kind::Attention, Kind::Memory};
  double* measured[] = {&r.measured_gemm_s, &r.measured_attention_s, &r.measured_memory_s};
  for (int i = 0; i < 3; ++i) {
    *measured[i] = median_seconds([&](cudaStream_t s) { run_step(s, &kinds[i]); }, st, t);
  }

  // Predictions: the simulator with the profile, and with the built-in model.
  workload::Scenario with = sc;
  with.profile = std::move(profile);
  workload::Scenario builtin = sc;
  builtin.profile = nullptr;
  r.predicted_s = workload::simulate_step(with).step_time.seconds();
  r.predicted_builtin_s = workload::simulate_step(builtin).step_time.seconds();
  const cost::CostModel cost(with.gpu, with.profile);
  std::vector<workload::StepKernel> g, a, m;
  for (const auto& kk : mb) {
    (kk.op.kind == model::OpKind::Gemm ? g : kk.op.kind == model::OpKind::Attention ? a : m)
        .push_back(kk);
  }
  const double mbs = static_cast<double>(microbatches);
  const auto& tr = sc.training;
  r.predicted_gemm_s = workload::serial_time(g, cost, tr).seconds() * mbs;
  r.predicted_attention_s = workload::serial_time(a, cost, tr).seconds() * mbs;
  r.predicted_memory_s = workload::serial_time(m, cost, tr).seconds() * mbs +
                         workload::serial_time({opt}, cost, tr).seconds();
  return r;
}

void print_validation(std::ostream& os, const workload::Scenario& sc, const ValidationResult& r) {
  auto row = [&](const char* name, double meas, double pred) {
    os << "  " << name << fmt("%10.3f ms", meas * 1e3) << fmt("%12.3f ms", pred * 1e3)
       << fmt("%+9.1f%%", 100 * (pred / meas - 1)) << "\n";
  };
  os << "validate " << sc.name << " (" << sc.model.name << ", one step on one GPU)\n";
  os << "                      measured     predicted     error\n";
  row("GEMMs            ", r.measured_gemm_s, r.predicted_gemm_s);
  row("attention        ", r.measured_attention_s, r.predicted_attention_s);
  row("memory-bound     ", r.measured_memory_s, r.predicted_memory_s);
  row("step (profile)   ", r.measured_s, r.predicted_s);
  row("step (built-in)  ", r.measured_s, r.predicted_builtin_s);
}

}  // namespace trainsim::calib
