// Accuracy and cross-backend agreement of every backend, on fresh random inputs and MM-Rec's
// shapes, in one run (bench/RESULTS.md, "Numerics"):
//   - max and RMS relative error against a float64 cumprod of the same input (double-double for
//     float64 inputs), for torch.cumprod
//     in the input's own dtype (LibTorch's CPU accumulation: float64 for float32, float32 for the
//     16-bit types), cpu-torch and cpu-native (our backends), and cuda:0 where a GPU is present;
//   - the share of bit-identical elements and the largest ulp distance between backends.
//
//   scan_numerics_report [--filter=SUBSTRING] [--seed=N]
//
// Like scan_bench_cpu it links LibTorch itself, to call torch.cumprod as its users do.
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu_torch_backend.h"
#include "scan/kernels/cpu_cumprod.h"
#include "scan/kernels/reference.h"
#include "scan/kernels/thread_pool.h"
#if defined(SCAN_NUMERICS_WITH_CUDA)
#include <cuda_runtime_api.h>

#include "scan/kernels/cuda_cumprod.h"
#endif

namespace {

using scan::kernels::DType;
using scan::kernels::ScanShape;

struct Case {
  const char* name;
  std::vector<std::int64_t> dims;  // scanned along dim 2, or the last dim for rank < 3
  double low, high;                // decays uniform in (low, high)
};

const Case kCases[] = {
    {"MM-Rec production [2,8,32768,128], decays (0.999, 1)", {2, 8, 32768, 128}, 0.999, 1.0},
    {"MM-Rec short [2,4,1024,64], clamp [1e-6, 1-1e-6]", {2, 4, 1024, 64}, 1e-6, 1.0 - 1e-6},
    {"random [2,8,4096,128], decays (0.5, 1)", {2, 8, 4096, 128}, 0.5, 1.0},
    {"one row [4194304], decays (0.99999, 1)", {std::int64_t{1} << 22}, 0.99999, 1.0},
    // One long row is one random walk of rounding errors, so its max and RMS error swing with
    // the seed; 32 independent rows make the float64 comparison with torch.cumprod a statistic.
    {"32 rows [32,131072], decays (0.99999, 1)", {32, 131072}, 0.99999, 1.0},
};

struct Errors {
  double max_relative = 0;
  double rms_relative = 0;
};

// Relative errors over the elements whose reference is a normal number of the stored type (the
// rest carry absolute error only, see reference.h).
Errors errors_of(const std::vector<double>& reference, const void* got, DType dtype) {
  const std::vector<double> wide =
      scan::kernels::widen_to_f64(got, dtype, static_cast<std::int64_t>(reference.size()));
  const double smallest = dtype == DType::kFloat64   ? 2.3e-308
                          : dtype == DType::kFloat16 ? 6.2e-5
                                                     : 1.2e-38;
  Errors errors;
  double sum = 0;
  std::int64_t counted = 0;
  for (std::size_t at = 0; at < reference.size(); ++at) {
    const double want = reference[at];
    if (!std::isfinite(want) || std::fabs(want) < smallest) continue;
    const double relative = std::fabs(wide[at] - want) / std::fabs(want);
    errors.max_relative = std::fmax(errors.max_relative, relative);
    sum += relative * relative;
    ++counted;
  }
  errors.rms_relative = counted == 0 ? 0 : std::sqrt(sum / static_cast<double>(counted));
  return errors;
}

torch::ScalarType scalar_type(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return torch::kFloat32;
    case DType::kFloat64:
      return torch::kFloat64;
    case DType::kFloat16:
      return torch::kFloat16;
    case DType::kBFloat16:
      return torch::kBFloat16;
  }
  return torch::kFloat32;
}

struct Result {
  std::string backend;
  std::vector<unsigned char> bytes;
};

}  // namespace

