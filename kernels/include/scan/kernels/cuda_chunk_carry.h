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

// out[k] = in[k] as float64 for `count` kFloat32, kFloat16 or kBFloat16 elements (exact). Pieces
// that need a carry are scanned in float64, so that the carry multiplies an unrounded product and
// each output is rounded once, as in a whole-tensor scan: rounding the piece's scan to its storage
// type first and again after the carry would round twice.
KernelStatus cuda_widen_to_f64(const void* in, DType dtype, double* out, std::int64_t count,
                               CudaStream stream);

// For a piece of `rows` x `columns` (row-major) whose own inclusive scan, in float64, is `scanned`:
//   out[r, c] = scanned[r, c] * carry_in[c], stored as `out_dtype` (rounded to nearest even,
//   through float32 for the 16-bit types);
//   carry_out[c] = scanned[rows - 1, c] * carry_in[c], kept in float64.
// `carry_in` null means a carry of 1 (the first piece of a block); `carry_out` null means no later
// piece needs one. `out` may equal `scanned` when `out_dtype` is kFloat64. Device pointers; queued
// on `stream`.
KernelStatus cuda_apply_carry(const double* scanned, void* out, DType out_dtype, std::int64_t rows,
                              std::int64_t columns, const double* carry_in, double* carry_out,
                              CudaStream stream);

}  // namespace scan::kernels
