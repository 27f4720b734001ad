// Element types as the kernels see them: the storage word in device memory, the accumulator the
// product runs in, and the conversions between them. Half types are kept as their 16-bit patterns
// so that packets of them are plain trivially-copyable arrays.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "block/accumulator.cuh"
#include "scan/kernels/types.h"

namespace scan::kernels::cuda_detail {

// Acc: the type of per-thread aggregates, block scans and look-back. Run: the type of the final
// pass, in which each thread multiplies its few elements onto its prefix. Both are float64 for
// every dtype (float64 itself: a compensated float64 pair, below), as on the CPU backends: each
// output is a float64 product rounded once to its storage type (through float32 for the 16-bit
// types), so that a request's answer does not depend on which device ran it. A blocked scan
// multiplies many partial products close to 1 (aggregates of runs of decays near 1); in float32 the
// bias of their roundings compounds to ~1e-4 relative at L = 32768, ten times a sequential loop's
// error, while in float64 the partial products are exact or nearly so. The final pass widens each
// element as it multiplies it, so the rows a thread holds stay in registers as storage words, not
// widened twice.
template <typename StorageT>
struct WideningTraits {
  using Storage = StorageT;
  using Acc = double;
  using Run = double;
  static constexpr Storage kOne = Storage(1);
  __device__ static Acc widen(Storage value) { return static_cast<Acc>(value); }
  __device__ static Run to_run(Storage value) { return value; }
  __device__ static Storage narrow(Run value) { return static_cast<Storage>(value); }
};

struct Float32Traits : WideningTraits<float> {
  static constexpr DType kDType = DType::kFloat32;
};

// float64 has no wider type: its aggregates, prefixes and running products are compensated pairs
// (block/accumulator.cuh), multiplied by the plain input, and rounded once per output.
struct Float64Traits {
  static constexpr DType kDType = DType::kFloat64;
  using Storage = double;
  using Acc = Compensated;
  using Run = Compensated;
  static constexpr Storage kOne = 1.0;
  __device__ static Storage widen(Storage value) { return value; }
  __device__ static Storage to_run(Storage value) { return value; }
  __device__ static Storage narrow(const Run& value) { return rounded(value); }
};

// Through float32 on the way down, as LibTorch's and the CPU kernel's conversions do.
struct Float16Traits {
  static constexpr DType kDType = DType::kFloat16;
  using Storage = std::uint16_t;
  using Acc = double;
  using Run = double;
  static constexpr Storage kOne = 0x3c00;
  __device__ static Acc widen(Storage value) { return __half2float(__ushort_as_half(value)); }
  __device__ static Run to_run(Storage value) { return widen(value); }
  __device__ static Storage narrow(Run value) {
    return __half_as_ushort(__float2half_rn(static_cast<float>(value)));
  }
};

struct BFloat16Traits {
  static constexpr DType kDType = DType::kBFloat16;
  using Storage = std::uint16_t;
  using Acc = double;
  using Run = double;
  static constexpr Storage kOne = 0x3f80;
  __device__ static Acc widen(Storage value) {
    return __bfloat162float(__ushort_as_bfloat16(value));
  }
  __device__ static Run to_run(Storage value) { return widen(value); }
  __device__ static Storage narrow(Run value) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(static_cast<float>(value)));
  }
};

// The machine word one packet is moved as, so that a packet of eight bf16 is one 16-byte load.
template <int kBytes>
struct RawWord;
template <>
struct RawWord<16> {
  using Type = uint4;
};
template <>
struct RawWord<8> {
  using Type = uint2;
};
template <>
struct RawWord<4> {
  using Type = unsigned int;
};
template <>
struct RawWord<2> {
  using Type = unsigned short;
};

// kVec consecutive elements moved with one access. Callers guarantee the alignment.
template <typename Storage, int kVec>
struct Packet {
  using Word = typename RawWord<sizeof(Storage) * kVec>::Type;
  Storage v[kVec];

  __device__ Storage get(int j) const { return v[j]; }
  __device__ void set(int j, Storage value) { v[j] = value; }
  __device__ void fill(Storage value) {
#pragma unroll
    for (int j = 0; j < kVec; ++j) v[j] = value;
  }
  __device__ void load(const Storage* src) {
    const Word word = *reinterpret_cast<const Word*>(src);
    memcpy(v, &word, sizeof word);
  }
  __device__ void store(Storage* dst) const {
    Word word;
    memcpy(&word, v, sizeof word);
    *reinterpret_cast<Word*>(dst) = word;
  }
};

// 16-bit elements kept two to a 32-bit register: as separate 16-bit values a 16-row tile of bf16
// packets needs 128 registers and spills.
template <int kVec>
struct Packet<std::uint16_t, kVec> {
  static_assert(kVec == 1 || kVec % 2 == 0, "16-bit packets hold one element or pairs");
  static constexpr int kWords = kVec == 1 ? 1 : kVec / 2;
  unsigned int w[kWords];

  __device__ std::uint16_t get(int j) const {
    return static_cast<std::uint16_t>(w[j >> 1] >> ((j & 1) * 16));
  }
  __device__ void set(int j, std::uint16_t value) {
    const int shift = (j & 1) * 16;
    w[j >> 1] = (w[j >> 1] & ~(0xffffu << shift)) | (static_cast<unsigned int>(value) << shift);
  }
  __device__ void fill(std::uint16_t value) {
#pragma unroll
    for (int i = 0; i < kWords; ++i) w[i] = value | (static_cast<unsigned int>(value) << 16);
  }
  __device__ void load(const std::uint16_t* src) {
    if constexpr (kVec == 1) {
      w[0] = *src;
    } else {
      using Word = typename RawWord<2 * kVec>::Type;
      const Word word = *reinterpret_cast<const Word*>(src);
      memcpy(w, &word, sizeof word);
    }
  }
  __device__ void store(std::uint16_t* dst) const {
    if constexpr (kVec == 1) {
      *dst = static_cast<std::uint16_t>(w[0]);
    } else {
      using Word = typename RawWord<2 * kVec>::Type;
      Word word;
      memcpy(&word, w, sizeof word);
      *reinterpret_cast<Word*>(dst) = word;
    }
  }
};

}  // namespace scan::kernels::cuda_detail
