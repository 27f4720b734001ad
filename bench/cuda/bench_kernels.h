// Device helpers of the CUDA benchmark (bench_kernels.cu).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "scan/kernels/types.h"

namespace scan::bench {

// Fills `count` elements with values uniform in (low, high), a pure function of (index, seed).
cudaError_t fill_uniform(void* data, long long count, kernels::DType dtype, double low, double high,
                         std::uint64_t seed, cudaStream_t stream);

// One block of one warp doing nothing: what a launch costs by itself.
cudaError_t launch_empty_kernel(cudaStream_t stream);

}  // namespace scan::bench
