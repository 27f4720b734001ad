// Chooses the backend that serves a validated request: the client's preference first, then the
// lowest predicted completion time (backlog + service time for this size) among the available
// backends. Pure decision logic over the registered backends: no gRPC server, no compute, so it is
// unit-testable with fake backends.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "admission/compute_slots.h"
#include "admission/outcome.h"
#include "admission/request_validation.h"
#include "backends/backend.h"
#include "routing/cost_model.h"
#include "routing/cpu_contention.h"

namespace scan::server {

// Work routed to a backend and not finished yet (waiting for a slot or running).
struct BackendLoad {
  std::atomic<std::int64_t> bytes{0};
  std::atomic<std::int64_t> requests{0};
};

// A backend together with the slots that bound its concurrency, its cost model and its load.
struct RegisteredBackend {
  std::unique_ptr<ScanBackend> backend;
  std::unique_ptr<ComputeSlots> slots;
  std::size_t index = 0;  // position in registration order, e.g. for per-backend metrics
  int concurrency = 1;
  std::unique_ptr<CostTracker> cost = std::make_unique<CostTracker>();  // unknown until calibrated
  std::unique_ptr<BackendLoad> load = std::make_unique<BackendLoad>();
};

struct RoutingPolicy {
  // AUTO sends tensors smaller than this to a CPU whatever the models say (0: models decide).
  std::int64_t gpu_min_bytes = 0;
};

// Counts a request in its backend's load for a scope (from routing until the answer is ready), so
// that the next routing decisions see it as backlog.
class LoadLease {
 public:
  LoadLease(BackendLoad& load, std::int64_t bytes) : load_(load), bytes_(bytes) {
    load_.bytes.fetch_add(bytes_, std::memory_order_relaxed);
    load_.requests.fetch_add(1, std::memory_order_relaxed);
  }
  ~LoadLease() {
    load_.bytes.fetch_sub(bytes_, std::memory_order_relaxed);
    load_.requests.fetch_sub(1, std::memory_order_relaxed);
  }
  LoadLease(const LoadLease&) = delete;
  LoadLease& operator=(const LoadLease&) = delete;

 private:
  BackendLoad& load_;
  const std::int64_t bytes_;
};

class Router {
 public:
  // `concurrency` scans run at once on the backend; at most `max_waiting` more wait for it.
  void add_backend(std::unique_ptr<ScanBackend> backend, int concurrency,
                   int max_waiting = 1 << 20);
  // Sets a backend's model: from calibration (refreshed by observations while serving) or from
  // configuration (pinned).
  void set_cost_model(std::size_t index, CostModel cost, std::vector<CostSample> samples = {},
                      CostSource source = CostSource::kCalibrated) {
    backends_.at(index).cost->reset(cost, std::move(samples), source);
  }
  CostModel cost_model(std::size_t index) const { return backends_.at(index).cost->model(); }
  // Feeds an observed service time of backend `index`; true when its model changed.
  bool observe(std::size_t index, double bytes, double seconds, std::size_t element_bytes = 4) {
    return backends_.at(index).cost->observe(bytes, seconds, element_bytes);
  }
  void set_policy(RoutingPolicy policy) { policy_ = policy; }
  // AUTO then prices CPU backends by what the rest of the process leaves them (null: as calibrated
  // and observed alone).
  void set_cpu_contention(std::shared_ptr<CpuContention> contention) {
    contention_ = std::move(contention);
  }
  const RoutingPolicy& policy() const { return policy_; }
  // Keeps a resource the backends share (a thread pool, a device context) alive exactly as long
  // as the backends: resources are destroyed after every backend.
  void keep_alive(std::shared_ptr<void> resource) { resources_.push_back(std::move(resource)); }

  // The backend for `scan`; refused (kFailedPrecondition) when the preference cannot be met.
  Outcome route(const ValidatedScan& scan, RegisteredBackend** chosen);
  // Where a request that failed on `failed` (a device error) is retried: the first available CPU
  // backend (the `to` of scan_backend_fallbacks_total), or null.
  RegisteredBackend* fallback_for(const RegisteredBackend& failed);
  // The backend of GPU `ordinal` ("cuda:<ordinal>"), for tensors already in its memory; refused
  // (FAILED_PRECONDITION naming `field`) when it is absent or unavailable.
  Outcome route_to_gpu(int ordinal, const std::string& field, RegisteredBackend** chosen);

  // Predicted seconds until a request of `bytes` sent to `registered` now would be answered: the
  // backlog (its queued and running work, as the model prices it) plus its own service time, the
  // whole stretched by `stretch`. Unknown models predict 0.
  static double predicted_completion(const RegisteredBackend& registered, double bytes,
                                     std::size_t element_bytes = 4, double stretch = 1);

  bool has(DeviceKind kind) const;
  std::vector<BackendDescription> describe_backends() const;
  const std::vector<RegisteredBackend>& backends() const { return backends_; }
  std::vector<RegisteredBackend>& backends() { return backends_; }

 private:
  // The available CPU backend with the lowest predicted completion for `bytes`; backends without a
  // cost model rank after those with one, in registration order.
  RegisteredBackend* cheapest_cpu(double bytes, std::size_t element_bytes);
  // The available GPU with the least outstanding bytes (ties: registration order).
  RegisteredBackend* least_loaded_gpu();

  std::vector<std::shared_ptr<void>> resources_;  // declared first: destroyed last
  std::vector<RegisteredBackend> backends_;
  RoutingPolicy policy_;
  std::shared_ptr<CpuContention> contention_;
};

}  // namespace scan::server
