// Decoupled look-back (Merrill & Garland 2016, "Single-pass Parallel Prefix Scan with Decoupled
// Look-back") for products of column vectors.
//
// A scan is cut into chains (one per independent scan: an outer index times a group of columns) and
// each chain into chunks, one tile each. A tile publishes its aggregate as soon as it has one, then
// folds the aggregates of its predecessors, nearest first, until it meets one that already
// published its inclusive prefix; then it publishes its own prefix. No tile waits for another to
// finish, only to have read its data, so the scan reads and writes every element once.
//
// Two layouts. TileState (strided scans): a tile's value is up to 32 x 8 accumulators, so values
// live in their own arrays (float64's compensated pairs whole) and a 64-bit flag per tile says
// which of them is valid; a reader needs two dependent L2 round trips and fences. ScalarTileState
// (contiguous scans, one accumulator per tile): flag and value share one 16-byte word written and
// read whole, so one round trip inspects a predecessor and publishing needs no fence. In both, the
// flag's upper 62 bits hold a tag unique to the launch: state memory that an earlier launch left
// behind reads as "not yet published", so the workspace needs no clearing pass before each launch.
#pragma once

#include <cstddef>
#include <cstdint>

#include "block/accumulator.cuh"

namespace scan::kernels::cuda_detail {

enum TileStatus : unsigned { kTileInvalid = 0, kTileAggregate = 1, kTilePrefix = 2 };

// Polling uses relaxed loads and one fence after the poll: an acquire load on every spin would
// invalidate the multiprocessor's L1 each time, under the feet of the other blocks' loads.
__device__ __forceinline__ unsigned long long load_relaxed(const unsigned long long* address) {
  unsigned long long value;
  asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(value) : "l"(address) : "memory");
  return value;
}

__device__ __forceinline__ void store_release(unsigned long long* address,
                                              unsigned long long value) {
  asm volatile("st.release.gpu.global.u64 [%0], %1;" ::"l"(address), "l"(value) : "memory");
}

template <typename Acc>
struct TileState {
  unsigned long long* flags;  // [tiles]
  Acc* aggregates;            // [tiles][width]
  Acc* prefixes;              // [tiles][width]
  int width;                  // accumulators per tile: columns x values per column
  unsigned long long tag;     // this launch's tag, below 2^62

  // Bytes the state of `tiles` tiles of `width` accumulators needs.
  static std::size_t bytes(long long tiles, int width) {
    return static_cast<std::size_t>(tiles) *
           (sizeof(unsigned long long) + 2 * sizeof(Acc) * static_cast<std::size_t>(width));
  }

  static TileState carve(void* workspace, long long tiles, int width, unsigned long long tag) {
    TileState state;
    state.flags = static_cast<unsigned long long*>(workspace);
    state.aggregates = reinterpret_cast<Acc*>(state.flags + tiles);
    state.prefixes = state.aggregates + tiles * width;
    state.width = width;
    state.tag = tag;
    return state;
  }

  // Warp 0 of tile `tile` (chunk `chunk` of `chunks` in its chain; the chain's tiles are `stride`
  // apart) calls this with the whole warp. Lanes below `columns` own kN accumulators each of the
  // tile's aggregate; on return they hold the product of everything before the tile in its chain.
  template <int kN>
  __device__ void lookback(long long tile, long long chunk, long long stride, long long chunks,
                           int columns, const Acc (&aggregate)[kN], Acc (&exclusive)[kN]) const {
    const int lane = static_cast<int>(threadIdx.x & 31);
    const bool owns_column = lane < columns;
#pragma unroll
    for (int j = 0; j < kN; ++j) exclusive[j] = Acc(1);

    if (chunk == 0) {
      publish<kN>(tile, kTilePrefix, prefixes, owns_column, aggregate);
      return;
    }
    // The chain's last tile has no successor to tell: it only reads. (Each publication costs a
    // fence that waits for the warp's stores to reach L2.)
    const bool last = chunk == chunks - 1;
    if (!last) publish<kN>(tile, kTileAggregate, aggregates, owns_column, aggregate);

    // Each round lane i inspects the predecessor i + 1 chunks before `window_end`, 32 at a time, so
    // one round trip to L2 covers as many predecessors as are typically still in flight.
    long long window_end = chunk;
    for (;;) {
      const long long inspected = window_end - 1 - lane;
      unsigned status;
      for (int spin = 0;; ++spin) {
        status = kTilePrefix;  // before the chain's start: the empty product, never selected
        if (inspected >= 0) {
          const unsigned long long flag = load_relaxed(flags + tile + (inspected - chunk) * stride);
          status = (flag >> 2) == tag ? static_cast<unsigned>(flag & 3u) : kTileInvalid;
        }
        if (!__any_sync(0xffffffffu, status == kTileInvalid)) break;
        __nanosleep(spin < 8 ? 32 : 256);  // leave L2 bandwidth to the tiles being waited for
      }
      // Acquire: the fence orders every lane's value reads below after the flags the warp saw
      // (each flag was seen by one lane; the warp barrier makes that visible to all).
      __syncwarp();
      __threadfence();

      const unsigned prefix_lanes = __ballot_sync(0xffffffffu, status == kTilePrefix);
      const int first_prefix = __ffs(prefix_lanes) - 1;  // -1: none in this window
      const int folded = first_prefix < 0 ? 32 : first_prefix + 1;
      // Fold predecessors nearest first. Their values are independent L2 reads: issue them
      // together (one lane each for a scalar chain, groups per column lane otherwise), never one
      // round trip per predecessor.
      if (kN == 1 && columns == 1) {
        Acc value = Acc(1);
        const long long predecessor = window_end - 1 - lane;
        if (lane < folded && predecessor >= 0) {
          value = load_cg((lane == first_prefix ? prefixes : aggregates) +
                          (tile + (predecessor - chunk) * stride) * width);
        }
        // From distance 1 up, so that every partial is a run of adjacent predecessors (see
        // ScalarTileState::exclusive_prefix).
#pragma unroll
        for (int distance = 1; distance <= 16; distance <<= 1) {
          value *= shuffle_xor(value, distance);
        }
        exclusive[0] *= value;
      } else if (owns_column) {
        // One predecessor at a time: with the tile's rows still live in registers, staging several
        // predecessors' columns spills, and strided chains rarely fold more than one or two.
        for (int i = 0; i < folded; ++i) {
          const long long predecessor = window_end - 1 - i;
          if (predecessor < 0) break;
          const Acc* source = (i == first_prefix ? prefixes : aggregates) +
                              (tile + (predecessor - chunk) * stride) * width + lane * kN;
#pragma unroll
          for (int j = 0; j < kN; ++j) exclusive[j] *= load_cg(source + j);
        }
      }
      if (first_prefix >= 0) break;
      window_end -= 32;
    }

    if (last) return;
    Acc inclusive[kN];
#pragma unroll
    for (int j = 0; j < kN; ++j) inclusive[j] = exclusive[j] * aggregate[j];
    publish<kN>(tile, kTilePrefix, prefixes, owns_column, inclusive);
  }

