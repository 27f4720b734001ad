// Tuning policy: the compile-time shape of a tile for each element type. Every value here was
// chosen for memory-level parallelism on sm_80/sm_90: a block keeps kBlockThreads x 16 rows
// (strided) or x 6-8 packets (contiguous) of 16-byte loads in flight before it first needs any of
// them, and two blocks fit on a multiprocessor, which is what it takes to cover HBM latency at full
// bandwidth.
#pragma once

#include "scan_traits.cuh"

namespace scan::kernels::cuda_detail {

template <typename Traits>
struct ScanPolicy {
  using Storage = typename Traits::Storage;
  using Acc = typename Traits::Acc;

  static constexpr int kBlockThreads = 256;
  static constexpr int kMinBlocksPerSm = 2;
  static constexpr int kMaxWarps = kBlockThreads / 32;
  // Elements per 16-byte access, the widest a thread can issue.
  static constexpr int kVec = 16 / static_cast<int>(sizeof(Storage));
  // Double accumulators take twice the registers: these keep every instantiation within the 128
  // registers that two blocks per multiprocessor allow, spilling at most 8 bytes (ptxas -v).
  static constexpr bool kWideAcc = sizeof(Acc) == 8;
  // Strided scans: consecutive rows one thread multiplies in sequence.
  static constexpr int kRowsPerThread = 16;
  // Contiguous scans: segments per tile, i.e. 16-byte packets a thread owns.
  static constexpr int kPacketsPerThread = kWideAcc ? 6 : 8;
};

}  // namespace scan::kernels::cuda_detail
