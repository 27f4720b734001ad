// Device helpers of the benchmark: random decays drawn on the device (drawing gigabytes on the host
// would dominate the run) and an empty kernel, the floor of any launch.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "bench_kernels.h"

namespace scan::bench {
namespace {

__device__ double uniform01(std::uint64_t index, std::uint64_t seed) {
  std::uint64_t z = index * 0x9e3779b97f4a7c15ULL + seed;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

template <typename T>
__device__ T from_double(double value);
template <>
__device__ float from_double<float>(double value) {
  return static_cast<float>(value);
}
template <>
__device__ double from_double<double>(double value) {
  return value;
}
template <>
__device__ __half from_double<__half>(double value) {
  return __float2half_rn(static_cast<float>(value));
}
template <>
__device__ __nv_bfloat16 from_double<__nv_bfloat16>(double value) {
  return __float2bfloat16_rn(static_cast<float>(value));
}

template <typename T>
__global__ void fill_kernel(T* data, long long count, double low, double high, std::uint64_t seed) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    data[i] = from_double<T>(low + (high - low) * uniform01(static_cast<std::uint64_t>(i), seed));
  }
}

__global__ void empty_kernel() {}

template <typename T>
cudaError_t fill(void* data, long long count, double low, double high, std::uint64_t seed,
                 cudaStream_t stream) {
  fill_kernel<T><<<1024, 256, 0, stream>>>(static_cast<T*>(data), count, low, high, seed);
  return cudaGetLastError();
}

}  // namespace

cudaError_t fill_uniform(void* data, long long count, kernels::DType dtype, double low, double high,
                         std::uint64_t seed, cudaStream_t stream) {
  switch (dtype) {
    case kernels::DType::kFloat32:
      return fill<float>(data, count, low, high, seed, stream);
    case kernels::DType::kFloat64:
      return fill<double>(data, count, low, high, seed, stream);
    case kernels::DType::kFloat16:
      return fill<__half>(data, count, low, high, seed, stream);
    case kernels::DType::kBFloat16:
      return fill<__nv_bfloat16>(data, count, low, high, seed, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_empty_kernel(cudaStream_t stream) {
  empty_kernel<<<1, 32, 0, stream>>>();
  return cudaGetLastError();
}

}  // namespace scan::bench
