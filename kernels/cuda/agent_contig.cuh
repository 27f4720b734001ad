// Per-tile agent of the contiguous scan (inner == 1): each of `outer` rows is one scan over
// `length` adjacent elements. A tile is blockDim x kPackets packets of a row; thread t owns the
// t-th run of kPackets consecutive packets (a blocked arrangement), so its own elements are
// multiplied in sequence and only one product per thread enters the block scan. The loads of a warp
// are 16 bytes every kPackets * 16 bytes; the later packets of each run hit the L1 lines the first
// one brought in, so DRAM still sees every byte once.
#pragma once

#include "block_scan.cuh"
#include "policy.cuh"
#include "tile_state.cuh"

namespace scan::kernels::cuda_detail {

struct ContigParams {
  long long length;      // elements per row
  long long rows;        // independent scans (outer)
  long long tile_elems;  // blockDim * kPackets * vec
};

template <typename Traits, int kVec, bool kLookback>
__global__ void __launch_bounds__(ScanPolicy<Traits>::kBlockThreads,
                                  ScanPolicy<Traits>::kMinBlocksPerSm)
    contig_cumprod_kernel(const typename Traits::Storage* in, typename Traits::Storage* out,
                          ContigParams params, TileState<typename Traits::Acc> state) {
  using Policy = ScanPolicy<Traits>;
  using Storage = typename Traits::Storage;
  using Acc = typename Traits::Acc;
  using Scan = ColumnScan<Acc, 1, Policy::kMaxWarps>;
  constexpr int kPackets = Policy::kPacketsPerThread;

  __shared__ typename Scan::Storage shared;

  const long long tile = blockIdx.x;
  const long long row = tile % params.rows;
  const long long chunk = tile / params.rows;
  const long long first = chunk * params.tile_elems + threadIdx.x * (kPackets * kVec);
  const Storage* source = in + row * params.length;
  Storage* destination = out + row * params.length;

  // Packets wholly inside the row move as one access (the dispatcher guarantees their alignment);
  // the row's ragged end goes element by element, padded with the identity.
  Packet<Storage, kVec> packets[kPackets];
#pragma unroll
  for (int k = 0; k < kPackets; ++k) {
    const long long index = first + k * kVec;
    if (index + kVec <= params.length) {
      packets[k].load(source + index);
    } else {
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        packets[k].set(j, index + j < params.length ? source[index + j] : Traits::kOne);
      }
    }
  }

  Acc product[1] = {Acc(1)};
#pragma unroll
  for (int k = 0; k < kPackets; ++k) {
#pragma unroll
    for (int j = 0; j < kVec; ++j) product[0] *= Traits::widen(packets[k].get(j));
  }

  Acc running[1];
  Acc tile_total[1];
  Scan::exclusive(shared, 0, product, running, tile_total);

  if constexpr (kLookback) {
    if (threadIdx.x < 32) {
      Acc tile_exclusive[1];
      state.template lookback<1>(tile, chunk, params.rows, 1, tile_total, tile_exclusive);
      if (threadIdx.x == 0) shared.tile_prefix[0][0] = tile_exclusive[0];
    }
    __syncthreads();
    running[0] = shared.tile_prefix[0][0] * running[0];
  }

#pragma unroll
  for (int k = 0; k < kPackets; ++k) {
    const long long index = first + k * kVec;
    Packet<Storage, kVec> result;
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      running[0] *= Traits::widen(packets[k].get(j));
      result.set(j, Traits::narrow(running[0]));
    }
    if (index + kVec <= params.length) {
      result.store(destination + index);
    } else {
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        if (index + j < params.length) destination[index + j] = result.get(j);
      }
    }
  }
}

}  // namespace scan::kernels::cuda_detail
