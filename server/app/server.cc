#include "app/server.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/server_builder.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "scan/v1/scan.grpc.pb.h"
#include "scan/wire/dtype.h"

namespace scan::server {

namespace {
constexpr const char* kScanServiceName = "scan.v1.ScanService";

// 128 random bits in hex: the warm-up calls' credential (ScanServiceImpl::set_warm_up_token).
std::string random_token() {
  std::random_device entropy;
  std::string token;
  for (int word = 0; word < 4; ++word) token += fmt::format("{:08x}", entropy());
  return token;
}

// Where a client in this process reaches the listener: the listen address, its wildcard host made
// loopback. Empty with TLS: a client here holds no certificate the server would take (mutual TLS)
// and no name the server's certificate vouches for.
std::string own_listener_target(const ServerConfig& config, int port) {
  if (!config.tls_cert.empty()) return {};
  if (config.listen.rfind("unix:", 0) == 0 || config.listen.rfind("unix-abstract:", 0) == 0) {
    return config.listen;
  }
  std::string host = config.listen.substr(0, config.listen.rfind(':'));
  if (host.empty() || host == "0.0.0.0" || host == "*") host = "127.0.0.1";
  if (host == "[::]" || host == "::") host = "[::1]";
  return fmt::format("{}:{}", host, port);
}

}  // namespace

ScanServer::ScanServer(ServerConfig config, ServingBackends backends)
    : config_(std::move(config)),
      router_(std::move(backends.router)),
      gpus_(std::move(backends.gpus)),
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
  if (config_.allow_shared_memory) {
    const bool gpus = router_->has(DeviceKind::kGpu);
    shared_memory::MappingHooks hooks;
    if (gpus && config_.gpu_register_pool) hooks = make_gpu_mapping_hooks();
    if (gpus) hooks.open_cuda = make_cuda_ipc_opener();
    shared_memory_ = std::make_unique<shared_memory::Registry>(
        shared_memory::RegistryLimits{config_.shared_memory_max_regions,
                                      config_.shared_memory_max_bytes},
        std::move(hooks));
    spdlog::warn(
        "shared memory allowed (--allow-shared-memory): callers with this server's credentials "
        "may have it map POSIX shared-memory objects of this host; at most {} regions, {} MiB",
        config_.shared_memory_max_regions, config_.shared_memory_max_bytes >> 20);
  }
  service_ = std::make_unique<ScanServiceImpl>(
      *router_, ValidationLimits{config_.max_tensor_bytes, config_.max_rank}, *metrics_,
      inflight_bytes_, authenticator_ ? &*authenticator_ : nullptr,
      StreamChunking{config_.max_stream_input_chunk_bytes()}, shared_memory_.get());
  const std::string warm_up_token = config_.warm_start ? random_token() : std::string();
  service_->set_warm_up_token(warm_up_token);

  grpc::ServerBuilder builder;
  builder.AddListeningPort(config_.listen, credentials, &port_);
  configure_transport(builder, config_.effective_max_message_bytes());
  grpc::ResourceQuota quota("scan-server");
  quota.SetMaxThreads(config_.effective_rpc_threads());
  // gRPC reads a whole message before any handler runs, so the handler's byte budget alone cannot
  // bound memory: the memory quota makes gRPC itself slow down reading when buffers reach it.
  // Beyond the tensors' bytes, gRPC's own buffers (each connection's reads, frames, headers) need
  // room: a quota of the in-flight bound alone, 4 KiB with --max-tensor-bytes 1000, had gRPC
  // reset every stream or close the connection (RST_STREAM 11, GOAWAY) before any handler ran.
  constexpr std::int64_t kTransportOwnBytes = std::int64_t{32} << 20;
  quota.Resize(
      static_cast<std::size_t>(config_.effective_max_inflight_bytes() + kTransportOwnBytes));
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
             Waiting waiting, wire::BufferPool& buffers) {
        return service_->Scan(context, request, response, waiting, buffers);
      },
      static_cast<std::size_t>(config_.effective_max_inflight_bytes()),
      [this](grpc::ServerContextBase* context, const std::shared_ptr<wire::BufferPool>& buffers) {
        return service_->open_stream(context, buffers);
      },
      wire_options);
  builder.RegisterService(wire_service_.get());
  if (config_.gpu_register_pool && router_->has(DeviceKind::kGpu)) {
    if (auto registrar = make_gpu_pool_registrar()) {
      wire_service_->buffer_pool().set_listener(std::move(registrar));
      spdlog::info(
          "GPU: pooled tensor buffers are registered with CUDA as they are first reused "
          "(--gpu-register-pool); requests in them skip the staging copies");
    }
  }
  if (config_.warm_start) warm_buffer_pool();
  v1::GetServerInfoResponse fixed_info;
  v1::ServerLimits& limits = *fixed_info.mutable_limits();
  limits.set_max_tensor_bytes(config_.max_tensor_bytes);
  limits.set_max_message_bytes(config_.effective_max_message_bytes());
  limits.set_max_inflight_bytes(config_.effective_max_inflight_bytes());
  limits.set_max_rank(config_.max_rank);
  if (shared_memory_) {
    limits.set_max_shared_memory_regions(config_.shared_memory_max_regions);
    limits.set_max_shared_memory_bytes(config_.shared_memory_max_bytes);
    fixed_info.add_shared_memory_kinds(v1::SHARED_MEMORY_KIND_SYSTEM);
    if (shared_memory_->cuda_supported()) {
      fixed_info.add_shared_memory_kinds(v1::SHARED_MEMORY_KIND_CUDA);
    }
  }
  fixed_info.set_host_id(shared_memory::host_identity());
  info_service_ = std::make_unique<ServerInfoService>(
      *router_, gpus_, authenticator_ ? &*authenticator_ : nullptr, std::move(fixed_info));
  builder.RegisterService(info_service_.get());
  shared_memory_service_ = std::make_unique<SharedMemoryService>(
      shared_memory_.get(), authenticator_ ? &*authenticator_ : nullptr, [this] {
        metrics_->publish_shared_memory(shared_memory_->region_count(),
                                        shared_memory_->mapped_bytes());
      });
  builder.RegisterService(shared_memory_service_.get());
  inference_service_ = std::make_unique<InferenceService>(
      *service_, *wire_service_, *metrics_, *shared_memory_service_,
      authenticator_ ? &*authenticator_ : nullptr, ready_,
      InferenceServiceOptions{SCAN_VERSION, config_.max_rank, shared_memory_ != nullptr});
  builder.RegisterService(inference_service_.get());

  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    spdlog::error("cannot listen on {}", config_.listen);
    server_.reset();
    return false;
  }
  if (config_.warm_start) warm_request_path(warm_up_token);
  auto* health = server_->GetHealthCheckService();
  health->SetServingStatus(kScanServiceName, true);
  health->SetServingStatus(true);
  ready_.store(true, std::memory_order_relaxed);
  return true;
}

