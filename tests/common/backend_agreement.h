// The inputs on which every backend must give the same answer (tests/unit/cpu_torch_backend_test.cc
// compares the two CPU backends, tests/gpu/cuda_backend_test.cc the GPU with both): every backend
// accumulates in float64 and rounds once, so results may differ only where a reassociated float64
// product lands on the other side of a rounding boundary, at most 1 ulp and very rarely.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "scan/kernels/reference.h"
#include "scan/kernels/types.h"

namespace scan::agreement {

struct Case {
  const char* name;
  kernels::ScanShape shape;
  double low, high;  // |decays| drawn from (|low|, high); a negative low mixes in negative factors
  // float64 has no wider accumulator: where a backend splits a row across vector lanes or threads,
  // its float64 products are reassociated in float64 itself and differ from a sequential loop by
  // its own rounding error (many ulps on long rows). Such cases hold float64 to the error bound.
  bool reassociates_float64 = false;
};

// The share of bit-identical elements each pair of backends must reach, at least.
inline constexpr double kMinIdenticalShare = 0.9999;

inline const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      {"mmrec_production_length", {2 * 8, 32768, 8}, 0.999, 1.0},  // [2,8,32768,*], decays near 1
      {"mmrec_short", {2 * 4, 1024, 64}, 1e-6, 1.0 - 1e-6},        // [2,4,1024,64], MM-Rec's clamp
      {"odd_inner_prime_length", {3, 1021, 7}, 0.5, 1.0},
      {"many_short_rows", {64, 33, 1}, -1.0, 1.0},
      {"one_long_row", {1, 1 << 18, 1}, 0.9999, 1.0, true},  // chained across threads on the CPU
      {"rows_beyond_float32_range", {4, 4099, 3}, 0.25, 4.0},
      {"length_one", {4, 1, 5}, -2.0, 2.0},
  };
  return all;
}

// Fresh random inputs for `c`, stored as `dtype`.
inline std::vector<unsigned char> input(const Case& c, kernels::DType dtype,
                                        std::mt19937_64& generator) {
  std::uniform_real_distribution<double> draw(std::fabs(c.low), c.high);
  std::bernoulli_distribution negative(c.low < 0 ? 0.3 : 0.0);
  const std::int64_t count = c.shape.numel();
  std::vector<double> values(static_cast<std::size_t>(count));
  for (double& value : values) value = negative(generator) ? -draw(generator) : draw(generator);
  std::vector<unsigned char> stored(static_cast<std::size_t>(count) * kernels::element_size(dtype));
  kernels::narrow_from_f64(values.data(), count, dtype, stored.data());
  return stored;
}

// Rows of four factors: zeros of both signs, NaN, infinities, products that overflow the stored
// type (and, for float32, come back within range, which only a float64 accumulator sees), products
// that underflow it, and float64's own extremes.
struct SpecialRows {
  std::vector<unsigned char> rows;     // shape {count, 4, 1}
  std::vector<unsigned char> columns;  // the same, transposed: shape {1, 4, count}
  kernels::ScanShape row_shape, column_shape;
};

inline SpecialRows special_rows(kernels::DType dtype) {
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<std::vector<double>> rows = {
      {3e38, 2, 0.5, 0.5},
      {3e38, 2, 0, 5},
      {60000, 2, 0.5, 1},
      {1e-30, 1e-30, 1e30, 1e30},
      {0.0, -1, 2, -3},
      {-0.0, 2, 3, 4},
      {inf, 0.5, -1, 0},
      {-inf, 2, 1e-40, 1},
      {nan, 1, 0, 2},
      {1, nan, inf, 0},
      {1e-20, 1e-20, 1e-5, 1e10},
      {0.75, 1e-7, 1e-7, 1e-7},
      {1e300, 1e10, 1e-300, 0.5},
      {1e-300, 1e-300, 1e300, 1e300},
  };
  std::vector<double> values;
  for (const auto& row : rows) values.insert(values.end(), row.begin(), row.end());
  const auto count = static_cast<std::int64_t>(rows.size());
  SpecialRows special;
  special.row_shape = {count, 4, 1};
  special.column_shape = {1, 4, count};
  const std::size_t element = kernels::element_size(dtype);
  special.rows.resize(values.size() * element);
  kernels::narrow_from_f64(values.data(), count * 4, dtype, special.rows.data());
  special.columns.resize(special.rows.size());
  for (std::size_t row = 0; row < rows.size(); ++row) {
    for (std::size_t step = 0; step < 4; ++step) {
      std::memcpy(&special.columns[(step * rows.size() + row) * element],
                  &special.rows[(row * 4 + step) * element], element);
    }
  }
  return special;
}

// Two backends' results for the same input: at least kMinIdenticalShare bit-identical, no finite
// pair more than 1 ulp apart, and every special value (NaN, infinities, zeros of either sign) the
// same on both.
inline ::testing::AssertionResult agree(const void* a, const void* b, kernels::DType dtype,
                                        std::int64_t count) {
  const kernels::Agreement result = kernels::compare_bitwise(a, b, dtype, count);
  if (result.identical_share() >= kMinIdenticalShare && result.max_ulps <= 1 &&
      result.special_mismatches == 0) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << result.checked - result.identical << " of " << result.checked << " differ, up to "
         << result.max_ulps << " ulp; " << result.special_mismatches
         << " special values differ, the first at element " << result.first_special_mismatch;
}

}  // namespace scan::agreement
