// The GPU backend ("cuda:<ordinal>", one per usable device): the service's view of one device's
// pipeline (kernels/include/scan/kernels/cuda_pipeline.h), adding what the router needs of a
// backend: health (a device marked unhealthy after repeated errors and probed until it passes
// again), availability callbacks, and the job stats of the transfer histograms. Compiled only when
// SCAN_HAVE_CUDA; this header itself is plain C++ (no CUDA headers).
#pragma once

#include <memory>
#include <string>

#include "backends/backend.h"
#include "scan/kernels/cuda_pipeline.h"

namespace scan::server {

struct CudaBackendOptions {
  kernels::CudaPipelineOptions pipeline;
  int max_consecutive_errors = 3;      // then the device is marked unhealthy
  double probe_interval_seconds = 10;  // how often an unhealthy device is probed
  int injected_failures = 0;           // tests only: the first N jobs fail as if the device had
};

// The process's registry of host memory registered with CUDA (registrations belong to the
// process, so every device's backend and the wire pool share it), logging through spdlog.
std::shared_ptr<kernels::CudaHostRegistry> process_cuda_host_registry();

// The backend of device `ordinal`, its buffers allocated; null with *error set when that fails.
std::unique_ptr<ScanBackend> make_cuda_backend(int ordinal, const CudaBackendOptions& options,
                                               std::string* error);

}  // namespace scan::server
