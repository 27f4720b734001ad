// Bit-exact conversions between float and the 16-bit storage types, usable in host code compiled by
// any compiler (nvcc's host pass included). Rounding is to nearest, ties to even, as PyTorch and
// IEEE 754 do; NaN stays NaN (quiet), infinities and signed zeros survive.
#pragma once

#include <cstdint>
#include <cstring>

namespace scan::kernels {

inline std::uint32_t float_bits(float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

inline float float_from_bits(std::uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

inline float bfloat16_to_float(std::uint16_t stored) {
  return float_from_bits(static_cast<std::uint32_t>(stored) << 16);
}

inline std::uint16_t float_to_bfloat16(float value) {
  std::uint32_t bits = float_bits(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) {
    return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);  // keep NaN a (quiet) NaN
  }
  const std::uint32_t round_to_even = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>((bits + round_to_even) >> 16);
}

inline float float16_to_float(std::uint16_t stored) {
  const std::uint32_t sign = static_cast<std::uint32_t>(stored & 0x8000u) << 16;
  const std::uint32_t exponent = (stored >> 10) & 0x1fu;
  const std::uint32_t mantissa = stored & 0x3ffu;
  if (exponent == 0x1fu) {  // Inf or NaN
    return float_from_bits(sign | 0x7f800000u | (mantissa << 13));
  }
  if (exponent != 0) {  // normal: rebias 15 -> 127
    return float_from_bits(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  }
  // Zero or subnormal: mantissa * 2^-24 is exact in float.
  const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-08f;
  return sign ? -magnitude : magnitude;
}

inline std::uint16_t float_to_float16(float value) {
  const std::uint32_t bits = float_bits(value);
  const std::uint16_t sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  const std::uint32_t abs_bits = bits & 0x7fffffffu;
  if (abs_bits > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (abs_bits >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: Inf
  if (abs_bits < 0x38800000u) {                        // below 2^-14: subnormal
    // Adding 0.5 makes the FPU align the mantissa to 2^-24 units with round-to-nearest-even.
    const float shifted = float_from_bits(abs_bits) + 0.5f;
    return sign | static_cast<std::uint16_t>(float_bits(shifted) - float_bits(0.5f));
  }
  const std::uint32_t round_to_even = 0xfffu + ((abs_bits >> 13) & 1u);
  const std::uint32_t rebiased = abs_bits - (112u << 23) + round_to_even;
  return sign | static_cast<std::uint16_t>(rebiased >> 13);
}

}  // namespace scan::kernels