 private:
  template <int kN>
  __device__ void publish(long long tile, unsigned status, Acc* values, bool owns_column,
                          const Acc (&value)[kN]) const {
    if (owns_column) {
      Acc* destination = values + tile * width + (threadIdx.x & 31) * kN;
#pragma unroll
      for (int j = 0; j < kN; ++j) store_cg(destination + j, value[j]);
    }
    // Values from every column lane must be visible device-wide before the flag that vouches for
    // them: each lane fences its own stores, the warp barrier orders them before lane 0's release.
    __threadfence();
    __syncwarp();
    if ((threadIdx.x & 31) == 0) store_release(flags + tile, (tag << 2) | status);
  }
};

// One 128-bit access. The .b128 type makes it a single memory operation in the PTX memory model
// (a .v2.u64 vector access is modelled as two), so a reader sees a whole descriptor, flag and value
// from the same publication, without a fence between them.
__device__ __forceinline__ ulonglong2 load_relaxed_128(const ulonglong2* address) {
  ulonglong2 value;
  asm volatile(
      "{\n\t.reg .b128 word;\n\t"
      "ld.relaxed.gpu.global.b128 word, [%2];\n\t"
      "mov.b128 {%0, %1}, word;\n\t}"
      : "=l"(value.x), "=l"(value.y)
      : "l"(address)
      : "memory");
  return value;
}

__device__ __forceinline__ void store_relaxed_128(ulonglong2* address, ulonglong2 value) {
  asm volatile(
      "{\n\t.reg .b128 word;\n\t"
      "mov.b128 word, {%1, %2};\n\t"
      "st.relaxed.gpu.global.b128 [%0], word;\n\t}" ::"l"(address),
      "l"(value.x), "l"(value.y)
      : "memory");
}

// Look-back over chains of tiles with one accumulator each (contiguous scans). A long row is a
// chain of thousands of tiles, so what bounds it is how many predecessors one round trip to L2
// settles: each round the warp reads a window of 32 x kGroups descriptors at once (every lane
// kGroups independent loads), folds everything up to the nearest inclusive prefix, and waits only
// while a predecessor nearer than that prefix has published nothing yet.
template <typename Acc>
struct ScalarTileState {
  static constexpr int kGroups = 4;
  static constexpr int kWindow = 32 * kGroups;

  ulonglong2* descriptors;  // [tiles]: {(tag << 2) | status, value bits}
  unsigned long long tag;   // this launch's tag, below 2^62

  static std::size_t bytes(long long tiles) {
    return static_cast<std::size_t>(tiles) * sizeof(ulonglong2);
  }

  static ScalarTileState carve(void* workspace, unsigned long long tag) {
    return {static_cast<ulonglong2*>(workspace), tag};
  }

  // Step one, as soon as tile `tile` (chunk `chunk` of `chunks` in its chain) has its aggregate:
  // successors may fold it from now on. The first tile's aggregate is its inclusive prefix; the
  // chain's last tile has no successor to tell.
  __device__ void publish_aggregate(long long tile, long long chunk, long long chunks,
                                    Acc aggregate) const {
    if (chunk == 0) {
      publish(tile, kTilePrefix, aggregate);
    } else if (chunk != chunks - 1) {
      publish(tile, kTileAggregate, aggregate);
    }
  }

