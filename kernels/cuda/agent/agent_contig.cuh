// Per-tile agent of the contiguous scan (inner == 1): each of `outer` rows is one scan over
// `length` adjacent elements.
//
// A tile is blockDim x 128 bytes. It moves between global and shared memory striped (thread t
// moves packets t, t + blockDim, ...: each warp access is 512 contiguous bytes, and a thread has 8
// 16-byte loads in flight), and each thread then takes its own 128 consecutive bytes out of shared
// memory (blocked), so that a thread scans its elements in sequence and the block scans one value
// per thread. Shared memory pads 16 bytes after every 128, which makes both the striped and the
// blocked 16-byte accesses free of bank conflicts.
//
// Two ways to chain tiles: look-back (one block per tile, a row's tiles scanned in parallel), or a
// walk (one block per row, its tiles in sequence) for rows of a few tiles when there are rows
// enough to fill the GPU: no tile state, no waiting on other blocks.
#pragma once

#include "block/async_copy.cuh"
#include "block/block_scan.cuh"
#include "block/tile_state.cuh"
#include "dispatch/policy.cuh"

namespace scan::kernels::cuda_detail {

struct ContigParams {
  long long length;      // elements per row
  long long rows;        // independent scans (outer)
  long long tile_elems;  // blockDim * items per thread
  long long chunks;      // tiles per row
};

// Striped global <-> shared moves of one tile, in packets of kVec elements. kVec is 16 bytes' worth
// when every packet of every row is aligned (the dispatcher checks), else 1.
template <typename Traits, int kVec>
struct ContigTile {
  using Policy = ScanPolicy<Traits>;
  using Storage = typename Traits::Storage;
  static constexpr int kItems = Policy::kContigItems;
  static constexpr int kPackets = kItems / kVec;  // striped packets per thread
  static constexpr int kLineVec = 16 / static_cast<int>(sizeof(Storage));
  static constexpr int kLines = kItems / kLineVec;  // blocked 16-byte lines per thread
  static constexpr int kPaddedBytes = Policy::kBlockThreads * (Policy::kContigBytesPerThread + 16);

  // Element `index` of the tile in shared memory: 16 bytes of padding after every 128.
  __device__ static Storage* slot(unsigned char* shared, int index) {
    const int byte = index * static_cast<int>(sizeof(Storage));
    return reinterpret_cast<Storage*>(shared + byte + (byte >> 7) * 16);
  }

  // First element of this thread's k-th striped packet, relative to the tile.
  __device__ static int striped(int k) {
    return (k * static_cast<int>(blockDim.x) + threadIdx.x) * kVec;
  }

  // Loads the `valid` leading elements of the tile at `source`; past them, the identity.
  __device__ static void load(Packet<Storage, kVec> (&packets)[kPackets], const Storage* source,
                              int valid) {
#pragma unroll
    for (int k = 0; k < kPackets; ++k) {
      const int index = striped(k);
      if (index + kVec <= valid) {
        packets[k].load(source + index);
      } else {
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          packets[k].set(j, index + j < valid ? source[index + j] : Traits::kOne);
        }
      }
    }
  }

  // Element-wise rows go straight to shared memory, 16 loads in flight per thread: as a staged
  // tile, 64 16-bit elements take a register each and spill.
  __device__ static void load_to_shared(const Storage* source, int valid, unsigned char* shared) {
#pragma unroll 16
    for (int k = 0; k < kPackets; ++k) {
      const int index = striped(k);
      *slot(shared, index) = index < valid ? source[index] : Traits::kOne;
    }
  }

  // Copies the tile straight into shared memory (cp.async: the loads hold no registers, so more
  // blocks, and more loads, fit on a multiprocessor). Packets past `valid` hold the identity.
  // Callers wait with wait_async_copies() and then synchronise the block.
  __device__ static void copy_to_shared(const Storage* source, int valid, unsigned char* shared) {
    static_assert(kVec * sizeof(Storage) == 16, "cp.async moves whole 16-byte packets here");
#pragma unroll
    for (int k = 0; k < kPackets; ++k) {
      const int index = striped(k);
      Storage* destination = slot(shared, index);
      if (index + kVec <= valid) {
        async_copy_16(destination, source + index);
      } else {
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          destination[j] = index + j < valid ? source[index + j] : Traits::kOne;
        }
      }
    }
  }

  __device__ static void to_shared(const Packet<Storage, kVec> (&packets)[kPackets],
                                   unsigned char* shared) {
#pragma unroll
    for (int k = 0; k < kPackets; ++k) packets[k].store(slot(shared, striped(k)));
  }

  // Stores the `valid` leading elements of the tile from shared memory to `destination`.
  __device__ static void store(unsigned char* shared, Storage* destination, int valid) {
#pragma unroll
    for (int k = 0; k < kPackets; ++k) {
      const int index = striped(k);
      Packet<Storage, kVec> packet;
      packet.load(slot(shared, index));
      if (index + kVec <= valid) {
        packet.store(destination + index);
      } else {
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          if (index + j < valid) destination[index + j] = packet.get(j);
        }
      }
    }
  }
};

