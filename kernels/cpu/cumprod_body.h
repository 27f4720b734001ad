// The one body of every leaf kernel, compiled once per instruction set: each cumprod_<isa>.cc
// defines the macros below and includes this file, and the compiler turns the GCC vector types
// into SSE2, AVX2 or AVX-512 code according to that file's flags.
//
//   SCAN_CPU_ISA           namespace of this build; everything here has internal linkage, so an
//                          AVX-512 copy of a helper can never be picked by the linker for baseline
//                          code (the COMDAT folding hazard of per-file ISA flags)
//   SCAN_CPU_ISA_NAME      its printable name
//   SCAN_CPU_ISA_GETTER    the function of cumprod_isa.h returning this build's table
//   SCAN_CPU_VECTOR_BYTES  16, 32 or 64
//   SCAN_CPU_HAS_F16C      1 when float16 converts with F16C / AVX-512F instructions
//   SCAN_CPU_HAS_AVX512BF16  1 when bfloat16 rounds with the AVX512-BF16 conversion (optional)
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "cumprod_isa.h"

#if SCAN_CPU_HAS_F16C || SCAN_CPU_VECTOR_BYTES == 64 || defined(__SSE2__)
#include <immintrin.h>
#endif
#if !defined(SCAN_CPU_HAS_AVX512BF16)
#define SCAN_CPU_HAS_AVX512BF16 0
#endif
#if !SCAN_CPU_HAS_F16C
#include "scan/kernels/half.h"
#endif

