// Mapping between the wire's DataType and the kernels' DType, shared by the server and the client
// so both sides agree on what every enum value means.
#pragma once

#include <optional>

#include "scan/kernels/types.h"
#include "scan/v1/scan.pb.h"

namespace scan::v1 {

inline std::optional<kernels::DType> to_kernel_dtype(DataType wire) {
  switch (wire) {
    case DATA_TYPE_FLOAT32:
      return kernels::DType::kFloat32;
    case DATA_TYPE_FLOAT64:
      return kernels::DType::kFloat64;
    case DATA_TYPE_FLOAT16:
      return kernels::DType::kFloat16;
    case DATA_TYPE_BFLOAT16:
      return kernels::DType::kBFloat16;
    default:
      return std::nullopt;
  }
}

inline DataType to_wire_dtype(kernels::DType dtype) {
  switch (dtype) {
    case kernels::DType::kFloat32:
      return DATA_TYPE_FLOAT32;
    case kernels::DType::kFloat64:
      return DATA_TYPE_FLOAT64;
    case kernels::DType::kFloat16:
      return DATA_TYPE_FLOAT16;
    case kernels::DType::kBFloat16:
      return DATA_TYPE_BFLOAT16;
  }
  return DATA_TYPE_UNSPECIFIED;
}

}  // namespace scan::v1