// Look-back mode: one tile per block (tile = blockIdx.x), a row's tiles in parallel. Walk mode:
// one block per row, its chunks in sequence, the next chunk's loads in flight (staged in
// registers) while the current one is scanned and stored. Tiles are numbered chunk-major
// (tile = chunk * rows + row): every row's first chunks come first (blocks start in index order,
// so a tile's predecessors are always running or done), and a row's next chunk is `rows` on.
template <typename Traits, int kVec, bool kLookback>
__global__ void __launch_bounds__(ScanPolicy<Traits>::kBlockThreads,
                                  kLookback ? ScanPolicy<Traits>::kContigLookbackBlocksPerSm
                                            : ScanPolicy<Traits>::kContigWalkBlocksPerSm)
    contig_cumprod_kernel(const typename Traits::Storage* in, typename Traits::Storage* out,
                          ContigParams params, ScalarTileState<typename Traits::Acc> state) {
  using Policy = ScanPolicy<Traits>;
  using Storage = typename Traits::Storage;
  using Acc = typename Traits::Acc;
  using Tile = ContigTile<Traits, kVec>;
  using Scan = ColumnScan<Acc, 1, Policy::kMaxWarps, 1>;
  using Line = Packet<Storage, Tile::kLineVec>;

  __shared__ alignas(16) unsigned char tile_shared[Tile::kPaddedBytes];
  __shared__ typename Scan::Storage scan_storage;

  const long long tiles = params.chunks * params.rows;
  // This thread's 128 bytes, blocked.
  unsigned char* mine =
      reinterpret_cast<unsigned char*>(Tile::slot(tile_shared, threadIdx.x * Tile::kItems));
  // The tile's first element and its elements in the row (all but in a row's last tile).
  const auto tile_offset = [&](long long tile) {
    return (tile % params.rows) * params.length + (tile / params.rows) * params.tile_elems;
  };
  const auto valid_in = [&](long long tile) {
    return static_cast<int>(
        min(params.length - (tile / params.rows) * params.tile_elems, params.tile_elems));
  };

  // Walks with whole packets stage the next chunk in registers; element-wise rows (unaligned) load
  // each tile when they get to it (see load_to_shared), look-back tiles copy asynchronously.
  constexpr bool kStaged = !kLookback && kVec > 1;
  Packet<Storage, kVec> staged[kStaged ? Tile::kPackets : 1];
  long long tile = blockIdx.x;
  if constexpr (kStaged) Tile::load(staged, in + tile_offset(tile), valid_in(tile));
  Acc carry = Acc(1);  // walk, warp 0: the product of the row's chunks so far
  for (;;) {
    const long long chunk = tile / params.rows;
    if constexpr (kStaged) {
      Tile::to_shared(staged, tile_shared);
    } else if constexpr (kVec > 1) {
      Tile::copy_to_shared(in + tile_offset(tile), valid_in(tile), tile_shared);
      wait_async_copies();
    } else {
      Tile::load_to_shared(in + tile_offset(tile), valid_in(tile), tile_shared);
    }
    __syncthreads();
    const long long next = kLookback ? tiles : tile + params.rows;
    if constexpr (kStaged) {
      if (next < tiles) Tile::load(staged, in + tile_offset(next), valid_in(next));
    }

    Line lines[Tile::kLines];
#pragma unroll
    for (int i = 0; i < Tile::kLines; ++i) {
      lines[i].load(reinterpret_cast<const Storage*>(mine + 16 * i));
    }
    // Per line, then across lines: a dependency chain of kLineVec + kLines products, not kItems.
    Acc product[1] = {Acc(1)};
#pragma unroll
    for (int i = 0; i < Tile::kLines; ++i) {
      Acc line_product = Traits::widen(lines[i].get(0));
#pragma unroll
      for (int j = 1; j < Tile::kLineVec; ++j) line_product *= Traits::widen(lines[i].get(j));
      product[0] *= line_product;
    }
    Acc exclusive[1];
    Acc tile_total[1];
    Scan::exclusive(scan_storage, 0, product, exclusive, tile_total);
    if (threadIdx.x < 32) {
      Acc tile_exclusive;
      if constexpr (kLookback) {
        if (threadIdx.x == 0) state.publish_aggregate(tile, chunk, params.chunks, tile_total[0]);
        tile_exclusive =
            state.exclusive_prefix(tile, chunk, params.rows, params.chunks, tile_total[0]);
      } else {
        tile_exclusive = carry;
        carry *= tile_total[0];
      }
      if (threadIdx.x == 0) scan_storage.tile_prefix[0][0] = tile_exclusive;
    }
    __syncthreads();

    // Each element is the running product times that element, in sequence order, in the
    // accumulator type: every output is an accurate product rounded once to the storage type. The
    // elements are read from shared memory again rather than kept: kept, the compiler holds them
    // widened from the product above (64 registers for float32's doubles) and spills.
    Acc running = scan_storage.tile_prefix[0][0] * exclusive[0];
#pragma unroll
    for (int i = 0; i < Tile::kLines; ++i) {
      Line line;
      line.load(reinterpret_cast<const Storage*>(mine + 16 * i));
#pragma unroll
      for (int j = 0; j < Tile::kLineVec; ++j) {
        running *= Traits::widen(line.get(j));
        line.set(j, Traits::narrow(static_cast<typename Traits::Run>(running)));
      }
      line.store(reinterpret_cast<Storage*>(mine + 16 * i));
    }
    __syncthreads();
    Tile::store(tile_shared, out + tile_offset(tile), valid_in(tile));
    if (next >= tiles) break;
    // The next chunk overwrites shared memory once every thread has stored from it.
    __syncthreads();
    tile = next;
  }
}

}  // namespace scan::kernels::cuda_detail
