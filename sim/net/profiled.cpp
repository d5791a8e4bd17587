#include "net/profiled.hpp"

#include <string>

namespace trainsim::net {

ProfiledCollectiveModel::ProfiledCollectiveModel(
    const CollectiveModel& fallback, const hw::Topology& topology,
    std::shared_ptr<const hw::HardwareProfile> profile)
    : fallback_(fallback), topo_(topology), profile_(std::move(profile)) {}

CollectiveCost ProfiledCollectiveModel::cost(CollectiveOp op, std::uint64_t bytes,
                                             std::span<const int> group) const {
  CollectiveCost c = fallback_.cost(op, bytes, group);
  if (group.size() < 2 || bytes == 0 || profile_ == nullptr) return c;
  bool one_node = true;
  for (int g : group) one_node = one_node && topo_.node_of(g) == topo_.node_of(group[0]);
  const int n = static_cast<int>(group.size());
  if (one_node) {
    if (auto t = profile_->collective_seconds(std::string(op_name(op)), n,
                                              static_cast<double>(bytes))) {
      ++count_.profile;
      c.time = Time::from_seconds(*t);
      c.algbw = static_cast<double>(bytes) / *t;
      c.busbw = c.algbw * busbw_factor(op, n);
      return c;
    }
  }
  ++count_.builtin;
  return c;
}

}  // namespace trainsim::net
