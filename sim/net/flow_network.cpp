// Max-min fair flow model; see flow_network.hpp for the model and its sources.
#include "net/flow_network.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

namespace trainsim::net {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
/// Payload of the recompute event (flow ids are below it).
constexpr std::uint64_t kRecompute = std::numeric_limits<std::uint64_t>::max();
/// Timer payloads carry this bit over their index.
constexpr std::uint64_t kTimerBit = 1ULL << 63U;
/// Completions run before the recompute of the same instant.
constexpr std::int32_t kCompletionPriority = 0;
constexpr std::int32_t kRecomputePriority = 1;
/// Relative tolerance for "this link saturates at the current level".
constexpr double kLevelTolerance = 1e-12;

/// Progressive filling on a local problem: `paths[f]` holds local link indices into `cap`.
/// Returns the max-min fair rate of every flow.
std::vector<double> progressive_filling(std::vector<double> rem,
                                        const std::vector<std::vector<std::uint32_t>>& paths,
                                        const std::vector<double>& bound) {
  const std::size_t nf = paths.size();
  std::vector<std::uint32_t> count(rem.size(), 0);
  for (const auto& p : paths) {
    for (const std::uint32_t l : p) ++count[l];
  }
  std::vector<double> rate(nf, 0.0);
  std::vector<std::uint8_t> frozen(nf, 0);
  std::vector<std::uint8_t> saturated(rem.size(), 0);
  std::vector<std::size_t> now_frozen;
  std::size_t left = nf;
  while (left > 0) {
    double level = kInf;
    for (std::size_t l = 0; l < rem.size(); ++l) {
      if (count[l] > 0) level = std::min(level, std::max(0.0, rem[l]) / count[l]);
    }
    for (std::size_t f = 0; f < nf; ++f) {
      if (frozen[f] == 0U) level = std::min(level, bound[f]);
    }
    const double threshold = level * (1.0 + kLevelTolerance);
    for (std::size_t l = 0; l < rem.size(); ++l) {
      saturated[l] = count[l] > 0 && std::max(0.0, rem[l]) / count[l] <= threshold ? 1 : 0;
    }
    now_frozen.clear();
    for (std::size_t f = 0; f < nf; ++f) {
      if (frozen[f] != 0U) continue;
      bool stop = bound[f] <= threshold;
      for (const std::uint32_t l : paths[f]) stop = stop || saturated[l] != 0U;
      if (stop) {
        rate[f] = std::min(level, bound[f]);
        frozen[f] = 1;
        now_frozen.push_back(f);
      }
    }
    for (const std::size_t f : now_frozen) {
      for (const std::uint32_t l : paths[f]) {
        rem[l] -= rate[f];
        --count[l];
      }
    }
    left -= now_frozen.size();
  }
  return rate;
}

[[noreturn]] void bad(const std::string& what) {
  throw std::invalid_argument("flow network: " + what);
}

}  // namespace

FlowNetwork::FlowNetwork(Simulator& sim, std::vector<double> capacity)
    : sim_(sim), capacity_(std::move(capacity)) {
  for (std::size_t l = 0; l < capacity_.size(); ++l) {
    if (!(capacity_[l] > 0.0) || !std::isfinite(capacity_[l])) {
      bad("link " + std::to_string(l) + " needs a finite capacity > 0 B/s (got " +
          std::to_string(capacity_[l]) + ")");
    }
  }
  on_link_.resize(capacity_.size());
  link_mark_.assign(capacity_.size(), 0);
  handler_ = sim_.add_handler(this);
}

FlowId FlowNetwork::start(std::span<const std::uint32_t> links, double bytes, double max_rate,
                          FlowDone done) {
  if (!(bytes >= 0.0) || !std::isfinite(bytes)) bad("flow bytes must be finite and >= 0");
  if (!(max_rate > 0.0)) bad("flow max_rate must be > 0 B/s");
  if (links.empty() && !std::isfinite(max_rate)) bad("a flow without links needs a finite max_rate");
  for (const std::uint32_t l : links) {
    if (l >= capacity_.size()) {
      bad("link id " + std::to_string(l) + " out of range [0, " +
          std::to_string(capacity_.size()) + ")");
    }
  }
  FlowId id = 0;
  if (free_flows_.empty()) {
    id = static_cast<FlowId>(flows_.size());
    flows_.emplace_back();
  } else {
    id = free_flows_.back();
    free_flows_.pop_back();
  }
  FlowState& f = flows_[id];
  f.links.assign(links.begin(), links.end());
  f.remaining = bytes;
  f.rate = 0;
  f.max_rate = max_rate;
  f.since = sim_.now();
  f.finish = Time::max();
  f.done = std::move(done);
  f.active = true;
  ++flows_started_;
  for (const std::uint32_t l : links) on_link_[l].push_back(id);
  ++active_count_;
  mark_dirty(id);
  return id;
}

void FlowNetwork::call_after(Time delay, std::function<void(Simulator&)> fn) {
  std::uint64_t index = timers_.size();
  if (free_timers_.empty()) {
    timers_.push_back(std::move(fn));
  } else {
    index = free_timers_.back();
    free_timers_.pop_back();
    timers_[index] = std::move(fn);
  }
  sim_.schedule_in(delay, handler_, kTimerBit | index, kCompletionPriority);
}

double FlowNetwork::rate(FlowId f) const {
  return f < flows_.size() && flows_[f].active ? flows_[f].rate : 0.0;
}

bool FlowNetwork::active(FlowId f) const { return f < flows_.size() && flows_[f].active; }

void FlowNetwork::mark_dirty(FlowId f) {
  dirty_.push_back(f);
  if (!recompute_pending_) {
    recompute_pending_ = true;
    sim_.schedule_at(sim_.now(), handler_, kRecompute, kRecomputePriority);
  }
}

