// The leaf kernels each instruction-set build of cumprod_body.h provides. The planner in
// cpu_cumprod.cc (compiled for baseline x86-64) splits the tensor into pieces and calls these
// through function pointers, so no AVX code is reachable unless the CPU was checked first.
//
// `carry` and `acc` point to accumulator values, double for every dtype.
// Element offsets and strides count elements of the storage dtype.
#pragma once

#include <cstdint>

namespace scan::kernels::cpu {

struct DTypeKernels {
  // For r in [0, rows), j in [0, width): carry[j] *= in[r * stride + j]; out[...] = carry[j].
  void (*scan_tile)(const void* in, void* out, std::int64_t rows, std::int64_t width,
                    std::int64_t stride, void* carry);
  // scan_tile with non-temporal stores where `out` and `stride` keep vectors aligned (for outputs
  // larger than the caches); ends with a fence.
  void (*scan_tile_streaming)(const void* in, void* out, std::int64_t rows, std::int64_t width,
                              std::int64_t stride, void* carry);
  // acc[j] *= in[r * stride + j] for every row, without writing anything.
  void (*reduce_tile)(const void* in, std::int64_t rows, std::int64_t width, std::int64_t stride,
                      void* acc);
  // One contiguous row: out[k] = *carry * in[0] * ... * in[k]; *carry ends as the last output
  // (for float64, as the compensated product of the row, which the last output approximates).
  // `ahead` > 0: while scanning, also pull in[k + ahead] into L2, a line for every line scanned
  // (the chained scan's next block of this thread, so that multiplying it up reads from L2
  // instead of waiting on memory); 0: nothing beyond the row.
  void (*scan_row)(const void* in, void* out, std::int64_t length, void* carry, std::int64_t ahead);
  // scan_row with non-temporal stores (for outputs larger than the caches); ends with a fence.
  void (*scan_row_streaming)(const void* in, void* out, std::int64_t length, void* carry,
                             std::int64_t ahead);
  // *acc *= in[0] * ... * in[length - 1].
  void (*reduce_row)(const void* in, std::int64_t length, void* acc);
  // `rows` contiguous rows of `length` (at most kMaxShortRow) elements, vectorised across rows.
  void (*scan_short_rows)(const void* in, void* out, std::int64_t rows, std::int64_t length);
};

// Rows up to this length go through scan_short_rows (a transposed tile held on the stack).
inline constexpr std::int64_t kMaxShortRow = 64;

struct IsaKernels {
  const char* name;
  int vector_bytes;  // lanes per vector = vector_bytes / sizeof(double)
  DTypeKernels float32, float64, float16, bfloat16;
};

const IsaKernels& generic_kernels();
#if defined(SCAN_CPU_X86_ISAS)
const IsaKernels& avx2_kernels();
const IsaKernels& avx512_kernels();
// avx512_kernels() plus AVX512-BF16: only bfloat16 differs (its rounding of results).
const IsaKernels& avx512bf16_kernels();
#endif

}  // namespace scan::kernels::cpu
