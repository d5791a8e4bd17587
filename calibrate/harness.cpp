#include "harness.hpp"

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <vector>

#ifdef TRAINSIM_HAVE_NCCL
#include <nccl.h>
#endif

namespace trainsim::calib {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    throw DeviceError(std::string(what) + ": " + cudaGetErrorName(e) + " (" +
                      cudaGetErrorString(e) + ")");
  }
}

std::optional<std::string> no_device_reason() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    return std::string("cudaGetDeviceCount failed: ") + cudaGetErrorName(e) + " (" +
           cudaGetErrorString(e) + ")";
  }
  if (n == 0) return std::string("cudaGetDeviceCount reports 0 devices");
  return std::nullopt;
}

DeviceBuffer::~DeviceBuffer() {
  if (p_ != nullptr) (void)cudaFree(p_);
}

void DeviceBuffer::grow(std::size_t bytes) {
  if (bytes <= bytes_) return;
  if (p_ != nullptr) check(cudaFree(p_), "cudaFree");
  p_ = nullptr;
  bytes_ = 0;
  check(cudaMalloc(&p_, bytes), "cudaMalloc");
  bytes_ = bytes;
}

double median_seconds(const std::function<void(cudaStream_t)>& op, cudaStream_t stream,
                      const TimingOptions& t) {
  for (int i = 0; i < t.warmup; ++i) op(stream);
  check(cudaStreamSynchronize(stream), "warm-up");
  cudaEvent_t start = nullptr, stop = nullptr;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  std::vector<double> times;
  double spent = 0;
  try {
    for (int i = 0; i < std::max(1, t.repeats); ++i) {
      check(cudaEventRecord(start, stream), "cudaEventRecord");
      op(stream);
      check(cudaEventRecord(stop, stream), "cudaEventRecord");
      check(cudaEventSynchronize(stop), "cudaEventSynchronize");
      float ms = 0;
      check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
      times.push_back(ms * 1e-3);
      spent += ms * 1e-3;
      if (times.size() >= 3 && spent > t.max_seconds) break;
    }
  } catch (...) {
    (void)cudaEventDestroy(start);
    (void)cudaEventDestroy(stop);
    throw;
  }
  (void)cudaEventDestroy(start);
  (void)cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  const std::size_t n = times.size();
  return n % 2 == 1 ? times[n / 2] : 0.5 * (times[n / 2 - 1] + times[n / 2]);
}

namespace {

std::string version_string(int v) {
  // CUDA encodes 1000 * major + 10 * minor.
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

}  // namespace

hw::Provenance describe_device(int device) {
  hw::Provenance p;
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  p.gpu_name = prop.name;
  p.sm_count = prop.multiProcessorCount;
  p.compute_capability = prop.major * 10 + prop.minor;
  p.hbm_bytes = static_cast<double>(prop.totalGlobalMem);
  int khz = 0;
  if (cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, device) == cudaSuccess) {
    p.sm_clock_mhz = khz / 1000.0;
  }
  if (cudaDeviceGetAttribute(&khz, cudaDevAttrMemoryClockRate, device) == cudaSuccess) {
    p.mem_clock_mhz = khz / 1000.0;
  }
  check(cudaGetDeviceCount(&p.device_count), "cudaGetDeviceCount");
  int v = 0;
  if (cudaDriverGetVersion(&v) == cudaSuccess) p.driver = version_string(v);
  if (cudaRuntimeGetVersion(&v) == cudaSuccess) p.cuda_runtime = version_string(v);
  const std::size_t lt = cublasLtGetVersion();  // major * 10000 + minor * 100 + patch
  p.cublas = std::to_string(lt / 10000) + "." + std::to_string((lt / 100) % 100) + "." +
             std::to_string(lt % 100);
#ifdef TRAINSIM_HAVE_NCCL
  int nv = 0;
  if (ncclGetVersion(&nv) == ncclSuccess) {
    // NCCL >= 2.9 encodes major * 10000 + minor * 100 + patch.
    p.nccl = std::to_string(nv / 10000) + "." + std::to_string((nv / 100) % 100) + "." +
             std::to_string(nv % 100);
  }
#endif
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm utc{};
  gmtime_r(&now, &utc);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &utc);
  p.date = buf;
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) == 0) p.host = host;
  return p;
}

std::string builtin_key_for(const std::string& name, double hbm_bytes) {
  auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  if (has("H200")) return "h200_sxm";
  if (has("H100")) return "h100_sxm";
  if (has("B200")) return "b200";
  if (has("A100")) return hbm_bytes > 60e9 ? "a100_sxm4_80gb" : "a100_sxm4_40gb";
  return {};
}

}  // namespace trainsim::calib
