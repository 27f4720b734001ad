#include "cuda_status.h"

namespace scan::kernels::cuda_detail {

KernelStatus cuda_error(const std::string& what, cudaError_t error) {
  return {KernelStatus::Code::kDeviceError,
          what + ": " + cudaGetErrorName(error) + " (" + cudaGetErrorString(error) + ")"};
}

KernelStatus check_launch(const std::string& what) {
  const cudaError_t error = cudaGetLastError();
  return error == cudaSuccess ? KernelStatus::Ok() : cuda_error(what, error);
}

}  // namespace scan::kernels::cuda_detail
