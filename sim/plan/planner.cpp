#include "plan/planner.hpp"

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.hpp"

namespace trainsim::plan {

namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string sci(double v) { return fmt("%.3g", v); }

std::string short_layout(const Candidate& c) {
  const auto& L = c.layout;
  std::string s = "TP" + std::to_string(L.tp) + " PP" + std::to_string(L.pp) + " DP" +
                  std::to_string(L.dp);
  // CP takes GPUs too (TP x PP x DP x CP = GPUs); EP reuses the DP x CP ranks.
  if (L.cp > 1) s += " CP" + std::to_string(L.cp);
  if (L.ep > 1) s += " EP" + std::to_string(L.ep);
  if (L.expert_tp() != L.tp) s += " ETP" + std::to_string(L.expert_tp());
  if (L.virtual_stages > 1) s += " v" + std::to_string(L.virtual_stages);
  s += " mb" + std::to_string(c.micro_batch);
  if (c.recompute != model::Recompute::None) s += std::string(" ") + model::recompute_name(c.recompute);
  return s;
}

/// Days as text: one decimal from a day up (as before); below a day three significant digits
/// and the hours, so a run of hours does not print as "0.0".
std::string fmt_days(double days) {
  if (days >= 1) return fmt("%.1f", days);
  return fmt("%.3g", days) + " (" + fmt("%.3g", days * 24) + " hours)";
}

/// "13.5 M", "1.2 B": a parameter count.
std::string fmt_params(double n) {
  return n >= 1e9 ? fmt("%.3g", n / 1e9) + " B" : fmt("%.3g", n / 1e6) + " M";
}

/// A cluster with no ranked layout: "does not fit in HBM" when memory was the reason, else
/// "no layout (see below)" with the search's reason printed under the table.
bool memory_was_why(const ClusterPlan& c) {
  return c.why.rfind("no layout of this model fits in", 0) == 0;
}

}  // namespace

std::optional<std::string> shape_note(const PlanResult& p) {
  // Compared as the law counts N (Kaplan: without the embeddings).
  const bool non_embedding = param_count(p.inputs.law) == ParamCount::NonEmbedding;
  const double shape = counted_params(p.model, param_count(p.inputs.law));
  const double n = p.allocation.params;
  const double off = shape / n - 1;
  if (std::abs(off) <= kShapeTolerance) return std::nullopt;
  const double flops = 6.0 * shape * p.allocation.tokens;
  return "the model shape has " + fmt_params(shape) +
         (non_embedding ? " non-embedding parameters, " : " parameters, ") +
         fmt("%+.0f", 100 * off) + "% vs the law's N (" + fmt_params(n) + ")" +
         (off > 0 && p.model.layers == 2 && p.model.hidden == 128
              ? std::string(": no smaller shape of the rule exists (at least 2 layers of "
                            "hidden 128 beside the 51200-token embeddings)")
              : std::string(": the nearest shape of the rule (docs/planner.md)")) +
         "; days, GPU-hours and cost are for this shape on D tokens, about " +
         fmt("%.3g", flops / p.inputs.budget_flops) + " x the budget's FLOPs (6 x " +
         fmt_params(shape) + " x " + fmt("%.3g", p.allocation.tokens / 1e9) + " B tokens)";
}

workload::Scenario scenario_for(const model::ModelSpec& model, std::int64_t global_batch,
                                const ClusterChoice& cluster) {
  workload::Scenario sc;
  sc.name = model.name;
  sc.model = model;
  sc.training.global_batch = global_batch;
  sc.training.micro_batch = 1;
  sc.training.dtype = hw::Dtype::BF16;
  sc.training.flash_attention = true;
  sc.topology = cluster.topology;
  sc.gpu = cluster.gpu;
  sc.gpus = cluster.gpus;
  return sc;
}

