// Device memory of another process, opened from the CUDA IPC handle it exported
// (cudaIpcGetMemHandle; torch's storage._share_cuda_()), so that the server can scan a client's
// device tensor where it lies. Plain C++ (no CUDA headers); defined only in CUDA builds.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace scan::kernels {

class CudaIpcMapping {
 public:
  // The size of a cudaIpcMemHandle_t.
  static constexpr std::size_t kHandleBytes = 64;

  // Opens `handle` (kHandleBytes) on device `device`. Null with *error set when CUDA refuses (a
  // handle of this very process, of another device, or freed by its owner). The allocation's
  // size is what the handle exports: the whole cudaMalloc block, found with
  // cudaMemGetAddressRange, which bounds every use.
  static std::unique_ptr<CudaIpcMapping> open(const std::string& handle, int device,
                                              std::string* error);
  ~CudaIpcMapping();  // cudaIpcCloseMemHandle
  CudaIpcMapping(const CudaIpcMapping&) = delete;
  CudaIpcMapping& operator=(const CudaIpcMapping&) = delete;

  char* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }
  int device() const { return device_; }

 private:
  CudaIpcMapping(char* data, std::size_t bytes, int device)
      : data_(data), bytes_(bytes), device_(device) {}

  char* data_;
  std::size_t bytes_;
  int device_;
};

}  // namespace scan::kernels
