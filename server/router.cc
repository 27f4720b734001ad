#include "router.h"

namespace scan::server {

void Router::add_backend(std::unique_ptr<ScanBackend> backend, int concurrency) {
  backends_.push_back(
      {std::move(backend), std::make_unique<ComputeSlots>(concurrency), backends_.size()});
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

RegisteredBackend* Router::first_of(DeviceKind kind) {
  for (auto& registered : backends_) {
    if (registered.backend->device_kind() == kind) return &registered;
  }
  return nullptr;
}

grpc::Status Router::route(const ValidatedScan& scan, RegisteredBackend** chosen) {
  switch (scan.preference) {
    case v1::BACKEND_PREFERENCE_GPU:
      *chosen = first_of(DeviceKind::kGpu);
      if (*chosen == nullptr) {
        return {grpc::StatusCode::FAILED_PRECONDITION,
                "backend: GPU requested but this server has no usable GPU backend"};
      }
      return grpc::Status::OK;
    case v1::BACKEND_PREFERENCE_CPU:
      *chosen = first_of(DeviceKind::kCpu);
      break;
    default:
      // Until the cost-model router lands, AUTO prefers a GPU when one is registered.
      *chosen = first_of(DeviceKind::kGpu);
      if (*chosen == nullptr) *chosen = first_of(DeviceKind::kCpu);
      break;
  }
  if (*chosen == nullptr) {
    return {grpc::StatusCode::UNAVAILABLE, "backend: no backend is registered on this server"};
  }
  return grpc::Status::OK;
}

}  // namespace scan::server
