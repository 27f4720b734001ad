// Device passes that let a scan run in pieces along the scanned dim: the GPU backend streams a
// large tensor through the device in chunks (copy-in, scan, copy-out overlapping), and a chunk
// that starts in the middle of a scanned block must continue the product of the rows before it.
// Each piece is scanned on its own with cuda_cumprod, then cuda_apply_carry multiplies its rows by
// the running product of the earlier pieces (the "carry", one double per column) and hands on the
// new carry. Plain C++ header, like cuda_cumprod.h.
#pragma once

#include <cstdint>

#include "scan/kernels/cuda_cumprod.h"
#include "scan/kernels/types.h"

namespace scan::kernels {

// out[k] = in[k] as float32 for `count` kFloat16 or kBFloat16 elements (exact). 16-bit pieces are
// scanned in float32 so that the carry multiplies an unrounded product: rounding the piece's scan
// to 16 bits first and again after the carry would round twice.
KernelStatus cuda_widen_to_f32(const void* in, DType dtype, float* out, std::int64_t count,
                               CudaStream stream);

// For a piece of `rows` x `columns` (row-major) whose own inclusive scan is `scanned`:
//   out[r, c] = scanned[r, c] * carry_in[c], stored as `out_dtype` (rounded to nearest even);
//   carry_out[c] = scanned[rows - 1, c] * carry_in[c], kept in float64.
// `carry_in` null means a carry of 1 (the first piece of a block); `carry_out` null means no later
// piece needs one. Supported (scanned, out) pairs: (f32, f32), (f64, f64), (f32, f16), (f32, bf16).
// `out` may equal `scanned` when both types match. Device pointers; queued on `stream`.
KernelStatus cuda_apply_carry(const void* scanned, DType scanned_dtype, void* out, DType out_dtype,
                              std::int64_t rows, std::int64_t columns, const double* carry_in,
                              double* carry_out, CudaStream stream);

}  // namespace scan::kernels
