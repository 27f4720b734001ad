// The 16-bit conversions against independent references: the compiler's own _Float16 for IEEE
// half, and a float64 nearest-even rounding written out for bfloat16.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "scan/kernels/half.h"

namespace scan::kernels {
namespace {

// The compiler's IEEE half: clang before 15 has no _Float16 on x86, only the storage type __fp16,
// which converts the same way (round to nearest even).
#if defined(__clang__) && __clang_major__ < 15
using CompilerHalf = __fp16;
#else
using CompilerHalf = _Float16;
#endif

TEST(HalfConversion, EveryFloat16SurvivesTheRoundTrip) {
  for (std::uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const auto stored = static_cast<std::uint16_t>(bits);
    const float widened = float16_to_float(stored);
    CompilerHalf reference;
    std::memcpy(&reference, &stored, sizeof stored);
    if (std::isnan(widened)) {
      EXPECT_TRUE(std::isnan(static_cast<float>(reference))) << bits;
      EXPECT_TRUE(std::isnan(float16_to_float(float_to_float16(widened))));
      continue;
    }
    ASSERT_EQ(widened, static_cast<float>(reference)) << "bits " << bits;
    ASSERT_EQ(float_to_float16(widened), stored) << "bits " << bits;
  }
}

TEST(HalfConversion, FloatToFloat16RoundsLikeTheCompiler) {
  std::mt19937 generator(std::random_device{}());
  std::uniform_int_distribution<std::uint32_t> any_bits;
  for (int trial = 0; trial < 2'000'000; ++trial) {
    const float value = float_from_bits(any_bits(generator));
    if (std::isnan(value)) continue;
    const auto reference = static_cast<CompilerHalf>(value);
    std::uint16_t reference_bits;
    std::memcpy(&reference_bits, &reference, sizeof reference_bits);
    ASSERT_EQ(float_to_float16(value), reference_bits) << "value " << value;
  }
  // Halfway cases around the overflow threshold and the subnormal range.
  for (float value : {65504.0f, 65519.99f, 65520.0f, 5.9604645e-08f, 2.9802322e-08f, 2.9802326e-08f,
                      6.1035156e-05f, -0.0f, 1e-10f}) {
    const auto reference = static_cast<CompilerHalf>(value);
    std::uint16_t reference_bits;
    std::memcpy(&reference_bits, &reference, sizeof reference_bits);
    EXPECT_EQ(float_to_float16(value), reference_bits) << "value " << value;
  }
}

// Nearest bfloat16 by comparing the float64 distances to the two neighbours, ties to even.
std::uint16_t reference_bfloat16(float value) {
  const std::uint32_t bits = float_bits(value);
  if (std::isinf(value)) return static_cast<std::uint16_t>(bits >> 16);
  const auto toward_zero = static_cast<std::uint16_t>(bits >> 16);  // truncating the magnitude
  const auto away_from_zero = static_cast<std::uint16_t>(toward_zero + 1);
  const double low = bfloat16_to_float(toward_zero);
  double high = bfloat16_to_float(away_from_zero);
  // Past the largest finite bfloat16 the next step is 2^128, which IEEE rounding treats as Inf.
  if (std::isinf(high)) high = std::copysign(0x1p128, value);
  const double distance_low = std::fabs(static_cast<double>(value) - low);
  const double distance_high = std::fabs(static_cast<double>(value) - high);
  if (distance_low < distance_high) return toward_zero;
  if (distance_high < distance_low) return away_from_zero;
  return (toward_zero & 1) ? away_from_zero : toward_zero;
}

TEST(BFloat16Conversion, EveryBFloat16SurvivesTheRoundTrip) {
  for (std::uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const auto stored = static_cast<std::uint16_t>(bits);
    const float widened = bfloat16_to_float(stored);
    if (std::isnan(widened)) {
      EXPECT_TRUE(std::isnan(bfloat16_to_float(float_to_bfloat16(widened))));
    } else {
      ASSERT_EQ(float_to_bfloat16(widened), stored) << bits;
    }
  }
}

TEST(BFloat16Conversion, RoundsToNearestEven) {
  std::mt19937 generator(std::random_device{}());
  std::uniform_int_distribution<std::uint32_t> any_bits;
  for (int trial = 0; trial < 2'000'000; ++trial) {
    const float value = float_from_bits(any_bits(generator));
    if (std::isnan(value)) {
      EXPECT_TRUE(std::isnan(bfloat16_to_float(float_to_bfloat16(value))));
      continue;
    }
    ASSERT_EQ(float_to_bfloat16(value), reference_bfloat16(value)) << "bits " << float_bits(value);
  }
  EXPECT_EQ(float_to_bfloat16(1.0f + 0x1p-8f), 0x3f80);  // tie, even stays
  EXPECT_EQ(float_to_bfloat16(1.0f + 0x1p-8f + 0x1p-9f), 0x3f81);
  EXPECT_EQ(float_to_bfloat16(std::numeric_limits<float>::max()), 0x7f80);  // rounds to Inf
}

}  // namespace
}  // namespace scan::kernels
