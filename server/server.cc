#include "server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/server_builder.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <thread>

#include "backends/cpu_torch_backend.h"

namespace scan::server {

namespace {
constexpr const char* kScanServiceName = "scan.v1.ScanService";
}

ScanServer::ScanServer(ServerConfig config, std::unique_ptr<Router> router)
    : config_(std::move(config)),
      router_(std::move(router)),
      metrics_(std::make_unique<ServiceMetrics>(router_->describe_backends(), SCAN_VERSION)) {}

ScanServer::~ScanServer() {
  if (server_) {
    shutdown();
    wait();
  }
}

bool ScanServer::start() {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  if (!config_.metrics_listen.empty()) {
    std::string error;
    if (!metrics_->expose(config_.metrics_listen, &error)) {
      spdlog::error("{}", error);
      return false;
    }
    spdlog::info("serving Prometheus metrics on http://{}/metrics (port {})",
                 config_.metrics_listen, metrics_->port());
  }
  service_ = std::make_unique<ScanServiceImpl>(
      *router_, ValidationLimits{config_.max_tensor_bytes, config_.max_rank}, *metrics_);

  grpc::ServerBuilder builder;
  builder.AddListeningPort(config_.listen, grpc::InsecureServerCredentials(), &port_);
  const auto message_limit = static_cast<int>(config_.effective_max_message_bytes());
  builder.SetMaxReceiveMessageSize(message_limit);
  builder.SetMaxSendMessageSize(message_limit);
  grpc::ResourceQuota quota("scan-server");
  quota.SetMaxThreads(config_.effective_rpc_threads());
  builder.SetResourceQuota(quota);
  builder.RegisterService(service_.get());

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
  const auto grace = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::duration<double>(config_.shutdown_grace_seconds));
  server_->Shutdown(std::chrono::system_clock::now() + grace);
}

void ScanServer::wait() {
  if (server_) server_->Wait();
}

std::unique_ptr<Router> make_default_router(const ServerConfig& config) {
  auto router = std::make_unique<Router>();
  router->add_backend(make_cpu_torch_backend(), config.effective_worker_threads());
  return router;
}

}  // namespace scan::server
