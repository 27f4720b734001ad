#include "app/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/server_builder.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <thread>

#include "backends/cpu_native_backend.h"
#include "backends/cpu_torch_backend.h"
#include "routing/calibration.h"
#include "scan/kernels/cpu_cumprod.h"
#if SCAN_HAVE_CUDA
#include "backends/cuda_backend.h"
#endif

namespace scan::server {

namespace {
constexpr const char* kScanServiceName = "scan.v1.ScanService";

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
  const std::shared_ptr<CudaHostRegistry> registry_ = process_cuda_host_registry();
};
#endif
}  // namespace

ScanServer::ScanServer(ServerConfig config, std::unique_ptr<Router> router)
    : config_(std::move(config)),
      router_(std::move(router)),
      metrics_(std::make_unique<ServiceMetrics>(router_->describe_backends(), SCAN_VERSION)),
      inflight_bytes_(config_.effective_max_inflight_bytes()) {
  for (const auto& registered : router_->backends()) {
    metrics_->publish_cost_model(registered.index, registered.cost->model());
    const BackendSeries& series = metrics_->backend(registered.index);
    series.up->Set(registered.backend->available() ? 1 : 0);
    registered.backend->on_availability_change(
        [up = series.up](bool available) { up->Set(available ? 1 : 0); });
    if (series.device_memory_used != nullptr) {
      series.device_memory_used->Set(
          static_cast<double>(registered.backend->device_memory_bytes()));
    }
  }
}

ScanServer::~ScanServer() {
  if (server_) {
    shutdown();
    wait();
  }
  // The backends outlive metrics_ (router_ is declared first): stop them touching its gauges.
  for (const auto& registered : router_->backends()) {
    registered.backend->on_availability_change(nullptr);
  }
}

bool ScanServer::start() {
  grpc::EnableDefaultHealthCheckService(true);
  // A process-wide switch in gRPC: a server with --reflection=false must be its own process.
  if (config_.reflection) grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  std::string error;
  const auto credentials = make_server_credentials(config_, &error);
  if (!credentials) {
    spdlog::error("{}", error);
    return false;
  }
  if (!config_.auth_token_file.empty()) {
    authenticator_ = TokenAuthenticator::from_file(config_.auth_token_file, &error);
    if (!authenticator_) {
      spdlog::error("{}", error);
      return false;
    }
  }

  if (!config_.metrics_listen.empty()) {
    MetricsHttpServer::Authorize authorize_scrape;
    if (!config_.metrics_auth_token_file.empty()) {
      auto scrape_token = TokenAuthenticator::from_file(config_.metrics_auth_token_file, &error,
                                                        "--metrics-auth-token-file");
      if (!scrape_token) {
        spdlog::error("{}", error);
        return false;
      }
      authorize_scrape = [token = std::move(*scrape_token)](const char* authorization) {
        return authorization != nullptr && token.matches(authorization);
      };
    }
    if (!metrics_->expose(config_.metrics_listen, std::move(authorize_scrape), &error)) {
      spdlog::error("{}", error);
      return false;
    }
    spdlog::info("serving Prometheus metrics on http://{}/metrics (port {})",
                 config_.metrics_listen, metrics_->port());
  }
  metrics_->watch_budget(inflight_bytes_);
  service_ = std::make_unique<ScanServiceImpl>(
      *router_, ValidationLimits{config_.max_tensor_bytes, config_.max_rank}, *metrics_,
      inflight_bytes_, authenticator_ ? &*authenticator_ : nullptr,
      StreamChunking{config_.max_stream_input_chunk_bytes()});

  grpc::ServerBuilder builder;
  builder.AddListeningPort(config_.listen, credentials, &port_);
  configure_transport(builder, config_.effective_max_message_bytes());
  grpc::ResourceQuota quota("scan-server");
  quota.SetMaxThreads(config_.effective_rpc_threads());
  // gRPC reads a whole message before any handler runs, so the handler's byte budget alone cannot
  // bound memory: the memory quota makes gRPC itself slow down reading when buffers reach it.
  quota.Resize(static_cast<std::size_t>(config_.effective_max_inflight_bytes()));
  builder.SetResourceQuota(quota);
  // Abuse limits: a client may not hog a connection with streams, flood it with pings, or park
  // idle connections forever.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, config_.max_concurrent_streams);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             static_cast<int>(config_.min_client_ping_interval_seconds * 1000));
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
  if (config_.idle_connection_timeout_seconds > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                               static_cast<int>(config_.idle_connection_timeout_seconds * 1000));
  }
  WireOptions wire_options;
  wire_options.blocking_threads = config_.effective_rpc_threads();
  wire_options.stream_chunk_bytes = static_cast<std::size_t>(config_.stream_chunk_bytes);
  const auto milliseconds = [](double seconds) {
    return std::chrono::milliseconds(static_cast<std::int64_t>(std::ceil(seconds * 1000)));
  };
  wire_options.stream_progress = {milliseconds(config_.stream_first_chunk_timeout_seconds),
                                  milliseconds(config_.stream_idle_timeout_seconds)};
  wire_service_ = std::make_unique<WireScanService>(
      [this](grpc::ServerContextBase* context, v1::ScanRequest* request, v1::ScanResponse* response,
             Waiting waiting) { return service_->Scan(context, request, response, waiting); },
      static_cast<std::size_t>(config_.effective_max_inflight_bytes()),
      [this](grpc::ServerContextBase* context, const std::shared_ptr<wire::BufferPool>& buffers) {
        return service_->open_stream(context, buffers);
      },
      wire_options);
  builder.RegisterService(wire_service_.get());
