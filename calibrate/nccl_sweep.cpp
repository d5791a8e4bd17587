#include "nccl_sweep.hpp"

#include <algorithm>
#include <ostream>
#include <string>
#include <vector>

#include "kernels.hpp"
#include "net/collective.hpp"

#ifdef TRAINSIM_HAVE_NCCL
#include <nccl.h>
#endif

namespace trainsim::calib {

#ifndef TRAINSIM_HAVE_NCCL

void nccl_sweep(Context& ctx, hw::HardwareProfile&) {
  ctx.log << "  nccl: built without NCCL (not found at configure time): collectives not "
             "measured\n";
}

#else

namespace {

void nccl_check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) throw DeviceError(std::string(what) + ": " + ncclGetErrorString(r));
}

struct Gpu {
  int device = 0;
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  void* send = nullptr;
  void* recv = nullptr;
};

}  // namespace

void nccl_sweep(Context& ctx, hw::HardwareProfile& out) {
  int n = 0;
  check(cudaGetDeviceCount(&n), "cudaGetDeviceCount");
  if (n < 2) {
    ctx.log << "  nccl: one GPU, no collective to measure\n";
    return;
  }
  int current = 0;
  check(cudaGetDevice(&current), "cudaGetDevice");
  const auto max_bytes = static_cast<std::size_t>(ctx.opt.nccl_max_bytes);
  std::vector<int> devs(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) devs[static_cast<std::size_t>(i)] = i;
  std::vector<ncclComm_t> comms(static_cast<std::size_t>(n));
  nccl_check(ncclCommInitAll(comms.data(), n, devs.data()), "ncclCommInitAll");
  std::vector<Gpu> gpus(static_cast<std::size_t>(n));
  auto cleanup = [&]() {
    for (auto& g : gpus) {
      (void)cudaSetDevice(g.device);
      if (g.send != nullptr) (void)cudaFree(g.send);
      if (g.recv != nullptr) (void)cudaFree(g.recv);
      if (g.start != nullptr) (void)cudaEventDestroy(g.start);
      if (g.stop != nullptr) (void)cudaEventDestroy(g.stop);
      if (g.stream != nullptr) (void)cudaStreamDestroy(g.stream);
      if (g.comm != nullptr) (void)ncclCommDestroy(g.comm);
    }
    (void)cudaSetDevice(current);
  };
  try {
    for (int i = 0; i < n; ++i) {
      Gpu& g = gpus[static_cast<std::size_t>(i)];
      g.device = i;
      g.comm = comms[static_cast<std::size_t>(i)];
      check(cudaSetDevice(i), "cudaSetDevice");
      check(cudaStreamCreateWithFlags(&g.stream, cudaStreamNonBlocking), "cudaStreamCreate");
      check(cudaEventCreate(&g.start), "cudaEventCreate");
      check(cudaEventCreate(&g.stop), "cudaEventCreate");
      check(cudaMalloc(&g.send, max_bytes), "cudaMalloc send");
      check(cudaMalloc(&g.recv, max_bytes), "cudaMalloc recv");
      check(kernels::fill_random(g.send, std::int64_t(max_bytes / 2), kernels::Elem::BF16,
                                 100 + std::uint64_t(i), 1.0f, g.stream),
            "fill");
      check(cudaStreamSynchronize(g.stream), "fill");
    }
    const net::CollectiveOp ops[] = {net::CollectiveOp::AllReduce, net::CollectiveOp::AllGather,
                                     net::CollectiveOp::ReduceScatter,
                                     net::CollectiveOp::AllToAll, net::CollectiveOp::SendRecv};
    const std::size_t elem = 2;  // bf16
    for (net::CollectiveOp op : ops) {
      for (std::size_t bytes = 1024; bytes <= max_bytes; bytes *= 4) {
        // Element counts per rank in nccl-tests' convention for `bytes`.
        const std::size_t count = bytes / elem;
        const std::size_t per_rank = count / static_cast<std::size_t>(n);
        if (per_rank == 0) continue;
        auto launch = [&](Gpu& g) {
          const int r = g.device;
          switch (op) {
            case net::CollectiveOp::AllReduce:
              nccl_check(ncclAllReduce(g.send, g.recv, count, ncclBfloat16, ncclSum, g.comm, g.stream), "ncclAllReduce");
              break;
            case net::CollectiveOp::AllGather:
              nccl_check(ncclAllGather(g.send, g.recv, per_rank, ncclBfloat16, g.comm, g.stream), "ncclAllGather");
              break;
            case net::CollectiveOp::ReduceScatter:
              nccl_check(ncclReduceScatter(g.send, g.recv, per_rank, ncclBfloat16, ncclSum, g.comm, g.stream), "ncclReduceScatter");
              break;
            case net::CollectiveOp::AllToAll:
              for (int p = 0; p < n; ++p) {
                const std::size_t off = static_cast<std::size_t>(p) * per_rank * elem;
                nccl_check(ncclSend(static_cast<char*>(g.send) + off, per_rank, ncclBfloat16, p, g.comm, g.stream), "ncclSend");
                nccl_check(ncclRecv(static_cast<char*>(g.recv) + off, per_rank, ncclBfloat16, p, g.comm, g.stream), "ncclRecv");
              }
              break;
            case net::CollectiveOp::SendRecv:
              nccl_check(ncclSend(g.send, count, ncclBfloat16, (r + 1) % n, g.comm, g.stream), "ncclSend");
              nccl_check(ncclRecv(g.recv, count, ncclBfloat16, (r + n - 1) % n, g.comm, g.stream), "ncclRecv");
              break;
          }
        };
        auto once = [&](bool timed) {
          if (timed) {
            for (auto& g : gpus) {
              check(cudaSetDevice(g.device), "cudaSetDevice");
              check(cudaEventRecord(g.start, g.stream), "cudaEventRecord");
            }
          }
          nccl_check(ncclGroupStart(), "ncclGroupStart");
          for (auto& g : gpus) launch(g);
          nccl_check(ncclGroupEnd(), "ncclGroupEnd");
          double slowest = 0;
          for (auto& g : gpus) {
            check(cudaSetDevice(g.device), "cudaSetDevice");
            if (timed) check(cudaEventRecord(g.stop, g.stream), "cudaEventRecord");
          }
          for (auto& g : gpus) {
            check(cudaSetDevice(g.device), "cudaSetDevice");
            check(cudaStreamSynchronize(g.stream), "collective");
            if (timed) {
              float ms = 0;
              check(cudaEventElapsedTime(&ms, g.start, g.stop), "cudaEventElapsedTime");
              slowest = std::max(slowest, ms * 1e-3);
            }
          }
          return slowest;
        };
        for (int i = 0; i < ctx.opt.timing.warmup; ++i) (void)once(false);
        std::vector<double> times;
        double spent = 0;
        for (int i = 0; i < ctx.opt.timing.repeats; ++i) {
          times.push_back(once(true));
          spent += times.back();
          if (times.size() >= 3 && spent > ctx.opt.timing.max_seconds) break;
        }
        std::sort(times.begin(), times.end());
        const std::size_t m = times.size();
        const double t = m % 2 == 1 ? times[m / 2] : 0.5 * (times[m / 2 - 1] + times[m / 2]);
        // Sizes as nccl-tests reports them: the whole buffer for all_reduce and send_recv,
        // the gathered / scattered total (per_rank * n) otherwise.
        const double size = (op == net::CollectiveOp::AllReduce || op == net::CollectiveOp::SendRecv)
                                ? double(count * elem)
                                : double(per_rank * elem * static_cast<std::size_t>(n));
        hw::CollectivePoint p;
        p.op = std::string(net::op_name(op));
        p.ranks = n;
        p.bytes = size;
        p.seconds = t;
        p.algbw = size / t;
        p.busbw = p.algbw * net::busbw_factor(op, n);
        out.collectives.push_back(p);
      }
      ctx.log << "  nccl " << net::op_name(op) << " on " << n << " GPUs: done\n";
    }
  } catch (...) {
    cleanup();
    throw;
  }
  cleanup();
}

#endif

}  // namespace trainsim::calib
