// The native CPU backend ("cpu-native"): the vectorised kernels of kernels/cpu on the process's
// shared thread pool.
#pragma once

#include <memory>

#include "backends/backend.h"
#include "scan/kernels/thread_pool.h"

namespace scan::server {

// `pool` must outlive the backend; each request uses at most `max_parallelism` threads of it.
std::unique_ptr<ScanBackend> make_cpu_native_backend(kernels::ThreadPool& pool, int max_parallelism,
                                                     bool flush_subnormals = false);

}  // namespace scan::server