  // Step two, by a whole warp with the tile's aggregate in every lane (the chain's tiles are
  // `stride` apart): returns, in lane 0, the product of everything before the tile in its chain,
  // and publishes the tile's inclusive prefix.
  __device__ Acc exclusive_prefix(long long tile, long long chunk, long long stride,
                                  long long chunks, Acc aggregate) const {
    const int lane = static_cast<int>(threadIdx.x & 31);
    if (chunk == 0) return Acc(1);
    const bool last = chunk == chunks - 1;

    Acc exclusive = Acc(1);
    for (long long window_end = chunk;; window_end -= kWindow) {
      // Lane l, group k inspects the predecessor at distance 32k + l + 1 from window_end: each
      // group's loads are 32 adjacent descriptors when the chain is one row.
      Acc values[kGroups];
      int stop;  // position of the nearest inclusive prefix in the window, kWindow if none
      for (int spin = 0;; ++spin) {
        unsigned prefix_mask[kGroups];
        unsigned invalid_mask[kGroups];
#pragma unroll
        for (int k = 0; k < kGroups; ++k) {
          const long long predecessor = window_end - 1 - (32 * k + lane);
          // Before the chain's start: the empty product, an inclusive prefix of 1.
          unsigned status = kTilePrefix;
          values[k] = Acc(1);
          if (predecessor >= 0) {
            const ulonglong2 word =
                load_relaxed_128(descriptors + tile + (predecessor - chunk) * stride);
            status = (word.x >> 2) == tag ? static_cast<unsigned>(word.x & 3u) : kTileInvalid;
            values[k] = unpack(word.y);
          }
          prefix_mask[k] = __ballot_sync(0xffffffffu, status == kTilePrefix);
          invalid_mask[k] = __ballot_sync(0xffffffffu, status == kTileInvalid);
        }
        stop = kWindow;
        bool blocked = false;
#pragma unroll
        for (int k = 0; k < kGroups; ++k) {
          // Invalid predecessors count only if they are nearer than the nearest prefix.
          if (stop == kWindow) {
            const unsigned before = prefix_mask[k] == 0
                                        ? invalid_mask[k]
                                        : invalid_mask[k] & (prefix_mask[k] - 1) & ~prefix_mask[k];
            blocked = blocked || before != 0;
            if (prefix_mask[k] != 0) stop = 32 * k + __ffs(prefix_mask[k]) - 1;
          }
        }
        if (!blocked) break;
        __nanosleep(spin < 4 ? 64 : 256);  // leave L2 bandwidth to the tiles being waited for
      }
      // Fold the predecessors up to and including the prefix, all lanes at once. Every product
      // here joins two adjacent runs of the chain, so each partial is the product of consecutive
      // tiles, bounded as the scan's own prefixes are: a group's butterfly goes from distance 1 up
      // (aligned neighbours), and the groups are joined nearest first. Tiles far apart (a lane's
      // groups, or a butterfly from distance 16 down) need not have a representable product:
      // +-2^e inputs overflowed float32 to inf that way, and the inf became a prefix.
      Acc folded = Acc(1);
#pragma unroll
      for (int k = 0; k < kGroups; ++k) {
        if (32 * k > stop) break;  // stop is warp-uniform: no divergence
        Acc group = 32 * k + lane <= stop ? values[k] : Acc(1);
#pragma unroll
        for (int distance = 1; distance <= 16; distance <<= 1) {
          group *= shuffle_xor(group, distance);
        }
        folded *= group;
      }
      exclusive *= folded;
      if (stop < kWindow) break;
    }
    if (!last && lane == 0) publish(tile, kTilePrefix, exclusive * aggregate);
    return exclusive;
  }

 private:
  // A descriptor has room for one 64-bit value beside its flag (the pair must be one 128-bit
  // access), so float64's compensated accumulator is rounded to a double here, once per published
  // aggregate or prefix, and folded back in with no error. Every predecessor of a tile then enters
  // its prefix through one such rounding (of its aggregate, or of the prefix that covers it), so a
  // long row's error grows with its number of tiles (4096 elements each), no longer with its
  // length; within a tile, and along a walk's carry, the product stays compensated.
  __device__ static unsigned long long pack(Acc value) {
    if constexpr (sizeof(Acc) == 4) {
      return __float_as_uint(value);
    } else {
      return static_cast<unsigned long long>(__double_as_longlong(rounded(value)));
    }
  }
  __device__ static Acc unpack(unsigned long long bits) {
    if constexpr (sizeof(Acc) == 4) {
      return __uint_as_float(static_cast<unsigned>(bits));
    } else {
      return Acc(__longlong_as_double(static_cast<long long>(bits)));
    }
  }

  __device__ void publish(long long tile, unsigned status, Acc value) const {
    store_relaxed_128(descriptors + tile, make_ulonglong2((tag << 2) | status, pack(value)));
  }
};

}  // namespace scan::kernels::cuda_detail
