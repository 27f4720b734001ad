#include "scan/client/host_tensor.h"

#include <random>

#include "scan/kernels/reference.h"

namespace scan::client {

std::int64_t HostTensor::numel() const {
  std::int64_t count = 1;
  for (const std::int64_t size : shape) count *= size;
  return count;
}

HostTensor random_gamma(kernels::DType dtype, const std::vector<std::int64_t>& shape, double low,
                        double high, std::uint64_t seed) {
  HostTensor tensor{dtype, shape, {}};
  const std::int64_t count = tensor.numel();
  std::vector<double> values(static_cast<std::size_t>(count));
  std::mt19937_64 generator(seed);
  std::uniform_real_distribution<double> uniform(low, high);
  for (double& value : values) value = uniform(generator);
  tensor.data.resize(static_cast<std::size_t>(count) * kernels::element_size(dtype));
  kernels::narrow_from_f64(values.data(), count, dtype, tensor.data.data());
  return tensor;
}

kernels::Comparison check_cumprod(const HostTensor& input, const HostTensor& output, int dim,
                                  kernels::Tolerance* tolerance_used) {
  const std::int64_t count = input.numel();
  const kernels::ScanShape view =
      kernels::collapse_around(input.shape.data(), static_cast<int>(input.shape.size()), dim);
  const std::vector<double> wide = kernels::widen_to_f64(input.data.data(), input.dtype, count);
  std::vector<double> expected(wide.size());
  kernels::reference_cumprod(wide.data(), expected.data(), view);
  const kernels::Tolerance tolerance = kernels::cumprod_tolerance_flushed(input.dtype, view.length);
  if (tolerance_used != nullptr) *tolerance_used = tolerance;
  if (output.dtype != input.dtype || output.shape != input.shape ||
      output.data.size() != input.data.size()) {
    kernels::Comparison mismatch;
    mismatch.checked = count;
    mismatch.mismatches = count;
    mismatch.first_mismatch = 0;
    return mismatch;
  }
  return kernels::compare_to_reference(expected.data(), output.data.data(), output.dtype, count,
                                       tolerance);
}

bool parse_dtype(const std::string& text, kernels::DType* dtype) {
  if (text == "f32" || text == "float32") {
    *dtype = kernels::DType::kFloat32;
  } else if (text == "f64" || text == "float64") {
    *dtype = kernels::DType::kFloat64;
  } else if (text == "f16" || text == "float16") {
    *dtype = kernels::DType::kFloat16;
  } else if (text == "bf16" || text == "bfloat16") {
    *dtype = kernels::DType::kBFloat16;
  } else {
    return false;
  }
  return true;
}

std::string format_shape(const std::vector<std::int64_t>& shape) {
  std::string text = "[";
  for (std::size_t axis = 0; axis < shape.size(); ++axis) {
    if (axis > 0) text += ",";
    text += std::to_string(shape[axis]);
  }
  return text + "]";
}

}  // namespace scan::client
