#include "scan/kernels/reference.h"

#include <cstring>

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

}  // namespace scan::kernels