ClusterPlan plan_on_cluster(const model::ModelSpec& model, double tokens,
                            const ClusterChoice& cluster, const PlanInputs& in,
                            const Communicator& comm) {
  const auto sc = scenario_for(model, in.global_batch, cluster);
  const SearchResult r = search(sc, in.search, comm);
  const Evaluated& best = r.all[r.ranking.front()];
  ClusterPlan p;
  p.cluster = cluster.name;
  p.gpus = cluster.gpus;
  p.gpu = cluster.gpu.display_name;
  p.layout = best.c;
  p.step_time_s = best.step_time_s;
  p.mfu = best.mfu;
  const double steps = tokens / (static_cast<double>(in.global_batch) * model.seq_len);
  p.days = steps * best.step_time_s / 86400.0;
  p.gpu_hours = p.days * 24.0 * cluster.gpus;
  if (in.gpu_hour_usd) p.cost_usd = p.gpu_hours * *in.gpu_hour_usd;
  if (in.max_days) p.within_max_days = p.days <= *in.max_days;
  p.layouts_searched = r.all.size();
  p.simulations = r.simulations;
  p.proven = r.proven;
  return p;
}

namespace {

/// plan_on_cluster, or a plan marked !fits when no layout of `model` fits the cluster's HBM:
/// one published model too large for the table's cluster must not void the other rows.
ClusterPlan plan_or_no_fit(const model::ModelSpec& model, double tokens,
                           const ClusterChoice& cluster, const PlanInputs& in,
                           const Communicator& comm) {
  try {
    return plan_on_cluster(model, tokens, cluster, in, comm);
  } catch (const InputError& e) {
    ClusterPlan p;
    p.cluster = cluster.name;
    p.gpus = cluster.gpus;
    p.gpu = cluster.gpu.display_name;
    p.fits = false;
    p.why = e.what();
    return p;
  }
}

}  // namespace

PlanResult make_plan(const PlanInputs& in, const std::vector<ClusterChoice>& clusters,
                     const Communicator& comm) {
  if (!(in.budget_flops > 0)) throw InputError("--budget", "--budget must be a positive FLOP count");
  if (clusters.empty()) throw InputError("--cluster", "give at least one --cluster");
  PlanResult p;
  p.inputs = in;
  p.allocation = compute_optimal(in.law, in.budget_flops);
  if (p.allocation.params < 1e6) {
    throw InputError("--budget", "--budget " + sci(in.budget_flops) +
                                     " FLOPs gives a model under 1M parameters; too small to plan");
  }
  if (p.allocation.params > kMaxShapeParams) {
    throw InputError("--budget", "--budget " + sci(in.budget_flops) + " FLOPs gives a model of " +
                                     sci(p.allocation.params) +
                                     " parameters; the planner shapes models up to 1e14");
  }
  p.model = model_for_params(p.allocation.params,
                             "compute-optimal " + fmt("%.3g", p.allocation.params / 1e9) + "B",
                             param_count(in.law));
  // A cluster the model does not fit is reported as such beside the others; with none
  // that fits, the plan fails with the search's message.
  bool any_fits = false;
  for (const auto& c : clusters) {
    p.clusters.push_back(plan_or_no_fit(p.model, p.allocation.tokens, c, in, comm));
    any_fits = any_fits || p.clusters.back().fits;
  }
  if (!any_fits) throw InputError("--gpus", p.clusters.front().why);
  return p;
}

