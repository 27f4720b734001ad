// Widening and carry passes of the chunked GPU pipeline (see cuda_chunk_carry.h). Both are simple
// elementwise grid-stride loops: they touch each byte of a piece once in device memory, which is
// ~50x faster than the PCIe copies they sit between, so they are written for clarity.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <string>

#include "cuda_status.h"
#include "scan/kernels/cuda_chunk_carry.h"

namespace scan::kernels {
namespace {

constexpr int kThreads = 256;
// Enough blocks to fill any current GPU several times over; the loops stride past the rest.
constexpr std::int64_t kMaxBlocks = 4096;

int blocks_for(std::int64_t count) {
  return static_cast<int>(std::clamp<std::int64_t>(ceil_div(count, kThreads), 1, kMaxBlocks));
}

template <typename T>
__device__ inline T from_double(double value);
template <>
__device__ inline float from_double<float>(double value) {
  return static_cast<float>(value);
}
template <>
__device__ inline double from_double<double>(double value) {
  return value;
}
// Through float32, as every backend rounds the 16-bit types (scan_traits.cuh).
template <>
__device__ inline __half from_double<__half>(double value) {
  return __float2half_rn(static_cast<float>(value));
}
template <>
__device__ inline __nv_bfloat16 from_double<__nv_bfloat16>(double value) {
  return __float2bfloat16_rn(static_cast<float>(value));
}

__device__ inline double to_double(float value) { return value; }
__device__ inline double to_double(__half value) { return __half2float(value); }
__device__ inline double to_double(__nv_bfloat16 value) { return __bfloat162float(value); }

template <typename In>
__global__ void widen_kernel(const In* in, double* out, std::int64_t count) {
  for (std::int64_t index = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; index < count;
       index += std::int64_t{gridDim.x} * blockDim.x) {
    out[index] = to_double(in[index]);
  }
}

template <typename Out>
__global__ void apply_carry_kernel(const double* scanned, Out* out, std::int64_t rows,
                                   std::int64_t columns, const double* carry_in,
                                   double* carry_out) {
  const std::int64_t count = rows * columns;
  const std::int64_t last_row_start = (rows - 1) * columns;
  for (std::int64_t index = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; index < count;
       index += std::int64_t{gridDim.x} * blockDim.x) {
    const std::int64_t column = index % columns;
    double value = scanned[index];
    if (carry_in != nullptr) value *= carry_in[column];
    out[index] = from_double<Out>(value);
    // carry_out is never carry_in (the caller alternates two buffers), so no thread reads what
    // another writes here.
    if (carry_out != nullptr && index >= last_row_start) carry_out[column] = value;
  }
}

template <typename Out>
KernelStatus launch_apply(const double* scanned, void* out, std::int64_t rows, std::int64_t columns,
                          const double* carry_in, double* carry_out, cudaStream_t stream) {
  apply_carry_kernel<Out><<<blocks_for(rows * columns), kThreads, 0, stream>>>(
      scanned, static_cast<Out*>(out), rows, columns, carry_in, carry_out);
  return cuda_detail::check_launch("cuda_apply_carry");
}

template <typename In>
KernelStatus launch_widen(const void* in, double* out, std::int64_t count, cudaStream_t stream) {
  widen_kernel<<<blocks_for(count), kThreads, 0, stream>>>(static_cast<const In*>(in), out, count);
  return cuda_detail::check_launch("cuda_widen_to_f64");
}

}  // namespace

KernelStatus cuda_widen_to_f64(const void* in, DType dtype, double* out, std::int64_t count,
                               CudaStream stream) {
  if (count < 0 || (count > 0 && (in == nullptr || out == nullptr))) {
    return {KernelStatus::Code::kInvalidArgument, "cuda_widen_to_f64: bad count or pointer"};
  }
  if (count == 0) return KernelStatus::Ok();
  switch (dtype) {
    case DType::kFloat32:
      return launch_widen<float>(in, out, count, stream);
    case DType::kFloat16:
      return launch_widen<__half>(in, out, count, stream);
    case DType::kBFloat16:
      return launch_widen<__nv_bfloat16>(in, out, count, stream);
    case DType::kFloat64:
      break;
  }
  return {KernelStatus::Code::kUnsupported, "cuda_widen_to_f64: float64 needs no widening"};
}

KernelStatus cuda_apply_carry(const double* scanned, void* out, DType out_dtype, std::int64_t rows,
                              std::int64_t columns, const double* carry_in, double* carry_out,
                              CudaStream stream) {
  if (rows < 0 || columns < 0 || (rows * columns > 0 && (scanned == nullptr || out == nullptr)) ||
      (carry_in != nullptr && carry_in == carry_out)) {
    return {KernelStatus::Code::kInvalidArgument, "cuda_apply_carry: bad shape or pointers"};
  }
  if (rows == 0 || columns == 0) return KernelStatus::Ok();
  switch (out_dtype) {
    case DType::kFloat32:
      return launch_apply<float>(scanned, out, rows, columns, carry_in, carry_out, stream);
    case DType::kFloat64:
      return launch_apply<double>(scanned, out, rows, columns, carry_in, carry_out, stream);
    case DType::kFloat16:
      return launch_apply<__half>(scanned, out, rows, columns, carry_in, carry_out, stream);
    case DType::kBFloat16:
      return launch_apply<__nv_bfloat16>(scanned, out, rows, columns, carry_in, carry_out, stream);
  }
  return {KernelStatus::Code::kUnsupported, "cuda_apply_carry: unknown dtype"};
}

}  // namespace scan::kernels
