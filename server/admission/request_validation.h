// Turns an untrusted ScanRequest into a ValidatedScan, or into a refusal naming the offending field
// (the client gets it as a gRPC status: rpc/outcome_status.h). Nothing is computed before this
// passes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "admission/outcome.h"
#include "scan/kernels/types.h"
#include "scan/v1/scan.pb.h"
#include "scan/wire/limits.h"

namespace scan::server {

struct ValidationLimits {
  std::int64_t max_tensor_bytes = wire::kDefaultMaxTensorBytes;
  int max_rank = 16;
};

// A request that is safe to compute: every size is consistent and `input` holds exactly `bytes`.
struct ValidatedScan {
  kernels::DType dtype = kernels::DType::kFloat32;
  std::vector<std::int64_t> shape;
  int dim = 0;  // normalised to [0, rank)
  kernels::ScanShape view;
  std::int64_t numel = 0;
  std::size_t bytes = 0;
  // Points into the request, valid while it lives; null for a tensor in shared memory (the
  // service resolves Tensor.shared_memory) and for a ScanStream header.
  const void* input = nullptr;
  v1::BackendPreference preference = v1::BACKEND_PREFERENCE_AUTO;
};

Outcome validate_scan_request(const v1::ScanRequest& request, const ValidationLimits& limits,
                              ValidatedScan* scan);

// The same checks for the header of a ScanStream call, whose gamma.data must be empty: the bytes
// follow in chunks. scan->input is left null.
Outcome validate_scan_header(const v1::ScanRequest& header, const ValidationLimits& limits,
                             ValidatedScan* scan);

}  // namespace scan::server
