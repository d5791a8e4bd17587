#include "workload/step_ops.hpp"

#include <algorithm>
#include <set>

#include "core/error.hpp"
#include "workload/gemm_cost.hpp"

namespace trainsim::workload {

namespace {
}  // namespace

const char* step_pass_name(StepPass p) {
  switch (p) {
    case StepPass::Forward: return "fwd";
    case StepPass::Recompute: return "recompute";
    case StepPass::BackwardInput: return "bwd";
    case StepPass::BackwardWeight: return "wgrad";
    case StepPass::Optimizer: return "optimizer";
  }
  return "?";
}

namespace {

void forward(std::vector<StepKernel>& out, const model::Op& op, int layer, StepPass pass) {
  StepKernel k{op.name, layer, pass, op, 0, 0, 0, 0};
  if (op.kind == model::OpKind::Gemm) {
    k.m = op.m;
    k.n = op.n;
    k.k = op.k;
  } else if (op.kind != model::OpKind::Attention) {
    k.bytes = op.fwd_bytes;
  }
  out.push_back(k);
}

void backward(std::vector<StepKernel>& out, const model::Op& op, int layer) {
  if (op.kind == model::OpKind::Gemm) {
    out.push_back({op.name, layer, StepPass::BackwardInput, op, op.m, op.k, op.n, 0});
    out.push_back({op.name, layer, StepPass::BackwardWeight, op, op.k, op.n, op.m, 0});
  } else if (op.kind == model::OpKind::Attention) {
    out.push_back({op.name, layer, StepPass::BackwardInput, op, 0, 0, 0, 0});
  } else {
    out.push_back({op.name, layer, StepPass::BackwardInput, op, 0, 0, 0, op.bwd_bytes});
  }
}

}  // namespace

std::vector<StepKernel> microbatch_kernels(const Scenario& sc) {
  if (sc.training.lora.enabled()) {
    throw InputError("training.lora", "the one-GPU step runs full training; remove "
                                      "[training.lora] to compare it");
  }
  if (sc.layout.pp != 1 || sc.layout.virtual_stages != 1) {
    throw InputError("parallel.pp", "the one-GPU step needs every layer on one rank (pp = 1, "
                                    "no virtual stages)");
  }
  const auto& mdl = sc.model;
  if (mdl.moe.enabled() || mdl.mla.enabled() || mdl.mtp_layers > 0) {
    const char* key = mdl.moe.enabled() ? "model.moe" : mdl.mla.enabled() ? "model.hf_config"
                                                                          : "model.mtp_layers";
    throw InputError(key, "the one-GPU step runs dense multi-head (or grouped-query) attention "
                          "layers only: no MoE, MLA or multi-token prediction modules");
  }
  const std::int64_t b = sc.training.micro_batch;
  std::vector<model::Op> layer;
  for (const auto& op : model::layer_ops(mdl, b)) layer.push_back(rank_op(sc, op));
  const model::Op emb = rank_op(sc, model::embedding_op(mdl, b));
  std::vector<model::Op> head;
  for (const auto& op : model::head_ops(mdl, b)) head.push_back(rank_op(sc, op));

  std::vector<StepKernel> out;
  forward(out, emb, -1, StepPass::Forward);
  for (int l = 0; l < mdl.layers; ++l) {
    for (const auto& op : layer) forward(out, op, l, StepPass::Forward);
  }
  for (const auto& op : head) forward(out, op, -1, StepPass::Forward);
  for (auto it = head.rbegin(); it != head.rend(); ++it) backward(out, *it, -1);
  for (int l = mdl.layers - 1; l >= 0; --l) {
    if (sc.training.recompute == model::Recompute::Full) {
      for (const auto& op : layer) forward(out, op, l, StepPass::Recompute);
    }
    for (auto it = layer.rbegin(); it != layer.rend(); ++it) {
      if (it->kind == model::OpKind::Attention &&
          sc.training.recompute == model::Recompute::Selective) {
        forward(out, *it, l, StepPass::Recompute);
      }
      backward(out, *it, l);
    }
  }
  backward(out, emb, -1);
  // The dense table gradient (workload::embedding_grad_bytes), priced as its own kernel.
  out.push_back({"embedding_grad", -1, StepPass::BackwardWeight, emb, 0, 0, 0,
                 embedding_grad_bytes(mdl, sc.layout.tp, sc.training.dtype)});
  return out;
}

StepKernel optimizer_kernel(const Scenario& sc) {
  const auto& mdl = sc.model;
  const int tp = sc.layout.tp;
  const double layer_params =
      attention_params_per_rank(mdl, tp) + dense_mlp_params_per_rank(mdl, tp, mdl.ffn_hidden);
  const double params = mdl.layers * layer_params + mdl.embedding_params() / tp +
                        mdl.head_params() / tp;
  StepKernel k;
  k.name = "optimizer";
  k.pass = StepPass::Optimizer;
  k.op.kind = model::OpKind::Elementwise;
  k.bytes = optimizer_step_bytes(params, params, sc.training.dtype);
  return k;
}

std::vector<GemmShape> scenario_gemm_shapes(const Scenario& sc) {
  const std::int64_t b = sc.training.micro_batch;
  std::set<GemmShape> shapes;
  auto add = [&](const model::Op& raw) {
    const model::Op op = rank_op(sc, raw);
    if (op.kind != model::OpKind::Gemm) return;
    shapes.insert({op.m, op.n, op.k});
    shapes.insert({op.m, op.k, op.n});
    shapes.insert({op.k, op.n, op.m});
  };
  for (const auto& op : model::layer_ops(sc.model, b)) add(op);
  for (const auto& op : model::head_ops(sc.model, b)) add(op);
  if (sc.model.mtp_layers > 0) {
    for (const auto& op : model::mtp_ops(sc.model, b)) add(op);
  }
  return {shapes.begin(), shapes.end()};
}

std::vector<GemmShape> scenario_gemm_shapes_around(const Scenario& sc) {
  std::set<GemmShape> out;
  auto add = [&](const Scenario& s) {
    for (const auto& g : scenario_gemm_shapes(s)) out.insert(g);
  };
  add(sc);
  Scenario twice = sc;
  twice.training.micro_batch *= 2;
  add(twice);
  Scenario half = sc;
  if (sc.training.micro_batch % 2 == 0) {
    half.training.micro_batch /= 2;
    add(half);
  } else if (sc.model.seq_len % 2 == 0) {
    half.model.seq_len /= 2;
    add(half);
  }
  return {out.begin(), out.end()};
}

Time serial_time(const std::vector<StepKernel>& kernels, const cost::CostModel& cost,
                 const TrainingSpec& training) {
  Time t;
  const auto impl =
      training.flash_attention ? cost::AttentionImpl::Flash : cost::AttentionImpl::Unfused;
  for (const auto& k : kernels) {
    if (k.op.kind == model::OpKind::Gemm) {
      // The pass of the op as the step builder prices it (one GPU: no TP split).
      const GemmTimes g = gemm_times(cost, k.op, training.gemm_kernels());
      t += k.pass == StepPass::BackwardInput    ? g.dgrad
           : k.pass == StepPass::BackwardWeight ? g.wgrad
                                                : g.fwd;
    } else if (k.op.kind == model::OpKind::Attention) {
      const auto& o = k.op;
      t += k.pass == StepPass::BackwardInput
               ? cost.attention_bwd(o.batch, o.heads, o.seq, o.head_dim, o.causal, impl)
               : cost.attention_fwd(o.batch, o.heads, o.seq, o.head_dim, o.causal, impl);
    } else {
      t += cost.memory_bound(k.bytes);
    }
  }
  return t;
}

}  // namespace trainsim::workload
