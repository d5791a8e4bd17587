// Collective communication costs.
//
// CollectiveModel is the seam between the workload and the network: the workload asks
// "how long does this collective of this size take on this group of GPUs", and a model
// answers. AlphaBetaModel answers with NCCL's own tuning model (latency + bytes/bandwidth
// per algorithm and protocol, cheapest wins; ../shared/reference/hardware.md §3.3) on the
// group's real placement in the topology, without link contention. A flow-level model with
// contention can implement the same interface later.
//
// Sizes follow nccl-tests (doc/PERFORMANCE.md): for all_reduce the buffer size; for
// all_gather and reduce_scatter the total size (recvcount * n * elem for all_gather);
// for all_to_all the bytes each rank sends in total; for send_recv the bytes sent.
// algbw = size / time; busbw = algbw * busbw_factor(op, n).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "core/time.hpp"
#include "hw/gpu.hpp"
#include "hw/topology.hpp"

namespace trainsim::net {

enum class CollectiveOp { AllReduce, AllGather, ReduceScatter, AllToAll, SendRecv };
enum class Algorithm { Ring, Tree, Hierarchical, Pairwise, P2P, None, NVLS, PAT };
enum class Protocol { LL, LL128, Simple };

std::string_view op_name(CollectiveOp op);         ///< "all_reduce", ...
std::string_view algorithm_name(Algorithm a);      ///< "ring", "tree", "nvls", "pat", ...
std::string_view protocol_name(Protocol p);        ///< "LL", "LL128", "Simple"

/// nccl-tests' bus-bandwidth factor for n ranks: all_reduce 2(n-1)/n, all_gather and
/// reduce_scatter (n-1)/n, all_to_all (n-1)/n, send_recv 1. n == 1 gives 0 for the
/// collectives (nothing moves). Throws std::invalid_argument for n < 1.
double busbw_factor(CollectiveOp op, int n);

/// Measured efficiency of NCCL's ring / NVLS bandwidth inside one NVLink domain at a
/// collective's bus bytes (size x busbw_factor): GpuSpec::nvlink_ramp_* interpolated in
/// log(bus bytes), clamped at the ends; 1 when the GPU has no measured ramp.
double nvlink_ramp_efficiency(const hw::GpuSpec& gpu, double bus_bytes);

/// The cost of one collective.
struct CollectiveCost {
  Time time;                               ///< completion time on every member
  Algorithm algorithm = Algorithm::None;
  Protocol protocol = Protocol::Simple;
  double algbw = 0;                        ///< B/s, size / time
  double busbw = 0;                        ///< B/s, algbw * busbw_factor
};

/// One point-to-point transfer of a collective, for the flow model.
struct Flow {
  int src = 0;             ///< global GPU index
  int dst = 0;             ///< global GPU index
  double bytes = 0;        ///< bytes carried
  /// Highest rate the algorithm drives this flow at, B/s: bytes / the phase's bandwidth
  /// time, so that without contention every flow of a phase ends together, exactly when the
  /// alpha-beta model says the phase ends. Contention can only lower it.
  double max_rate = 0;
};

/// A set of flows that run concurrently; phases of a plan run one after another.
struct FlowPhase {
  double latency_s = 0;    ///< the phase's alpha (NCCL latency), paid before its flows start
  double bw_time_s = 0;    ///< the phase's bandwidth term without contention, s
  std::vector<Flow> flows;
};

/// A collective expanded into flows: the algorithm's traffic pattern on the group's real
/// GPUs. Sum over phases of (latency_s + bw_time_s) is the alpha-beta time (up to rounding
/// to picoseconds). Patterns: Ring = k parallel rings (k = NICs a node uses, NCCL channels;
/// each node entered and left on the same rail), each edge carrying nsteps x S / (n k);
/// Tree = two mirrored binary trees over nodes (S/2 each, up and down every edge) plus a
/// chain in each node; NVLS and Pairwise = every ordered pair (S/n); PAT = one ring over
/// the nodes; Hierarchical = intra-node ring reduce_scatter, per-rail ring all_reduce of
/// S/ppn across nodes, intra-node ring all_gather (three phases); P2P = one flow.
struct CollectivePlan {
  CollectiveCost cost;
  std::vector<FlowPhase> phases;
};

/// Interface of a collective cost model.
class CollectiveModel {
 public:
  virtual ~CollectiveModel() = default;
  /// Cost of `op` moving `bytes` (nccl-tests convention above) among the GPUs in `group`
  /// (global GPU indices, distinct; for SendRecv exactly two: sender, receiver).
  /// A group of one GPU, or zero bytes, costs Time::zero().
  /// Throws std::invalid_argument for an empty group, a bad index or a SendRecv group of
  /// size != 2.
  [[nodiscard]] virtual CollectiveCost cost(CollectiveOp op, std::uint64_t bytes,
                                            std::span<const int> group) const = 0;
};

/// NCCL-like alpha-beta model without contention.
///
/// Per group it derives n (ranks), nNodes and ppn (max ranks per node) from the topology.
/// Bandwidths: intra-node bus bandwidth = the GPU's NCCL-model NVLink bandwidth
/// (GpuSpec::nccl_nvlink_bw, e.g. 12 x 20 GB/s on A100, which matches the measured 235 GB/s
/// ring busbw); inter-node bus bandwidth = (NICs the group uses per node) x achievable NIC
/// bandwidth (route bottleneck x nic_efficiency). Latencies: NCCL's base and per-hop constants
/// for Ring/Tree x LL/LL128/Simple (hardware.md §3.3 table). Algorithms: Ring, Tree (only
/// all_reduce across nodes), Hierarchical all_reduce (intra reduce_scatter, inter all_reduce
/// per rail, intra all_gather); NVLS all_reduce (in-switch reduction, Hopper and later, one
/// node of more than 4 GPUs); PAT all_gather/reduce_scatter (one GPU per node); all_to_all
/// pairwise; send_recv point to point over the route.
class AlphaBetaModel final : public CollectiveModel {
 public:
  /// Keeps references: `topology` and `gpu` must outlive the model.
  AlphaBetaModel(const hw::Topology& topology, const hw::GpuSpec& gpu);
  [[nodiscard]] CollectiveCost cost(CollectiveOp op, std::uint64_t bytes,
                                    std::span<const int> group) const override;
  /// The same choice as cost(), expanded into flows (see CollectivePlan). Same errors.
  [[nodiscard]] CollectivePlan plan(CollectiveOp op, std::uint64_t bytes,
                                    std::span<const int> group) const;

 private:
  [[nodiscard]] CollectivePlan choose(CollectiveOp op, std::uint64_t bytes,
                                      std::span<const int> group, bool with_flows) const;
  const hw::Topology& topo_;
  const hw::GpuSpec& gpu_;
};

/// The group of `groups` whose `op` of `bytes` `model` prices slowest, and that time; the
/// first such group on ties (so that where every copy is placed alike, the first group is
/// the one priced). A step waits for its slowest replica: where the parallel degrees do not
/// divide a node, one copy of a group can span two nodes while another sits in one. With
/// `gpus_per_node` > 0, of the groups placed alike (the same node offsets and local-rank
/// offsets from their first member, i.e. translates by whole nodes and rails) only the first
/// is priced, as stage fidelity assumes nodes and rails alike.
/// Throws std::invalid_argument for an empty `groups` (and what cost() throws).
struct SlowestGroup {
  std::vector<int> group;
  CollectiveCost cost;
};
[[nodiscard]] SlowestGroup slowest_group(const CollectiveModel& model, CollectiveOp op,
                                         std::uint64_t bytes,
                                         const std::vector<std::vector<int>>& groups,
                                         int gpus_per_node = 0);

}  // namespace trainsim::net
