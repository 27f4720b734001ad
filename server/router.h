// Chooses the backend that serves a validated request: the client's preference first, then the
// lowest predicted service time among the eligible backends. Pure decision logic over the
// registered backends: no gRPC server, no compute, so it is unit-testable with fake backends.
#pragma once

#include <grpcpp/support/status.h>

#include <memory>
#include <vector>

#include "backends/backend.h"
#include "compute_slots.h"
#include "cost_model.h"
#include "metrics.h"
#include "request_validation.h"

namespace scan::server {

// A backend together with the slots that bound its concurrency.
struct RegisteredBackend {
  std::unique_ptr<ScanBackend> backend;
  std::unique_ptr<ComputeSlots> slots;
  std::size_t index = 0;  // position in registration order, e.g. for per-backend metrics
  CostModel cost;         // unknown until calibrated or configured
};

class Router {
 public:
  // `concurrency` scans run at once on the backend; at most `max_waiting` more wait for it.
  void add_backend(std::unique_ptr<ScanBackend> backend, int concurrency,
                   int max_waiting = 1 << 20);
  void set_cost_model(std::size_t index, CostModel cost) { backends_.at(index).cost = cost; }
  // Keeps a resource the backends share (a thread pool, a device context) alive exactly as long
  // as the backends: resources are destroyed after every backend.
  void keep_alive(std::shared_ptr<void> resource) { resources_.push_back(std::move(resource)); }

  // The backend for `scan`, or FAILED_PRECONDITION when the preference cannot be met.
  grpc::Status route(const ValidatedScan& scan, RegisteredBackend** chosen);

  bool has(DeviceKind kind) const;
  std::vector<BackendDescription> describe_backends() const;
  const std::vector<RegisteredBackend>& backends() const { return backends_; }
  std::vector<RegisteredBackend>& backends() { return backends_; }

 private:
  // The backend of `kind` with the lowest predicted time for `bytes`; backends without a cost
  // model rank after those with one, in registration order.
  RegisteredBackend* cheapest_of(DeviceKind kind, double bytes);

  std::vector<std::shared_ptr<void>> resources_;  // declared first: destroyed last
  std::vector<RegisteredBackend> backends_;
};

}  // namespace scan::server
