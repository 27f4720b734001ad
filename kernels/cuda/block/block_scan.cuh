// Block-wide exclusive product scan of column vectors. Threads are laid out as row groups of
// `columns` threads (a power of two up to 32, so a warp holds whole row groups); each thread holds
// kN accumulators of its column, the product of its own rows. A thread learns the product of the
// same column over all lower row groups, and warp 0 learns each column's product over the tile.
//
// The contiguous scan is the special case of one column, with one value per segment of its tile.
#pragma once

#include "block/accumulator.cuh"

namespace scan::kernels::cuda_detail {

template <typename Acc, int kN, int kMaxWarps, int kMaxColumns>
struct ColumnScan {
  struct Storage {
    Acc warp_totals[kMaxWarps][kMaxColumns][kN];
    Acc tile_prefix[kMaxColumns][kN];  // the tile's exclusive prefix per column, from look-back
  };

  // 2^log2_columns <= kMaxColumns <= 32. Every thread of the block must call this (it synchronises
  // the block).
  __device__ static void exclusive(Storage& storage, int log2_columns, const Acc (&value)[kN],
                                   Acc (&exclusive_out)[kN], Acc (&tile_total)[kN]) {
    const int lane = static_cast<int>(threadIdx.x & 31);
    const int warp = static_cast<int>(threadIdx.x >> 5);
    const int warps = static_cast<int>(blockDim.x >> 5);
    const int columns = 1 << log2_columns;
    const int column = lane & (columns - 1);

    // Within the warp, the same column recurs every `columns` lanes: a Kogge-Stone scan over those.
    Acc inclusive[kN];
#pragma unroll
    for (int j = 0; j < kN; ++j) inclusive[j] = value[j];
    for (int distance = columns; distance < 32; distance <<= 1) {
#pragma unroll
      for (int j = 0; j < kN; ++j) {
        const Acc earlier = shuffle_up(inclusive[j], distance);
        if (lane >= distance) inclusive[j] = earlier * inclusive[j];
      }
    }
#pragma unroll
    for (int j = 0; j < kN; ++j) {
      const Acc earlier = shuffle_up(inclusive[j], columns);
      exclusive_out[j] = lane >= columns ? earlier : Acc(1);
    }
    if (lane >= 32 - columns) {
#pragma unroll
      for (int j = 0; j < kN; ++j) storage.warp_totals[warp][column][j] = inclusive[j];
    }
    __syncthreads();

    // Few warps: a sequential pass over the earlier warps' totals beats another tree level.
    Acc earlier_warps[kN];
#pragma unroll
    for (int j = 0; j < kN; ++j) earlier_warps[j] = Acc(1);
    for (int w = 0; w < warp; ++w) {
#pragma unroll
      for (int j = 0; j < kN; ++j) earlier_warps[j] *= storage.warp_totals[w][column][j];
    }
#pragma unroll
    for (int j = 0; j < kN; ++j) exclusive_out[j] = earlier_warps[j] * exclusive_out[j];

    if (warp == 0) {
#pragma unroll
      for (int j = 0; j < kN; ++j) tile_total[j] = Acc(1);
      for (int w = 0; w < warps; ++w) {
#pragma unroll
        for (int j = 0; j < kN; ++j) tile_total[j] *= storage.warp_totals[w][column][j];
      }
    }
  }
};

}  // namespace scan::kernels::cuda_detail
