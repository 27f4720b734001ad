// The CUDA devices a process can see (discover_gpus() in cuda_pipeline.h): the server logs them,
// exports them as scan_gpu_devices and answers them in GetServerInfo. Plain data, available in
// builds without CUDA too (then empty, with the reason in `status`).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace scan::kernels {

struct GpuDevice {
  int ordinal = 0;
  std::string name;
  std::int64_t total_memory_bytes = 0;
  int compute_capability_major = 0;
  int compute_capability_minor = 0;
  int multiprocessors = 0;
  bool usable = false;  // the server serves from it (a backend "cuda:<ordinal>" exists)
  std::string detail;   // why not usable, when it is not
};

struct GpuInventory {
  std::vector<GpuDevice> devices;
  // One line for logs and clients: "1 usable GPU", "no CUDA driver (...)", "built without CUDA".
  std::string status;
};

}  // namespace scan::kernels
