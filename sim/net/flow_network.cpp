// Max-min fair flow model; see flow_network.hpp for the model and its sources.
#include "net/flow_network.hpp"

#include <algorithm>
#include <array>
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

}  // namespace

/// Progressive filling on a local problem of `nl` links and `nf` flows, flow f's links being
/// path[path_off[f] .. path_off[f+1]) (local link indices). Each round raises every unfrozen
/// flow to the lowest of (a) the fair share max(0, rem_l) / count_l of any link still
/// carrying unfrozen flows and (b) the lowest unfrozen bound; it freezes the flows of every
/// link whose share is within a relative 1e-12 of that level and every flow whose bound is,
/// and takes their rates off their links. The link shares sit in a min-heap and the bounds
/// are sorted once, so a solve costs O(P log P) for P path entries rather than O(rounds x
/// (links + flows)); the rounds, the set frozen in each and the order in which rates are
/// subtracted (ascending flow index) are those of the plain algorithm, so the rates are the
/// same doubles. The buffers persist between solves (no allocation once warm).
class MaxMinSolver {
 public:
  /// `cap` (size nl) is each link's capacity; writes one rate per flow into `rate`.
  void solve(std::span<const double> cap, std::span<const std::uint32_t> path_off,
             std::span<const std::uint32_t> path, std::span<const double> bound,
             std::vector<double>& rate) {
    const std::size_t nl = cap.size();
    const std::size_t nf = bound.size();
    rem_.assign(cap.begin(), cap.end());
    count_.assign(nl, 0);
    for (const std::uint32_t l : path) ++count_[l];
    // Link -> flows (local), in ascending flow order.
    link_off_.assign(nl + 1, 0);
    for (std::size_t l = 0; l < nl; ++l) link_off_[l + 1] = link_off_[l] + count_[l];
    fill_.assign(link_off_.begin(), link_off_.end() - 1);
    link_flows_.resize(path.size());
    for (std::size_t f = 0; f < nf; ++f) {
      for (std::uint32_t i = path_off[f]; i < path_off[f + 1]; ++i) {
        link_flows_[fill_[path[i]]++] = static_cast<std::uint32_t>(f);
      }
    }
    order_.resize(nf);
    for (std::size_t f = 0; f < nf; ++f) order_[f] = static_cast<std::uint32_t>(f);
    if (!std::is_sorted(bound.begin(), bound.end())) {
      std::sort(order_.begin(), order_.end(), [&](std::uint32_t a, std::uint32_t b) {
        return bound[a] < bound[b] || (bound[a] == bound[b] && a < b);
      });
    }
    heap_.clear();
    for (std::size_t l = 0; l < nl; ++l) {
      if (count_[l] > 0) heap_.push_back({share(l), static_cast<std::uint32_t>(l)});
    }
    std::make_heap(heap_.begin(), heap_.end(), Later{});
    rate.assign(nf, 0.0);
    frozen_.assign(nf, 0);
    touched_.assign(nl, 0);
    std::size_t next_bound = 0;
    std::size_t left = nf;
    while (left > 0) {
      drop_stale();
      double level = kInf;
      if (!heap_.empty()) level = heap_.front().share;
      while (next_bound < nf && frozen_[order_[next_bound]] != 0U) ++next_bound;
      if (next_bound < nf) level = std::min(level, bound[order_[next_bound]]);
      const double threshold = level * (1.0 + kLevelTolerance);
      now_frozen_.clear();
      // Every unfrozen flow of a saturated link freezes, so its count drops to 0.
      while (!heap_.empty()) {
        if (stale(heap_.front())) {
          pop();
          continue;
        }
        if (heap_.front().share > threshold) break;
        const std::uint32_t l = heap_.front().link;
        pop();
        for (std::uint32_t i = link_off_[l]; i < link_off_[l + 1]; ++i) freeze(link_flows_[i]);
      }
      for (std::size_t k = next_bound; k < nf && bound[order_[k]] <= threshold; ++k) {
        freeze(order_[k]);
      }
      std::sort(now_frozen_.begin(), now_frozen_.end());
      changed_.clear();
      for (const std::uint32_t f : now_frozen_) {
        rate[f] = std::min(level, bound[f]);
        for (std::uint32_t i = path_off[f]; i < path_off[f + 1]; ++i) {
          const std::uint32_t l = path[i];
          rem_[l] -= rate[f];
          --count_[l];
          if (touched_[l] == 0U) {
            touched_[l] = 1;
            changed_.push_back(l);
          }
        }
      }
      for (const std::uint32_t l : changed_) {
        touched_[l] = 0;
        if (count_[l] > 0) {
          heap_.push_back({share(l), l});
          std::push_heap(heap_.begin(), heap_.end(), Later{});
        }
      }
      left -= now_frozen_.size();
    }
  }

 private:
  struct Entry {
    double share;
    std::uint32_t link;
  };
  struct Later {  // min-heap on share
    bool operator()(const Entry& a, const Entry& b) const { return a.share > b.share; }
  };

