// Host API of the CUDA cumprod kernels. Plain C++: includable without nvcc and without the CUDA
// headers, so the server and tests can call it from translation units that g++ compiles.
#pragma once

#include <string>

#include "scan/kernels/types.h"

// The CUDA runtime's stream handle is `typedef struct CUstream_st* cudaStream_t`; naming the struct
// keeps this header free of <cuda_runtime_api.h> while accepting a cudaStream_t unchanged.
struct CUstream_st;

namespace scan::kernels {

using CudaStream = CUstream_st*;

// out[o, l, i] = prod_{k <= l} in[o, k, i] over the (outer, length, inner) view of a contiguous
// tensor, for every DType. float16 and bfloat16 accumulate in float32 and are stored rounded to
// nearest even in their own type, as torch.cumprod does; float32 and float64 accumulate in float64
// (for float32 that removes a rounding bias of blocked products near 1, see scan_traits.cuh). `in`
// and `out` are device pointers on the current device and may be equal (in-place); partial overlap
// is not supported. The work is queued on `stream` and nothing synchronises: the returned status
// reports argument and launch errors; errors of the kernel's execution surface at the caller's next
// synchronisation. A zero-element shape is a no-op that returns Ok.
KernelStatus cuda_cumprod(const void* in, void* out, ScanShape shape, DType dtype,
                          CudaStream stream);

// True when the CUDA runtime sees a device these kernels run on (compute capability 8.0 or newer).
// Never throws or aborts: a missing driver or no device reads as false.
bool cuda_device_available();

// One line naming the current device ("NVIDIA H100 80GB HBM3, sm_90, 132 SMs"), or why none can be
// used. For logs and benchmark reports.
std::string cuda_device_description();

}  // namespace scan::kernels
