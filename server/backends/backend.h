// What every compute backend (cpu-torch, cpu-native, cuda:N) offers the router and the service.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "scan/kernels/types.h"

namespace scan::server {

// What a backend measured while running a job, beyond the wall time the service sees (for the
// transfer histograms of GPU backends).
struct ScanJobStats {
  double host_to_device_seconds = -1;  // < 0: nothing copied to a device
  double device_to_host_seconds = -1;
};

// One scan to run: `input` and `output` hold view.numel() elements of `dtype` each. They may be
// any address (a backend copies to satisfy its own alignment needs) and never overlap.
struct ScanJob {
  kernels::DType dtype = kernels::DType::kFloat32;
  kernels::ScanShape view;
  const void* input = nullptr;
  void* output = nullptr;
  ScanJobStats* stats = nullptr;  // optional: filled by backends that copy to a device
  // True: `input` and `output` are memory of the backend's own GPU (a client's CUDA IPC region),
  // scanned where they lie. Only GPU backends get such jobs; they may equal each other (in place).
  bool device_memory = false;
};

enum class DeviceKind { kCpu, kGpu };

// What the metrics need to know of a registered backend to label its series.
struct BackendDescription {
  std::string name;
  DeviceKind kind = DeviceKind::kCpu;
};

class ScanBackend {
 public:
  virtual ~ScanBackend() = default;

  // Stable identifier reported to clients and used as a metric label, e.g. "cpu-torch".
  virtual const std::string& name() const = 0;
  virtual DeviceKind device_kind() const = 0;
  // Runs the scan on the calling thread. Thread-safe: the service calls it from many threads.
  virtual kernels::KernelStatus run(const ScanJob& job) = 0;

  // False while the backend cannot serve (a GPU marked unhealthy after repeated errors); the
  // router skips it until it is available again.
  virtual bool available() const { return true; }
  // `callback(available)` is called, from any thread, whenever available() changes (the metric
  // scan_backend_up follows it). Backends whose availability never changes ignore it.
  virtual void on_availability_change(std::function<void(bool)> callback) { (void)callback; }
  // Device memory the backend holds (its buffer pools), for scan_gpu_memory_used_bytes.
  virtual std::int64_t device_memory_bytes() const { return 0; }
  // True when results below the dtype's smallest normal number come out as 0 instead of
  // subnormals (--cpu-flush-subnormals; see kernels/include/scan/kernels/float_env.h).
  virtual bool flushes_subnormals() const { return false; }
  // CPU time the backend's scans have used so far, every thread that computed counted, in
  // seconds. The router counts the rest of the process's CPU time as work that competes with CPU
  // scans for cores (routing/cpu_contention.h); a backend that cannot tell returns 0, and its
  // work is then counted with the rest.
  virtual double scan_cpu_seconds() const { return 0; }
};

}  // namespace scan::server