ScanServer::WarmUpRequests ScanServer::warm_up_requests() const {
  WarmUpRequests requests;
  // MM-Rec's layout [2, 8, L, 128], or one row where not even L = 1 fits; zeros are zeros in
  // every dtype.
  const auto add = [](std::vector<v1::ScanRequest>& to, v1::BackendPreference preference,
                      v1::DataType dtype, std::int64_t elements) {
    v1::ScanRequest& request = to.emplace_back();
    request.set_backend(preference);
    v1::Tensor& gamma = *request.mutable_gamma();
    gamma.set_dtype(dtype);
    if (elements >= 2 * 8 * 128) {
      request.set_dim(2);
      for (const std::int64_t size :
           {std::int64_t{2}, std::int64_t{8}, elements / (2 * 8 * 128), std::int64_t{128}}) {
        gamma.add_shape(size);
      }
    } else {
      gamma.add_shape(elements);
    }
    std::int64_t numel = 1;
    for (const std::int64_t size : gamma.shape()) numel *= size;
    const auto element =
        static_cast<std::int64_t>(kernels::element_size(*v1::to_kernel_dtype(dtype)));
    gamma.mutable_data()->assign(static_cast<std::size_t>(numel * element), '\0');
  };
  std::vector<v1::BackendPreference> preferences = {v1::BACKEND_PREFERENCE_CPU};
  if (router_->has(DeviceKind::kGpu)) preferences.push_back(v1::BACKEND_PREFERENCE_GPU);
  for (const v1::BackendPreference preference : preferences) {
    for (const v1::DataType dtype : {v1::DATA_TYPE_FLOAT32, v1::DATA_TYPE_BFLOAT16,
                                     v1::DATA_TYPE_FLOAT16, v1::DATA_TYPE_FLOAT64}) {
      // The smallest size the pool holds (L = 8), or as much as --max-tensor-bytes allows.
      const auto element =
          static_cast<std::int64_t>(kernels::element_size(*v1::to_kernel_dtype(dtype)));
      const std::int64_t elements =
          std::min<std::int64_t>(2 * 8 * 8 * 128, config_.max_tensor_bytes / element);
      if (elements > 0) add(requests.small, preference, dtype, elements);
    }
    // 4 MiB of float32: above WireOptions::inline_max_bytes, so it runs on (and starts) one of
    // the handler threads that larger scans use, rather than on gRPC's.
    constexpr std::int64_t kHandlerThreadElements = 2 * 8 * 256 * 128;
    if (kHandlerThreadElements * 4 <= config_.max_tensor_bytes) {
      add(requests.large, preference, v1::DATA_TYPE_FLOAT32, kHandlerThreadElements);
    }
  }
  return requests;
}

