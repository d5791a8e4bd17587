#include "net/profiled.hpp"

#include <set>
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
  std::set<int> nodes;
  for (int g : group) nodes.insert(topo_.node_of(g));
  const int n = static_cast<int>(group.size());
  {
    if (auto t = profile_->collective_seconds(std::string(op_name(op)), n,
                                              static_cast<int>(nodes.size()),
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
