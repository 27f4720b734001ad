#include <cuda.h>
#include <cuda_runtime_api.h>

#include <cstring>

#include "scan/kernels/cuda_ipc.h"

namespace scan::kernels {
namespace {

// The size of the allocation holding `data` (cuMemGetAddressRange: the runtime API has none),
// reached through the runtime's driver entry points so that nothing links libcuda itself.
bool allocation_range(void* data, void** base, std::size_t* bytes) {
  using Range = CUresult (*)(CUdeviceptr*, size_t*, CUdeviceptr);
  static const Range range = [] {
    void* function = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &function, 3020, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return static_cast<Range>(nullptr);
    }
    return reinterpret_cast<Range>(function);
  }();
  CUdeviceptr start = 0;
  if (range == nullptr ||
      range(&start, bytes, reinterpret_cast<CUdeviceptr>(data)) != CUDA_SUCCESS) {
    return false;
  }
  *base = reinterpret_cast<void*>(start);
  return true;
}

}  // namespace

std::unique_ptr<CudaIpcMapping> CudaIpcMapping::open(const std::string& handle, int device,
                                                     std::string* error) {
  if (handle.size() != kHandleBytes) {
    *error = "a CUDA IPC handle has " + std::to_string(kHandleBytes) + " bytes, got " +
             std::to_string(handle.size());
    return nullptr;
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || device < 0 || device >= devices) {
    cudaGetLastError();
    *error = "no CUDA device " + std::to_string(device) + " on the server (" +
             std::to_string(devices) + " devices)";
    return nullptr;
  }
  cudaIpcMemHandle_t ipc;
  std::memcpy(&ipc, handle.data(), sizeof ipc);
  void* data = nullptr;
  cudaError_t status = cudaSetDevice(device);
  if (status == cudaSuccess) {
    status = cudaIpcOpenMemHandle(&data, ipc, cudaIpcMemLazyEnablePeerAccess);
  }
  if (status != cudaSuccess) {
    cudaGetLastError();  // not sticky: the device stays usable
    *error = std::string("cudaIpcOpenMemHandle: ") + cudaGetErrorName(status) + ": " +
             cudaGetErrorString(status);
    return nullptr;
  }
  void* base = nullptr;
  std::size_t bytes = 0;
  if (!allocation_range(data, &base, &bytes) || base != data) {
    cudaIpcCloseMemHandle(data);
    *error = "cannot tell the size of the allocation the CUDA IPC handle exports";
    return nullptr;
  }
  return std::unique_ptr<CudaIpcMapping>(
      new CudaIpcMapping(static_cast<char*>(data), bytes, device));
}

CudaIpcMapping::~CudaIpcMapping() {
  cudaSetDevice(device_);
  cudaIpcCloseMemHandle(data_);
}

}  // namespace scan::kernels
