// The yardstick: a plain sequential float64 cumprod, independent of every optimised kernel and of
// LibTorch. Tests and `scan-client --check` compare against it.
#pragma once

#include <cstdint>
#include <vector>

#include "scan/kernels/types.h"

namespace scan::kernels {

// Widens `count` elements stored as `dtype` to float64.
std::vector<double> widen_to_f64(const void* data, DType dtype, std::int64_t count);

// Narrows float64 values into `dtype` storage (round to nearest even), `out` holding count elements.
void narrow_from_f64(const double* values, std::int64_t count, DType dtype, void* out);

// out[o, l, i] = prod_{k <= l} in[o, k, i], computed in float64 in sequence order.
void reference_cumprod(const double* in, double* out, ScanShape shape);

}  // namespace scan::kernels