#if SCAN_HAVE_CUDA
  if (config_.gpu_register_pool && router_->has(DeviceKind::kGpu)) {
    wire_service_->buffer_pool().set_listener(std::make_shared<PoolRegistrar>());
    spdlog::info(
        "GPU: pooled tensor buffers are registered with CUDA as they are first reused "
        "(--gpu-register-pool); requests in them skip the staging copies");
  }
#endif
  v1::ServerLimits limits;
  limits.set_max_tensor_bytes(config_.max_tensor_bytes);
  limits.set_max_message_bytes(config_.effective_max_message_bytes());
  limits.set_max_inflight_bytes(config_.effective_max_inflight_bytes());
  limits.set_max_rank(config_.max_rank);
  info_service_ = std::make_unique<ServerInfoService>(
      *router_, authenticator_ ? &*authenticator_ : nullptr, std::move(limits));
  builder.RegisterService(info_service_.get());

  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    spdlog::error("cannot listen on {}", config_.listen);
    server_.reset();
    return false;
  }
  auto* health = server_->GetHealthCheckService();
  health->SetServingStatus(kScanServiceName, true);
  health->SetServingStatus(true);
  return true;
}

void ScanServer::shutdown() {
  if (!server_) return;
  std::call_once(shutdown_once_, [this] { shutdown_now(); });
}

void ScanServer::shutdown_now() {
  auto* health = server_->GetHealthCheckService();
  health->SetServingStatus(kScanServiceName, false);
  health->SetServingStatus(false);
  if (config_.drain_delay_seconds > 0) {
    spdlog::info("NOT_SERVING; still accepting calls for {} s while clients move away",
                 config_.drain_delay_seconds);
    std::this_thread::sleep_for(std::chrono::duration<double>(config_.drain_delay_seconds));
  }
  // gRPC cancels calls that arrive while it shuts down, before a handler sees them; refusing new
  // calls ourselves first, for a moment, makes late clients see a retryable UNAVAILABLE instead.
  service_->stop_admitting();
  // A stream that has not sent a tensor byte loses nothing by moving to another replica now; left
  // alone, an idle one would hold the shutdown for the whole grace period.
  wire_service_->end_streams_not_started(
      {grpc::StatusCode::UNAVAILABLE, "server is shutting down; retry on another replica"});
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const auto grace = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::duration<double>(config_.shutdown_grace_seconds));
  server_->Shutdown(std::chrono::system_clock::now() + grace);
  spdlog::info("every call has ended; exiting");
}

void ScanServer::wait() {
  if (server_) server_->Wait();
}

namespace {

// GPU discovery and one backend per usable GPU. Never fails the server: without a GPU (or CUDA) it
// serves from the CPU and says why.
void add_gpu_backends(const ServerConfig& config, Router& router) {
  GpuInventory inventory;
#if SCAN_HAVE_CUDA
  if (config.gpu == "off") {
    inventory.status = "disabled by --gpu=off";
  } else {
    inventory = discover_gpus();
    CudaBackendOptions options;
    options.lanes = config.gpu_lanes;
    options.chunk_bytes = config.gpu_chunk_bytes;
    options.copy_threads = config.effective_gpu_copy_threads();
    options.streaming_copies = config.gpu_streaming_copies;
    if (config.gpu_register_pool) options.host_registry = process_cuda_host_registry();
    for (GpuDevice& device : inventory.devices) {
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
  router.set_gpu_inventory(std::move(inventory));
}

}  // namespace

std::unique_ptr<Router> make_default_router(const ServerConfig& config) {
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
  add_gpu_backends(config, *router);
  router->set_policy({config.gpu_min_bytes});

  std::vector<CostOverride> overrides;
  std::string error;
  if (!parse_cost_overrides(config.cost_models, &overrides, &error)) {
    spdlog::error("--cost-model: {}", error);  // parse_config validated it already
  }
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
    if (const CostOverride* pinned = override_for(backend.name())) {
      router->set_cost_model(index, {pinned->fixed_seconds, pinned->bytes_per_second}, {},
                             CostSource::kConfigured);
      spdlog::info("cost model of {} configured: fixed {:.1f} us + {:.2f} GB/s", backend.name(),
                   pinned->fixed_seconds * 1e6, pinned->bytes_per_second / 1e9);
      continue;
    }
    if (!choice) continue;
    const CalibrationResult calibration =
        calibrate(backend, backend.device_kind() == DeviceKind::kGpu ? gpu_calibration_shapes()
                                                                     : cpu_calibration_shapes());
    router->set_cost_model(index, calibration.model, calibration.samples);
    std::string samples;
    for (const auto& sample : calibration.samples) {
      samples += fmt::format(" {:.0f}B:{:.1f}us", sample.bytes, sample.seconds * 1e6);
    }
    spdlog::info("calibrated {}: fixed {:.1f} us + {:.2f} GB/s (medians{})", backend.name(),
                 calibration.model.fixed_seconds * 1e6, calibration.model.bytes_per_second / 1e9,
                 samples);
  }
  return router;
}

}  // namespace scan::server
