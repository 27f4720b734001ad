// Tuning policy: the compile-time shape of a tile for each element type. Every value here was
// chosen for memory-level parallelism on sm_80/sm_90: a block keeps kBlockThreads x 16 rows
// (strided) or 128 bytes per thread (contiguous) of 16-byte loads in flight before it first needs
// any of them, and two or more blocks fit on a multiprocessor, which is what it takes to cover HBM
// latency at full bandwidth.
#pragma once

#include "dispatch/scan_traits.cuh"

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
  // Strided scans: consecutive rows one thread multiplies in sequence, in float64
  // (scan_traits.cuh). 16 rows of 16 bytes fit the 128 registers that two blocks per multiprocessor
  // allow for the 16-bit types and float64; float32's four float64 products per row spill there
  // (ptxas -v), and 8 rows measured fastest for it on the H200 (bench/RESULTS.md, "Numerics").
  static constexpr int kRowsPerThread = sizeof(Storage) == 4 ? 8 : 16;
  // Strided scans with rows staged in shared memory (agent_strided.cuh): 24 rows of 16 bytes per
  // thread are 96 KiB per block, so that two blocks fit a multiprocessor (228 KiB on sm_90) beside
  // the block scan's own shared memory (9 KiB, 18 KiB for the 16-bit types' eight columns, hence
  // their 20 rows): three times the bytes in flight of float32's register-held rows.
  static constexpr int kStagedRowsPerThread = sizeof(Storage) == 2 ? 20 : 24;
  // Staged from this many input bytes: on the H100 (2026-12-07) staging took the MM-Rec
  // production shape from 54% to 82% of a device copy in f32 (337 to 223 us) and from 56% to 68%
  // in bf16, [4,32,32768,128] from 73% to 87%; tensors of 4 MiB and less ran 4-24% slower
  // (latency-bound: a staged tile is three times taller, so fewer tiles share the work).
  static constexpr long long kStagedMinBytes = 8LL << 20;

  // Contiguous scans: each thread owns 128 consecutive bytes of its tile (32 float32, 64 bf16), so
  // a tile is 32 KiB: a long row is a chain of few, large tiles, each one look-back step. The
  // elements reach a thread through shared memory (see agent_contig.cuh), so a thread scans one
  // value, not a vector of segments. A look-back block copies its tile straight into shared memory
  // (cp.async, no registers), so four fit on a multiprocessor (64 registers; only the unaligned
  // float64 path spills, 20 bytes) with 128 KiB of loads in flight; a walking block stages its next
  // tile in registers (128 of them), two per multiprocessor.
  static constexpr int kContigBytesPerThread = 128;
  static constexpr int kContigItems = kContigBytesPerThread / static_cast<int>(sizeof(Storage));
  static constexpr int kContigLookbackBlocksPerSm = 4;
  static constexpr int kContigWalkBlocksPerSm = 2;
  // Rows of up to this many tiles are walked by one block in sequence (carrying the product) rather
  // than scanned by one block per tile with look-back, when there are rows enough to fill the GPU.
  static constexpr int kContigMaxWalkChunks = 8;
};

}  // namespace scan::kernels::cuda_detail
