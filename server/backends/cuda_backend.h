// The GPU backend ("cuda:<ordinal>", one per usable device) and GPU discovery. Compiled only when
// SCAN_HAVE_CUDA; this header itself is plain C++ (no CUDA headers), like cuda_cumprod.h.
//
// Everything a request needs is allocated when the backend is made: per device a few "lanes" (one
// request each at a time), each with a ring of CUDA streams, pinned host staging buffers and device
// buffers, so the request path never calls cudaMalloc or cudaHostAlloc. A request is cut into
// pieces (chunk_plan.h) that flow through the ring: while piece i is copied in, piece i-1 is
// scanned and piece i-2 copied out, so a large tensor costs about one PCIe transfer rather than the
// sum of three. Host-side staging copies (request -> pinned, pinned -> response) run on a small
// thread pool so they keep up with the PCIe link.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "backends/backend.h"
#include "backends/gpu_inventory.h"

namespace scan::server {

// Host memory registered with CUDA once (cudaHostRegister, portable to every device) and kept so:
// the server registers its wire buffer pool here, and a job whose input or output lies in a
// registered range is copied by DMA straight from or into it instead of through the pinned staging
// buffers (which halves the host memory traffic of a request). Thread-safe.
class CudaHostRegistry {
 public:
  virtual ~CudaHostRegistry() = default;
  // Queues [data, data + bytes) for registration on a background thread (registering costs ~70
  // ms/GiB): until that is done, jobs over it take the staging path. A range that cannot be
  // registered (e.g. it shares a page with a registered one) just stays unregistered.
  virtual void register_async(const void* data, std::size_t bytes) = 0;
  // Forgets the range: waits for its registration to finish (if under way) and for the jobs using
  // it, then unregisters it. The memory may be freed once this returns.
  virtual void unregister(const void* data, std::size_t bytes) = 0;
  // Bytes registered now.
  virtual std::int64_t registered_bytes() const = 0;
  // Jobs (inputs and outputs counted apart) that were copied straight from or into registered
  // memory so far.
  virtual std::int64_t direct_transfers() const = 0;
  // Waits until every queued registration has finished (tests, benchmarks).
  virtual void wait_idle() = 0;
};

// A registry of its own (tests); the server uses the process's one (registrations are per process).
std::unique_ptr<CudaHostRegistry> make_cuda_host_registry();
std::shared_ptr<CudaHostRegistry> process_cuda_host_registry();

struct CudaBackendOptions {
  int lanes = 2;                                     // requests served at once per device
  int slots_per_lane = 4;                            // pieces of one request in flight
  std::int64_t chunk_bytes = std::int64_t{8} << 20;  // staging buffer size (largest piece)
  int copy_threads = 16;                             // host threads copying to/from staging buffers
  bool streaming_copies = true;        // non-temporal stores for those copies (x86-64)
  int max_consecutive_errors = 3;      // then the device is marked unhealthy
  double probe_interval_seconds = 10;  // how often an unhealthy device is probed
  int injected_failures = 0;           // tests only: the first N requests fail as if the device had
  // Jobs over memory registered here skip the staging copies (null: always stage).
  std::shared_ptr<CudaHostRegistry> host_registry;
};

// Every CUDA device the runtime sees, with `usable` set for those the kernels run on (compute
// capability 8.0 or newer). No driver or no device is a normal answer (empty, status says why).
GpuInventory discover_gpus();

// The backend of device `ordinal`, its buffers allocated; null with *error set when that fails.
std::unique_ptr<ScanBackend> make_cuda_backend(int ordinal, const CudaBackendOptions& options,
                                               std::string* error);

}  // namespace scan::server