  [[nodiscard]] double share(std::size_t l) const {
    return std::max(0.0, rem_[l]) / count_[l];
  }
  /// An entry is current while its link carries unfrozen flows and its share is unchanged
  /// (a changed link was pushed again; an equal older copy is harmless: its flows are frozen
  /// once).
  [[nodiscard]] bool stale(const Entry& e) const {
    return count_[e.link] == 0 || e.share != share(e.link);
  }
  void pop() {
    std::pop_heap(heap_.begin(), heap_.end(), Later{});
    heap_.pop_back();
  }
  void drop_stale() {
    while (!heap_.empty() && stale(heap_.front())) pop();
  }
  void freeze(std::uint32_t f) {
    if (frozen_[f] != 0U) return;
    frozen_[f] = 1;
    now_frozen_.push_back(f);
  }

  std::vector<double> rem_;
  std::vector<std::uint32_t> count_;
  std::vector<std::uint32_t> link_off_;
  std::vector<std::uint32_t> fill_;
  std::vector<std::uint32_t> link_flows_;
  std::vector<std::uint32_t> order_;
  std::vector<Entry> heap_;
  std::vector<std::uint8_t> frozen_;
  std::vector<std::uint8_t> touched_;
  std::vector<std::uint32_t> now_frozen_;
  std::vector<std::uint32_t> changed_;
};

namespace {

/// Sorts flow ids ascending: an LSD radix sort (11-bit digits, as many passes as the largest
/// id needs) for large lists, std::sort for small ones. `scratch` is reused between calls.
void sort_ids(std::vector<FlowId>& ids, std::vector<FlowId>& scratch) {
  constexpr std::size_t kRadixFrom = 256;
  if (ids.size() < kRadixFrom) {
    std::sort(ids.begin(), ids.end());
    return;
  }
  constexpr unsigned kBits = 11;
  constexpr std::uint32_t kMask = (1U << kBits) - 1;
  const FlowId largest = *std::max_element(ids.begin(), ids.end());
  std::array<std::uint32_t, kMask + 2> start{};
  scratch.resize(ids.size());
  for (unsigned shift = 0; shift < 32 && (largest >> shift) != 0; shift += kBits) {
    start.fill(0);
    for (const FlowId id : ids) ++start[((id >> shift) & kMask) + 1];
    for (std::uint32_t d = 0; d <= kMask; ++d) start[d + 1] += start[d];
    for (const FlowId id : ids) scratch[start[(id >> shift) & kMask]++] = id;
    ids.swap(scratch);
  }
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
  link_local_.assign(capacity_.size(), 0);
  solver_ = std::make_unique<MaxMinSolver>();
  handler_ = sim_.add_handler(this);
}

FlowNetwork::~FlowNetwork() = default;

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
    flow_mark_.push_back(0);
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
  seeds_.clear();
  seeds_.swap(dirty_);
  for (const std::uint32_t l : dirty_links_) {
    if (!on_link_[l].empty()) seeds_.push_back(on_link_[l].front());
  }
  dirty_links_.clear();
  ++stamp_;
  if (stamp_ == 0) {  // wrapped: clear the marks
    std::fill(flow_mark_.begin(), flow_mark_.end(), 0);
    std::fill(link_mark_.begin(), link_mark_.end(), 0);
    stamp_ = 1;
  }
  auto& component = component_;
  for (const FlowId seed : seeds_) {
    if (!flows_[seed].active || flow_mark_[seed] == stamp_) continue;
    // Breadth-first search over flows sharing links; links are numbered as found.
    component.clear();
    comp_links_.clear();
    component.push_back(seed);
    flow_mark_[seed] = stamp_;
    for (std::size_t i = 0; i < component.size(); ++i) {
      for (const std::uint32_t l : flows_[component[i]].links) {
        if (link_mark_[l] == stamp_) continue;
        link_mark_[l] = stamp_;
        link_local_[l] = static_cast<std::uint32_t>(comp_links_.size());
        comp_links_.push_back(l);
        for (const FlowId g : on_link_[l]) {
          if (flow_mark_[g] != stamp_) {
            flow_mark_[g] = stamp_;
            component.push_back(g);
          }
        }
      }
    }
    // Deterministic order: by flow id (the search order depends on swap-removals); the
    // rates do not depend on how the links are numbered.
    sort_ids(component, sort_scratch_);
    comp_cap_.resize(comp_links_.size());
    for (std::size_t i = 0; i < comp_links_.size(); ++i) comp_cap_[i] = capacity_[comp_links_[i]];
    path_off_.resize(component.size() + 1);
    path_.clear();
    bound_.resize(component.size());
    path_off_[0] = 0;
    for (std::size_t i = 0; i < component.size(); ++i) {
      const FlowState& f = flows_[component[i]];
      for (const std::uint32_t l : f.links) path_.push_back(link_local_[l]);
      path_off_[i + 1] = static_cast<std::uint32_t>(path_.size());
      bound_[i] = f.max_rate;
    }
    solver_->solve(comp_cap_, path_off_, path_, bound_, rates_);
    const std::vector<double>& rates = rates_;
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
  std::vector<std::uint32_t> off(paths.size() + 1, 0);
  std::vector<std::uint32_t> flat;
  for (std::size_t f = 0; f < paths.size(); ++f) {
    flat.insert(flat.end(), paths[f].begin(), paths[f].end());
    off[f + 1] = static_cast<std::uint32_t>(flat.size());
  }
  std::vector<double> rate;
  MaxMinSolver().solve(capacity, off, flat, max_rate, rate);
  return rate;
}

}  // namespace trainsim::net