namespace scan::kernels::cpu {
namespace SCAN_CPU_ISA {
namespace {

constexpr int kVectorBytes = SCAN_CPU_VECTOR_BYTES;

// Every dtype accumulates in double (one rounding per output, as LibTorch's CPU cumprod does
// for float32 and our CUDA kernel for every dtype), so a vector holds kVectorBytes / 8 running
// products, and the storage types below are sized to as many lanes.
typedef double VD __attribute__((vector_size(kVectorBytes)));
typedef float VF __attribute__((vector_size(kVectorBytes / 2)));
typedef std::uint32_t VU32 __attribute__((vector_size(kVectorBytes / 2)));
typedef std::int64_t VI64 __attribute__((vector_size(kVectorBytes)));
typedef std::uint16_t VU16 __attribute__((vector_size(kVectorBytes / 4)));
// A whole register of floats (two storage-width halves), and its bits as 32- or 16-bit lanes.
typedef float VFWide __attribute__((vector_size(kVectorBytes)));
typedef std::uint32_t VU32Wide __attribute__((vector_size(kVectorBytes)));
typedef std::uint16_t VU16Wide __attribute__((vector_size(kVectorBytes)));
typedef std::uint16_t VU16Half __attribute__((vector_size(kVectorBytes / 2)));

template <typename T>
T load_bytes(const void* from) {
  T value;
  std::memcpy(&value, from, sizeof value);  // unaligned vector load
  return value;
}

template <typename T>
void store_bytes(void* to, const T& value) {
  std::memcpy(to, &value, sizeof value);
}

// A non-temporal store of kBytes bytes to `to`, which is aligned to kBytes: the line goes to
// memory without being read first (no read-for-ownership) and without evicting cached data.
template <std::size_t kBytes>
void stream_bytes(void* to, const void* from) {
#if SCAN_CPU_VECTOR_BYTES == 64
  if constexpr (kBytes == 64) {
    _mm512_stream_si512(static_cast<__m512i*>(to), load_bytes<__m512i>(from));
    return;
  }
#endif
#if SCAN_CPU_VECTOR_BYTES >= 32
  if constexpr (kBytes == 32) {
    _mm256_stream_si256(static_cast<__m256i*>(to), load_bytes<__m256i>(from));
    return;
  }
#endif
#if defined(__SSE2__)
  if constexpr (kBytes == 16) {
    _mm_stream_si128(static_cast<__m128i*>(to), load_bytes<__m128i>(from));
    return;
  }
#endif
#if defined(__SSE2__) && defined(__x86_64__)
  if constexpr (kBytes == 8) {
    _mm_stream_si64(static_cast<long long*>(to), load_bytes<long long>(from));
    return;
  }
#endif
  std::memcpy(to, from, kBytes);
}

// Orders this thread's non-temporal stores before whatever it does next (for instance telling
// the pool that its task is done).
void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// float <-> double for a vector's lanes. GCC 12 splits the generic conversion of eight lanes into
// two four-lane ones and an insert; the AVX-512 instructions do it in one (zero-masked forms, as
// the plain ones start from an "undefined" register that GCC reports as maybe-uninitialized).
VD to_double(VF value) {
#if SCAN_CPU_VECTOR_BYTES == 64
  return reinterpret_cast<VD>(_mm512_maskz_cvtps_pd(0xff, reinterpret_cast<__m256>(value)));
#elif SCAN_CPU_VECTOR_BYTES == 32
  return reinterpret_cast<VD>(_mm256_cvtps_pd(reinterpret_cast<__m128>(value)));
#else
  return __builtin_convertvector(value, VD);
#endif
}

VF to_float(VD value) {
#if SCAN_CPU_VECTOR_BYTES == 64
  return reinterpret_cast<VF>(_mm512_maskz_cvtpd_ps(0xff, reinterpret_cast<__m512d>(value)));
#else
  return __builtin_convertvector(value, VF);
#endif
}

// a * b + c: rounded once where the build has FMA (a shorter dependency chain), twice elsewhere.
VD multiply_add(VD a, VD b, VD c) {
#if SCAN_CPU_VECTOR_BYTES == 64
  return reinterpret_cast<VD>(_mm512_fmadd_pd(
      reinterpret_cast<__m512d>(a), reinterpret_cast<__m512d>(b), reinterpret_cast<__m512d>(c)));
#elif SCAN_CPU_VECTOR_BYTES == 32 && defined(__FMA__)
  return reinterpret_cast<VD>(_mm256_fmadd_pd(
      reinterpret_cast<__m256d>(a), reinterpret_cast<__m256d>(b), reinterpret_cast<__m256d>(c)));
#else
  return a * b + c;
#endif
}

VD magnitude(VD value) { return reinterpret_cast<VD>(reinterpret_cast<VI64>(value) & INT64_MAX); }

// a * b - product, where product is a * b rounded: the rounding error of one multiplication, exact
// unless it falls below the normal range (then flushed, or rounded to a subnormal step: a loss of
// at most that error itself). The builds with FMA get it in one instruction. The baseline one
// splits each factor into 26-bit halves (Dekker), whose partial products are exact but cancel
// each other: they must all be normal numbers, or flushing one (2^-27 of the product) would leave
// the rest as garbage. So there the error is computed only where factors and product lie within
// [2^-900, 2^900], and taken as 0 elsewhere (that multiplication goes uncompensated).
VD product_error(VD a, VD b, VD product) {
#if SCAN_CPU_VECTOR_BYTES == 64
  return reinterpret_cast<VD>(_mm512_fmsub_pd(reinterpret_cast<__m512d>(a),
                                              reinterpret_cast<__m512d>(b),
                                              reinterpret_cast<__m512d>(product)));
#elif SCAN_CPU_VECTOR_BYTES == 32 && defined(__FMA__)
  return reinterpret_cast<VD>(_mm256_fmsub_pd(reinterpret_cast<__m256d>(a),
                                              reinterpret_cast<__m256d>(b),
                                              reinterpret_cast<__m256d>(product)));
#else
  const auto split = [](VD value, VD& high, VD& low) {
    const VD scaled = value * 134217729.0;  // 2^27 + 1
    high = scaled - (scaled - value);
    low = value - high;
  };
  VD a_high, a_low, b_high, b_low;
  split(a, a_high, a_low);
  split(b, b_high, b_low);
  const VD error = ((a_high * b_high - product) + a_high * b_low + a_low * b_high) + a_low * b_low;
  const VD low = VD{} + 0x1p-900, high = VD{} + 0x1p900;
  const VI64 safe = (magnitude(a) >= low) & (magnitude(a) <= high) & (magnitude(b) >= low) &
                    (magnitude(b) <= high) & (magnitude(product) >= low) &
                    (magnitude(product) <= high);
  return reinterpret_cast<VD>(safe & reinterpret_cast<VI64>(error));
#endif
}

// Storage formats: how a vector of double accumulators is loaded from and stored to memory.
// Narrow types round double -> float -> storage type, as LibTorch's conversions and the CUDA
// kernel do, so that every backend rounds alike (the double rounding this allows is a 2^-29 event
// and identical everywhere).
struct F32 {
  using Storage = float;
  static constexpr Storage kOne = 1.0f;
  static VD load(const Storage* from) { return to_double(load_bytes<VF>(from)); }
  static void store(Storage* to, VD value) { store_bytes(to, to_float(value)); }
};

struct F64 {
  using Storage = double;
  static constexpr Storage kOne = 1.0;
  static VD load(const Storage* from) { return load_bytes<VD>(from); }
  static void store(Storage* to, VD value) { store_bytes(to, value); }
};

struct BF16 {
  using Storage = std::uint16_t;
  static constexpr Storage kOne = 0x3f80;
  static VD load(const Storage* from) { return to_double(reinterpret_cast<VF>(widen(from) << 16)); }
  static void store(Storage* to, VD value) { narrow(to, round(to_float(value))); }

  // Elements 2k and 2k+1 of 2 * kLanes bfloat16 values, as the even and odd lanes k: bfloat16 is
  // the top half of a float, so a shift and a mask split the 32-bit words without shuffles.
  static void load_pairs(const Storage* from, VD& even, VD& odd) {
    const VU32 words = load_bytes<VU32>(from);
    even = to_double(reinterpret_cast<VF>(words << 16));
    odd = to_double(reinterpret_cast<VF>(words & 0xffff0000u));
  }

