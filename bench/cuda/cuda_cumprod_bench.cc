// Times cuda_cumprod against a device-to-device copy of the same bytes (the floor of any scan: one
// read and one write of every element) on the shapes that matter, in one run on one GPU.
//
//   cuda_cumprod_bench [--csv FILE] [--reps N]
//
// Each figure is the median of N runs (at least 50) timed with CUDA events after warm-up; before
// every timed run a buffer twice the size of L2 is overwritten, so no run finds its input in cache.
// GB/s counts bytes read plus bytes written. The CSV feeds torch_cumprod_bench.py, which times
// torch.cumprod on the same shapes for the comparison.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "bench_kernels.h"
#include "scan/kernels/cuda_cumprod.h"

namespace {

using scan::kernels::DType;
using scan::kernels::ScanShape;

#define BENCH_CUDA(call)                                                 \
  do {                                                                   \
    const cudaError_t bench_error_ = (call);                             \
    if (bench_error_ != cudaSuccess) {                                   \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, \
                   cudaGetErrorString(bench_error_));                    \
      std::exit(1);                                                      \
    }                                                                    \
  } while (false)

struct Case {
  std::vector<std::int64_t> dims;
  int dim;
  DType dtype;
};

std::vector<Case> cases() {
  std::vector<Case> list = {
      {{2, 8, 32768, 128}, 2, DType::kFloat32},   // MM-Rec production shape, float32
      {{2, 8, 32768, 128}, 2, DType::kBFloat16},  // MM-Rec production shape, as served
      {{4, 32, 32768, 128}, 2, DType::kFloat32}, {{8, 16, 4096, 128}, 2, DType::kFloat32},
      {{2, 8, 128, 64}, 2, DType::kFloat32},  // launch-bound
  };
  for (std::int64_t length = 8; length <= 1024; length *= 2) {  // the MM-Rec note's sweep
    list.push_back({{2, 4, length, 64}, 2, DType::kFloat32});
  }
  list.push_back({{1 << 24}, 0, DType::kFloat32});  // one long contiguous row
  list.push_back({{1 << 28}, 0, DType::kFloat32});
  list.push_back({{4096, 4096}, 1, DType::kFloat32});  // many contiguous rows
  list.push_back({{4096, 8192}, 1, DType::kFloat32});
  list.push_back({{1024, 32768}, 1, DType::kFloat32});  // rows of 4 tiles, walked
  list.push_back({{1 << 28}, 0, DType::kBFloat16});     // one long row of 16-bit elements
  // float64 carries a compensated product (block/accumulator.cuh): what that costs against a copy.
  list.push_back({{2, 8, 32768, 128}, 2, DType::kFloat64});
  list.push_back({{1 << 26}, 0, DType::kFloat64});
  return list;
}

std::string dims_text(const std::vector<std::int64_t>& dims) {
  std::ostringstream text;
  text << "[";
  for (std::size_t i = 0; i < dims.size(); ++i) text << (i ? "," : "") << dims[i];
  text << "]";
  return text.str();
}

std::string short_dtype(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "f32";
    case DType::kFloat64:
      return "f64";
    case DType::kFloat16:
      return "f16";
    case DType::kBFloat16:
      return "bf16";
  }
  return "?";
}

class Timer {
 public:
  Timer(cudaStream_t stream, std::size_t flush_bytes) : stream_(stream), flush_bytes_(flush_bytes) {
    BENCH_CUDA(cudaEventCreate(&start_));
    BENCH_CUDA(cudaEventCreate(&stop_));
    BENCH_CUDA(cudaMalloc(&flush_, flush_bytes_));
  }
  ~Timer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
    cudaFree(flush_);
  }

  // Median milliseconds of `reps` runs of `op`, each after an L2 flush, after `warmup` runs.
  double median_ms(const std::function<void()>& op, int warmup, int reps) {
    for (int i = 0; i < warmup; ++i) op();
    std::vector<float> times;
    for (int i = 0; i < reps; ++i) {
      BENCH_CUDA(cudaMemsetAsync(flush_, i & 0xff, flush_bytes_, stream_));
      BENCH_CUDA(cudaEventRecord(start_, stream_));
      op();
      BENCH_CUDA(cudaEventRecord(stop_, stream_));
      BENCH_CUDA(cudaEventSynchronize(stop_));
      float ms = 0;
      BENCH_CUDA(cudaEventElapsedTime(&ms, start_, stop_));
      times.push_back(ms);
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
  }

 private:
  cudaStream_t stream_;
  std::size_t flush_bytes_;
  void* flush_ = nullptr;
  cudaEvent_t start_ = nullptr;
  cudaEvent_t stop_ = nullptr;
};

}  // namespace

