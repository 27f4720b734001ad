#include "routing/calibration.h"

#include <algorithm>
#include <chrono>
#include <random>

#include "scan/kernels/reference.h"

namespace scan::server {

std::vector<kernels::ScanShape> cpu_calibration_shapes() {
  return {{1, 16, 16}, {8, 64, 64}, {8, 1024, 64}, {16, 512, 128}};
}

std::vector<kernels::ScanShape> gpu_calibration_shapes() {
  std::vector<kernels::ScanShape> shapes = cpu_calibration_shapes();
  shapes.push_back({16, 2048, 128});
  shapes.push_back({16, 8192, 128});
  return shapes;
}

CalibrationResult calibrate(ScanBackend& backend, const std::vector<kernels::ScanShape>& shapes) {
  constexpr int kRepetitions = 5;

  std::int64_t largest = 0;
  for (const auto& shape : shapes) largest = std::max(largest, shape.numel());
  std::vector<float> input(static_cast<std::size_t>(largest));
  std::vector<float> output(input.size());
  std::mt19937 generator(12345);
  std::uniform_real_distribution<float> decay(0.5f, 1.0f);
  for (float& value : input) value = decay(generator);

  CalibrationResult result;
  for (const auto& shape : shapes) {
    const ScanJob job{kernels::DType::kFloat32, shape, input.data(), output.data()};
    backend.run(job);  // warm-up: first-touch page faults, lazy initialisation
    std::vector<double> seconds;
    for (int repetition = 0; repetition < kRepetitions; ++repetition) {
      const auto start = std::chrono::steady_clock::now();
      backend.run(job);
      seconds.push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    std::nth_element(seconds.begin(), seconds.begin() + kRepetitions / 2, seconds.end());
    result.samples.push_back(
        {static_cast<double>(shape.numel() * sizeof(float)), seconds[kRepetitions / 2]});
  }
  result.model = fit_cost_model(result.samples);
  return result;
}

void warm_every_dtype(ScanBackend& backend) {
  const kernels::ScanShape shape{8, 64, 64};  // 32 KiB of float32, strided: MM-Rec's layout
  std::vector<double> values(static_cast<std::size_t>(shape.numel()), 0.999);
  for (const kernels::DType dtype : {kernels::DType::kFloat32, kernels::DType::kFloat64,
                                     kernels::DType::kFloat16, kernels::DType::kBFloat16}) {
    const std::size_t bytes = values.size() * kernels::element_size(dtype);
    std::vector<char> input(bytes), output(bytes);
    kernels::narrow_from_f64(values.data(), shape.numel(), dtype, input.data());
    backend.run({dtype, shape, input.data(), output.data()});
  }
}

}  // namespace scan::server
