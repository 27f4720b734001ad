// Assembles the gRPC server: listening port and limits, the ScanService, health and reflection.
// Kept apart from main() so integration tests run the very same server in-process.
#pragma once

#include <grpcpp/server.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "admission/byte_budget.h"
#include "app/composition.h"
#include "app/config.h"
#include "metrics/metrics.h"
#include "routing/router.h"
#include "rpc/inference_service.h"
#include "rpc/scan_service.h"
#include "rpc/security.h"
#include "rpc/server_info.h"
#include "rpc/shared_memory_service.h"
#include "rpc/wire_service.h"

namespace scan::server {

class ScanServer {
 public:
  // Takes ownership of the composed backends (compose_backends, or a test's own router).
  ScanServer(ServerConfig config, ServingBackends backends);
  ~ScanServer();

  // Binds and starts serving; returns false (and logs why) if the address cannot be bound.
  bool start();
  // The port actually bound (useful with port 0).
  int port() const { return port_; }
  // The metrics port actually bound; 0 when metrics are off.
  int metrics_port() const { return metrics_->port(); }
  const ServiceMetrics& metrics() const { return *metrics_; }
  // Warm start's own Scan calls, made before the server reported SERVING.
  struct WarmUpTally {
    std::string target;  // this server's listener as called; empty: the in-process channel
    int connections = 1;
    int calls = 0;
    int answered = 0;  // answered OK
    std::string first_failure;
  };
  const WarmUpTally& warm_up() const { return warm_up_; }
  // Marks health NOT_SERVING, keeps serving for the drain delay, then stops accepting and waits up
  // to the grace period for in-flight requests before cancelling what remains. Safe to call from
  // any thread, more than once.
  void shutdown();
  // Blocks until shutdown() has completed.
  void wait();

 private:
  void shutdown_now();
  // --warm-start: the buffer pool filled, paged in and registered with CUDA, before serving.
  void warm_buffer_pool();
  // --warm-start, once gRPC serves and before health says SERVING: a few small Scan calls of
  // every dtype on every kind of backend, sent by this process to its own listener (in process
  // where it cannot connect, as with TLS), so that the first client's request does not pay for
  // the first use of the call path (gRPC's threads, handler threads, threads' first CUDA call,
  // lazily built state, metric series): on a fresh server it took 2-4x a warm one.
  void warm_request_path(const std::string& token);
  struct WarmUpRequests {
    std::vector<v1::ScanRequest> small;  // run on gRPC's threads
    std::vector<v1::ScanRequest> large;  // run on the handler threads of scans over 1 MiB
  };
  WarmUpRequests warm_up_requests() const;
  // The small requests twice over each of `connections` channels to `target`, all at once, then
  // the large ones twice over one of them.
  WarmUpTally warm_up_over(const std::string& target, int connections,
                           const WarmUpRequests& requests, const std::string& token);

  ServerConfig config_;
  std::unique_ptr<Router> router_;
  const kernels::GpuInventory gpus_;
  std::unique_ptr<ServiceMetrics> metrics_;
  ByteBudget inflight_bytes_;
  std::optional<TokenAuthenticator> authenticator_;
  // Clients' shared-memory regions (null without --allow-shared-memory); outlives every call.
  std::unique_ptr<shared_memory::Registry> shared_memory_;
  std::unique_ptr<ScanServiceImpl> service_;
  // Serving, and not shutting down (KServe's ServerReady and ModelReady).
  std::atomic<bool> ready_{false};
  // inference.GRPCInferenceService (KServe v2) over service_ and the same transport. Declared
  // before wire_service_ so that it outlives the transport's handler threads (joined when
  // wire_service_ goes), which run its ModelInfer calls with its codec.
  std::unique_ptr<InferenceService> inference_service_;
  // What gRPC actually serves: service_'s Scan behind the zero-copy codec.
  std::unique_ptr<WireScanService> wire_service_;
  std::unique_ptr<ServerInfoService> info_service_;
  std::unique_ptr<SharedMemoryService> shared_memory_service_;

  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  WarmUpTally warm_up_;
  std::once_flag shutdown_once_;
};

}  // namespace scan::server
