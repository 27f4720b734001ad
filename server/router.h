// Chooses the backend that serves a validated request. Pure decision logic over the registered
// backends: no gRPC server, no compute, so it is unit-testable with fake backends.
#pragma once

#include <grpcpp/support/status.h>

#include <memory>
#include <vector>

#include "backends/backend.h"
#include "compute_slots.h"
#include "metrics.h"
#include "request_validation.h"

namespace scan::server {

// A backend together with the slots that bound its concurrency.
struct RegisteredBackend {
  std::unique_ptr<ScanBackend> backend;
  std::unique_ptr<ComputeSlots> slots;
  std::size_t index = 0;  // position in registration order, e.g. for per-backend metrics
};

class Router {
 public:
  void add_backend(std::unique_ptr<ScanBackend> backend, int concurrency);

  // The backend for `scan`, or FAILED_PRECONDITION when the preference cannot be met.
  grpc::Status route(const ValidatedScan& scan, RegisteredBackend** chosen);

  bool has(DeviceKind kind) const;
  std::vector<BackendDescription> describe_backends() const;
  const std::vector<RegisteredBackend>& backends() const { return backends_; }

 private:
  RegisteredBackend* first_of(DeviceKind kind);

  std::vector<RegisteredBackend> backends_;
};

}  // namespace scan::server