int main(int argc, char** argv) {
  std::string csv_path;
  int reps = 100;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--csv" && i + 1 < argc) {
      csv_path = argv[++i];
    } else if (arg == "--reps" && i + 1 < argc) {
      reps = std::max(50, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: %s [--csv FILE] [--reps N>=50]\n", argv[0]);
      return 2;
    }
  }
  if (!scan::kernels::cuda_device_available()) {
    std::fprintf(stderr, "no usable CUDA device: %s\n",
                 scan::kernels::cuda_device_description().c_str());
    return 1;
  }
  int device = 0;
  cudaDeviceProp props = {};
  BENCH_CUDA(cudaGetDevice(&device));
  BENCH_CUDA(cudaGetDeviceProperties(&props, device));
  std::printf("device: %s\n", scan::kernels::cuda_device_description().c_str());

  cudaStream_t stream;
  BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  Timer timer(stream, 2 * static_cast<std::size_t>(props.l2CacheSize));

  const double empty_ms =
      timer.median_ms([&] { BENCH_CUDA(scan::bench::launch_empty_kernel(stream)); }, 20, reps);
  std::printf("empty kernel launch: %.2f us (median of %d)\n\n", empty_ms * 1e3, reps);

  std::ofstream csv;
  if (!csv_path.empty()) {
    csv.open(csv_path);
    csv << "dims,dim,dtype,outer,length,inner,bytes,ours_ms,copy_ms,empty_ms\n";
  }
  std::printf("%-24s %-5s %10s %10s %9s %10s %9s %8s\n", "shape", "dtype", "MiB r+w", "ours us",
              "ours GB/s", "copy us", "copy GB/s", "vs copy");

  std::uint64_t seed = 1;
  for (const Case& c : cases()) {
    const ScanShape shape =
        scan::kernels::collapse_around(c.dims.data(), static_cast<int>(c.dims.size()), c.dim);
    const std::size_t bytes =
        static_cast<std::size_t>(shape.numel()) * scan::kernels::element_size(c.dtype);
    void* in = nullptr;
    void* out = nullptr;
    BENCH_CUDA(cudaMalloc(&in, bytes));
    BENCH_CUDA(cudaMalloc(&out, bytes));
    // Decays near one, as MM-Rec's gamma: products stay normal numbers over the whole scan.
    BENCH_CUDA(scan::bench::fill_uniform(in, shape.numel(), c.dtype, 0.9999, 1.0, seed++, stream));

    const int case_reps = bytes >= (std::size_t{1} << 30) ? 50 : reps;
    const double ours_ms = timer.median_ms(
        [&] {
          const scan::kernels::KernelStatus status =
              scan::kernels::cuda_cumprod(in, out, shape, c.dtype, stream);
          if (!status.ok()) {
            std::fprintf(stderr, "cuda_cumprod failed: %s\n", status.message().c_str());
            std::exit(1);
          }
        },
        5, case_reps);
    const double copy_ms = timer.median_ms(
        [&] { BENCH_CUDA(cudaMemcpyAsync(out, in, bytes, cudaMemcpyDeviceToDevice, stream)); }, 5,
        case_reps);
    BENCH_CUDA(cudaFree(in));
    BENCH_CUDA(cudaFree(out));

    const double moved = 2.0 * static_cast<double>(bytes);
    const double ours_gbs = moved / (ours_ms * 1e-3) / 1e9;
    const double copy_gbs = moved / (copy_ms * 1e-3) / 1e9;
    std::printf("%-24s %-5s %10.2f %10.2f %9.0f %10.2f %9.0f %7.0f%%\n",
                (dims_text(c.dims) + " dim" + std::to_string(c.dim)).c_str(),
                short_dtype(c.dtype).c_str(), moved / (1 << 20), ours_ms * 1e3, ours_gbs,
                copy_ms * 1e3, copy_gbs, 100.0 * copy_ms / ours_ms);
    std::fflush(stdout);
    if (csv.is_open()) {
      std::string dims = dims_text(c.dims);
      std::replace(dims.begin(), dims.end(), ',', 'x');
      csv << dims << "," << c.dim << "," << short_dtype(c.dtype) << "," << shape.outer << ","
          << shape.length << "," << shape.inner << "," << bytes << "," << ours_ms << "," << copy_ms
          << "," << empty_ms << "\n";
    }
  }
  BENCH_CUDA(cudaStreamDestroy(stream));
  return 0;
}
