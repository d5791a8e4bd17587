// Multi-process (multi-node) NCCL sweeps when trainsim-calibrate is launched with mpirun:
// one GPU per rank (the node-local rank picks the device), a communicator over every rank
// (ncclGetUniqueId on rank 0, MPI_Bcast, ncclCommInitRank), the same ops, sizes and
// nccl-tests conventions as the one-process sweep. Each rank times its own launch with CUDA
// events; the run's time is the maximum over ranks (MPI_Allreduce), the recorded value the
// median over repeats. Points carry ranks = world size and nodes = distinct host names.
#include "mpi_sweep.hpp"

#include <mpi.h>
#include <nccl.h>

#include <algorithm>
#include <cstdlib>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "kernels.hpp"
#include "net/collective.hpp"

namespace trainsim::calib {

namespace {

void nccl_check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) throw DeviceError(std::string(what) + ": " + ncclGetErrorString(r));
}

void mpi_check(int r, const char* what) {
  if (r != MPI_SUCCESS) throw DeviceError(std::string(what) + ": MPI error " + std::to_string(r));
}

}  // namespace

MpiSession::MpiSession(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized == 0) mpi_check(MPI_Init(argc, argv), "MPI_Init");
  mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank");
  mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &size_), "MPI_Comm_size");
  MPI_Comm local = MPI_COMM_NULL;
  mpi_check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local),
            "MPI_Comm_split_type");
  mpi_check(MPI_Comm_rank(local, &local_rank_), "MPI_Comm_rank");
  MPI_Comm_free(&local);
  char name[MPI_MAX_PROCESSOR_NAME] = {};
  int len = 0;
  mpi_check(MPI_Get_processor_name(name, &len), "MPI_Get_processor_name");
  std::vector<char> all(static_cast<std::size_t>(size_) * MPI_MAX_PROCESSOR_NAME);
  mpi_check(MPI_Allgather(name, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all.data(),
                          MPI_MAX_PROCESSOR_NAME, MPI_CHAR, MPI_COMM_WORLD),
            "MPI_Allgather");
  std::set<std::string> hosts;
  for (int r = 0; r < size_; ++r) {
    hosts.insert(std::string(all.data() + static_cast<std::size_t>(r) * MPI_MAX_PROCESSOR_NAME));
  }
  nodes_ = static_cast<int>(hosts.size());
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized == 0) MPI_Finalize();
}

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"}) {
    if (std::getenv(v) != nullptr) return true;
  }
  return false;
}

