// Per-tile agent of the contiguous scan (inner == 1): each of `outer` rows is one scan over
// `length` adjacent elements. A tile is kSegments segments of blockDim packets; thread t owns
// packet t of every segment (a striped arrangement), so each warp load is 32 adjacent 16-byte
// packets, 512 contiguous bytes, and a thread still has kSegments loads in flight. One block scan
// runs the kSegments segment scans side by side; warp 0 chains the segments and the tiles.
#pragma once

#include "block_scan.cuh"
#include "policy.cuh"
#include "tile_state.cuh"

namespace scan::kernels::cuda_detail {

struct ContigParams {
  long long length;      // elements per row
  long long rows;        // independent scans (outer)
  long long tile_elems;  // blockDim * kSegments * vec
  long long chunks;      // tiles per row
};

template <typename Traits, int kVec, bool kLookback>
__global__ void __launch_bounds__(ScanPolicy<Traits>::kBlockThreads,
                                  ScanPolicy<Traits>::kMinBlocksPerSm)
    contig_cumprod_kernel(const typename Traits::Storage* in, typename Traits::Storage* out,
                          ContigParams params, TileState<typename Traits::Acc> state) {
  using Policy = ScanPolicy<Traits>;
  using Storage = typename Traits::Storage;
  using Acc = typename Traits::Acc;
  constexpr int kSegments = Policy::kPacketsPerThread;
  using Scan = ColumnScan<Acc, kSegments, Policy::kMaxWarps, 1>;

  __shared__ typename Scan::Storage shared;

  const long long tile = blockIdx.x;
  const long long row = tile % params.rows;
  const long long chunk = tile / params.rows;
  const long long first = chunk * params.tile_elems + threadIdx.x * kVec;
  const long long segment_elems = static_cast<long long>(blockDim.x) * kVec;
  const Storage* source = in + row * params.length;
  Storage* destination = out + row * params.length;

  // Packets wholly inside the row move as one access (the dispatcher guarantees their alignment);
  // the row's ragged end goes element by element, padded with the identity.
  Packet<Storage, kVec> packets[kSegments];
#pragma unroll
  for (int k = 0; k < kSegments; ++k) {
    const long long index = first + k * segment_elems;
    if (index + kVec <= params.length) {
      packets[k].load(source + index);
    } else {
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        packets[k].set(j, index + j < params.length ? source[index + j] : Traits::kOne);
      }
    }
  }

  Acc product[kSegments];
#pragma unroll
  for (int k = 0; k < kSegments; ++k) {
    product[k] = Traits::widen(packets[k].get(0));
#pragma unroll
    for (int j = 1; j < kVec; ++j) product[k] *= Traits::widen(packets[k].get(j));
  }

  Acc exclusive[kSegments];
  Acc segment_total[kSegments];
  Scan::exclusive(shared, 0, product, exclusive, segment_total);

  if (threadIdx.x < 32) {
    Acc segment_prefix[kSegments];
    Acc tile_product[1] = {Acc(1)};
#pragma unroll
    for (int k = 0; k < kSegments; ++k) {
      segment_prefix[k] = tile_product[0];
      tile_product[0] *= segment_total[k];
    }
    Acc tile_exclusive[1] = {Acc(1)};
    if constexpr (kLookback) {
      state.template lookback<1>(tile, chunk, params.rows, params.chunks, 1, tile_product,
                                 tile_exclusive);
    }
    if (threadIdx.x == 0) {
#pragma unroll
      for (int k = 0; k < kSegments; ++k) {
        shared.tile_prefix[0][k] = tile_exclusive[0] * segment_prefix[k];
      }
    }
  }
  __syncthreads();

#pragma unroll
  for (int k = 0; k < kSegments; ++k) {
    const long long index = first + k * segment_elems;
    auto running = static_cast<typename Traits::Run>(shared.tile_prefix[0][k] * exclusive[k]);
    Packet<Storage, kVec> result;
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      running *= Traits::to_run(packets[k].get(j));
      result.set(j, Traits::narrow(running));
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