void FlowNetwork::on_event(Simulator& sim, const Event& event) {
  if (event.payload == kRecompute) {
    recompute_pending_ = false;
    recompute(sim);
    return;
  }
  if ((event.payload & kTimerBit) != 0U) {
    const std::uint64_t index = event.payload & ~kTimerBit;
    auto fn = std::move(timers_[index]);
    timers_[index] = nullptr;
    free_timers_.push_back(index);
    if (fn) fn(sim);
    return;
  }
  const auto f = static_cast<FlowId>(event.payload);
  if (f < flows_.size() && flows_[f].active && flows_[f].finish == sim.now()) finish(sim, f);
}

void FlowNetwork::finish(Simulator& sim, FlowId id) {
  FlowState& f = flows_[id];
  f.active = false;
  f.rate = 0;
  f.remaining = 0;
  --active_count_;
  for (const std::uint32_t l : f.links) {
    auto& list = on_link_[l];
    const auto it = std::find(list.begin(), list.end(), id);
    if (it != list.end()) {
      *it = list.back();
      list.pop_back();
    }
    if (!list.empty()) dirty_links_.push_back(l);
  }
  if (!dirty_links_.empty() && !recompute_pending_) {
    recompute_pending_ = true;
    sim.schedule_at(sim.now(), handler_, kRecompute, kRecomputePriority);
  }
  FlowDone done = std::move(f.done);
  f.done = nullptr;
  free_flows_.push_back(id);
  if (done) done(sim, id);
}

void FlowNetwork::recompute(Simulator& sim) {
  const Time now = sim.now();
  std::vector<FlowId> seeds;
  seeds.swap(dirty_);
  for (const std::uint32_t l : dirty_links_) {
    if (!on_link_[l].empty()) seeds.push_back(on_link_[l].front());
  }
  dirty_links_.clear();
  ++stamp_;
  if (stamp_ == 0) {  // wrapped: clear the marks
    for (auto& f : flows_) f.mark = 0;
    std::fill(link_mark_.begin(), link_mark_.end(), 0);
    stamp_ = 1;
  }
  std::vector<FlowId> component;
  std::vector<std::uint32_t> comp_links;
  for (const FlowId seed : seeds) {
    if (!flows_[seed].active || flows_[seed].mark == stamp_) continue;
    // Breadth-first search over flows sharing links.
    component.clear();
    comp_links.clear();
    component.push_back(seed);
    flows_[seed].mark = stamp_;
    for (std::size_t i = 0; i < component.size(); ++i) {
      for (const std::uint32_t l : flows_[component[i]].links) {
        if (link_mark_[l] == stamp_) continue;
        link_mark_[l] = stamp_;
        comp_links.push_back(l);
        for (const FlowId g : on_link_[l]) {
          if (flows_[g].mark != stamp_) {
            flows_[g].mark = stamp_;
            component.push_back(g);
          }
        }
      }
    }
    // Deterministic order: by flow id (the search order depends on swap-removals).
    std::sort(component.begin(), component.end());
    std::sort(comp_links.begin(), comp_links.end());
    std::vector<double> cap(comp_links.size());
    for (std::size_t i = 0; i < comp_links.size(); ++i) cap[i] = capacity_[comp_links[i]];
    std::vector<std::vector<std::uint32_t>> paths(component.size());
    std::vector<double> bound(component.size());
    for (std::size_t i = 0; i < component.size(); ++i) {
      const FlowState& f = flows_[component[i]];
      for (const std::uint32_t l : f.links) {
        paths[i].push_back(static_cast<std::uint32_t>(
            std::lower_bound(comp_links.begin(), comp_links.end(), l) - comp_links.begin()));
      }
      bound[i] = f.max_rate;
    }
    const std::vector<double> rates = progressive_filling(std::move(cap), paths, bound);
    ++recomputations_;
    flow_updates_ += component.size();
    for (std::size_t i = 0; i < component.size(); ++i) {
      const FlowId id = component[i];
      FlowState& f = flows_[id];
      // Progress at the old rate up to now, then the new rate.
      f.remaining = std::max(0.0, f.remaining - f.rate * (now - f.since).seconds());
      f.since = now;
      const double r = rates[i];
      if (r == f.rate && f.finish != Time::max() && f.remaining > 0) continue;  // unchanged
      f.rate = r;
      Time finish = now;
      if (f.remaining > 0) {
        if (!(r > 0)) {
          f.finish = Time::max();
          continue;
        }
        const double ps = std::ceil(f.remaining / r * 1e12);
        // Converting a double beyond int64 is undefined (it read as a time in the past).
        if (!(ps < 9.2e18)) {
          throw std::overflow_error("flow network: a flow of " + std::to_string(f.remaining) +
                                    " bytes at " + std::to_string(r) +
                                    " B/s ends beyond Time's range");
        }
        finish = now + Time::ps(static_cast<std::int64_t>(ps));
      }
      f.finish = finish;
      sim.schedule_at(finish, handler_, id, kCompletionPriority);
    }
  }
}

std::vector<double> FlowNetwork::max_min_rates(
    const std::vector<double>& capacity, const std::vector<std::vector<std::uint32_t>>& paths,
    const std::vector<double>& max_rate) {
  if (paths.size() != max_rate.size()) bad("max_min_rates: one bound per flow needed");
  for (const auto& p : paths) {
    for (const std::uint32_t l : p) {
      if (l >= capacity.size()) bad("max_min_rates: link id " + std::to_string(l) + " out of range");
    }
  }
  return progressive_filling(capacity, paths, max_rate);
}

}  // namespace trainsim::net