int main(int argc, char** argv) {
  std::string filter;
  std::uint64_t seed = std::random_device{}();
  for (int index = 1; index < argc; ++index) {
    const std::string arg = argv[index];
    if (arg.rfind("--filter=", 0) == 0) {
      filter = arg.substr(9);
    } else if (arg.rfind("--seed=", 0) == 0) {
      seed = std::strtoull(arg.c_str() + 7, nullptr, 10);
    } else {
      std::fprintf(stderr, "unknown argument %s\n", arg.c_str());
      return 2;
    }
  }
  std::mt19937_64 generator(seed);
  scan::kernels::ThreadPool pool(std::max(0u, std::thread::hardware_concurrency() - 1));
  auto cpu_torch = scan::server::make_cpu_torch_backend();
  bool gpu = false;
#if defined(SCAN_NUMERICS_WITH_CUDA)
  gpu = scan::kernels::cuda_device_available();
#endif
  std::printf("seed %llu, LibTorch %s, %s\n\n", static_cast<unsigned long long>(seed),
              TORCH_VERSION, gpu ? "cuda:0 present" : "no GPU");
  std::printf(
      "| input | dtype | backend | max rel err | RMS rel err | identical to cpu-torch | max ulp "
      "to cpu-torch |\n|---|---|---|---:|---:|---:|---:|\n");

  for (const Case& c : kCases) {
    if (!filter.empty() && std::string(c.name).find(filter) == std::string::npos) continue;
    const int rank = static_cast<int>(c.dims.size());
    const int dim = rank >= 3 ? 2 : rank - 1;
    const ScanShape shape = scan::kernels::collapse_around(c.dims.data(), rank, dim);
    const std::int64_t count = shape.numel();
    std::uniform_real_distribution<double> decay(c.low, c.high);
    std::vector<double> drawn(static_cast<std::size_t>(count));
    for (double& value : drawn) value = decay(generator);

    for (const DType dtype :
         {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16}) {
      const std::size_t bytes =
          static_cast<std::size_t>(count) * scan::kernels::element_size(dtype);
      std::vector<unsigned char> input(bytes);
      scan::kernels::narrow_from_f64(drawn.data(), count, dtype, input.data());
      const std::vector<double> stored = scan::kernels::widen_to_f64(input.data(), dtype, count);
      std::vector<double> reference(stored.size());
      if (dtype == DType::kFloat64) {
        scan::kernels::reference_cumprod_double_double(stored.data(), reference.data(), shape);
      } else {
        scan::kernels::reference_cumprod(stored.data(), reference.data(), shape);
      }

      std::vector<Result> results;
      {
        // torch.cumprod in the input's dtype, as a user calls it (LibTorch 1.13 has no CPU Half
        // cumprod: the Half row is float32 rounded once, what torch does on the GPU).
        const torch::Tensor in = torch::from_blob(input.data(), {count}, scalar_type(dtype))
                                     .reshape({shape.outer, shape.length, shape.inner});
        const torch::Tensor out = dtype == DType::kFloat16
                                      ? torch::cumprod(in.to(torch::kFloat32), 1).to(torch::kHalf)
                                      : torch::cumprod(in, 1);
        Result r{"torch.cumprod", std::vector<unsigned char>(bytes)};
        std::memcpy(r.bytes.data(), out.contiguous().data_ptr(), bytes);
        results.push_back(std::move(r));
      }
      {
        Result r{"cpu-torch", std::vector<unsigned char>(bytes)};
        if (!cpu_torch->run({dtype, shape, input.data(), r.bytes.data()}).ok()) return 1;
        results.push_back(std::move(r));
      }
      {
        Result r{"cpu-native", std::vector<unsigned char>(bytes)};
        scan::kernels::CpuScanOptions options;
        options.pool = &pool;
        if (!scan::kernels::cpu_cumprod(input.data(), r.bytes.data(), shape, dtype, options).ok()) {
          return 1;
        }
        results.push_back(std::move(r));
      }
#if defined(SCAN_NUMERICS_WITH_CUDA)
      if (gpu) {
        Result r{"cuda:0", std::vector<unsigned char>(bytes)};
        void* device = nullptr;
        if (cudaMalloc(&device, bytes) != cudaSuccess ||
            cudaMemcpy(device, input.data(), bytes, cudaMemcpyHostToDevice) != cudaSuccess ||
            !scan::kernels::cuda_cumprod(device, device, shape, dtype, nullptr).ok() ||
            cudaMemcpy(r.bytes.data(), device, bytes, cudaMemcpyDeviceToHost) != cudaSuccess) {
          std::fprintf(stderr, "cuda:0 failed\n");
          return 1;
        }
        cudaFree(device);
        results.push_back(std::move(r));
      }
#endif
      const Result& ours = results[1];
      for (const Result& r : results) {
        const Errors errors = errors_of(reference, r.bytes.data(), dtype);
        const scan::kernels::Agreement agreement =
            scan::kernels::compare_bitwise(r.bytes.data(), ours.bytes.data(), dtype, count);
        std::printf("| %s | %s | %s | %.2e | %.2e | %.4f%% | %lld |\n", c.name,
                    scan::kernels::dtype_name(dtype), r.backend.c_str(), errors.max_relative,
                    errors.rms_relative, 100.0 * agreement.identical_share(),
                    static_cast<long long>(agreement.max_ulps));
      }
      std::fflush(stdout);
    }
  }
  return 0;
}
