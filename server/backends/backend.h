// What every compute backend (cpu-torch, cpu-native, cuda:N) offers the router and the service.
#pragma once

#include <string>

#include "scan/kernels/types.h"

namespace scan::server {

// One scan to run: `input` and `output` hold view.numel() elements of `dtype` each. They may be
// any address (a backend copies to satisfy its own alignment needs) and never overlap.
struct ScanJob {
  kernels::DType dtype = kernels::DType::kFloat32;
  kernels::ScanShape view;
  const void* input = nullptr;
  void* output = nullptr;
};

enum class DeviceKind { kCpu, kGpu };

class ScanBackend {
 public:
  virtual ~ScanBackend() = default;

  // Stable identifier reported to clients and used as a metric label, e.g. "cpu-torch".
  virtual const std::string& name() const = 0;
  virtual DeviceKind device_kind() const = 0;
  // Runs the scan on the calling thread. Thread-safe: the service calls it from many threads.
  virtual kernels::KernelStatus run(const ScanJob& job) = 0;
};

}  // namespace scan::server
