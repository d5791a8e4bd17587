// trainsim-calibrate's measurement harness: CUDA error checks, device buffers, timing with
// CUDA events (warm-up, then the median of repeats), and the device description that goes
// into a profile's provenance.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

#include "hw/profile.hpp"

namespace trainsim::calib {

/// A failed CUDA / cuBLASLt / NCCL call: what() names the call and the error string.
class DeviceError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Throws DeviceError("<what>: <cudaGetErrorString>") unless e == cudaSuccess.
void check(cudaError_t e, const char* what);

/// Why no CUDA device can be used (cudaGetDeviceCount's error, or zero devices), or nullopt
/// when at least one is present.
std::optional<std::string> no_device_reason();

/// Device memory, freed on destruction; grow() reallocates (contents lost) when smaller.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t bytes) { grow(bytes); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();
  void grow(std::size_t bytes);
  [[nodiscard]] void* get() const { return p_; }
  template <class T>
  [[nodiscard]] T* as() const {
    return static_cast<T*>(p_);
  }
  [[nodiscard]] std::size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  std::size_t bytes_ = 0;
};

/// How much to repeat a measurement.
struct TimingOptions {
  int warmup = 3;
  int repeats = 10;
  /// Stop repeating (after at least 3 timed runs) once this much time was spent.
  double max_seconds = 1.0;
};

/// Runs `op` on `stream` `warmup` times, then times each of up to `repeats` runs with a pair
/// of CUDA events, and returns the median in seconds. Throws DeviceError.
double median_seconds(const std::function<void(cudaStream_t)>& op, cudaStream_t stream,
                      const TimingOptions& t);

/// Provenance of the current device: name, SMs, compute capability, clocks, memory, device
/// count, driver / runtime / cuBLAS / NCCL versions, date (UTC), host.
hw::Provenance describe_device(int device);

/// The built-in GPU key that best matches a device name ("H200" -> "h200_sxm", ...), empty
/// when none does.
std::string builtin_key_for(const std::string& device_name, double hbm_bytes);

}  // namespace trainsim::calib
