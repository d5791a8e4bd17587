// A straggler of `[simulation] stragglers` (full fidelity).
#pragma once

namespace trainsim::workload {

/// A slow GPU or slow links of one GPU. Factors multiply the nominal value: speed scales
/// the GPU's kernel rates (its compute tasks take 1 / speed as long), nic_bandwidth the
/// capacity of its NIC's links, nvlink_bandwidth that of its NVLink links.
struct Straggler {
  int gpu = 0;
  double speed = 1.0;
  double nic_bandwidth = 1.0;
  double nvlink_bandwidth = 1.0;
  /// The smallest factor: how much slower than nominal this GPU's slowest part is.
  [[nodiscard]] double worst() const {
    double w = speed;
    if (nic_bandwidth < w) w = nic_bandwidth;
    if (nvlink_bandwidth < w) w = nvlink_bandwidth;
    return w;
  }
};

}  // namespace trainsim::workload
