// Reading and writing NumPy .npy files (format versions 1-3), the format ML users already have.
// Supported: little-endian float16, float32 and float64, C order. NumPy has no bfloat16, so a
// bfloat16 tensor is written as float32 (exactly: every bfloat16 is a float32).
#pragma once

#include <string>
#include <string_view>

#include "scan/client/host_tensor.h"

namespace scan::client {

// On failure returns false and explains why in *error.
bool read_npy(const std::string& path, HostTensor* tensor, std::string* error);
// The same for a whole .npy file already in memory (what the fuzzer feeds it).
bool parse_npy(std::string_view bytes, HostTensor* tensor, std::string* error);
bool write_npy(const std::string& path, const HostTensor& tensor, std::string* error);

// Converts `tensor` to `dtype` element by element (round to nearest even when narrowing).
HostTensor convert_dtype(const HostTensor& tensor, kernels::DType dtype);

}  // namespace scan::client