std::string plan_text(const PlanResult& p) {
  std::ostringstream o;
  o << "trainsim plan: budget " << sci(p.inputs.budget_flops) << " FLOPs, law "
    << law_name(p.inputs.law) << "\n";
  o << "  compute-optimal N    " << fmt("%.3g", p.allocation.params / 1e9) << " B parameters\n";
  o << "  compute-optimal D    " << fmt("%.3g", p.allocation.tokens / 1e9) << " B tokens ("
    << fmt("%.1f", p.allocation.tokens / p.allocation.params) << " tokens per parameter)\n";
  o << "  model shape          " << p.model.layers << " layers, hidden " << p.model.hidden << ", "
    << p.model.heads << " heads (" << fmt("%.3g", p.model.total_params() / 1e9)
    << " B parameters with embeddings"
    << (param_count(p.inputs.law) == ParamCount::NonEmbedding
            ? ", " + fmt("%.3g", counted_params(p.model, ParamCount::NonEmbedding) / 1e9) +
                  " B without, as Kaplan's N counts them"
            : std::string())
    << ")\n";
  o << "  global batch         " << p.inputs.global_batch << " x " << p.model.seq_len
    << " tokens"
    << (p.inputs.global_batch_from_law
            ? " (DeepSeek LLM's batch-size law, 0.292 C^0.3271 = " +
                  fmt("%.3g", optimal_batch_tokens(p.inputs.budget_flops)) +
                  " tokens, to a power of two; --global-batch sets it)"
            : std::string())
    << "\n\n";
  char line[512];
  std::snprintf(line, sizeof line, "  %-22s", "cluster");
  o << line;
  for (const auto& c : p.clusters) {
    std::snprintf(line, sizeof line, " %-30s", c.cluster.c_str());
    o << line;
  }
  o << "\n";
  auto row = [&](const char* name, auto value) {
    std::snprintf(line, sizeof line, "  %-22s", name);
    o << line;
    for (const auto& c : p.clusters) {
      std::snprintf(line, sizeof line, " %-30s", value(c).c_str());
      o << line;
    }
    o << "\n";
  };
  // A cluster with no fitting layout shows "does not fit" and dashes.
  auto fit_row = [&](const char* name, auto value) {
    row(name, [&](const ClusterPlan& c) { return c.fits ? value(c) : std::string("-"); });
  };
  row("GPUs", [](const ClusterPlan& c) { return std::to_string(c.gpus) + " x " + c.gpu; });
  row("best layout", [](const ClusterPlan& c) {
    return c.fits              ? short_layout(c.layout)
           : memory_was_why(c) ? std::string("does not fit in HBM")
                               : std::string("none (see below)");
  });
  fit_row("schedule", [](const ClusterPlan& c) {
    return std::string(parallel::schedule_name(c.layout.layout.schedule));
  });
  fit_row("step time", [](const ClusterPlan& c) { return fmt("%.3f s", c.step_time_s); });
  fit_row("MFU", [](const ClusterPlan& c) { return fmt("%.1f %%", 100 * c.mfu); });
  fit_row("days", [&](const ClusterPlan& c) {
    return fmt_days(c.days) + (c.within_max_days ? "" : " (over --max-days)");
  });
  fit_row("GPU-hours", [](const ClusterPlan& c) { return fmt("%.4g", c.gpu_hours); });
  if (p.inputs.gpu_hour_usd) {
    fit_row("cost", [](const ClusterPlan& c) { return fmt("$%.4g", c.cost_usd.value_or(0)); });
  }
  fit_row("layouts / simulated", [](const ClusterPlan& c) {
    return std::to_string(c.layouts_searched) + " / " + std::to_string(c.simulations) +
           (c.proven ? " (exact)" : " (budget)");
  });
  for (const auto& c : p.clusters) {
    if (!c.fits && !memory_was_why(c)) o << "  " << c.cluster << ": " << c.why << "\n";
  }
  if (const auto note = shape_note(p)) o << "  note: " << *note << "\n";
  return o.str();
}

