// NCCL collective sweeps (nccl-tests conventions, doc/PERFORMANCE.md): all_reduce,
// all_gather, reduce_scatter, all_to_all (grouped send/recv, as nccl-tests' alltoall) and
// send_recv (each rank sends to the next, a ring), from 1 KiB to --nccl-max-bytes in steps of
// 4x, across every local GPU of one process (ncclCommInitAll). Sizes: all_reduce the
// buffer; all_gather the gathered total; reduce_scatter the scattered total; all_to_all the
// bytes each rank sends; send_recv the bytes sent. algbw = size / time, busbw = algbw x
// net::busbw_factor(op, n). The time of one run is the slowest GPU's (CUDA events per GPU),
// the recorded value the median over repeats.
#pragma once

#include "calibrate.hpp"

namespace trainsim::calib {

/// Adds collective points to `out`; logs and measures nothing without NCCL or with one GPU.
void nccl_sweep(Context& ctx, hw::HardwareProfile& out);

}  // namespace trainsim::calib
