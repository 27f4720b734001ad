// Shared vocabulary of every scan kernel (CPU and CUDA): element types, the (outer, length, inner)
// view of a tensor scanned along one dim, and the status a kernel launcher returns instead of
// aborting. Pure C++: no gRPC, no protobuf, no LibTorch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

namespace scan::kernels {

enum class DType : std::uint8_t { kFloat32, kFloat64, kFloat16, kBFloat16 };

constexpr std::size_t element_size(DType dtype) {
  switch (dtype) {
    case DType::kFloat64:
      return 8;
    case DType::kFloat32:
      return 4;
    case DType::kFloat16:
    case DType::kBFloat16:
      return 2;
  }
  return 0;
}

constexpr const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat64:
      return "float64";
    case DType::kFloat32:
      return "float32";
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
  }
  return "unknown";
}

// A contiguous row-major tensor scanned along `dim` is, without any copy, `outer` independent
// blocks of `length` rows of `inner` contiguous elements: element (o, l, i) lives at
// (o * length + l) * inner + i. Every kernel works on this view so it never needs the rank.
struct ScanShape {
  std::int64_t outer = 1;
  std::int64_t length = 1;
  std::int64_t inner = 1;

  constexpr std::int64_t numel() const { return outer * length * inner; }
};

// Collapses `shape` (rank `rank`) around the already normalised, in-range `dim`.
inline ScanShape collapse_around(const std::int64_t* shape, int rank, int dim) {
  ScanShape view;
  for (int axis = 0; axis < dim; ++axis) view.outer *= shape[axis];
  view.length = shape[dim];
  for (int axis = dim + 1; axis < rank; ++axis) view.inner *= shape[axis];
  return view;
}

// a / b rounded up, for a >= 0 and b > 0: how many parts of b cover a.
constexpr std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

class KernelStatus {
 public:
  enum class Code { kOk, kInvalidArgument, kUnsupported, kDeviceError };

  KernelStatus() = default;
  KernelStatus(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static KernelStatus Ok() { return {}; }
  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

}  // namespace scan::kernels
