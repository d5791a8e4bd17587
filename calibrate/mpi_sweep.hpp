// Multi-node NCCL sweeps under MPI (built when CMake finds MPI and NCCL; see mpi_sweep.cpp).
#pragma once

#include "calibrate.hpp"

namespace trainsim::calib {

/// MPI_Init / MPI_Finalize around a run, with the rank, world size, node-local rank and the
/// number of distinct nodes (host names). Throws DeviceError on an MPI failure.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  [[nodiscard]] int rank() const { return rank_; }
  [[nodiscard]] int size() const { return size_; }
  [[nodiscard]] int local_rank() const { return local_rank_; }
  [[nodiscard]] int nodes() const { return nodes_; }

 private:
  int rank_ = 0, size_ = 1, local_rank_ = 0, nodes_ = 1;
};

/// Whether the process was started by an MPI launcher (Open MPI, PMI or PMIx variables).
bool launched_by_mpi();

/// Collective sweep over every rank (one GPU each, the current device); every rank adds the
/// same points to `out` (times are maxima over ranks).
void nccl_sweep_mpi(Context& ctx, const MpiSession& mpi, hw::HardwareProfile& out);

}  // namespace trainsim::calib
