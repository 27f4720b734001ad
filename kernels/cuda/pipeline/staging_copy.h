// The host-side copies between a job's tensors and the pinned staging buffers. One thread moves
// ~10 GB/s, the PCIe link ~50 GB/s each way, and these copies are what bounds the pipeline, so a
// copy is split over a thread pool in page-aligned parts.
#pragma once

#include <cstddef>

#include "scan/kernels/thread_pool.h"

namespace scan::kernels::cuda_detail {

// Copies `bytes` from `source` to `destination` on `pool` (and the calling thread). `streaming`:
// non-temporal stores on x86-64, for copies far larger than the cache whose destination is read
// next by the DMA engine or a socket, never soon by this core.
void staging_copy(ThreadPool& pool, void* destination, const void* source, std::size_t bytes,
                  bool streaming);

}  // namespace scan::kernels::cuda_detail
