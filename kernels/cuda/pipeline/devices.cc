// discover_gpus(): what the CUDA runtime reports of every device (cuda_pipeline.h).
#include <cuda_runtime_api.h>

#include <string>

#include "scan/kernels/cuda_pipeline.h"

namespace scan::kernels {
namespace {

// The kernels use sm_80 features (and are built for sm_80 and newer).
constexpr int kMinComputeCapability = 8;

std::string describe_error(cudaError_t error) {
  return std::string(cudaGetErrorName(error)) + " (" + cudaGetErrorString(error) + ")";
}

}  // namespace

GpuInventory discover_gpus() {
  GpuInventory inventory;
  int count = 0;
  if (const cudaError_t error = cudaGetDeviceCount(&count); error != cudaSuccess) {
    inventory.status = "no usable GPU: " + describe_error(error);
    cudaGetLastError();
    return inventory;
  }
  int driver = 0;
  cudaDriverGetVersion(&driver);
  int usable = 0;
  for (int ordinal = 0; ordinal < count; ++ordinal) {
    GpuDevice device;
    device.ordinal = ordinal;
    cudaDeviceProp properties{};
    if (const cudaError_t error = cudaGetDeviceProperties(&properties, ordinal);
        error != cudaSuccess) {
      device.detail = std::string("cudaGetDeviceProperties: ") + cudaGetErrorName(error);
      inventory.devices.push_back(device);
      continue;
    }
    device.name = properties.name;
    device.total_memory_bytes = static_cast<std::int64_t>(properties.totalGlobalMem);
    device.compute_capability_major = properties.major;
    device.compute_capability_minor = properties.minor;
    device.multiprocessors = properties.multiProcessorCount;
    device.usable = properties.major >= kMinComputeCapability;
    if (!device.usable) {
      device.detail = "compute capability " + std::to_string(properties.major) + "." +
                      std::to_string(properties.minor) + " < " +
                      std::to_string(kMinComputeCapability) + ".0 (the kernels need sm_80+)";
    }
    usable += device.usable ? 1 : 0;
    inventory.devices.push_back(device);
  }
  inventory.status = std::to_string(usable) + " of " + std::to_string(count) +
                     " GPUs usable (driver " + std::to_string(driver / 1000) + "." +
                     std::to_string(driver % 1000 / 10) + ")";
  return inventory;
}

}  // namespace scan::kernels
