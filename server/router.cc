#include "router.h"

namespace scan::server {

void Router::add_backend(std::unique_ptr<ScanBackend> backend, int concurrency, int max_waiting) {
  backends_.push_back({std::move(backend),
                       std::make_unique<ComputeSlots>(concurrency, max_waiting),
                       backends_.size(),
                       {}});
}

std::vector<BackendDescription> Router::describe_backends() const {
  std::vector<BackendDescription> descriptions;
  for (const auto& registered : backends_) {
    descriptions.push_back({registered.backend->name(), registered.backend->device_kind()});
  }
  return descriptions;
}

bool Router::has(DeviceKind kind) const {
  for (const auto& registered : backends_) {
    if (registered.backend->device_kind() == kind) return true;
  }
  return false;
}

RegisteredBackend* Router::cheapest_of(DeviceKind kind, double bytes) {
  RegisteredBackend* best = nullptr;
  for (auto& registered : backends_) {
    if (registered.backend->device_kind() != kind) continue;
    if (best == nullptr) {
      best = &registered;
    } else if (registered.cost.known() &&
               (!best->cost.known() ||
                registered.cost.predict_seconds(bytes) < best->cost.predict_seconds(bytes))) {
      best = &registered;
    }
  }
  return best;
}

grpc::Status Router::route(const ValidatedScan& scan, RegisteredBackend** chosen) {
  const auto bytes = static_cast<double>(scan.bytes);
  switch (scan.preference) {
    case v1::BACKEND_PREFERENCE_GPU:
      *chosen = cheapest_of(DeviceKind::kGpu, bytes);
      if (*chosen == nullptr) {
        return {grpc::StatusCode::FAILED_PRECONDITION,
                "backend: GPU requested but this server has no usable GPU backend"};
      }
      return grpc::Status::OK;
    case v1::BACKEND_PREFERENCE_CPU:
      *chosen = cheapest_of(DeviceKind::kCpu, bytes);
      break;
    default:
      // Until the cost-model router lands, AUTO prefers a GPU when one is registered.
      *chosen = cheapest_of(DeviceKind::kGpu, bytes);
      if (*chosen == nullptr) *chosen = cheapest_of(DeviceKind::kCpu, bytes);
      break;
  }
  if (*chosen == nullptr) {
    return {grpc::StatusCode::UNAVAILABLE, "backend: no backend is registered on this server"};
  }
  return grpc::Status::OK;
}

}  // namespace scan::server
