// CUDA runtime errors as KernelStatus: the one place the kernels, the carry passes and the
// pipeline turn a cudaError_t into a message. Plain C++ (the runtime API header only), so host
// files of the pipeline include it as well as the .cu files.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "scan/kernels/types.h"

namespace scan::kernels::cuda_detail {

// kDeviceError "<what>: <error name> (<error text>)".
KernelStatus cuda_error(const std::string& what, cudaError_t error);

// The error of the last launch, if any, as a status naming `what`.
KernelStatus check_launch(const std::string& what);

}  // namespace scan::kernels::cuda_detail

// Returns from the enclosing function (which returns KernelStatus) when a CUDA runtime call fails.
#define SCAN_CUDA_TRY(what, call)                                              \
  do {                                                                         \
    const cudaError_t scan_cuda_error_ = (call);                               \
    if (scan_cuda_error_ != cudaSuccess) {                                     \
      return ::scan::kernels::cuda_detail::cuda_error(what, scan_cuda_error_); \
    }                                                                          \
  } while (false)

// Returns from the enclosing function when a call that yields a KernelStatus fails.
#define SCAN_KERNEL_TRY(call)                                                      \
  do {                                                                             \
    if (::scan::kernels::KernelStatus scan_status_ = (call); !scan_status_.ok()) { \
      return scan_status_;                                                         \
    }                                                                              \
  } while (false)
