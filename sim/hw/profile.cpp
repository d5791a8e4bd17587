#include "hw/profile.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>
#include <utility>

namespace trainsim::hw {

double AttentionPoint::fwd_flops() const {
  double f = 4.0 * batch * double(heads) * double(seq) * double(seq) * head_dim;
  return causal ? f / 2 : f;
}

std::optional<double> interp_loglog(const std::vector<double>& xs, const std::vector<double>& ys,
                                    double x) {
  if (xs.empty() || xs.size() != ys.size() || !(x > 0)) return std::nullopt;
  if (x < xs.front() || x > xs.back()) return std::nullopt;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (x == xs[i]) return ys[i];
    if (i > 0 && x < xs[i]) {
      const double x0 = std::log(xs[i - 1]), x1 = std::log(xs[i]);
      const double w = (std::log(x) - x0) / (x1 - x0);
      return std::exp(std::log(ys[i - 1]) + w * (std::log(ys[i]) - std::log(ys[i - 1])));
    }
  }
  return std::nullopt;
}

namespace {

// Sorts (x, y) pairs by x and keeps the first y of each x.
void sorted_unique(std::vector<std::pair<double, double>>& pts, std::vector<double>& xs,
                   std::vector<double>& ys) {
  std::stable_sort(pts.begin(), pts.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [x, y] : pts) {
    if (!xs.empty() && xs.back() == x) continue;
    xs.push_back(x);
    ys.push_back(y);
  }
}

std::optional<double> lookup(std::vector<std::pair<double, double>> pts, double x) {
  std::vector<double> xs, ys;
  sorted_unique(pts, xs, ys);
  return interp_loglog(xs, ys, x);
}

}  // namespace

std::optional<double> HardwareProfile::gemm_seconds(Dtype dtype, std::int64_t m, std::int64_t n,
                                                    std::int64_t k) const {
  std::vector<std::pair<double, double>> pts;
  for (const auto& p : gemm) {
    if (p.dtype == dtype && p.n == n && p.k == k) pts.emplace_back(double(p.m), p.seconds);
  }
  if (auto t = lookup(std::move(pts), double(m))) return t;
  // A weight-gradient GEMM carries the tokens in k: (dtype, m, n) over k.
  pts.clear();
  for (const auto& p : gemm) {
    if (p.dtype == dtype && p.m == m && p.n == n) pts.emplace_back(double(p.k), p.seconds);
  }
  return lookup(std::move(pts), double(k));
}

double attention_wave_efficiency(std::int64_t batch, int heads, int seq, int sm_count) {
  const double blocks = static_cast<double>(batch) * heads * std::ceil(seq / 128.0);
  const double waves = std::ceil(blocks / sm_count);
  return blocks / (waves * sm_count);
}

std::optional<double> HardwareProfile::attention_tflops(bool causal, int head_dim, int seq,
                                                        bool backward, int sm_count) const {
  std::vector<std::pair<double, double>> pts;
  for (const auto& p : attention) {
    if (p.causal == causal && p.head_dim == head_dim) {
      const double waves =
          sm_count > 0 ? attention_wave_efficiency(p.batch, p.heads, p.seq, sm_count) : 1.0;
      pts.emplace_back(double(p.seq), (backward ? p.bwd_tflops() : p.fwd_tflops()) / waves);
    }
  }
  return lookup(std::move(pts), double(seq));
}

std::optional<double> HardwareProfile::memory_seconds(const std::string& op, double bytes) const {
  std::vector<std::pair<double, double>> pts;
  for (const auto& p : memory) {
    if (p.op == op) pts.emplace_back(p.bytes, p.seconds);
  }
  return lookup(std::move(pts), bytes);
}

std::optional<double> HardwareProfile::collective_seconds(const std::string& op, int ranks,
                                                          int nodes, double bytes) const {
  std::vector<std::pair<double, double>> pts;
  for (const auto& p : collectives) {
    if (p.op == op && p.ranks == ranks && p.nodes == nodes) pts.emplace_back(p.bytes, p.seconds);
  }
  return lookup(std::move(pts), bytes);
}

LinearFit fit_alpha_rate(const std::vector<double>& x, const std::vector<double>& t) {
  if (x.size() != t.size()) throw std::invalid_argument("fit: x and t differ in length");
  double s = 0, sx = 0, sxx = 0, st = 0, sxt = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (!(t[i] > 0) || !std::isfinite(t[i]) || !(x[i] >= 0)) {
      throw std::invalid_argument("fit: times must be > 0 and sizes >= 0");
    }
    const double w = 1.0 / (t[i] * t[i]);
    s += w;
    sx += w * x[i];
    sxx += w * x[i] * x[i];
    st += w * t[i];
    sxt += w * x[i] * t[i];
  }
  const double det = s * sxx - sx * sx;
  if (x.size() < 2 || !(det > 1e-12 * s * sxx)) {
    throw std::invalid_argument("fit: needs at least two distinct sizes");
  }
  double slope = (s * sxt - sx * st) / det;
  double alpha = (st - slope * sx) / s;
  if (alpha < 0) {  // a negative latency is unphysical: refit through the origin
    alpha = 0;
    slope = sxt / sxx;
  }
  if (!(slope > 0)) throw std::invalid_argument("fit: times do not grow with size");
  LinearFit f;
  f.alpha_s = alpha;
  f.rate = 1.0 / slope;
  f.points = static_cast<int>(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    f.max_rel_err = std::max(f.max_rel_err, std::abs(f.seconds(x[i]) - t[i]) / t[i]);
  }
  return f;
}

namespace {

void fit_families(const std::map<std::string, std::pair<std::vector<double>, std::vector<double>>>&
                      fams,
                  std::vector<FamilyFit>& out) {
  out.clear();
  for (const auto& [name, xt] : fams) {
    try {
      out.push_back({name, fit_alpha_rate(xt.first, xt.second)});
    } catch (const std::invalid_argument&) {
      // a family with one size (or flat times) has no curve; its points still interpolate
    }
  }
}

}  // namespace

void HardwareProfile::refit() {
  std::map<std::string, std::pair<std::vector<double>, std::vector<double>>> g, m, c;
  for (const auto& p : gemm) {
    auto& f = g[std::string(dtype_name(p.dtype))];
    f.first.push_back(p.flops());
    f.second.push_back(p.seconds);
  }
  for (const auto& p : memory) {
    auto& f = m[p.op];
    f.first.push_back(p.bytes);
    f.second.push_back(p.seconds);
  }
  for (const auto& p : collectives) {
    std::string fam = p.op;
    fam.append("/").append(std::to_string(p.ranks));
    if (p.nodes > 1) fam.append("/").append(std::to_string(p.nodes)).append("nodes");
    auto& f = c[fam];
    f.first.push_back(p.bytes);
    f.second.push_back(p.seconds);
  }
  fit_families(g, gemm_fits);
  fit_families(m, memory_fits);
  fit_families(c, collective_fits);
}

}  // namespace trainsim::hw
