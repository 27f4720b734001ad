// The yardstick: a plain sequential float64 cumprod, independent of every optimised kernel and of
// LibTorch. Tests and `scan-client --check` compare against it.
#pragma once

#include <cstdint>
#include <vector>

#include "scan/kernels/types.h"

namespace scan::kernels {

// Widens `count` elements stored as `dtype` to float64.
std::vector<double> widen_to_f64(const void* data, DType dtype, std::int64_t count);

// Narrows float64 values into `dtype` storage (round to nearest even), `out` holding count
// elements.
void narrow_from_f64(const double* values, std::int64_t count, DType dtype, void* out);

// out[o, l, i] = prod_{k <= l} in[o, k, i], computed in float64 in sequence order.
void reference_cumprod(const double* in, double* out, ScanShape shape);

// reference_cumprod carrying each running product's rounding error along (FMA's exact product
// error: double-double, about 2^-104 relative) and rounding once per output. The yardstick for
// float64 results, against which a plain float64 cumprod is itself off by its own rounding walk:
// measured against reference_cumprod, a sequential float64 loop would look exact and any other
// order wrong. Zeros, infinities and NaN propagate as in the plain product.
void reference_cumprod_double_double(const double* in, double* out, ScanShape shape);

// |actual - expected| <= atol + rtol * |expected| for every element.
struct Tolerance {
  double rtol = 0;
  double atol = 0;
};

// The error bound of scan-server's cumprod of `length` steps stored as `dtype`, against the
// float64 reference of the same (already quantised) input: every backend accumulates in float64,
// so each of `length` multiplications adds at most 2^-53 of relative error; storing adds one unit
// roundoff of the output type (plus one of float32 for the 16-bit types, rounded through it), and
// results in the subnormal range carry absolute rather than relative error.
Tolerance cumprod_tolerance(DType dtype, std::int64_t length);
// The same bound for a cumprod that flushes subnormal results to zero (scan-server's CPU backends
// by default, see float_env.h): results below float32's smallest normal number (1.2e-38; for
// float64 its own, 2.2e-308) may come out as 0.
Tolerance cumprod_tolerance_flushed(DType dtype, std::int64_t length);

struct Comparison {
  std::int64_t checked = 0;
  std::int64_t mismatches = 0;
  std::int64_t first_mismatch = -1;  // element index, -1 if none
  double max_abs_error = 0;
  double max_rel_error = 0;  // over elements where the relative term of the tolerance dominates

  bool ok() const { return mismatches == 0; }
};

// Compares `count` elements stored as `dtype` against float64 expectations. NaN matches NaN and
// an infinity matches the same infinity; anything else non-finite is a mismatch.
Comparison compare_to_reference(const double* expected, const void* actual, DType dtype,
                                std::int64_t count, Tolerance tolerance);

// Distance in units in the last place of `dtype` between two values it represents exactly (as
// widen_to_f64 returns them): 0 for equal values, 1 for neighbours; +0 and -0 are 0 apart, and
// either being NaN gives INT64_MAX unless both are.
std::int64_t ulp_distance(double a, double b, DType dtype);

// How two results of the same scan, both stored as `dtype`, agree element by element: the yardstick
// of cross-backend agreement (every backend accumulates in float64 and rounds once, so they may
// differ only where a reassociated float64 product lands the other side of a rounding boundary).
struct Agreement {
  std::int64_t checked = 0;
  std::int64_t identical = 0;           // the same bits, or both NaN
  std::int64_t max_ulps = 0;            // over elements where both are finite
  std::int64_t special_mismatches = 0;  // one is NaN, infinite or zero and the other not the same
  std::int64_t first_special_mismatch = -1;

  double identical_share() const {
    return checked == 0 ? 1.0 : static_cast<double>(identical) / static_cast<double>(checked);
  }
};
Agreement compare_bitwise(const void* a, const void* b, DType dtype, std::int64_t count);

}  // namespace scan::kernels
