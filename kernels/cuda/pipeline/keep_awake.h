// The empty kernel the pipeline launches while its keep-awake window is open
// (CudaPipelineOptions::keep_awake_seconds): any launch at all keeps the GPU out of its idle state,
// which is what makes the next request after a quiet spell fast, so it does no work.
#pragma once

#include <cuda_runtime_api.h>

namespace scan::kernels::cuda_detail {

// Queues one empty kernel (one thread) on `stream`. Returns the launch's own error rather than
// going through cudaGetLastError, so that the caller never consumes or clears an error that
// belongs to someone else's work.
cudaError_t launch_keep_awake(cudaStream_t stream);

}  // namespace scan::kernels::cuda_detail
