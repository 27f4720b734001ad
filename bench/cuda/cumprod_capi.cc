// A C ABI over cuda_cumprod, so torch_cumprod_bench.py can run our kernel on torch's tensors (via
// ctypes) and compare it with torch.cumprod in one process, on one input.
#include <cstdint>
#include <cstring>

#include "scan/kernels/cuda_cumprod.h"

extern "C" {

// dtype: 0 float32, 1 float64, 2 float16, 3 bfloat16 (scan::kernels::DType's order). Returns 0 on
// success; otherwise copies the message into `message` (NUL-terminated, truncated to its size).
__attribute__((visibility("default"))) int scan_cuda_cumprod(
    const void* in, void* out, std::int64_t outer, std::int64_t length, std::int64_t inner,
    int dtype, void* stream, char* message, int message_size) {
  using scan::kernels::DType;
  if (dtype < 0 || dtype > 3) return 1;
  const scan::kernels::KernelStatus status =
      scan::kernels::cuda_cumprod(in, out, scan::kernels::ScanShape{outer, length, inner},
                                  static_cast<DType>(dtype), static_cast<CUstream_st*>(stream));
  if (status.ok()) return 0;
  if (message != nullptr && message_size > 0) {
    std::strncpy(message, status.message().c_str(), static_cast<std::size_t>(message_size) - 1);
    message[message_size - 1] = '\0';
  }
  return 1 + static_cast<int>(status.code());
}
}
