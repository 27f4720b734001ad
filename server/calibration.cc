#include "calibration.h"

#include <algorithm>
#include <chrono>
#include <random>

namespace scan::server {

CalibrationResult calibrate(ScanBackend& backend) {
  // outer = batch x heads, then seq_len, then head_dim: the production layout from launch-bound
  // (1 KiB) to bandwidth-bound (4 MiB) sizes.
  const kernels::ScanShape shapes[] = {{1, 16, 16}, {8, 64, 64}, {8, 1024, 64}, {16, 512, 128}};
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

}  // namespace scan::server