std::string plan_json(const PlanResult& p) {
  auto fill = [&](nlohmann::ordered_json& j, const ClusterPlan& c) {
    j["cluster"] = c.cluster;
    j["gpus"] = c.gpus;
    j["gpu"] = c.gpu;
    if (!c.fits) {  // no layout ranked (HBM, task limit, ...): no numbers, the reason
      j["fits"] = false;
      j["why"] = c.why;
      return;
    }
    j["layout"] = layout_json(c.layout);
    j["mfu"] = c.mfu;
    j["step_time_s"] = c.step_time_s;
    j["days"] = c.days;
    j["gpu_hours"] = c.gpu_hours;
    j["cost_usd"] = c.cost_usd ? nlohmann::ordered_json(*c.cost_usd) : nlohmann::ordered_json();
    if (p.inputs.max_days) j["within_max_days"] = c.within_max_days;
    j["ranking_exact"] = c.proven;
  };
  nlohmann::ordered_json j;
  j["budget_flops"] = p.inputs.budget_flops;
  j["law"] = std::string(law_name(p.inputs.law));
  j["params"] = p.allocation.params;
  j["tokens"] = p.allocation.tokens;
  j["model"]["layers"] = p.model.layers;
  j["model"]["hidden"] = p.model.hidden;
  j["model"]["heads"] = p.model.heads;
  j["model"]["params"] = p.model.total_params();
  j["model"]["non_embedding_params"] = counted_params(p.model, ParamCount::NonEmbedding);
  // The shape misses N by more than kShapeTolerance: by how much, and what that means.
  if (const auto note = shape_note(p)) {
    j["shape_params_vs_n"] =
        counted_params(p.model, param_count(p.inputs.law)) / p.allocation.params - 1;
    j["shape_note"] = *note;
  }
  j["global_batch"] = p.inputs.global_batch;
  j["global_batch_from"] = p.inputs.global_batch_from_law ? "law" : "given";
  if (p.clusters.size() == 1) {
    fill(j, p.clusters.front());
  } else {
    nlohmann::ordered_json arr = nlohmann::ordered_json::array();
    for (const auto& c : p.clusters) {
      nlohmann::ordered_json o;
      fill(o, c);
      arr.push_back(o);
    }
    j["clusters"] = arr;
  }
  return j.dump(2) + "\n";
}


std::vector<TableRow> seed_table(const ClusterChoice& cluster, const PlanInputs& in,
                                 const Communicator& comm) {
  std::vector<TableRow> rows;
  for (const auto& pm : published_models()) {
    TableRow r;
    r.published = pm;
    r.flops = 6.0 * pm.params * pm.tokens;
    r.chinchilla = compute_optimal(Law::Chinchilla, r.flops);
    r.epoch = compute_optimal(Law::Epoch, r.flops);
    r.kaplan = compute_optimal(Law::Kaplan, r.flops);
    r.actual = plan_or_no_fit(pm.shape, pm.tokens, cluster, in, comm);
    const Allocation& opt = in.law == Law::Chinchilla ? r.chinchilla
                            : in.law == Law::Epoch    ? r.epoch
                                                      : r.kaplan;
    const auto opt_model = model_for_params(opt.params, pm.name + " (optimal)", param_count(in.law));
    r.optimal_params = opt_model.total_params();
    r.optimal = plan_or_no_fit(opt_model, opt.tokens, cluster, in, comm);
    rows.push_back(r);
  }
  return rows;
}