  // Both vectors rounded, interleaved: the 16-bit half k of lane j holds (k ? odd : even)[j].
  [[gnu::always_inline]] static VU32 round_pairs(VD even_wide, VD odd_wide) {
    const VF even = to_float(even_wide);
    const VF odd = to_float(odd_wide);
#if SCAN_CPU_HAS_AVX512BF16
    // One two-source permute interleaves the floats (lane 2j: even[j], 2j + 1: odd[j]) and one
    // conversion rounds all sixteen, instead of about twenty integer operations. The instruction
    // rounds to nearest even and quiets NaN exactly as round() does, but reads subnormal inputs as
    // zero: vectors holding any take the exact path (rare with a float64 accumulator: only results
    // in float32's subnormal range, and none when results are flushed).
    const __m512i interleave =
        _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512 both =
        _mm512_permutex2var_ps(_mm512_castps256_ps512(reinterpret_cast<__m256>(even)), interleave,
                               _mm512_castps256_ps512(reinterpret_cast<__m256>(odd)));
    if (__builtin_expect(_mm512_fpclass_ps_mask(both, 0x20) == 0, 1)) {
      return reinterpret_cast<VU32>(_mm512_cvtneps_pbh(both));
    }
#endif
    // Without NaN, the rounding alone, on both halves at once in one full register: one NaN test
    // and one rounding sequence for all 2 * kLanes results rather than one per half, as the
    // vector ports bound this loop. Each bfloat16 is then the high word of its rounded float, and
    // one word permute interleaves them.
    const VFWide halves = concat(even, odd, std::make_index_sequence<2 * kHalfLanes>());
    if (__builtin_expect(!any_nan(halves), 1)) {
      const VU32Wide bits = reinterpret_cast<VU32Wide>(halves);
      const VU32Wide rounded = bits + 0x7fffu + ((bits >> 16) & 1u);
      return interleave_high_words(reinterpret_cast<VU16Wide>(rounded),
                                   std::make_index_sequence<2 * kHalfLanes>());
    }
    return round(even) | (round(odd) << 16);
  }

  static constexpr int kHalfLanes = kVectorBytes / 8;  // floats in VF, words in VU32's halves

  template <std::size_t... kLane>
  static VFWide concat(VF low, VF high, std::index_sequence<kLane...>) {
    return __builtin_shufflevector(low, high, static_cast<int>(kLane)...);
  }

  // Word 2j of the result is the high word of float j (even element j), word 2j + 1 that of
  // float kHalfLanes + j (odd element j).
  template <std::size_t... kWord>
  static VU32 interleave_high_words(VU16Wide words, std::index_sequence<kWord...>) {
    const VU16Half picked = __builtin_shufflevector(
        words, words, static_cast<int>(kWord % 2 == 0 ? kWord + 1 : 2 * kHalfLanes + kWord)...);
    return reinterpret_cast<VU32>(picked);
  }

  static bool any_nan(VFWide value) {
#if SCAN_CPU_VECTOR_BYTES == 64
    return _mm512_cmp_ps_mask(reinterpret_cast<__m512>(value), reinterpret_cast<__m512>(value),
                              _CMP_UNORD_Q) != 0;
#elif SCAN_CPU_VECTOR_BYTES == 32
    const __m256 bits = reinterpret_cast<__m256>(value);
    return _mm256_movemask_ps(_mm256_cmp_ps(bits, bits, _CMP_UNORD_Q)) != 0;
#elif defined(__SSE2__)
    const __m128 bits = reinterpret_cast<__m128>(value);
    return _mm_movemask_ps(_mm_cmpunord_ps(bits, bits)) != 0;
#else
    for (int lane = 0; lane < 2 * kHalfLanes; ++lane) {
      if (value[lane] != value[lane]) return true;
    }
    return false;
#endif
  }

