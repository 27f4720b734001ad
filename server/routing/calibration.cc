#include "routing/calibration.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <new>
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

namespace {

// Whole pages of float32, page-aligned: a range that CUDA registers without touching a page of
// other memory (which may be registered already, and would make the registration fail).
class PageBuffer {
 public:
  PageBuffer(std::size_t elements, const CalibrationMemory& memory) : memory_(memory) {
    const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    bytes_ = std::max(page, (elements * sizeof(float) + page - 1) / page * page);
    data_ = static_cast<float*>(std::aligned_alloc(page, bytes_));
    if (data_ == nullptr) throw std::bad_alloc();
    std::fill(data_, data_ + bytes_ / sizeof(float), 0.0f);  // paged in before it is timed
    if (memory_.adopt) memory_.adopt(data_, bytes_);
  }
  ~PageBuffer() {
    if (memory_.release) memory_.release(data_, bytes_);
    std::free(data_);
  }
  PageBuffer(const PageBuffer&) = delete;
  PageBuffer& operator=(const PageBuffer&) = delete;
  float* data() { return data_; }

 private:
  const CalibrationMemory& memory_;
  std::size_t bytes_ = 0;
  float* data_ = nullptr;
};

}  // namespace

CalibrationResult calibrate(ScanBackend& backend, const std::vector<kernels::ScanShape>& shapes,
                            const CalibrationMemory& memory) {
  constexpr int kRepetitions = 5;

  std::int64_t largest = 0;
  for (const auto& shape : shapes) largest = std::max(largest, shape.numel());
  PageBuffer input(static_cast<std::size_t>(largest), memory);
  PageBuffer output(static_cast<std::size_t>(largest), memory);
  std::mt19937 generator(12345);
  std::uniform_real_distribution<float> decay(0.5f, 1.0f);
  std::generate(input.data(), input.data() + largest, [&] { return decay(generator); });

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
