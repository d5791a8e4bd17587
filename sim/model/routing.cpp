#include "model/routing.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>

namespace trainsim::model {

std::int64_t RoutingResult::rows_between(int src, int dst) const {
  std::int64_t n = 0;
  const int le = local_experts();
  for (int e = dst * le; e < (dst + 1) * le; ++e) {
    n += rows[static_cast<std::size_t>(src) * static_cast<std::size_t>(experts) +
              static_cast<std::size_t>(e)];
  }
  return n;
}

std::int64_t RoutingResult::rows_sent(int r) const {
  std::int64_t n = 0;
  for (int d = 0; d < ep; ++d) {
    if (d != r) n += rows_between(r, d);
  }
  return n;
}

std::int64_t RoutingResult::rows_received(int r) const {
  std::int64_t n = 0;
  for (int s = 0; s < ep; ++s) {
    if (s != r) n += rows_between(s, r);
  }
  return n;
}

std::int64_t RoutingResult::rows_processed(int r) const {
  return rows_received(r) + rows_between(r, r);
}

std::int64_t RoutingResult::expert_rows(int e) const {
  std::int64_t n = 0;
  for (int s = 0; s < ep; ++s) {
    n += rows[static_cast<std::size_t>(s) * static_cast<std::size_t>(experts) +
              static_cast<std::size_t>(e)];
  }
  return n;
}

int RoutingResult::busiest_rank() const {
  int best = 0;
  std::int64_t most = -1;
  for (int r = 0; r < ep; ++r) {
    const std::int64_t n = rows_processed(r);
    if (n > most) {
      most = n;
      best = r;
    }
  }
  return best;
}

double RoutingResult::imbalance() const {
  double total = 0, most = 0;
  for (int r = 0; r < ep; ++r) {
    const auto n = static_cast<double>(rows_processed(r));
    total += n;
    most = std::max(most, n);
  }
  return total > 0 ? most / (total / ep) : 1.0;
}

namespace {

/// Apportions `n` rows over weights `p` (summing to 1) by largest remainder; ties go to the
/// lower index after `offset` (rotating).
std::vector<std::int64_t> apportion(std::int64_t n, const std::vector<double>& p, int offset) {
  const std::size_t E = p.size();
  std::vector<std::int64_t> out(E);
  std::vector<std::pair<double, std::size_t>> rem;
  std::int64_t given = 0;
  for (std::size_t e = 0; e < E; ++e) {
    const double exact = static_cast<double>(n) * p[e];
    out[e] = static_cast<std::int64_t>(std::floor(exact + 1e-9));
    given += out[e];
    const std::size_t order = (e + E - static_cast<std::size_t>(offset) % E) % E;
    rem.emplace_back(-(exact - static_cast<double>(out[e])), order);
  }
  std::vector<std::size_t> idx(E);
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) {
    if (std::abs(rem[a].first - rem[b].first) > 1e-9) return rem[a].first < rem[b].first;
    return rem[a].second < rem[b].second;
  });
  for (std::size_t i = 0; given < n; ++i, ++given) ++out[idx[i % E]];
  return out;
}

}  // namespace

RoutingResult route_tokens(const MoeSpec& moe, std::int64_t tokens_per_rank, int ep,
                           std::uint64_t seed, int layer) {
  if (moe.experts < 1 || ep < 1 || moe.experts % ep != 0) {
    throw std::invalid_argument("route_tokens: ep (" + std::to_string(ep) +
                                ") must divide the expert count (" +
                                std::to_string(moe.experts) + ")");
  }
  if (tokens_per_rank < 1) throw std::invalid_argument("route_tokens: tokens_per_rank < 1");
  RoutingResult r;
  r.ep = ep;
  r.experts = moe.experts;
  r.tokens_per_rank = tokens_per_rank;
  r.top_k = moe.top_k;
  const auto E = static_cast<std::size_t>(moe.experts);
  const std::int64_t choices = tokens_per_rank * moe.top_k;
  r.rows.assign(E * static_cast<std::size_t>(ep), 0);
  std::vector<double> p(E, 1.0 / static_cast<double>(E));
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ULL + static_cast<std::uint64_t>(layer) + 1);
  if (moe.routing == Routing::Zipf) {
    std::vector<std::size_t> rank(E);
    std::iota(rank.begin(), rank.end(), 0);
    std::shuffle(rank.begin(), rank.end(), rng);
    double sum = 0;
    for (std::size_t e = 0; e < E; ++e) {
      p[e] = std::pow(static_cast<double>(rank[e] + 1), -moe.zipf_exponent);
      sum += p[e];
    }
    for (double& x : p) x /= sum;
  } else if (moe.routing == Routing::Imbalance) {
    const double f = moe.imbalance;
    if (!(f >= 1.0 && f <= ep)) {
      throw std::invalid_argument("route_tokens: imbalance must be in [1, ep]");
    }
    const auto le = static_cast<std::size_t>(moe.experts / ep);
    for (std::size_t e = 0; e < E; ++e) {
      const double rank_share = e < le ? f / ep : (ep > 1 ? (ep - f) / (ep * (ep - 1.0)) : 1.0);
      p[e] = rank_share / static_cast<double>(le);
    }
  }
  for (int s = 0; s < ep; ++s) {
    std::vector<std::int64_t> counts;
    if (moe.routing == Routing::Uniform || moe.routing == Routing::Zipf) {
      counts.assign(E, 0);
      std::int64_t left = choices;
      double mass = 1.0;
      for (std::size_t e = 0; e + 1 < E && left > 0; ++e) {
        const double q = std::clamp(p[e] / mass, 0.0, 1.0);
        std::binomial_distribution<std::int64_t> bin(left, q);
        counts[e] = bin(rng);
        left -= counts[e];
        mass -= p[e];
      }
      counts[E - 1] += left;
    } else {
      counts = apportion(choices, p, s * static_cast<int>(choices % moe.experts));
    }
    const std::int64_t cap =
        moe.capacity_factor > 0
            ? static_cast<std::int64_t>(std::ceil(moe.capacity_factor *
                                                  static_cast<double>(choices) /
                                                  static_cast<double>(E) - 1e-9))
            : choices;
    for (std::size_t e = 0; e < E; ++e) {
      const std::int64_t kept = std::min(counts[e], cap);
      r.dropped += counts[e] - kept;
      r.rows[static_cast<std::size_t>(s) * E + e] = kept;
    }
  }
  return r;
}

}  // namespace trainsim::model
