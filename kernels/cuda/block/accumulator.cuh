// What the block scan and the look-back do to an accumulator besides multiplying it: move it
// between lanes, to and from global memory, and round it to one float64. For the plain floating
// types these are the intrinsics themselves (the generated code is that of calling them directly);
// float64's accumulator, a product carried with its rounding error, moves as its two words.
#pragma once

#include <cfloat>

namespace scan::kernels::cuda_detail {

// float64 has no wider type to accumulate in, so a float64 product scanned plainly carries the
// rounding walk of its whole chain of multiplications, as torch.cumprod's sequential loop does (an
// H100 measured an RMS error 2% above torch's on [2,8,4096,128]). So float64 accumulates a
// compensated product, as the CPU backend's float64 rows do (cumprod_body.h, `Tracked`): `value`
// is the plain product, in the plain scan's order (so zeros, infinities and NaN arise where they
// did), and `error` the sum of its roundings (each exact from one FMA), scaled by the later
// factors, second-order terms dropped: Graillat's CompProd, about n * 2^-106 relative after n
// factors, rounded once at the output. The FMAs are nearly free here: float64 FMA throughput is
// far above what the scan's memory bandwidth lets it use.
struct Compensated {
  double value;
  double error;

  Compensated() = default;
  // A float64 is a product without rounding error: inputs and the identity convert implicitly.
  __device__ Compensated(double exact) : value(exact), error(0) {}
  __device__ Compensated(double product, double rounding) : value(product), error(rounding) {}

  // The accumulator's own error enters last, in one FMA: from one factor to the next, the error's
  // dependency chain is a single FMA, as the value's is a single multiply.
  __device__ Compensated& operator*=(double factor) {
    const double product = value * factor;
    error = fma(error, factor, fma(value, factor, -product));
    value = product;
    return *this;
  }
  __device__ Compensated& operator*=(const Compensated& factor) {
    const double product = value * factor.value;
    error = fma(error, factor.value, fma(value, factor.error, fma(value, factor.value, -product)));
    value = product;
    return *this;
  }
};

__device__ inline Compensated operator*(Compensated a, const Compensated& b) { return a *= b; }

// Neither zero, infinite nor NaN.
__device__ inline bool ordinary(double value) { return fabs(value) <= DBL_MAX && value != 0.0; }

template <typename T>
__device__ T rounded(T value) {
  return value;
}

// value + error, rounded once, where the product and that sum are ordinary numbers; the plain
// product elsewhere, so that zeros, infinities, NaN and overflow come out exactly as the plain
// scan's (the value never returns to an ordinary number once it has left them, and its error is
// then meaningless: inf - inf and the like). In the subnormal range the FMAs' errors are inexact
// but finite, so the sum is still no worse than the value. __dadd_rn keeps the compiler from
// fusing the sum with the multiply that made the value.
__device__ inline double rounded(const Compensated& product) {
  const double sum = __dadd_rn(product.value, product.error);
  return ordinary(product.value) && ordinary(sum) ? sum : product.value;
}

template <typename T>
__device__ T shuffle_up(T value, int distance) {
  return __shfl_up_sync(0xffffffffu, value, distance);
}
__device__ inline Compensated shuffle_up(const Compensated& product, int distance) {
  return {shuffle_up(product.value, distance), shuffle_up(product.error, distance)};
}

template <typename T>
__device__ T shuffle_xor(T value, int distance) {
  return __shfl_xor_sync(0xffffffffu, value, distance);
}
__device__ inline Compensated shuffle_xor(const Compensated& product, int distance) {
  return {shuffle_xor(product.value, distance), shuffle_xor(product.error, distance)};
}

// Look-back values bypass L1 (ld.cg/st.cg): other multiprocessors write and read them.
template <typename T>
__device__ T load_cg(const T* source) {
  return __ldcg(source);
}
__device__ inline Compensated load_cg(const Compensated* source) {
  return {__ldcg(&source->value), __ldcg(&source->error)};
}

template <typename T>
__device__ void store_cg(T* destination, T value) {
  __stcg(destination, value);
}
__device__ inline void store_cg(Compensated* destination, const Compensated& product) {
  __stcg(&destination->value, product.value);
  __stcg(&destination->error, product.error);
}

}  // namespace scan::kernels::cuda_detail
