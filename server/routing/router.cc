#include "routing/router.h"

namespace scan::server {

void Router::add_backend(std::unique_ptr<ScanBackend> backend, int concurrency, int max_waiting) {
  RegisteredBackend registered;
  registered.backend = std::move(backend);
  registered.slots = std::make_unique<ComputeSlots>(concurrency, max_waiting);
  registered.index = backends_.size();
  registered.concurrency = concurrency;
  backends_.push_back(std::move(registered));
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

double Router::predicted_completion(const RegisteredBackend& registered, double bytes,
                                    std::size_t element_bytes, double stretch) {
  const CostModel cost = registered.cost->model();
  if (!cost.known()) return 0;
  // Queued and running work is priced as if served one after another: each backend's model was
  // measured with one request using the whole device (all cores, the whole PCIe link), so
  // concurrent requests share that throughput rather than multiply it.
  const auto backlog_bytes = static_cast<double>(registered.load->bytes.load());
  const auto backlog_requests = static_cast<double>(registered.load->requests.load());
  return stretch * (backlog_requests * cost.fixed_seconds + backlog_bytes / cost.bytes_per_second +
                    registered.cost->predict_seconds(bytes, element_bytes));
}

RegisteredBackend* Router::cheapest_cpu(double bytes, std::size_t element_bytes) {
  RegisteredBackend* best = nullptr;
  double best_seconds = 0;
  for (auto& registered : backends_) {
    if (registered.backend->device_kind() != DeviceKind::kCpu) continue;
    if (!registered.backend->available()) continue;
    const bool known = registered.cost->model().known();
    const double seconds = predicted_completion(registered, bytes, element_bytes);
    if (best == nullptr) {
      best = &registered;
      best_seconds = seconds;
    } else if (known && (!best->cost->model().known() || seconds < best_seconds)) {
      best = &registered;
      best_seconds = seconds;
    }
  }
  return best;
}

RegisteredBackend* Router::least_loaded_gpu() {
  RegisteredBackend* best = nullptr;
  for (auto& registered : backends_) {
    if (registered.backend->device_kind() != DeviceKind::kGpu) continue;
    if (!registered.backend->available()) continue;
    if (best == nullptr || registered.load->bytes.load() < best->load->bytes.load()) {
      best = &registered;
    }
  }
  return best;
}

RegisteredBackend* Router::fallback_for(const RegisteredBackend& failed) {
  for (auto& registered : backends_) {
    if (&registered == &failed) continue;
    if (registered.backend->device_kind() == DeviceKind::kCpu && registered.backend->available()) {
      return &registered;
    }
  }
  return nullptr;
}

Outcome Router::route_to_gpu(int ordinal, const std::string& field, RegisteredBackend** chosen) {
  const std::string name = "cuda:" + std::to_string(ordinal);
  for (auto& registered : backends_) {
    if (registered.backend->name() != name) continue;
    if (!registered.backend->available()) {
      return Outcome::refused(Refusal::kUnavailable,
                              field + ": " + name + " holds this memory and is unavailable now");
    }
    *chosen = &registered;
    return Outcome::accepted();
  }
  return Outcome::refused(Refusal::kFailedPrecondition,
                          field + ": the server has no backend " + name);
}

Outcome Router::route(const ValidatedScan& scan, RegisteredBackend** chosen) {
  const auto bytes = static_cast<double>(scan.bytes);
  const std::size_t element_bytes = kernels::element_size(scan.dtype);
  switch (scan.preference) {
    case v1::BACKEND_PREFERENCE_GPU:
      *chosen = least_loaded_gpu();
      if (*chosen == nullptr) {
        return Outcome::refused(
            Refusal::kFailedPrecondition,
            has(DeviceKind::kGpu)
                ? "backend: GPU requested but every GPU backend is marked unhealthy"
                : "backend: GPU requested but this server has no usable GPU backend");
      }
      return Outcome::accepted();
    case v1::BACKEND_PREFERENCE_CPU:
      *chosen = cheapest_cpu(bytes, element_bytes);
      break;
    default: {
      RegisteredBackend* cpu = cheapest_cpu(bytes, element_bytes);
      RegisteredBackend* gpu = static_cast<std::int64_t>(scan.bytes) >= policy_.gpu_min_bytes
                                   ? least_loaded_gpu()
                                   : nullptr;
      if (cpu == nullptr || gpu == nullptr) {
        *chosen = gpu != nullptr ? gpu : cpu;
      } else if (gpu->cost->model().known() && cpu->cost->model().known()) {
        const double cpu_stretch = contention_ ? contention_->current() : 1.0;
        *chosen = predicted_completion(*gpu, bytes, element_bytes) <
                          predicted_completion(*cpu, bytes, element_bytes, cpu_stretch)
                      ? gpu
                      : cpu;
      } else {
        // A model is missing (calibration off or failed): the known one wins; with none known, a
        // GPU, which beats a CPU on every size that matters.
        *chosen = cpu->cost->model().known() && !gpu->cost->model().known() ? cpu : gpu;
      }
      break;
    }
  }
  if (*chosen == nullptr) {
    return Outcome::refused(Refusal::kUnavailable,
                            "backend: no backend is available on this server");
  }
  return Outcome::accepted();
}

}  // namespace scan::server
