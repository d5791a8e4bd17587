// Process group for distributed sweeps: MPI when the build has it and the process was started
// by mpirun, else a single process.
#pragma once

#include <vector>

namespace trainsim::plan {

/// The ranks of a sweep. With MPI (OpenMPI), the world communicator; without, one rank.
/// Thread safety: call from one thread (the search's coordinating thread).
class Communicator {
 public:
  /// The communicator of this process: MPI_COMM_WORLD inside an MpiSession, else a
  /// single-rank group.
  static const Communicator& world();
  [[nodiscard]] int rank() const { return rank_; }
  [[nodiscard]] int size() const { return size_; }
  /// Element-wise sum over all ranks, result on every rank (MPI_Allreduce, MPI_SUM). A
  /// value that exactly one rank fills (the others leaving 0) comes back bit-exact.
  void sum(std::vector<double>& values) const;
  /// A single-rank group (what world() is without MPI).
  Communicator() = default;

 private:
  int rank_ = 0, size_ = 1;
  bool mpi_ = false;
  friend class MpiSession;
};

/// RAII MPI_Init / MPI_Finalize, only when the build has MPI and the launcher's environment
/// says so (OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK set): a plain `trainsim search` never
/// touches MPI. Throws std::runtime_error when MPI_Init fails.
class MpiSession {
 public:
  MpiSession();
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  [[nodiscard]] static bool available();  ///< built with MPI
 private:
  bool active_ = false;
};

}  // namespace trainsim::plan