std::string table_text(const std::vector<TableRow>& rows, const ClusterChoice& cluster,
                       Law law) {
  std::ostringstream o;
  o << "Seed table: compute-optimal allocations for the FLOPs of published models, and days on "
    << cluster.gpus << " x " << cluster.gpu.display_name << " (" << cluster.name << ")\n\n";
  char line[512];
  std::snprintf(line, sizeof line, "  %-12s %6s %6s %6s %9s | %-13s | %-13s | %-13s | %6s %5s | %6s %5s\n",
                "model", "N", "shape", "D", "FLOPs", "Chinchilla", "Epoch", "Kaplan", "days",
                "MFU", "opt d", "MFU");
  o << line;
  bool any_unfit = false;
  std::vector<std::string> other_reasons;  // "model: why": no layout ranked, not for HBM
  for (const auto& r : rows) {
    auto nd = [](const Allocation& a) {
      return fmt("%.0f", a.params / 1e9) + " / " + fmt("%.0f", a.tokens / 1e9);
    };
    // "days MFU" of one plan, or a dash for a model no layout fits.
    auto days_mfu = [&](const ClusterPlan& c, const std::string& label) {
      if (c.fits) return fmt("%6.1f", c.days) + " " + fmt("%4.1f%%", 100 * c.mfu);
      if (memory_was_why(c)) {
        any_unfit = true;
      } else {
        other_reasons.push_back(label + ": " + c.why);
      }
      return std::string("     -     -");
    };
    // In this order (the notes under the table follow it).
    const std::string actual = days_mfu(r.actual, r.published.name);
    const std::string optimal = days_mfu(r.optimal, r.published.name + " (optimal)");
    std::snprintf(line, sizeof line,
                  "  %-12s %6.0f %6.0f %6.0f %9.3g | %-13s | %-13s | %-13s | %s | %s\n",
                  r.published.name.c_str(), r.published.params / 1e9,
                  r.published.shape.total_params() / 1e9, r.published.tokens / 1e9, r.flops,
                  nd(r.chinchilla).c_str(), nd(r.epoch).c_str(), nd(r.kaplan).c_str(),
                  actual.c_str(), optimal.c_str());
    o << line;
  }
  o << "\n  N (published), shape (parameters of the simulated shape), D and each law's N / D "
       "in billions.\n  days, MFU: the actual model and tokens; opt d, MFU: the "
    << law_name(law) << "-optimal model for the same FLOPs; each with its best simulated layout.\n";
  if (any_unfit) o << "  -: no layout of that model fits in HBM on this cluster.\n";
  for (const auto& why : other_reasons) o << "  -: " << why << "\n";
  return o.str();
}

std::string table_json(const std::vector<TableRow>& rows, const ClusterChoice& cluster,
                       Law law) {
  nlohmann::ordered_json arr = nlohmann::ordered_json::array();
  auto alloc = [](const Allocation& a) {
    nlohmann::ordered_json j;
    j["params"] = a.params;
    j["tokens"] = a.tokens;
    return j;
  };
  for (const auto& r : rows) {
    nlohmann::ordered_json j;
    j["model"] = r.published.name;
    j["params"] = r.published.params;
    j["shape_params"] = r.published.shape.total_params();
    j["tokens"] = r.published.tokens;
    j["flops"] = r.flops;
    j["chinchilla"] = alloc(r.chinchilla);
    j["epoch"] = alloc(r.epoch);
    j["kaplan"] = alloc(r.kaplan);
    // A plan with no fitting layout has null layout, MFU and days, and says why.
    auto plan = [](nlohmann::ordered_json& o, const ClusterPlan& c) {
      o["fits"] = c.fits;
      o["layout"] = c.fits ? layout_json(c.layout) : nlohmann::ordered_json();
      o["mfu"] = c.fits ? nlohmann::ordered_json(c.mfu) : nlohmann::ordered_json();
      o["days"] = c.fits ? nlohmann::ordered_json(c.days) : nlohmann::ordered_json();
      if (!c.fits) o["why"] = c.why;
    };
    plan(j["actual"], r.actual);
    j["optimal"]["law"] = std::string(law_name(law));
    j["optimal"]["shape_params"] = r.optimal_params;
    plan(j["optimal"], r.optimal);
    arr.push_back(j);
  }
  nlohmann::ordered_json out;
  out["cluster"] = cluster.name;
  out["gpus"] = cluster.gpus;
  out["rows"] = arr;
  return out.dump(2) + "\n";
}

