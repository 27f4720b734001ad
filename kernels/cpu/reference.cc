#include "scan/kernels/reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "scan/kernels/half.h"

namespace scan::kernels {

std::vector<double> widen_to_f64(const void* data, DType dtype, std::int64_t count) {
  std::vector<double> wide(static_cast<std::size_t>(count));
  const auto* bytes = static_cast<const unsigned char*>(data);
  for (std::int64_t index = 0; index < count; ++index) {
    const unsigned char* element = bytes + index * static_cast<std::int64_t>(element_size(dtype));
    switch (dtype) {
      case DType::kFloat64: {
        std::memcpy(&wide[index], element, sizeof(double));
        break;
      }
      case DType::kFloat32: {
        float value;
        std::memcpy(&value, element, sizeof value);
        wide[index] = value;
        break;
      }
      case DType::kFloat16:
      case DType::kBFloat16: {
        std::uint16_t stored;
        std::memcpy(&stored, element, sizeof stored);
        wide[index] =
            dtype == DType::kFloat16 ? float16_to_float(stored) : bfloat16_to_float(stored);
        break;
      }
    }
  }
  return wide;
}

void narrow_from_f64(const double* values, std::int64_t count, DType dtype, void* out) {
  auto* bytes = static_cast<unsigned char*>(out);
  for (std::int64_t index = 0; index < count; ++index) {
    unsigned char* element = bytes + index * static_cast<std::int64_t>(element_size(dtype));
    switch (dtype) {
      case DType::kFloat64:
        std::memcpy(element, &values[index], sizeof(double));
        break;
      case DType::kFloat32: {
        const float value = static_cast<float>(values[index]);
        std::memcpy(element, &value, sizeof value);
        break;
      }
      case DType::kFloat16:
      case DType::kBFloat16: {
        // Rounding twice (to float, then to 16 bits) can differ from one rounding by one unit in
        // rare ties; callers use this for inputs and yardsticks, where that is immaterial.
        const float value = static_cast<float>(values[index]);
        const std::uint16_t stored =
            dtype == DType::kFloat16 ? float_to_float16(value) : float_to_bfloat16(value);
        std::memcpy(element, &stored, sizeof stored);
        break;
      }
    }
  }
}

void reference_cumprod(const double* in, double* out, ScanShape shape) {
  for (std::int64_t block = 0; block < shape.outer; ++block) {
    const std::int64_t base = block * shape.length * shape.inner;
    for (std::int64_t lane = 0; lane < shape.inner; ++lane) {
      double running = 1.0;
      for (std::int64_t step = 0; step < shape.length; ++step) {
        const std::int64_t at = base + step * shape.inner + lane;
        running *= in[at];
        out[at] = running;
      }
    }
  }
}

void reference_cumprod_double_double(const double* in, double* out, ScanShape shape) {
  for (std::int64_t block = 0; block < shape.outer; ++block) {
    const std::int64_t base = block * shape.length * shape.inner;
    for (std::int64_t lane = 0; lane < shape.inner; ++lane) {
      double high = 1, low = 0;
      for (std::int64_t step = 0; step < shape.length; ++step) {
        const std::int64_t at = base + step * shape.inner + lane;
        const double factor = in[at];
        const double product = high * factor;
        if (!std::isfinite(product) || product == 0) {
          high = product;
          low = 0;
        } else {
          const double error = std::fma(high, factor, -product) + low * factor;
          high = product + error;
          low = error - (high - product);
        }
        out[at] = high;
      }
    }
  }
}

namespace {

struct Precision {
  double unit_roundoff;   // half the distance from 1 to the next value
  double subnormal_step;  // the spacing of the smallest values
};

Precision storage_precision(DType dtype) {
  switch (dtype) {
    case DType::kFloat64:
      return {std::ldexp(1.0, -53), std::ldexp(1.0, -1074)};
    case DType::kFloat32:
      return {std::ldexp(1.0, -24), std::ldexp(1.0, -149)};
    case DType::kFloat16:
      return {std::ldexp(1.0, -11), std::ldexp(1.0, -24)};
    case DType::kBFloat16:
      return {std::ldexp(1.0, -8), std::ldexp(1.0, -133)};
  }
  return {1.0, 1.0};
}

double stored_as(double value, DType dtype) {
  unsigned char storage[sizeof(double)];
  narrow_from_f64(&value, 1, dtype, storage);
  return widen_to_f64(storage, dtype, 1)[0];
}

}  // namespace

Tolerance cumprod_tolerance(DType dtype, std::int64_t length) {
  const Precision stored = storage_precision(dtype);
  // Every backend accumulates in float64; the 16-bit types are rounded through float32 on the way
  // to storage, which adds one float32 rounding (and its subnormal step).
  const Precision accumulated = storage_precision(DType::kFloat64);
  const bool through_float32 = element_size(dtype) == 2;
  const Precision intermediate =
      through_float32 ? storage_precision(DType::kFloat32) : Precision{0.0, 0.0};
  const double steps = static_cast<double>(length < 1 ? 1 : length);
  // The 1.01 absorbs second-order terms of the first-order bound.
  return {1.01 * (stored.unit_roundoff + intermediate.unit_roundoff +
                  steps * accumulated.unit_roundoff),
          stored.subnormal_step + intermediate.subnormal_step + steps * accumulated.subnormal_step};
}

Tolerance cumprod_tolerance_flushed(DType dtype, std::int64_t length) {
  Tolerance tolerance = cumprod_tolerance(dtype, length);
  // Flushing applies where a result is narrowed to float32 (every dtype but float64) and to the
  // float64 products themselves.
  tolerance.atol += dtype == DType::kFloat64
                        ? std::numeric_limits<double>::min()
                        : static_cast<double>(std::numeric_limits<float>::min());
  return tolerance;
}

Comparison compare_to_reference(const double* expected, const void* actual, DType dtype,
                                std::int64_t count, Tolerance tolerance) {
  const std::vector<double> got = widen_to_f64(actual, dtype, count);
  Comparison result;
  result.checked = count;
  for (std::int64_t index = 0; index < count; ++index) {
    const double want = expected[index];
    const double have = got[static_cast<std::size_t>(index)];
    bool match;
    if (std::isnan(want) || std::isnan(have)) {
      match = std::isnan(want) && std::isnan(have);
    } else if (std::isinf(want) || std::isinf(have)) {
      // A finite float64 product beyond the storage type's range is stored as an infinity.
      match = want == have || (std::isinf(have) && stored_as(want, dtype) == have);
    } else {
      const double error = std::fabs(have - want);
      result.max_abs_error = std::fmax(result.max_abs_error, error);
      // Where the absolute term dominates, a relative error says nothing (underflowed values).
      if (std::fabs(want) * tolerance.rtol > tolerance.atol) {
        result.max_rel_error = std::fmax(result.max_rel_error, error / std::fabs(want));
      }
      match = error <= tolerance.atol + tolerance.rtol * std::fabs(want);
    }
    if (!match) {
      if (result.mismatches == 0) result.first_mismatch = index;
      ++result.mismatches;
    }
  }
  return result;
}

std::int64_t ulp_distance(double a, double b, DType dtype) {
  if (std::isnan(a) || std::isnan(b)) {
    return std::isnan(a) && std::isnan(b) ? 0 : std::numeric_limits<std::int64_t>::max();
  }
  // The stored bit patterns, read as sign-magnitude integers, lie on a line on which neighbouring
  // values differ by one (infinities next to the largest finite values).
  const auto ordered = [dtype](double value) {
    unsigned char storage[sizeof(double)] = {};
    narrow_from_f64(&value, 1, dtype, storage);
    std::uint64_t bits = 0;
    std::memcpy(&bits, storage, element_size(dtype));
    const int sign_bit = static_cast<int>(8 * element_size(dtype)) - 1;
    const auto magnitude = static_cast<std::int64_t>(bits & ~(std::uint64_t{1} << sign_bit));
    return (bits >> sign_bit) & 1 ? -magnitude : magnitude;
  };
  const std::int64_t distance = ordered(a) - ordered(b);
  return distance < 0 ? -distance : distance;
}

Agreement compare_bitwise(const void* a, const void* b, DType dtype, std::int64_t count) {
  const std::vector<double> left = widen_to_f64(a, dtype, count);
  const std::vector<double> right = widen_to_f64(b, dtype, count);
  const auto* left_bytes = static_cast<const unsigned char*>(a);
  const auto* right_bytes = static_cast<const unsigned char*>(b);
  const std::size_t element = element_size(dtype);
  Agreement agreement;
  agreement.checked = count;
  for (std::int64_t index = 0; index < count; ++index) {
    const double x = left[static_cast<std::size_t>(index)];
    const double y = right[static_cast<std::size_t>(index)];
    const bool both_nan = std::isnan(x) && std::isnan(y);
    const bool same_bits =
        std::memcmp(left_bytes + index * element, right_bytes + index * element, element) == 0;
    if (both_nan || same_bits) {
      ++agreement.identical;
      continue;
    }
    const bool special =
        std::isnan(x) || std::isnan(y) || std::isinf(x) || std::isinf(y) || x == 0.0 || y == 0.0;
    if (special) {
      ++agreement.special_mismatches;
      if (agreement.first_special_mismatch < 0) agreement.first_special_mismatch = index;
      continue;
    }
    agreement.max_ulps = std::max(agreement.max_ulps, ulp_distance(x, y, dtype));
  }
  return agreement;
}

}  // namespace scan::kernels
