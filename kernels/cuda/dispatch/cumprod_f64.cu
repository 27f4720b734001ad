// One element type per translation unit: the four instantiations compile in parallel.
#include "dispatch/dispatch.cuh"

namespace scan::kernels::cuda_detail {

template KernelStatus dispatch_cumprod<Float64Traits>(const void*, void*, ScanShape, cudaStream_t);

}  // namespace scan::kernels::cuda_detail
