// Collective costs from a measured hardware profile (hw/profile.hpp), with a fallback model.
//
// trainsim-calibrate measures NCCL collectives across the GPUs of one node, or across nodes
// under mpirun (nccl-tests size convention). A group with the op, rank count and node count
// of a measured family, and a byte count inside the measured range, is priced by log-log
// interpolation between the measured times; anything else by the fallback model. count()
// says how many queries each source answered.
#pragma once

#include <memory>

#include "hw/profile.hpp"
#include "hw/topology.hpp"
#include "net/collective.hpp"

namespace trainsim::net {

class ProfiledCollectiveModel final : public CollectiveModel {
 public:
  /// Keeps references to `fallback` and `topology`, which must outlive the model.
  ProfiledCollectiveModel(const CollectiveModel& fallback, const hw::Topology& topology,
                          std::shared_ptr<const hw::HardwareProfile> profile);
  /// As CollectiveModel::cost; the algorithm and protocol reported are the fallback's, the
  /// time (and algbw/busbw) the measured one when the profile covers the case.
  [[nodiscard]] CollectiveCost cost(CollectiveOp op, std::uint64_t bytes,
                                    std::span<const int> group) const override;
  [[nodiscard]] const hw::SourceCount& count() const { return count_; }

 private:
  const CollectiveModel& fallback_;
  const hw::Topology& topo_;
  std::shared_ptr<const hw::HardwareProfile> profile_;
  mutable hw::SourceCount count_;
};

}  // namespace trainsim::net
