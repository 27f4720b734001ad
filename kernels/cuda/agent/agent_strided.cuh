// Per-tile agent of the strided scan (inner > 1): the scan runs down `length` rows of `inner`
// contiguous elements. A tile is `rows_per_tile` rows by `columns` packets of a chain (one outer
// index, one group of columns). Thread (row group g, column c) loads kRows consecutive rows of its
// packet; a warp's load of one row is therefore `columns` adjacent packets of every row group it
// spans, whole 32-byte sectors or more, and a block has kRows loads in flight per thread before
// it multiplies anything.
//
// Where the rows wait decides how many can be in flight. In registers (kStaged false) they share
// the 128 registers of two blocks per multiprocessor with the float64 products, which caps float32
// at 8 rows (32 KiB per block). Staged (kStaged, 16-byte packets only) they are copied straight
// into dynamic shared memory with cp.async, which holds no registers, so a thread can have
// kStagedRowsPerThread rows in flight; each thread reads back only its own slots, so the copies
// need no block barrier, only the thread's own wait.
#pragma once

#include "block/async_copy.cuh"
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

template <typename Traits, bool kStaged>
__host__ __device__ constexpr int strided_rows_per_thread() {
  return kStaged ? ScanPolicy<Traits>::kStagedRowsPerThread : ScanPolicy<Traits>::kRowsPerThread;
}

// Dynamic shared memory a staged block needs: row k of thread t at slot k * blockDim + t, so a
// warp's copies of one row fill 512 consecutive bytes.
template <typename Traits>
__host__ __device__ constexpr int strided_staged_bytes() {
  return ScanPolicy<Traits>::kBlockThreads * ScanPolicy<Traits>::kStagedRowsPerThread * 16;
}

template <typename Traits, int kVec, bool kLookback, bool kStaged = false>
__global__ void __launch_bounds__(ScanPolicy<Traits>::kBlockThreads,
                                  ScanPolicy<Traits>::kMinBlocksPerSm)
    strided_cumprod_kernel(const typename Traits::Storage* in, typename Traits::Storage* out,
                           StridedParams params, TileState<typename Traits::Acc> state) {
  using Policy = ScanPolicy<Traits>;
  using Storage = typename Traits::Storage;
  using Acc = typename Traits::Acc;
  using Scan = ColumnScan<Acc, kVec, Policy::kMaxWarps, 32>;
  using RowPacket = Packet<Storage, kVec>;
  constexpr int kRows = strided_rows_per_thread<Traits, kStaged>();
  static_assert(!kStaged || sizeof(Storage) * kVec == 16, "staged rows are 16-byte packets");

  __shared__ typename Scan::Storage shared;
  extern __shared__ uint4 staged[];  // [kRows][blockDim], kStaged only

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
  RowPacket rows[kStaged ? 1 : kRows];
  auto slot = [&](int k) {
    return reinterpret_cast<Storage*>(staged + k * static_cast<int>(blockDim.x) + threadIdx.x);
  };
#pragma unroll
  for (int k = 0; k < kRows; ++k) {
    const bool present = column_in_range && first_row + k < params.length;
    if constexpr (kStaged) {
      if (present) {
        async_copy_16(slot(k), in + offset + k * params.inner);
      } else {
        RowPacket identity;
        identity.fill(Traits::kOne);
        identity.store(slot(k));
      }
    } else if (present) {
      rows[k].load(in + offset + k * params.inner);
    } else {
      rows[k].fill(Traits::kOne);
    }
  }
  if constexpr (kStaged) wait_async_copies();
  auto row = [&](int k) {
    if constexpr (kStaged) {
      RowPacket packet;
      packet.load(slot(k));
      return packet;
    } else {
      return rows[k];
    }
  };

  // Rows in registers need full unrolling (constant indices); staged rows are read as they are
  // used, and a full unroll would hoist those reads into registers again (ptxas spilled).
  constexpr int kUnroll = kStaged ? 4 : kRows;
  Acc product[kVec];
#pragma unroll
  for (int j = 0; j < kVec; ++j) product[j] = Acc(1);  // times the first row: exact
#pragma unroll kUnroll
  for (int k = 0; k < kRows; ++k) {
    const RowPacket next = row(k);
#pragma unroll
    for (int j = 0; j < kVec; ++j) product[j] *= Traits::widen(next.get(j));
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
#pragma unroll kUnroll
  for (int k = 0; k < kRows; ++k) {
    const RowPacket factors = row(k);
    RowPacket result;
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      run[j] *= Traits::to_run(factors.get(j));
      result.set(j, Traits::narrow(run[j]));
    }
    if (first_row + k < params.length) result.store(out + offset + k * params.inner);
  }
}

}  // namespace scan::kernels::cuda_detail
