#include "plan/distributed.hpp"

#include <cstdlib>
#include <stdexcept>

#ifdef TRAINSIM_HAVE_MPI
#include <mpi.h>
#endif

namespace trainsim::plan {

namespace {
Communicator& world_mut() {
  static Communicator c;
  return c;
}
}  // namespace

const Communicator& Communicator::world() { return world_mut(); }

void Communicator::sum(std::vector<double>& values) const {
#ifdef TRAINSIM_HAVE_MPI
  if (mpi_ && size_ > 1 && !values.empty()) {
    MPI_Allreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()), MPI_DOUBLE,
                  MPI_SUM, MPI_COMM_WORLD);
  }
#else
  (void)values;
#endif
}

bool MpiSession::available() {
#ifdef TRAINSIM_HAVE_MPI
  return true;
#else
  return false;
#endif
}

MpiSession::MpiSession() {
#ifdef TRAINSIM_HAVE_MPI
  const bool launched = std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr ||
                        std::getenv("PMI_SIZE") != nullptr || std::getenv("PMIX_RANK") != nullptr;
  if (!launched) return;
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return;
  if (MPI_Init(nullptr, nullptr) != MPI_SUCCESS) throw std::runtime_error("MPI_Init failed");
  active_ = true;
  Communicator& c = world_mut();
  MPI_Comm_rank(MPI_COMM_WORLD, &c.rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &c.size_);
  c.mpi_ = true;
#endif
}

MpiSession::~MpiSession() {
#ifdef TRAINSIM_HAVE_MPI
  if (active_) {
    Communicator& c = world_mut();
    c = Communicator();
    MPI_Finalize();
  }
#endif
}

}  // namespace trainsim::plan