std::vector<std::pair<double, double>> days_vs_params(const PlanResult& p,
                                                     const ClusterChoice& cluster,
                                                     const PlanInputs& in,
                                                     const Communicator& comm) {
  std::vector<std::pair<double, double>> out;
  for (double f : {0.25, 0.5, 1.0, 2.0, 4.0}) {
    const double n = p.allocation.params * f;
    if (n < 1e6 || n > kMaxShapeParams) continue;
    const auto m = model_for_params(n, "N x " + fmt("%g", f), param_count(p.inputs.law));
    try {
      const auto cp = plan_on_cluster(m, p.inputs.budget_flops / (6.0 * n), cluster, in, comm);
      out.emplace_back(n, cp.days);
    } catch (const InputError&) {
      // No layout of this size fits the cluster: no point.
    }
  }
  return out;
}

std::string isoflop_svg(const PlanResult& p, const std::vector<std::pair<double, double>>& days) {
  const LossFit fit = loss_fit(p.inputs.law == Law::Kaplan ? Law::Chinchilla : p.inputs.law);
  const double c0 = p.inputs.budget_flops;
  const double budgets[] = {c0 / 100, c0 / 10, c0, c0 * 10, c0 * 100};
  const double n_lo = std::log10(compute_optimal(Law::Chinchilla, budgets[0]).params) - 1.5;
  const double n_hi = std::log10(compute_optimal(Law::Chinchilla, budgets[4]).params) + 1.5;
  double l_lo = 1e9, l_hi = 0;
  constexpr int kPts = 120;
  std::vector<std::vector<std::pair<double, double>>> curves;
  for (double c : budgets) {
    std::vector<std::pair<double, double>> pts;
    for (int i = 0; i <= kPts; ++i) {
      const double ln = n_lo + (n_hi - n_lo) * i / kPts;
      const double n = std::pow(10.0, ln);
      const double l = loss(fit, n, c / (6 * n));
      pts.emplace_back(ln, l);
      l_lo = std::min(l_lo, l);
    }
    l_hi = std::max(l_hi, loss(fit, compute_optimal_numeric(fit, c).params,
                               compute_optimal_numeric(fit, c).tokens) + 0.6);
    curves.push_back(pts);
  }
  l_lo -= 0.05;
  const double W = 920, H = 380, x0 = 70, pw = 360, ph = 280, y0 = 40, x1 = 510;
  auto px = [&](double ln, double ox) { return ox + (ln - n_lo) / (n_hi - n_lo) * pw; };
  auto py = [&](double l) { return y0 + ph - (std::min(l, l_hi) - l_lo) / (l_hi - l_lo) * ph; };
  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  o << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o << "<text x=\"" << x0 << "\" y=\"20\" font-size=\"13\">IsoFLOP curves (" << law_name(
           p.inputs.law == Law::Kaplan ? Law::Chinchilla : p.inputs.law)
    << " fit): loss vs parameters</text>\n";
  o << "<rect x=\"" << x0 << "\" y=\"" << y0 << "\" width=\"" << pw << "\" height=\"" << ph
    << "\" fill=\"none\" stroke=\"black\"/>\n";
  const char* colors[] = {"#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b"};
  for (std::size_t k = 0; k < curves.size(); ++k) {
    o << "<polyline fill=\"none\" stroke=\"" << colors[k] << "\" points=\"";
    for (const auto& [ln, l] : curves[k]) o << fmt("%.1f", px(ln, x0)) << ',' << fmt("%.1f", py(l)) << ' ';
    o << "\"/>\n";
    const auto opt = compute_optimal(p.inputs.law == Law::Kaplan ? Law::Chinchilla : p.inputs.law,
                                     budgets[k]);
    const double lo = loss(fit, opt.params, opt.tokens);
    o << "<circle cx=\"" << fmt("%.1f", px(std::log10(opt.params), x0)) << "\" cy=\""
      << fmt("%.1f", py(lo)) << "\" r=\"4\" fill=\"" << colors[k] << "\"/>\n";
    o << "<text x=\"" << fmt("%.1f", px(std::log10(opt.params), x0) + 6) << "\" y=\""
      << fmt("%.1f", py(lo) + 12) << "\" fill=\"" << colors[k] << "\">" << sci(budgets[k])
      << "</text>\n";
  }
  for (int e = static_cast<int>(std::ceil(n_lo)); e <= static_cast<int>(n_hi); ++e) {
    o << "<text x=\"" << fmt("%.1f", px(e, x0)) << "\" y=\"" << y0 + ph + 15
      << "\" text-anchor=\"middle\">1e" << e << "</text>\n";
  }
  o << "<text x=\"" << x0 + pw / 2 << "\" y=\"" << y0 + ph + 32
    << "\" text-anchor=\"middle\">parameters N (log)</text>\n";
  for (int i = 0; i <= 4; ++i) {
    const double l = l_lo + (l_hi - l_lo) * i / 4;
    o << "<text x=\"" << x0 - 5 << "\" y=\"" << fmt("%.1f", py(l) + 4)
      << "\" text-anchor=\"end\">" << fmt("%.2f", l) << "</text>\n";
  }
  // Predicted days vs N at the same budget on the first cluster, each point searched.
  if (!days.empty()) {
    const ClusterPlan& c = p.clusters.front();
    double d_hi = 0;
    for (const auto& [n, d] : days) d_hi = std::max(d_hi, d);
    o << "<text x=\"" << x1 << "\" y=\"20\" font-size=\"13\">Days vs N at " << sci(c0)
      << " FLOPs, " << c.gpus << " GPUs (" << c.cluster << ")</text>\n";
    o << "<rect x=\"" << x1 << "\" y=\"" << y0 << "\" width=\"" << pw << "\" height=\"" << ph
      << "\" fill=\"none\" stroke=\"black\"/>\n";
    const double ymax = d_hi * 1.2;
    auto qy = [&](double d) { return y0 + ph - d / ymax * ph; };
    o << "<polyline fill=\"none\" stroke=\"#d62728\" points=\"";
    for (const auto& [n, d] : days) {
      o << fmt("%.1f", px(std::log10(n), x1)) << ',' << fmt("%.1f", qy(d)) << ' ';
    }
    o << "\"/>\n";
    for (const auto& [n, d] : days) {
      o << "<circle cx=\"" << fmt("%.1f", px(std::log10(n), x1)) << "\" cy=\"" << fmt("%.1f", qy(d))
        << "\" r=\"2.5\" fill=\"#d62728\"/>\n";
    }
    o << "<circle cx=\"" << fmt("%.1f", px(std::log10(p.allocation.params), x1)) << "\" cy=\""
      << fmt("%.1f", qy(c.days)) << "\" r=\"4\" fill=\"black\"/>\n";
    o << "<text x=\"" << fmt("%.1f", px(std::log10(p.allocation.params), x1) + 6) << "\" y=\""
      << fmt("%.1f", qy(c.days) - 6) << "\">optimum: "
      << (c.days >= 1 ? fmt("%.1f", c.days) : fmt("%.3g", c.days)) << " days</text>\n";
    for (int i = 0; i <= 4; ++i) {
      o << "<text x=\"" << x1 - 5 << "\" y=\"" << fmt("%.1f", qy(ymax * i / 4) + 4)
        << "\" text-anchor=\"end\">" << fmt(ymax >= 4 ? "%.0f" : "%.2g", ymax * i / 4)
        << "</text>\n";
    }
    for (int e = static_cast<int>(std::ceil(n_lo)); e <= static_cast<int>(n_hi); ++e) {
      o << "<text x=\"" << fmt("%.1f", px(e, x1)) << "\" y=\"" << y0 + ph + 15
        << "\" text-anchor=\"middle\">1e" << e << "</text>\n";
    }
    o << "<text x=\"" << x1 + pw / 2 << "\" y=\"" << y0 + ph + 32
      << "\" text-anchor=\"middle\">parameters N (log); best simulated layout per N</text>\n";
  }
  o << "</svg>\n";
  return o.str();
}

}  // namespace trainsim::plan
