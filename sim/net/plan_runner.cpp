#include "net/plan_runner.hpp"

#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

namespace trainsim::net {

std::vector<double> link_capacities(const hw::Topology& topo,
                                    const std::vector<double>& link_factor) {
  const std::size_t n = topo.num_links();
  if (!link_factor.empty() && link_factor.size() != n) {
    throw std::invalid_argument("link_capacities: " + std::to_string(link_factor.size()) +
                                " link factors for " + std::to_string(n) + " links");
  }
  std::vector<double> cap(n);
  for (std::size_t l = 0; l < n; ++l) {
    const double f = link_factor.empty() ? 1.0 : link_factor[l];
    if (!(f > 0.0) || !std::isfinite(f)) {
      throw std::invalid_argument("link_capacities: factor of link " + std::to_string(l) +
                                  " must be > 0");
    }
    cap[l] = topo.link(static_cast<std::uint32_t>(l)).bandwidth * f;
  }
  return cap;
}

namespace {

struct Run : std::enable_shared_from_this<Run> {
  FlowNetwork& net;
  const hw::Topology& topo;
  CollectivePlan plan;
  std::function<void(Simulator&)> done;
  std::size_t phase = 0;
  std::size_t outstanding = 0;

  Run(FlowNetwork& n, const hw::Topology& t, CollectivePlan p, std::function<void(Simulator&)> d)
      : net(n), topo(t), plan(std::move(p)), done(std::move(d)) {}

  void next(Simulator& sim) {
    if (phase == plan.phases.size()) {
      if (done) done(sim);
      return;
    }
    const FlowPhase& ph = plan.phases[phase];
    auto self = shared_from_this();
    net.call_after(Time::from_seconds(ph.latency_s), [self](Simulator& s) { self->start_flows(s); });
  }

  void start_flows(Simulator& sim) {
    const FlowPhase& ph = plan.phases[phase];
    outstanding = ph.flows.size();
    if (outstanding == 0) {
      ++phase;
      next(sim);
      return;
    }
    auto self = shared_from_this();
    for (const Flow& f : ph.flows) {
      const hw::Route r = topo.route(f.src, f.dst);
      net.start(r.links, f.bytes, f.max_rate, [self](Simulator& s, FlowId) {
        if (--self->outstanding == 0) {
          ++self->phase;
          self->next(s);
        }
      });
    }
  }
};

}  // namespace

void run_plan(FlowNetwork& net, const hw::Topology& topo, const CollectivePlan& plan,
              std::function<void(Simulator&)> done) {
  auto run = std::make_shared<Run>(net, topo, plan, std::move(done));
  if (run->plan.phases.empty()) {
    net.call_after(Time::zero(), [run](Simulator& s) {
      if (run->done) run->done(s);
    });
    return;
  }
  run->next(net.simulator());
}

}  // namespace trainsim::net