  // The bfloat16 bit pattern of each lane, in the low 16 bits: round to nearest even on the bit
  // pattern, exactly like float_to_bfloat16() in half.h. The AVX512-BF16 conversion flushes
  // subnormals, so round_pairs() uses it only for vectors without any.
  static VU32 round(VF value) {
    const VU32 bits = reinterpret_cast<VU32>(value);
    const VU32 rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    const VU32 quiet_nan = (bits >> 16) | 0x0040u;
    return (bits & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded;
  }

 private:
  static VU32 widen(const Storage* from) {
    return __builtin_convertvector(load_bytes<VU16>(from), VU32);
  }
  static void narrow(Storage* to, VU32 value) {
    store_bytes(to, __builtin_convertvector(value, VU16));
  }
};

struct F16 {
  using Storage = std::uint16_t;
  static constexpr Storage kOne = 0x3c00;
#if SCAN_CPU_HAS_F16C && SCAN_CPU_VECTOR_BYTES == 64
  // Generic conversions between float and double: GCC 12 reports the AVX-512 intrinsics' own
  // "undefined" source register as maybe-uninitialized.
  static VD load(const Storage* from) {
    return __builtin_convertvector(reinterpret_cast<VF>(_mm256_cvtph_ps(load_bytes<__m128i>(from))),
                                   VD);
  }
  static void store(Storage* to, VD value) {
    const __m256 narrowed = reinterpret_cast<__m256>(__builtin_convertvector(value, VF));
    store_bytes(to, _mm256_cvtps_ph(narrowed, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
#elif SCAN_CPU_HAS_F16C && SCAN_CPU_VECTOR_BYTES == 32
  static VD load(const Storage* from) {
    const __m128i halves =
        _mm_loadl_epi64(static_cast<const __m128i*>(static_cast<const void*>(from)));
    return __builtin_convertvector(reinterpret_cast<VF>(_mm_cvtph_ps(halves)), VD);
  }
  static void store(Storage* to, VD value) {
    const __m128 narrowed = reinterpret_cast<__m128>(__builtin_convertvector(value, VF));
    _mm_storel_epi64(static_cast<__m128i*>(static_cast<void*>(to)),
                     _mm_cvtps_ph(narrowed, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
#else
  // Baseline x86-64 has no half conversion instruction; this build is the portable fallback.
  static VD load(const Storage* from) {
    VD value;
    for (int lane = 0; lane < kVectorBytes / 8; ++lane) value[lane] = float16_to_float(from[lane]);
    return value;
  }
  static void store(Storage* to, VD value) {
    for (int lane = 0; lane < kVectorBytes / 8; ++lane) {
      to[lane] = float_to_float16(static_cast<float>(value[lane]));
    }
  }
#endif
};

// body(std::integral_constant<int, i>{}) for i = 0 .. kCount - 1, unrolled: every index is a
// constant from the start, so GCC replaces an array indexed only this way by registers. Indexed
// by a loop counter (even one unrolled by a pragma), the strided sweeps' carry arrays stayed on
// the stack, every carry stored to them again on every row.
template <typename Body, int... kIndex>
[[gnu::always_inline]] inline void unrolled(Body&& body, std::integer_sequence<int, kIndex...>) {
  (body(std::integral_constant<int, kIndex>{}), ...);
}
template <int kCount, typename Body>
[[gnu::always_inline]] inline void unrolled(Body&& body) {
  unrolled(body, std::make_integer_sequence<int, (kCount > 0 ? kCount : 0)>{});
}

template <typename D>
struct Kernels {
  using S = typename D::Storage;
  using A = double;
  using V = VD;
  static constexpr int kLanes = kVectorBytes / static_cast<int>(sizeof(A));
  // Register-resident carries up to this many vectors per row; wider tiles carry through memory.
  // AVX-512 has 32 vector registers, the narrower builds 16.
  static constexpr int kMaxRegisterVectors = kVectorBytes == 64 ? 16 : 8;

  // Every lane `value`. Not V{} + value: +0 + -0 is +0, which turned a carry of -0 (a product
  // that underflowed with an odd number of negative factors) into +0.
  static V splat(A value) { return value - V{}; }

  // A vector whose lanes beyond `count` are one: a partial vector multiplies like a full one.
  // Going through a small stack buffer costs a few cycles per row, and only tails pay it.
  static V load_partial(const S* from, std::int64_t count) {
    S buffer[kLanes];
    for (int lane = 0; lane < kLanes; ++lane) buffer[lane] = lane < count ? from[lane] : D::kOne;
    return D::load(buffer);
  }
  static void store_partial(S* to, V value, std::int64_t count) {
    S buffer[kLanes];
    D::store(buffer, value);
    for (std::int64_t lane = 0; lane < count; ++lane) to[lane] = buffer[lane];
  }

  // Lane i takes lane i - kShift, lanes below kShift take lane 0 of `fill`. __builtin_shufflevector
  // (constant lane indices into the concatenation of both vectors) is understood by GCC 12 and
  // clang alike; GCC's __builtin_shuffle is not, and the sanitizer and fuzzing builds use clang.
  template <int kShift, std::size_t... kLane>
  static V shift_in(V value, V fill, std::index_sequence<kLane...>) {
    return __builtin_shufflevector(
        value, fill,
        (static_cast<int>(kLane) >= kShift ? static_cast<int>(kLane) - kShift : kLanes)...);
  }
  template <int kShift>
  static V shift_in(V value, A fill) {
    return shift_in<kShift>(value, splat(fill), std::make_index_sequence<kLanes>());
  }

  // float64 has no wider type to accumulate in, so a contiguous float64 row scanned plainly would
  // carry the rounding walk of its running product (one to three roundings of 2^-53 per vector)
  // along its whole length, as torch.cumprod's sequential loop does. So its plain scan is
  // re-anchored every kAnchorVectors vectors: the same elements are also multiplied up lane by
  // lane with each product's exact rounding error carried along (a compensated product in the
  // manner of Graillat's CompProd: `value`, and `error`, the sum of the rounding errors scaled by
  // the later factors, second-order terms dropped, about n * 2^-106 relative after n factors), and
  // the running product restarts from that, rounded once. A result's error is then that of at
  // most kAnchorVectors vectors of the plain scan, whatever the row's length. The other dtypes
  // accumulate in float64 with room to spare and keep the plain scan alone.
  struct Tracked {
    V value;
    V error;
  };
  static constexpr bool kCompensated = std::is_same_v<D, F64>;
  static constexpr std::int64_t kAnchorVectors = 32;

  // `a` is the loop-carried operand where there is one: its error enters last, in one
  // multiply-add, so that the error's chain from one iteration to the next is a single FMA.
  static Tracked times(const Tracked& a, const Tracked& b) {
    const V value = a.value * b.value;
    return {value,
            multiply_add(a.error, b.value,
                         multiply_add(a.value, b.error, product_error(a.value, b.value, value)))};
  }
  static V times(V a, V b) { return a * b; }
  template <typename Product>
  static Product one() {
    if constexpr (std::is_same_v<Product, Tracked>) {
      return {splat(A(1)), V{}};
    } else {
      return splat(A(1));
    }
  }
  // `a` times an exact factor (an input).
  static Tracked times(const Tracked& a, V factor) {
    const V value = a.value * factor;
    return {value, multiply_add(a.error, factor, product_error(a.value, factor, value))};
  }

  static VI64 ordinary(V value) {  // neither zero, infinite nor NaN
    return (magnitude(value) <= splat(__DBL_MAX__)) & (value != V{});
  }
  static V select(VI64 mask, V if_set, V if_clear) {
    return reinterpret_cast<V>((mask & reinterpret_cast<VI64>(if_set)) |
                               (~mask & reinterpret_cast<VI64>(if_clear)));
  }

  // value + error, rounded once, where the product and that sum are ordinary numbers; the plain
  // product elsewhere.
  static V rounded(const Tracked& tracked) {
    const V sum = tracked.value + tracked.error;
    return select(ordinary(tracked.value) & ordinary(sum), sum, tracked.value);
  }

  // The plain running product restarts from the compensated one, value + error rounded once,
  // where both are ordinary numbers. Elsewhere the plain one goes on and the compensated one
  // restarts from it: where either reached zero, infinity or NaN (the plain product then gives
  // what the sequential one gives, as for every other dtype), or where the lane-wise product,
  // which multiplies in another order, overflowed or underflowed and the plain one did not.
  static void anchor(V& running, Tracked& exact) {
    const V corrected = exact.value + exact.error;
    const VI64 keep = ordinary(running) & ordinary(exact.value) & ordinary(corrected);
    running = select(keep, corrected, running);
    // What the rounding left over (exact: |error| is far below |value|) stays in the error.
    exact = {running, select(keep, exact.error - (corrected - exact.value), V{})};
  }

  // In-register inclusive prefix product (Hillis-Steele): log2(kLanes) shuffle-multiply steps.
  template <int kShift = 1>
  static V scan_vector(V value) {
    if constexpr (kShift < kLanes) {
      value *= shift_in<kShift>(value, A(1));
      return scan_vector<kShift * 2>(value);
    } else {
      return value;
    }
  }
  template <int kShift = 1>
  static Tracked scan_vector(const Tracked& tracked) {
    if constexpr (kShift < kLanes) {
      return scan_vector<kShift * 2>(times(
          tracked,
          Tracked{shift_in<kShift>(tracked.value, A(1)), shift_in<kShift>(tracked.error, A(0))}));
    } else {
      return tracked;
    }
  }

  template <std::size_t... kLane>
  static V broadcast_last(V value, std::index_sequence<kLane...>) {
    return __builtin_shufflevector(value, value, (static_cast<int>(kLane * 0) + kLanes - 1)...);
  }
  static V broadcast_last(V value) {
    return broadcast_last(value, std::make_index_sequence<kLanes>());
  }
  static Tracked broadcast_last(const Tracked& tracked) {
    return {broadcast_last(tracked.value), broadcast_last(tracked.error)};
  }

  // The strided recurrence on a tile of `width` lanes: kVectors full vectors live in registers
  // across all rows (kVectors < 0: as many as fit in `width`, carried through `carry` in memory,
  // which is L1-resident since tiles are a few KiB), the remainder in one partial vector.
  template <bool kStore, int kVectors, bool kStream = false>
  static void sweep(const S* in, S* out, std::int64_t rows, std::int64_t width, std::int64_t stride,
                    A* carry) {
    constexpr bool kInMemory = kVectors < 0;
    const std::int64_t full = kInMemory ? width / kLanes : kVectors;
    const std::int64_t tail = width - full * kLanes;
    V registers[kInMemory || kVectors == 0 ? 1 : kVectors];
    unrolled<kVectors>(
        [&](auto vector) { registers[vector] = load_bytes<V>(carry + vector * kLanes); });
    V tail_carry = splat(A(1));
    for (std::int64_t lane = 0; lane < tail; ++lane) tail_carry[lane] = carry[full * kLanes + lane];

    for (std::int64_t row = 0; row < rows; ++row) {
      const S* source = in + row * stride;
      S* target = kStore ? out + row * stride : nullptr;
      if constexpr (kInMemory) {
        for (std::int64_t vector = 0; vector < full; ++vector) {
          const V running = load_bytes<V>(carry + vector * kLanes) * D::load(source);
          store_bytes(carry + vector * kLanes, running);
          if constexpr (kStore) put<kStream>(target + vector * kLanes, running);
          source += kLanes;
        }
        if constexpr (kStore) target += full * kLanes;
      } else {
        unrolled<kVectors>([&](auto vector) {
          registers[vector] *= D::load(source + vector * kLanes);
          if constexpr (kStore) put<kStream>(target + vector * kLanes, registers[vector]);
        });
        source += kVectors * kLanes;
        if constexpr (kStore) target += kVectors * kLanes;
      }
      if (tail != 0) {
        tail_carry *= load_partial(source, tail);
        if constexpr (kStore) store_partial(target, tail_carry, tail);
      }
    }

    unrolled<kVectors>(
        [&](auto vector) { store_bytes(carry + vector * kLanes, registers[vector]); });
    for (std::int64_t lane = 0; lane < tail; ++lane) carry[full * kLanes + lane] = tail_carry[lane];
  }

  template <bool kStore, int kVectors = 0, bool kStream = false>
  static void sweep_dispatch(const S* in, S* out, std::int64_t rows, std::int64_t width,
                             std::int64_t stride, A* carry) {
    if constexpr (kVectors > kMaxRegisterVectors) {
      sweep<kStore, -1, kStream>(in, out, rows, width, stride, carry);
    } else {
      if (width / kLanes == kVectors)
        return sweep<kStore, kVectors, kStream>(in, out, rows, width, stride, carry);
      sweep_dispatch<kStore, kVectors + 1, kStream>(in, out, rows, width, stride, carry);
    }
  }

  // bfloat16 tiles a whole number of 2 * kLanes wide use the even/odd split of
  // scan_bfloat16_pairs: lanes are independent here, so the split costs nothing but reordering
  // the carry into [even lanes, odd lanes] per block on entry and back on exit.
  static constexpr int kPairLanes = 2 * kLanes;

  static void reorder_carry(A* carry, std::int64_t width, bool split) {
    for (std::int64_t block = 0; block < width; block += kPairLanes) {
      A copy[kPairLanes];
      std::memcpy(copy, carry + block, sizeof copy);
      for (int lane = 0; lane < kLanes; ++lane) {
        if (split) {
          carry[block + lane] = copy[2 * lane];
          carry[block + kLanes + lane] = copy[2 * lane + 1];
        } else {
          carry[block + 2 * lane] = copy[lane];
          carry[block + 2 * lane + 1] = copy[kLanes + lane];
        }
      }
    }
  }

  template <bool kStore, int kPairs, bool kStream = false>
  static void sweep_pairs(const S* in, S* out, std::int64_t rows, std::int64_t width,
                          std::int64_t stride, A* carry) {
    constexpr bool kInMemory = kPairs < 0;
    const std::int64_t pairs = kInMemory ? width / kPairLanes : kPairs;
    reorder_carry(carry, width, true);
    V even[kInMemory ? 1 : kPairs];
    V odd[kInMemory ? 1 : kPairs];
    unrolled<kPairs>([&](auto pair) {
      even[pair] = load_bytes<V>(carry + pair * kPairLanes);
      odd[pair] = load_bytes<V>(carry + pair * kPairLanes + kLanes);
    });
    // One pair of vectors of a row: multiplied into its carries, then rounded and stored.
    const auto step = [&](std::int64_t row, std::int64_t pair, V& carry_even, V& carry_odd) {
      V running_even;
      V running_odd;
      BF16::load_pairs(in + row * stride + pair * kPairLanes, running_even, running_odd);
      running_even = carry_even *= running_even;
      running_odd = carry_odd *= running_odd;
      if constexpr (kStore) {
        const VU32 stored = BF16::round_pairs(running_even, running_odd);
        if constexpr (kStream) {
          stream_bytes<sizeof stored>(out + row * stride + pair * kPairLanes, &stored);
        } else {
          store_bytes(out + row * stride + pair * kPairLanes, stored);
        }
      }
    };
    for (std::int64_t row = 0; row < rows; ++row) {
      if constexpr (kInMemory) {
        for (std::int64_t pair = 0; pair < pairs; ++pair) {
          V carry_even = load_bytes<V>(carry + pair * kPairLanes);
          V carry_odd = load_bytes<V>(carry + pair * kPairLanes + kLanes);
          step(row, pair, carry_even, carry_odd);
          store_bytes(carry + pair * kPairLanes, carry_even);
          store_bytes(carry + pair * kPairLanes + kLanes, carry_odd);
        }
      } else {
        unrolled<kPairs>([&](auto pair) { step(row, pair, even[pair], odd[pair]); });
      }
    }
    unrolled<kPairs>([&](auto pair) {
      store_bytes(carry + pair * kPairLanes, even[pair]);
      store_bytes(carry + pair * kPairLanes + kLanes, odd[pair]);
    });
    reorder_carry(carry, width, false);
  }

  template <bool kStore, bool kStream = false>
  static void sweep_any(const S* in, S* out, std::int64_t rows, std::int64_t width,
                        std::int64_t stride, A* carry) {
    if constexpr (std::is_same_v<D, BF16>) {
      if (width % kPairLanes == 0) {
        switch (width / kPairLanes) {
          case 1:
            return sweep_pairs<kStore, 1, kStream>(in, out, rows, width, stride, carry);
          case 2:
            return sweep_pairs<kStore, 2, kStream>(in, out, rows, width, stride, carry);
          case 3:
            return sweep_pairs<kStore, 3, kStream>(in, out, rows, width, stride, carry);
          case 4:
            return sweep_pairs<kStore, 4, kStream>(in, out, rows, width, stride, carry);
          case 8:
            // 128 lanes on AVX-512 (MM-Rec's head_dim), its 16 carries in registers.
            if constexpr (2 * 8 <= kMaxRegisterVectors) {
              return sweep_pairs<kStore, 8, kStream>(in, out, rows, width, stride, carry);
            }
            [[fallthrough]];
          default:
            return sweep_pairs<kStore, -1, kStream>(in, out, rows, width, stride, carry);
        }
      }
    }
    sweep_dispatch<kStore, 0, kStream>(in, out, rows, width, stride, carry);
  }

  static void scan_tile(const void* in, void* out, std::int64_t rows, std::int64_t width,
                        std::int64_t stride, void* carry) {
    sweep_any<true>(static_cast<const S*>(in), static_cast<S*>(out), rows, width, stride,
                    static_cast<A*>(carry));
  }

  // scan_tile with non-temporal stores for the whole vectors of every row, when `out` and the row
  // stride keep them aligned to a vector (else plain stores); ends with a fence.
  static void scan_tile_streaming(const void* in, void* out, std::int64_t rows, std::int64_t width,
                                  std::int64_t stride, void* carry) {
    const auto address = reinterpret_cast<std::uintptr_t>(out);
    const auto row_bytes = static_cast<std::uintptr_t>(stride) * sizeof(S);
    if (address % kVectorBytes != 0 || row_bytes % kVectorBytes != 0) {
      return scan_tile(in, out, rows, width, stride, carry);
    }
    sweep_any<true, true>(static_cast<const S*>(in), static_cast<S*>(out), rows, width, stride,
                          static_cast<A*>(carry));
    stream_fence();
  }

  static void reduce_tile(const void* in, std::int64_t rows, std::int64_t width,
                          std::int64_t stride, void* acc) {
    sweep_any<false>(static_cast<const S*>(in), nullptr, rows, width, stride, static_cast<A*>(acc));
  }

  // Contiguous loops prefetch their input this far ahead. The hardware prefetchers alone left
  // the single-thread bfloat16 row scan at 70-80% of memcpy on tensors beyond the caches (and the
  // float32 one at ~90%); 1 KiB and 4 KiB ahead both brought it to memcpy speed here.
  static constexpr std::int64_t kPrefetchBytes = 1024;
  // One vector of results to `to`: a plain store, or (kStream) a non-temporal one to an address
  // aligned to the vector's storage size.
  template <bool kStream>
  static void put(S* to, V value) {
    if constexpr (kStream) {
      S buffer[kLanes];
      D::store(buffer, value);
      stream_bytes<sizeof buffer>(to, buffer);
    } else {
      D::store(to, value);
    }
  }

  // The prefix within each vector does not depend on the carry, so consecutive vectors overlap;
  // the loop-carried chain is one multiply per vector. Returns the carry (in every lane).
  //
  // `ahead` (elements, 0: none): the input that far ahead of each vector is pulled into L2 as the
  // scan goes, at the pace it reads its own (see scan_row).
  template <bool kStream>
  static V scan_contiguous(const S* in, S* out, std::int64_t length, V running,
                           std::int64_t ahead) {
    std::int64_t at = 0;
    if constexpr (std::is_same_v<D, BF16>) {
      at = scan_bfloat16_pairs<kStream>(in, out, length, running, ahead);
    }
    for (; at + kLanes <= length; at += kLanes) {
      __builtin_prefetch(in + at + kPrefetchBytes / sizeof(S));
      if (ahead != 0) __builtin_prefetch(in + at + ahead, 0, 2);
      const V prefix = scan_vector(D::load(in + at));
      put<kStream>(out + at, prefix * running);
      running *= broadcast_last(prefix);
    }
    if (at < length) {
      const V prefix = scan_vector(load_partial(in + at, length - at));
      store_partial(out + at, prefix * running, length - at);
      running *= broadcast_last(prefix);  // lanes past the end are one, so the last lane is right
    }
    return running;
  }

  // The product of `length` elements lane by lane (lane j multiplies elements j, j + kLanes, ...),
  // plain (Product = V) or compensated (Tracked). Four independent products hide the multiply
  // latency.
  template <typename Product>
  static Product lane_products(const S* in, std::int64_t length) {
    Product product[4];
    for (Product& way : product) way = one<Product>();
    std::int64_t at = 0;
    for (; at + 4 * kLanes <= length; at += 4 * kLanes) {
      for (int way = 0; way < 4; ++way) {
        __builtin_prefetch(in + at + way * kLanes + kPrefetchBytes / sizeof(S));
        product[way] = times(product[way], D::load(in + at + way * kLanes));
      }
    }
    for (; at + kLanes <= length; at += kLanes) product[0] = times(product[0], D::load(in + at));
    if (at < length) product[0] = times(product[0], load_partial(in + at, length - at));
    return times(times(product[0], product[1]), times(product[2], product[3]));
  }

  // The compensated product of `length` elements (in every lane).
  static Tracked compensated_product(const S* in, std::int64_t length) {
    return broadcast_last(scan_vector(lane_products<Tracked>(in, length)));
  }

  // The float64 row scan: the plain one, re-anchored every kAnchorVectors vectors (see Tracked).
  // Each piece is read twice, the second time from L1.
  template <bool kStream>
  static void scan_anchored(const S* in, S* out, std::int64_t length, Tracked& carry,
                            std::int64_t ahead) {
    constexpr std::int64_t kPiece = kAnchorVectors * kLanes;
    Tracked exact = carry;
    V running = exact.value;
    anchor(running, exact);
    for (std::int64_t at = 0; at < length; at += kPiece) {
      const std::int64_t count = std::min(kPiece, length - at);
      // The product first: in place, the scan overwrites its inputs.
      exact = times(exact, compensated_product(in + at, count));
      running = scan_contiguous<kStream>(in + at, out + at, count, running, ahead);
      anchor(running, exact);
    }
    carry = exact;
  }

  static void scan_row(const void* in_bytes, void* out_bytes, std::int64_t length, void* carry,
                       std::int64_t ahead) {
    const S* in = static_cast<const S*>(in_bytes);
    S* out = static_cast<S*>(out_bytes);
    A& value = *static_cast<A*>(carry);
    if constexpr (kCompensated) {
      Tracked exact{splat(value), V{}};
      scan_anchored<false>(in, out, length, exact, ahead);
      value = exact.value[0];
    } else {
      value = scan_contiguous<false>(in, out, length, splat(value), ahead)[0];
    }
  }

  // scan_row with non-temporal stores, for outputs too large to stay cached: every output line
  // then costs one write to memory instead of a read for ownership plus a write. Elements before
  // the first 64-byte boundary of `out` (and a partial last vector) use plain stores.
  static void scan_row_streaming(const void* in_bytes, void* out_bytes, std::int64_t length,
                                 void* carry, std::int64_t ahead) {
    const S* in = static_cast<const S*>(in_bytes);
    S* out = static_cast<S*>(out_bytes);
    const auto address = reinterpret_cast<std::uintptr_t>(out);
    if (address % sizeof(S) != 0) return scan_row(in, out, length, carry, ahead);
    const auto head = std::min<std::int64_t>(
        length, static_cast<std::int64_t>((std::uintptr_t{0} - address) % 64 / sizeof(S)));
    A& value = *static_cast<A*>(carry);
    if constexpr (kCompensated) {
      Tracked exact{splat(value), V{}};
      scan_anchored<false>(in, out, head, exact, ahead);
      scan_anchored<true>(in + head, out + head, length - head, exact, ahead);
      value = exact.value[0];
    } else {
      V running = scan_contiguous<false>(in, out, head, splat(value), ahead);
      running = scan_contiguous<true>(in + head, out + head, length - head, running, ahead);
      value = running[0];
    }
    stream_fence();
  }

  // bfloat16 is the top half of a float, so one 32-bit lane holding elements 2k and 2k+1 splits
  // into an even and an odd vector with a shift and a mask, and recombines the same way: no
  // interleaving shuffles, and one in-register scan per 2 * kLanes elements. The shuffle ports
  // are what bounds this loop, so this halves its cost. Returns the elements done.
  template <bool kStream>
  static std::int64_t scan_bfloat16_pairs(const S* in, S* out, std::int64_t length, V& running,
                                          std::int64_t ahead) {
    std::int64_t at = 0;
    for (; at + 2 * kLanes <= length; at += 2 * kLanes) {
      __builtin_prefetch(in + at + kPrefetchBytes / sizeof(S));
      if (ahead != 0) __builtin_prefetch(in + at + ahead, 0, 2);
      V even;
      V odd;
      BF16::load_pairs(in + at, even, odd);
      const V pairs = even * odd;
      const V through = scan_vector(pairs);  // lane k: product of elements 0 .. 2k+1
      // Lane k of the odd results is the running product through element 2k+1; shifted up one
      // lane (the carry entering lane 0) it is the carry of element 2k.
      const V odd_out = through * running;
      const V even_out = shift_in<1>(odd_out, running, std::make_index_sequence<kLanes>()) * even;
      const VU32 stored = BF16::round_pairs(even_out, odd_out);
      if constexpr (kStream) {
        stream_bytes<sizeof stored>(out + at, &stored);
      } else {
        store_bytes(out + at, stored);
      }
      // odd_out's last lane rather than running * through[last], the same product, so that a NaN
      // carry keeps the payload that was stored (which operand's payload a product of two NaNs
      // keeps depends on the compiler's operand order, and differed between the ISA builds).
      running = broadcast_last(odd_out);
    }
    return at;
  }

  static void reduce_row(const void* in_bytes, std::int64_t length, void* acc) {
    const S* in = static_cast<const S*>(in_bytes);
    A& total = *static_cast<A*>(acc);
    if constexpr (kCompensated) {
      total = rounded(times(Tracked{splat(total), V{}}, compensated_product(in, length)))[0];
      return;
    }
    const V all = lane_products<V>(in, length);
    for (int lane = 0; lane < kLanes; ++lane) total *= all[lane];
  }

  // Short contiguous rows waste most lanes of an in-row scan, so kLanes rows at a time are
  // transposed into a stack tile and scanned down its columns like the strided case.
  static void scan_short_rows(const void* in_bytes, void* out_bytes, std::int64_t rows,
                              std::int64_t length) {
    const S* in = static_cast<const S*>(in_bytes);
    S* out = static_cast<S*>(out_bytes);
    S tile[kMaxShortRow * kLanes];
    for (std::int64_t first = 0; first < rows; first += kLanes) {
      const std::int64_t count = rows - first < kLanes ? rows - first : kLanes;
      for (std::int64_t row = 0; row < count; ++row) {
        for (std::int64_t step = 0; step < length; ++step) {
          tile[step * kLanes + row] = in[(first + row) * length + step];
        }
      }
      A carry[kLanes];
      for (A& value : carry) value = A(1);
      sweep_dispatch<true>(tile, tile, length, count, kLanes, carry);
      for (std::int64_t row = 0; row < count; ++row) {
        for (std::int64_t step = 0; step < length; ++step) {
          out[(first + row) * length + step] = tile[step * kLanes + row];
        }
      }
    }
  }

  static constexpr DTypeKernels table() {
    return {&scan_tile,          &scan_tile_streaming, &reduce_tile,    &scan_row,
            &scan_row_streaming, &reduce_row,          &scan_short_rows};
  }
};

constexpr IsaKernels kKernels = {
    SCAN_CPU_ISA_NAME,     kVectorBytes,          Kernels<F32>::table(),
    Kernels<F64>::table(), Kernels<F16>::table(), Kernels<BF16>::table(),
};

}  // namespace
}  // namespace SCAN_CPU_ISA

const IsaKernels& SCAN_CPU_ISA_GETTER() { return SCAN_CPU_ISA::kKernels; }

}  // namespace scan::kernels::cpu
