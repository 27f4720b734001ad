// Asynchronous 16-byte copies from global to shared memory (cp.async, sm_80+): the data goes
// straight into shared memory without passing through registers, so a thread can have many loads
// in flight without the register cost of holding them.
#pragma once

namespace scan::kernels::cuda_detail {

// Starts copying 16 bytes from `source` (global, 16-byte aligned) to `destination` (shared,
// 16-byte aligned). The bytes are there once the issuing thread has called wait_async_copies();
// other threads see them only after a barrier on top.
__device__ __forceinline__ void async_copy_16(void* destination, const void* source) {
  const auto address = static_cast<unsigned>(__cvta_generic_to_shared(destination));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(address), "l"(source) : "memory");
}

// Waits for every async_copy_16 this thread has started.
__device__ __forceinline__ void wait_async_copies() {
  asm volatile("cp.async.wait_all;" ::: "memory");
}

}  // namespace scan::kernels::cuda_detail
