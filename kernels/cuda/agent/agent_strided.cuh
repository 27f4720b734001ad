// Per-tile agent of the strided scan (inner > 1): the scan runs down `length` rows of `inner`
// contiguous elements. A tile is `rows_per_tile` rows by `columns` packets of a chain (one outer
// index, one group of columns). Thread (row group g, column c) loads kRows consecutive rows of its
// packet; a warp's load of one row is therefore `columns` adjacent packets of every row group it
// spans, whole 32-byte sectors or more, and a block has kRows loads in flight per thread before
// it multiplies anything.
#pragma once

#include "block/block_scan.cuh"
#include "block/tile_state.cuh"
#include "dispatch/policy.cuh"

namespace scan::kernels::cuda_detail {

struct StridedParams {
  long long length;         // rows in a scan
  long long inner;          // elements per row
  long long inner_packets;  // packets per row: inner / vec
  long long column_groups;  // chains per outer index
  long long chains;         // outer * column_groups
  long long rows_per_tile;  // (blockDim / columns) * kRows
  long long chunks;         // tiles per chain
  int log2_columns;         // packets of a row in one tile, a power of two up to 32
};

template <typename Traits, int kVec, bool kLookback>
__global__ void __launch_bounds__(ScanPolicy<Traits>::kBlockThreads,
                                  ScanPolicy<Traits>::kMinBlocksPerSm)
    strided_cumprod_kernel(const typename Traits::Storage* in, typename Traits::Storage* out,
                           StridedParams params, TileState<typename Traits::Acc> state) {
  using Policy = ScanPolicy<Traits>;
  using Storage = typename Traits::Storage;
  using Acc = typename Traits::Acc;
  using Scan = ColumnScan<Acc, kVec, Policy::kMaxWarps, 32>;
  constexpr int kRows = Policy::kRowsPerThread;

  __shared__ typename Scan::Storage shared;

  const long long tile = blockIdx.x;
  const long long chain = tile % params.chains;
  const long long chunk = tile / params.chains;
  const long long outer_index = chain / params.column_groups;
  const long long column_group = chain % params.column_groups;
  const int column = static_cast<int>(threadIdx.x) & ((1 << params.log2_columns) - 1);
  const int row_group = static_cast<int>(threadIdx.x) >> params.log2_columns;

  const long long packet = (column_group << params.log2_columns) + column;
  const bool column_in_range = packet < params.inner_packets;
  const long long first_row = chunk * params.rows_per_tile + row_group * kRows;
  const long long offset = (outer_index * params.length + first_row) * params.inner + packet * kVec;

  // Rows past the end and columns past the edge load the multiplicative identity, so that every
  // thread runs the same scan and only the stores need guarding.
  Packet<Storage, kVec> rows[kRows];
#pragma unroll
  for (int k = 0; k < kRows; ++k) {
    if (column_in_range && first_row + k < params.length) {
      rows[k].load(in + offset + k * params.inner);
    } else {
      rows[k].fill(Traits::kOne);
    }
  }

  Acc product[kVec];
#pragma unroll
  for (int j = 0; j < kVec; ++j) product[j] = Traits::widen(rows[0].get(j));
#pragma unroll
  for (int k = 1; k < kRows; ++k) {
#pragma unroll
    for (int j = 0; j < kVec; ++j) product[j] *= Traits::widen(rows[k].get(j));
  }

  Acc running[kVec];
  Acc tile_total[kVec];
  Scan::exclusive(shared, params.log2_columns, product, running, tile_total);

  if constexpr (kLookback) {
    if (threadIdx.x < 32) {
      Acc tile_exclusive[kVec];
      state.template lookback<kVec>(tile, chunk, params.chains, params.chunks,
                                    1 << params.log2_columns, tile_total, tile_exclusive);
      if (static_cast<int>(threadIdx.x) < (1 << params.log2_columns)) {
#pragma unroll
        for (int j = 0; j < kVec; ++j) shared.tile_prefix[threadIdx.x][j] = tile_exclusive[j];
      }
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kVec; ++j) running[j] = shared.tile_prefix[column][j] * running[j];
  }

  if (!column_in_range) return;
  // Each row is the running product times that row, in sequence order, as a sequential scan would.
  typename Traits::Run run[kVec];
#pragma unroll
  for (int j = 0; j < kVec; ++j) run[j] = static_cast<typename Traits::Run>(running[j]);
#pragma unroll
  for (int k = 0; k < kRows; ++k) {
    Packet<Storage, kVec> result;
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      run[j] *= Traits::to_run(rows[k].get(j));
      result.set(j, Traits::narrow(run[j]));
    }
    if (first_row + k < params.length) result.store(out + offset + k * params.inner);
  }
}

}  // namespace scan::kernels::cuda_detail
