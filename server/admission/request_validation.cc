#include "admission/request_validation.h"

#include <fmt/format.h>

#include <limits>
#include <string>

#include "scan/wire/dtype.h"

namespace scan::server {
namespace {

bool multiply_overflows(std::int64_t a, std::int64_t b, std::int64_t* product) {
  return __builtin_mul_overflow(a, b, product);
}

// Where a request's tensor bytes are: in the message itself (Scan), or to follow in ScanStream
// chunks, where the reassembly checks their count.
enum class DataLocation { kInMessage, kInChunks };

Outcome validate(const v1::ScanRequest& request, const ValidationLimits& limits,
                 DataLocation data_location, ValidatedScan* scan);

}  // namespace

Outcome validate_scan_request(const v1::ScanRequest& request, const ValidationLimits& limits,
                              ValidatedScan* scan) {
  return validate(request, limits, DataLocation::kInMessage, scan);
}

Outcome validate_scan_header(const v1::ScanRequest& header, const ValidationLimits& limits,
                             ValidatedScan* scan) {
  if (!header.gamma().data().empty()) {
    return Outcome::invalid(
        "header.gamma.data: must be empty in ScanStream; send the tensor's bytes as chunks");
  }
  // Every message starts with the field it is about; in a stream that field is inside `header`.
  return validate(header, limits, DataLocation::kInChunks, scan).prefixed("header.");
}

namespace {

Outcome validate(const v1::ScanRequest& request, const ValidationLimits& limits,
                 DataLocation data_location, ValidatedScan* scan) {
  if (request.op() != v1::SCAN_OP_UNSPECIFIED && request.op() != v1::SCAN_OP_CUMPROD) {
    return Outcome::invalid(
        fmt::format("op: unsupported scan op {}", static_cast<int>(request.op())));
  }
  if (!v1::BackendPreference_IsValid(request.backend())) {
    return Outcome::invalid(
        fmt::format("backend: unknown backend preference {}", static_cast<int>(request.backend())));
  }
  if (!request.has_gamma()) return Outcome::invalid("gamma: required tensor is missing");
  const v1::Tensor& gamma = request.gamma();

  const auto dtype = v1::to_kernel_dtype(gamma.dtype());
  if (!dtype) {
    return Outcome::invalid(fmt::format(
        "gamma.dtype: {} is not a supported data type (expected FLOAT32, FLOAT64, FLOAT16 or "
        "BFLOAT16)",
        gamma.dtype() == v1::DATA_TYPE_UNSPECIFIED ? std::string("UNSPECIFIED")
                                                   : std::to_string(gamma.dtype())));
  }

  const int rank = gamma.shape_size();
  if (rank == 0) return Outcome::invalid("gamma.shape: empty; a scan needs at least one dimension");
  if (rank > limits.max_rank) {
    return Outcome::invalid(fmt::format("gamma.shape: rank {} exceeds the server's maximum of {}",
                                        rank, limits.max_rank));
  }
  std::int64_t numel = 1;
  // Zero sizes are legal, but the other sizes must still multiply without overflow: kernels
  // collapse the shape into (outer, length, inner) products before looking at the element count.
  std::int64_t nonzero_product = 1;
  for (int axis = 0; axis < rank; ++axis) {
    const std::int64_t size = gamma.shape(axis);
    if (size < 0)
      return Outcome::invalid(fmt::format("gamma.shape[{}]: size {} is negative", axis, size));
    if (size == 0) {
      numel = 0;
    } else if (multiply_overflows(nonzero_product, size, &nonzero_product)) {
      return Outcome::invalid("gamma.shape: the element count overflows a 64-bit integer");
    }
  }
  if (numel != 0) numel = nonzero_product;
  const auto element_bytes = static_cast<std::int64_t>(kernels::element_size(*dtype));
  std::int64_t expected_bytes = 0;
  if (multiply_overflows(numel, element_bytes, &expected_bytes)) {
    return Outcome::invalid("gamma.shape: the tensor's byte size overflows a 64-bit integer");
  }
  const bool in_region = gamma.has_shared_memory();
  if (in_region && data_location == DataLocation::kInChunks) {
    return Outcome::invalid(
        "gamma.shared_memory: ScanStream carries the tensor's bytes; use Scan for a tensor in "
        "shared memory");
  }
  if (request.has_output() && data_location == DataLocation::kInChunks) {
    return Outcome::invalid(
        "output: ScanStream returns the result's bytes; use Scan to write it to shared memory");
  }
  if (in_region && !gamma.data().empty()) {
    return Outcome::invalid(
        "gamma.data: must be empty when gamma.shared_memory gives the tensor's bytes");
  }
  if (in_region) {
    const std::int64_t referenced = gamma.shared_memory().byte_size();
    if (referenced != expected_bytes) {
      return Outcome::invalid(fmt::format(
          "gamma.shared_memory.byte_size: {} bytes, but shape and dtype need {} ({} x {} bytes "
          "of {})",
          referenced, expected_bytes, numel, element_bytes, kernels::dtype_name(*dtype)));
    }
  }
  if (request.has_output() && request.output().byte_size() != expected_bytes) {
    return Outcome::invalid(
        fmt::format("output.byte_size: {} bytes, but the result needs {} ({} x {} bytes of {})",
                    request.output().byte_size(), expected_bytes, numel, element_bytes,
                    kernels::dtype_name(*dtype)));
  }
  if (data_location == DataLocation::kInMessage && !in_region &&
      static_cast<std::uint64_t>(expected_bytes) != gamma.data().size()) {
    return Outcome::invalid(fmt::format(
        "gamma.data: holds {} bytes but shape and dtype need {} ({} x {} "
        "bytes of {})",
        gamma.data().size(), expected_bytes, numel, element_bytes, kernels::dtype_name(*dtype)));
  }
  if (expected_bytes > limits.max_tensor_bytes) {
    return Outcome::refused(
        Refusal::kResourceExhausted,
        fmt::format("gamma: {} bytes exceed the server's tensor limit of {} bytes", expected_bytes,
                    limits.max_tensor_bytes));
  }

  const int dim = request.dim();
  if (dim < -rank || dim >= rank) {
    return Outcome::invalid(
        fmt::format("dim: {} is out of range for a rank-{} tensor (expected {}..{})", dim, rank,
                    -rank, rank - 1));
  }

  scan->dtype = *dtype;
  scan->shape.assign(gamma.shape().begin(), gamma.shape().end());
  scan->dim = dim < 0 ? dim + rank : dim;
  scan->view = kernels::collapse_around(scan->shape.data(), rank, scan->dim);
  scan->numel = numel;
  scan->bytes = static_cast<std::size_t>(expected_bytes);
  // A tensor in shared memory is located by the service, which holds the region registry.
  scan->input =
      data_location == DataLocation::kInMessage && !in_region ? gamma.data().data() : nullptr;
  scan->preference = request.backend();
  return Outcome::accepted();
}

}  // namespace

}  // namespace scan::server
