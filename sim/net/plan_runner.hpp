// Runs a collective's flow plan (net::CollectivePlan) on a FlowNetwork over a topology:
// phase by phase, each phase waits its latency and then starts all its flows on their
// routes (Topology::route, deterministic ECMP); the next phase starts when the last flow of
// the previous one ends. Without other traffic the run ends at the alpha-beta time (each
// flow's bound is its uncontended rate); shared links make it later.
#pragma once

#include <functional>

#include "core/simulator.hpp"
#include "hw/topology.hpp"
#include "net/collective.hpp"
#include "net/flow_network.hpp"

namespace trainsim::net {

/// Link capacities of `topo` for a FlowNetwork, B/s: LinkInfo::bandwidth per link id,
/// multiplied by `link_factor[l]` when `link_factor` is not empty (stragglers /
/// heterogeneous links; must then have one entry per link, each > 0).
/// Throws std::invalid_argument for a wrong-sized or non-positive factor.
std::vector<double> link_capacities(const hw::Topology& topo,
                                    const std::vector<double>& link_factor = {});

/// Starts `plan` on `net` at sim.now(); calls `done` when it has finished (at once, from
/// a timer event, for a plan without phases). `plan` is copied; `topo` must outlive the run.
void run_plan(FlowNetwork& net, const hw::Topology& topo, const CollectivePlan& plan,
              std::function<void(Simulator&)> done);

}  // namespace trainsim::net
