// A tensor in host memory as the wire carries it (row-major, little-endian bytes), with the
// helpers clients need around a scan: random decays to send and a check of the answer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "scan/kernels/reference.h"
#include "scan/kernels/types.h"

namespace scan::client {

struct HostTensor {
  kernels::DType dtype = kernels::DType::kFloat32;
  std::vector<std::int64_t> shape;
  std::string data;

  std::int64_t numel() const;
};

// Decays drawn uniformly from (low, high), rounded into `dtype`.
HostTensor random_gamma(kernels::DType dtype, const std::vector<std::int64_t>& shape, double low,
                        double high, std::uint64_t seed);

// Checks `output` against a float64 cumprod of `input` along `dim` (already normalised), using
// kernels::cumprod_tolerance_flushed for the scanned length: a server may flush subnormal results
// to zero (--cpu-flush-subnormals), which the check accepts.
kernels::Comparison check_cumprod(const HostTensor& input, const HostTensor& output, int dim,
                                  kernels::Tolerance* tolerance_used = nullptr);

// Parses "f32|float32|f64|float64|f16|float16|bf16|bfloat16".
bool parse_dtype(const std::string& text, kernels::DType* dtype);

std::string format_shape(const std::vector<std::int64_t>& shape);

}  // namespace scan::client
