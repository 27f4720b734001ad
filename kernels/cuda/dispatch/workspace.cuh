// Host-side plumbing shared by every dtype's dispatcher: the stream-ordered workspace that holds
// look-back tile state (CUDA errors as KernelStatus come from cuda_status.h).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

#include "cuda_status.h"
#include "scan/kernels/types.h"

namespace scan::kernels::cuda_detail {

// Look-back state for one launch. Each launch gets its own allocation, stream-ordered on the
// caller's stream from a pool of ours, so concurrent launches on different streams never share
// tile flags, and a tag no earlier launch used.
struct Workspace {
  void* data = nullptr;
  unsigned long long tag = 0;
};

// `flag_bytes` leading bytes are zeroed only when `stream` is being captured into a graph: a graph
// replays one tag, so there stale flags of the previous replay would read as current.
KernelStatus acquire_workspace(std::size_t bytes, std::size_t flag_bytes, cudaStream_t stream,
                               Workspace* workspace);
KernelStatus release_workspace(const Workspace& workspace, cudaStream_t stream);

}  // namespace scan::kernels::cuda_detail
