// Tuning policy: the compile-time shape of a tile for each element type. Every value here was
// chosen for memory-level parallelism on sm_80/sm_90: a block keeps kBlockThreads x 16 rows
// (strided) or x 8 packets (contiguous) of 16-byte loads in flight before it first needs any of
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
  // Strided scans: consecutive rows one thread multiplies in sequence.
  static constexpr int kRowsPerThread = 16;
  // Contiguous scans: 16-byte packets of consecutive elements one thread owns.
  static constexpr int kPacketsPerThread = 8;
};

}  // namespace scan::kernels::cuda_detail
