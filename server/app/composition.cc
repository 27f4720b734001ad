#include "app/composition.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <utility>

#include "backends/cpu_native_backend.h"
#include "backends/cpu_torch_backend.h"
#include "routing/calibration.h"
#include "scan/kernels/cpu_cumprod.h"
#include "scan/kernels/thread_pool.h"
#if SCAN_HAVE_CUDA
#include "backends/cuda_backend.h"
#include "scan/kernels/cuda_ipc.h"
#endif

namespace scan::server {

namespace {

#if SCAN_HAVE_CUDA
// --gpu-register-pool: the wire pool's buffers are registered with CUDA while pooled, so GPU jobs
// DMA straight from the request and into the response.
class PoolRegistrar final : public wire::BufferPool::Listener {
 public:
  void kept(const void* data, std::size_t bytes) override {
    registry_->register_async(data, bytes);
  }
  void dropped(const void* data, std::size_t bytes) override { registry_->unregister(data, bytes); }

 private:
  const std::shared_ptr<kernels::CudaHostRegistry> registry_ = process_cuda_host_registry();
};
#endif

// Calibration's tensors registered with CUDA, as the pool's are (--gpu-register-pool): the GPU is
// timed on the DMA path that pooled requests take, not on its staging copies. Where registration
// fails the timing falls back to staging, as a request would.
CalibrationMemory registered_calibration_memory() {
  CalibrationMemory memory;
#if SCAN_HAVE_CUDA
  const std::shared_ptr<kernels::CudaHostRegistry> registry = process_cuda_host_registry();
  memory.adopt = [registry](const void* data, std::size_t bytes) {
    registry->register_async(data, bytes);
    registry->wait_idle();
  };
  memory.release = [registry](const void* data, std::size_t bytes) {
    registry->unregister(data, bytes);
  };
#endif
  return memory;
}

// GPU discovery and one backend per usable GPU. Never fails the server: without a GPU (or CUDA) it
// serves from the CPU and says why.
kernels::GpuInventory add_gpu_backends(const ServerConfig& config, Router& router) {
  kernels::GpuInventory inventory;
#if SCAN_HAVE_CUDA
  if (config.gpu == "off") {
    inventory.status = "disabled by --gpu=off";
  } else {
    // Every kernel loaded when the CUDA context is made, not at its first launch: with CUDA's
    // default lazy loading, the first request of each dtype and shape class paid for loading its
    // kernels (0.5-0.7 ms seen on the H200). Set before the first CUDA call; an operator's own
    // setting wins.
    setenv("CUDA_MODULE_LOADING", "EAGER", /*overwrite=*/0);
    inventory = kernels::discover_gpus();
    CudaBackendOptions options;
    options.pipeline.lanes = config.gpu_lanes;
    options.pipeline.chunk_bytes = config.gpu_chunk_bytes;
    options.pipeline.copy_threads = config.effective_gpu_copy_threads();
    options.pipeline.streaming_copies = config.gpu_streaming_copies;
    options.pipeline.keep_awake_seconds = config.gpu_keep_awake_seconds;
    if (config.gpu_register_pool) options.pipeline.host_registry = process_cuda_host_registry();
    for (kernels::GpuDevice& device : inventory.devices) {
      spdlog::info("GPU {}: {}, {:.1f} GiB, compute capability {}.{}, {} SMs{}{}", device.ordinal,
                   device.name, static_cast<double>(device.total_memory_bytes) / (1 << 30),
                   device.compute_capability_major, device.compute_capability_minor,
                   device.multiprocessors, device.usable ? "" : ": not usable, ", device.detail);
      if (!device.usable) continue;
      std::string error;
      auto backend = make_cuda_backend(device.ordinal, options, &error);
      if (!backend) {
        device.usable = false;
        device.detail = "backend setup failed: " + error;
        spdlog::error("GPU {}: {}", device.ordinal, device.detail);
        continue;
      }
      router.add_backend(std::move(backend), config.gpu_lanes, config.max_queue);
    }
  }
#else
  (void)config;
  inventory.status = "built without CUDA";
#endif
  if (!router.has(DeviceKind::kGpu)) {
    spdlog::info("no GPU backend ({}): serving from the CPU", inventory.status);
  } else {
    spdlog::info("GPUs: {}", inventory.status);
  }
  return inventory;
}

}  // namespace

ServingBackends compose_backends(const ServerConfig& config) {
  auto router = std::make_unique<Router>();
  const int slots = config.effective_worker_threads();
  if (config.cpu_backend != "cpu-torch") {
    auto pool = std::make_shared<kernels::ThreadPool>();
    router->add_backend(
        make_cpu_native_backend(*pool, pool->max_parallelism(), config.cpu_flush_subnormals), slots,
        config.max_queue);
    router->keep_alive(std::move(pool));
    spdlog::info("cpu-native: {} kernels, up to {} threads per request",
                 kernels::cpu_isa_name(kernels::cpu_best_isa()),
                 kernels::ThreadPool::default_workers() + 1);
  }
  if (config.cpu_backend != "cpu-native") {
    router->add_backend(make_cpu_torch_backend(config.cpu_flush_subnormals), slots,
                        config.max_queue);
  }
  kernels::GpuInventory gpus = add_gpu_backends(config, *router);
  router->set_policy({config.gpu_min_bytes});
  if (config.route_cpu_contention && router->has(DeviceKind::kGpu) &&
      router->has(DeviceKind::kCpu)) {
    Router* backends = router.get();  // owns the contention estimate, so outlives its probe
    auto contention = std::make_shared<CpuContention>(
        kernels::ThreadPool::default_workers() + 1, process_usage_probe([backends] {
          double seconds = 0;
          for (const RegisteredBackend& registered : backends->backends()) {
            seconds += registered.backend->scan_cpu_seconds();
          }
          return seconds;
        }));
    contention->start_sampling();
    router->set_cpu_contention(std::move(contention));
  }

  const std::vector<CostOverride>& overrides = config.cost_overrides;
  auto override_for = [&](const std::string& name) -> const CostOverride* {
    for (const auto& entry : overrides) {
      if (entry.backend == name) return &entry;
    }
    return nullptr;
  };
  for (const auto& entry : overrides) {
    bool found = false;
    for (const auto& registered : router->backends())
      found |= registered.backend->name() == entry.backend;
    if (!found) spdlog::warn("--cost-model: no backend named {} on this server", entry.backend);
  }
  // With a single backend there is nothing to choose, so startup skips the timing.
  const bool choice = router->backends().size() > 1;
  for (std::size_t index = 0; index < router->backends().size(); ++index) {
    ScanBackend& backend = *router->backends()[index].backend;
    if (config.warm_start) warm_every_dtype(backend);
    if (const CostOverride* pinned = override_for(backend.name())) {
      router->set_cost_model(index, {pinned->fixed_seconds, pinned->bytes_per_second}, {},
                             CostSource::kConfigured);
      spdlog::info("cost model of {} configured: fixed {:.1f} us + {:.2f} GB/s", backend.name(),
                   pinned->fixed_seconds * 1e6, pinned->bytes_per_second / 1e9);
      continue;
    }
    if (!choice) continue;
    const bool gpu = backend.device_kind() == DeviceKind::kGpu;
    const CalibrationMemory memory =
        gpu && config.gpu_register_pool ? registered_calibration_memory() : CalibrationMemory{};
    const CalibrationResult calibration =
        calibrate(backend, gpu ? gpu_calibration_shapes() : cpu_calibration_shapes(), memory);
    router->set_cost_model(index, calibration.model, calibration.samples);
    std::string samples;
    for (const auto& sample : calibration.samples) {
      samples += fmt::format(" {:.0f}B:{:.1f}us", sample.bytes, sample.seconds * 1e6);
    }
    spdlog::info("calibrated {}{}: fixed {:.1f} us + {:.2f} GB/s (medians{})", backend.name(),
                 memory.adopt ? " on CUDA-registered buffers, as pooled requests are served" : "",
                 calibration.model.fixed_seconds * 1e6, calibration.model.bytes_per_second / 1e9,
                 samples);
  }
  return {std::move(router), std::move(gpus)};
}

std::shared_ptr<wire::BufferPool::Listener> make_gpu_pool_registrar() {
#if SCAN_HAVE_CUDA
  return std::make_shared<PoolRegistrar>();
#else
  return nullptr;
#endif
}

shared_memory::MappingHooks make_gpu_mapping_hooks() {
  shared_memory::MappingHooks hooks;
#if SCAN_HAVE_CUDA
  const std::shared_ptr<kernels::CudaHostRegistry> registry = process_cuda_host_registry();
  hooks.mapped = [registry](const void* data, std::size_t bytes) {
    registry->register_async(data, bytes);
  };
  hooks.unmapping = [registry](const void* data, std::size_t bytes) {
    registry->unregister(data, bytes);
  };
#endif
  return hooks;
}

std::function<bool(const std::string&, int, shared_memory::DeviceMapping*, std::string*)>
make_cuda_ipc_opener() {
#if SCAN_HAVE_CUDA
  return [](const std::string& handle, int device, shared_memory::DeviceMapping* mapping,
            std::string* error) {
    std::shared_ptr<kernels::CudaIpcMapping> opened =
        kernels::CudaIpcMapping::open(handle, device, error);
    if (opened == nullptr) return false;
    mapping->data = opened->data();
    mapping->bytes = opened->bytes();
    mapping->keep = std::move(opened);
    return true;
  };
#else
  return {};
#endif
}

void wait_gpu_pool_registered() {
#if SCAN_HAVE_CUDA
  process_cuda_host_registry()->wait_idle();
#endif
}

}  // namespace scan::server