void nccl_sweep_mpi(Context& ctx, const MpiSession& mpi, hw::HardwareProfile& out) {
  const int n = mpi.size(), rank = mpi.rank();
  ncclUniqueId id{};
  if (rank == 0) nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
  mpi_check(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD), "MPI_Bcast");
  ncclComm_t comm = nullptr;
  nccl_check(ncclCommInitRank(&comm, n, id, rank), "ncclCommInitRank");
  const auto max_bytes = static_cast<std::size_t>(ctx.opt.nccl_max_bytes);
  DeviceBuffer send(max_bytes), recv(max_bytes);
  cudaEvent_t start = nullptr, stop = nullptr;
  try {
    check(kernels::fill_random(send.get(), std::int64_t(max_bytes / 2), kernels::Elem::BF16,
                               200 + std::uint64_t(rank), 1.0f, ctx.stream),
          "fill");
    check(cudaEventCreate(&start), "cudaEventCreate");
    check(cudaEventCreate(&stop), "cudaEventCreate");
    const net::CollectiveOp ops[] = {net::CollectiveOp::AllReduce, net::CollectiveOp::AllGather,
                                     net::CollectiveOp::ReduceScatter,
                                     net::CollectiveOp::AllToAll, net::CollectiveOp::SendRecv};
    const std::size_t elem = 2;
    for (net::CollectiveOp op : ops) {
      for (std::size_t bytes = 1024; bytes <= max_bytes; bytes *= 4) {
        const std::size_t count = bytes / elem;
        const std::size_t per_rank = count / static_cast<std::size_t>(n);
        if (per_rank == 0) continue;
        auto launch = [&]() {
          switch (op) {
            case net::CollectiveOp::AllReduce:
              nccl_check(ncclAllReduce(send.get(), recv.get(), count, ncclBfloat16, ncclSum, comm, ctx.stream), "ncclAllReduce");
              break;
            case net::CollectiveOp::AllGather:
              nccl_check(ncclAllGather(send.get(), recv.get(), per_rank, ncclBfloat16, comm, ctx.stream), "ncclAllGather");
              break;
            case net::CollectiveOp::ReduceScatter:
              nccl_check(ncclReduceScatter(send.get(), recv.get(), per_rank, ncclBfloat16, ncclSum, comm, ctx.stream), "ncclReduceScatter");
              break;
            case net::CollectiveOp::AllToAll:
              nccl_check(ncclGroupStart(), "ncclGroupStart");
              for (int p = 0; p < n; ++p) {
                const std::size_t off = static_cast<std::size_t>(p) * per_rank * elem;
                nccl_check(ncclSend(send.as<char>() + off, per_rank, ncclBfloat16, p, comm, ctx.stream), "ncclSend");
                nccl_check(ncclRecv(recv.as<char>() + off, per_rank, ncclBfloat16, p, comm, ctx.stream), "ncclRecv");
              }
              nccl_check(ncclGroupEnd(), "ncclGroupEnd");
              break;
            case net::CollectiveOp::SendRecv:
              nccl_check(ncclGroupStart(), "ncclGroupStart");
              nccl_check(ncclSend(send.get(), count, ncclBfloat16, (rank + 1) % n, comm, ctx.stream), "ncclSend");
              nccl_check(ncclRecv(recv.get(), count, ncclBfloat16, (rank + n - 1) % n, comm, ctx.stream), "ncclRecv");
              nccl_check(ncclGroupEnd(), "ncclGroupEnd");
              break;
          }
        };
        for (int i = 0; i < ctx.opt.timing.warmup; ++i) launch();
        check(cudaStreamSynchronize(ctx.stream), "warm-up");
        std::vector<double> times;
        double spent = 0;
        for (int i = 0; i < ctx.opt.timing.repeats; ++i) {
          mpi_check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
          check(cudaEventRecord(start, ctx.stream), "cudaEventRecord");
          launch();
          check(cudaEventRecord(stop, ctx.stream), "cudaEventRecord");
          check(cudaEventSynchronize(stop), "cudaEventSynchronize");
          float ms = 0;
          check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
          double mine = ms * 1e-3, slowest = 0;
          mpi_check(MPI_Allreduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD),
                    "MPI_Allreduce");
          times.push_back(slowest);
          spent += slowest;
          // Every rank sees the same `spent`, so every rank stops at the same repeat.
          if (times.size() >= 3 && spent > ctx.opt.timing.max_seconds) break;
        }
        std::sort(times.begin(), times.end());
        const std::size_t m = times.size();
        const double t = m % 2 == 1 ? times[m / 2] : 0.5 * (times[m / 2 - 1] + times[m / 2]);
        const double size = (op == net::CollectiveOp::AllReduce || op == net::CollectiveOp::SendRecv)
                                ? double(count * elem)
                                : double(per_rank * elem * static_cast<std::size_t>(n));
        hw::CollectivePoint p;
        p.op = std::string(net::op_name(op));
        p.ranks = n;
        p.nodes = mpi.nodes();
        p.bytes = size;
        p.seconds = t;
        p.algbw = size / t;
        p.busbw = p.algbw * net::busbw_factor(op, n);
        out.collectives.push_back(p);
      }
      if (rank == 0) {
        ctx.log << "  nccl " << net::op_name(op) << " on " << n << " ranks, " << mpi.nodes()
                << " node(s): done\n";
      }
    }
  } catch (...) {
    if (start != nullptr) (void)cudaEventDestroy(start);
    if (stop != nullptr) (void)cudaEventDestroy(stop);
    (void)ncclCommDestroy(comm);
    throw;
  }
  (void)cudaEventDestroy(start);
  (void)cudaEventDestroy(stop);
  (void)ncclCommDestroy(comm);
}

}  // namespace trainsim::calib