void ScanServer::warm_request_path(const std::string& token) {
  const auto started = std::chrono::steady_clock::now();
  const WarmUpRequests requests = warm_up_requests();
  // Over this server's own listener the calls take a client's path: gRPC's polling and callback
  // threads, the socket reads, the handler threads that run scans. Through the in-process channel
  // they ran on this thread instead, and the first client request still took 2x a warm one (a GPU
  // scan, 153 us against 68, on threads that had never called CUDA). Several connections at once,
  // because gRPC spreads calls over its threads by connection and by load.
  const std::string target = own_listener_target(config_, port_);
  const int connections =
      target.empty() ? 1
                     : static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 8u));
  WarmUpTally tally = warm_up_over(target, connections, requests, token);
  if (!target.empty() && tally.answered == 0) {
    spdlog::warn(
        "warm start: this server's listener at {} did not answer ({}); warming through "
        "an in-process channel instead",
        target, tally.first_failure);
    tally = warm_up_over("", 1, requests, token);
  }
  warm_up_ = tally;
  const double milliseconds =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  const std::string route =
      tally.target.empty() ? std::string("in-process")
                           : fmt::format("{} connections to {}", tally.connections, tally.target);
  if (tally.answered == tally.calls) {
    spdlog::info("warm start: {} Scan calls over {} in {:.1f} ms (not counted in metrics)",
                 tally.calls, route, milliseconds);
  } else {
    spdlog::warn("warm start: {} of {} Scan calls over {} failed, first {}",
                 tally.calls - tally.answered, tally.calls, route, tally.first_failure);
  }
}

ScanServer::WarmUpTally ScanServer::warm_up_over(const std::string& target, int connections,
                                                 const WarmUpRequests& requests,
                                                 const std::string& token) {
  WarmUpTally tally;
  tally.target = target;
  tally.connections = connections;
  std::mutex tally_mutex;
  const auto call = [&](v1::ScanService::Stub& stub, const v1::ScanRequest& request) {
    grpc::ClientContext context;
    context.AddMetadata(ScanServiceImpl::kWarmUpHeader, token);
    // A device that hangs delays readiness by this much per call, not forever.
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ScanResponse response;
    const grpc::Status status = stub.Scan(&context, request, &response);
    std::lock_guard<std::mutex> lock(tally_mutex);
    ++tally.calls;
    if (status.ok()) {
      ++tally.answered;
    } else if (tally.first_failure.empty()) {
      tally.first_failure =
          fmt::format("{} {}: {}", v1::DataType_Name(request.gamma().dtype()),
                      v1::BackendPreference_Name(request.backend()), status.error_message());
    }
  };
  std::vector<std::unique_ptr<v1::ScanService::Stub>> stubs;
  for (int index = 0; index < connections; ++index) {
    grpc::ChannelArguments arguments;
    // A connection of its own, not one shared through gRPC's global subchannel pool.
    arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    arguments.SetMaxReceiveMessageSize(-1);
    stubs.push_back(v1::ScanService::NewStub(
        target.empty()
            ? server_->InProcessChannel(arguments)
            : grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), arguments)));
  }
  std::vector<std::thread> callers;
  for (auto& stub : stubs) {
    callers.emplace_back([&call, &requests, &stub] {
      for (int round = 0; round < 2; ++round) {
        for (const v1::ScanRequest& request : requests.small) call(*stub, request);
      }
    });
  }
  for (std::thread& caller : callers) caller.join();
  // One at a time: each takes two pooled buffers of its size. Several at once took more than the
  // pool holds of a size, the pool handed out its larger buffers and allocated others, and
  // returning them all pushed the 16 and 64 MiB buffers out of the full pool (the first 64 MiB
  // request then paid for fresh pages: 4.6x a warm one on the H100 host).
  for (int round = 0; round < 2; ++round) {
    for (const v1::ScanRequest& request : requests.large) call(*stubs.front(), request);
  }
  return tally;
}

void ScanServer::warm_buffer_pool() {
  const auto started = std::chrono::steady_clock::now();
  const std::size_t added =
      wire_service_->buffer_pool().prefill(static_cast<std::size_t>(config_.max_tensor_bytes), 2);
  const bool registered = config_.gpu_register_pool && router_->has(DeviceKind::kGpu);
  if (registered) wait_gpu_pool_registered();
  spdlog::info("warm start: {} MiB of tensor buffers paged in{} in {:.0f} ms (--warm-start)",
               added >> 20, registered ? " and registered with CUDA" : "",
               std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started)
                   .count());
}

void ScanServer::shutdown() {
  if (!server_) return;
  std::call_once(shutdown_once_, [this] { shutdown_now(); });
}

void ScanServer::shutdown_now() {
  ready_.store(false, std::memory_order_relaxed);
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
  // No call is left to use a region: unmap them all.
  if (shared_memory_) shared_memory_->clear();
  spdlog::info("every call has ended; exiting");
}

void ScanServer::wait() {
  if (server_) server_->Wait();
}

}  // namespace scan::server
