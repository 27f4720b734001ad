// The GPU pipeline: host tensors scanned on one CUDA device in pieces, and the host memory
// registry that lets pieces skip the staging copies. Plain C++ (no CUDA headers), like
// cuda_cumprod.h; defined only in CUDA builds (scan_kernels_cuda).
//
// Everything a job needs is allocated when the pipeline is made: a few "lanes" (one job each at a
// time), each with a ring of CUDA streams, pinned host staging buffers and device buffers, so a job
// never calls cudaMalloc or cudaHostAlloc. A job is cut into pieces (chunk_plan.h) that flow
// through the ring: while piece i is copied in, piece i-1 is scanned and piece i-2 copied out, so
// a large tensor costs about one PCIe transfer rather than the sum of three. Host-side staging
// copies (input -> pinned, pinned -> output) run on a small thread pool so they keep up with the
// PCIe link.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "scan/kernels/gpu_inventory.h"
#include "scan/kernels/types.h"

namespace scan::kernels {

// Where the pipeline's occasional news goes (kernels do no logging of their own): the server
// hands in its logger; null drops the messages.
enum class PipelineLogLevel { kDebug, kInfo };
using PipelineLog = std::function<void(PipelineLogLevel, const std::string&)>;

// Host memory registered with CUDA once (cudaHostRegister, portable to every device) and kept so:
// the server registers its wire buffer pool here, and a job whose input or output lies in a
// registered range is copied by DMA straight from or into it instead of through the pinned staging
// buffers (which halves the host memory traffic of a job). Thread-safe. Registrations belong to
// the process, so a server keeps one registry for all its devices.
class CudaHostRegistry {
 public:
  // Keeps a registered range registered while a job copies from or into it.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept : registry_(other.registry_), key_(other.key_) {
      other.registry_ = nullptr;
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    bool held() const { return registry_ != nullptr; }

   private:
    friend class CudaHostRegistry;
    Lease(CudaHostRegistry* registry, std::uintptr_t key) : registry_(registry), key_(key) {}
    CudaHostRegistry* registry_ = nullptr;
    std::uintptr_t key_ = 0;
  };

  explicit CudaHostRegistry(PipelineLog log = {});
  ~CudaHostRegistry();
  CudaHostRegistry(const CudaHostRegistry&) = delete;
  CudaHostRegistry& operator=(const CudaHostRegistry&) = delete;

  // Queues [data, data + bytes) for registration on a background thread (registering costs ~70
  // ms/GiB): until that is done, jobs over it take the staging path. A range that cannot be
  // registered (e.g. it shares a page with a registered one) just stays unregistered.
  void register_async(const void* data, std::size_t bytes);
  // Forgets the range: waits for its registration to finish (if under way) and for the jobs using
  // it, then unregisters it. The memory may be freed once this returns.
  void unregister(const void* data, std::size_t bytes);
  // A lease on the registered range holding [data, data + bytes), or none (staging path).
  Lease hold(const void* data, std::size_t bytes);

  // Bytes registered now.
  std::int64_t registered_bytes() const;
  // Jobs (inputs and outputs counted apart) that were copied straight from or into registered
  // memory so far.
  std::int64_t direct_transfers() const { return direct_transfers_.load(); }
  // Waits until every queued registration has finished (tests, benchmarks).
  void wait_idle();

 private:
  enum class State { kQueued, kRegistering, kRegistered, kFailed, kLeaving };
  struct Entry {
    std::size_t bytes = 0;
    State state = State::kQueued;
    int users = 0;
  };

  void release(std::uintptr_t key);
  void work();

  const PipelineLog log_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::uintptr_t, Entry> entries_;  // by start address
  std::deque<std::uintptr_t> queue_;
  int registering_ = 0;
  std::int64_t registered_bytes_ = 0;
  std::atomic<std::int64_t> direct_transfers_{0};
  bool stopping_ = false;
  std::thread worker_;
};

struct CudaPipelineOptions {
  int lanes = 2;                                     // jobs served at once
  int slots_per_lane = 4;                            // pieces of one job in flight
  std::int64_t chunk_bytes = std::int64_t{8} << 20;  // staging buffer size (largest piece)
  int copy_threads = 16;                             // host threads copying to/from staging buffers
  bool streaming_copies = true;  // non-temporal stores for those copies (x86-64)
  // Jobs over memory registered here skip the staging copies (null: always stage).
  std::shared_ptr<CudaHostRegistry> host_registry;
  // For this long after the last GPU work (a job, or the self-test, so also startup and the
  // server's warm-up), an empty kernel is launched every 10 ms on a lowest-priority stream of its
  // own. On the H100 host a GPU idle for 0.5-2 s took 2.5-2.7x as long for its next 64 KiB round
  // trip (copy in, kernel, copy out, sync) as back to back, and 1.3-1.55x when an empty kernel ran
  // every 1-100 ms during the idle time: the first small request after a quiet spell otherwise
  // pays about twice. The cost is power: the GPU stays out of its idle state for the window after
  // each burst of work (none once the window has passed). 0 disables.
  double keep_awake_seconds = 10;
};

// One host tensor to scan: `input` and `output` hold shape.numel() elements of `dtype` in host
// memory (they may be the same buffer).
struct CudaPipelineJob {
  DType dtype = DType::kFloat32;
  ScanShape shape;
  const void* input = nullptr;
  void* output = nullptr;
};

// Device time of a job's copies, summed over its pieces.
struct CudaTransferTimes {
  double host_to_device_seconds = 0;
  double device_to_host_seconds = 0;
};

class CudaPipeline {
 public:
  // The pipeline of device `ordinal`, its buffers allocated and its paths checked by self_test();
  // null with *status set when that fails.
  static std::unique_ptr<CudaPipeline> create(int ordinal, const CudaPipelineOptions& options,
                                              KernelStatus* status);
  ~CudaPipeline();
  CudaPipeline(const CudaPipeline&) = delete;
  CudaPipeline& operator=(const CudaPipeline&) = delete;

  // Scans `job` (waits for a free lane first). kDeviceError when CUDA fails; the lane is clean
  // again afterwards either way.
  KernelStatus run(const CudaPipelineJob& job, CudaTransferTimes* times = nullptr);

  // Scans `job` whose input and output are memory of this pipeline's device (a client's, opened
  // from a CUDA IPC handle): one kernel on a lane's stream, no copies; returns once it is done.
  KernelStatus run_on_device(const CudaPipelineJob& job);

  // Scans small tensors through every path of the pipeline (whole blocks; rows carried across
  // pieces; rows split into column ranges; 16-bit widening) and checks them against the float64
  // reference: the start-up check of a device, and the health probe of an unhealthy one.
  KernelStatus self_test();

  int lanes() const;
  int slots_per_lane() const;
  std::int64_t device_bytes() const;  // allocated at creation, for the whole life
  std::int64_t pinned_bytes() const;

 private:
  struct Impl;
  explicit CudaPipeline(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Every CUDA device the runtime sees, with `usable` set for those the kernels run on (compute
// capability 8.0 or newer). No driver or no device is a normal answer (empty, status says why).
GpuInventory discover_gpus();

}  // namespace scan::kernels
