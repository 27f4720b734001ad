// The ScanService RPC handlers: decode and validate, route, compute into the response, and report
// every finished call to the metrics.
#pragma once

#include <atomic>

#include "byte_budget.h"
#include "metrics.h"
#include "request_validation.h"
#include "router.h"
#include "scan/v1/scan.grpc.pb.h"
#include "security.h"

namespace scan::server {

class ScanServiceImpl final : public v1::ScanService::Service {
 public:
  // `authenticator` null: calls need no token. Everything referenced must outlive the service.
  ScanServiceImpl(Router& router, ValidationLimits limits, const ServiceMetrics& metrics,
                  ByteBudget& inflight_bytes, const TokenAuthenticator* authenticator)
      : router_(router),
        limits_(limits),
        metrics_(metrics),
        inflight_bytes_(inflight_bytes),
        authenticator_(authenticator) {}

  grpc::Status Scan(grpc::ServerContext* context, const v1::ScanRequest* request,
                    v1::ScanResponse* response) override;

  // From now on new calls are refused with UNAVAILABLE (retryable on another replica); calls
  // already inside the handler finish normally.
  void stop_admitting() { draining_.store(true, std::memory_order_relaxed); }

 private:
  grpc::Status serve(grpc::ServerContext& context, const v1::ScanRequest& request,
                     v1::ScanResponse& response, RequestRecord& record);
  // Runs `job` on `chosen`, feeding the router's cost model; a GPU failure is retried on the
  // router's CPU fallback (counted in scan_backend_fallbacks_total).
  kernels::KernelStatus compute(RegisteredBackend& chosen, ScanJob job, RequestRecord& record,
                                v1::ScanResponse& response);

  Router& router_;
  const ValidationLimits limits_;
  const ServiceMetrics& metrics_;
  ByteBudget& inflight_bytes_;
  const TokenAuthenticator* authenticator_;
  std::atomic<bool> draining_{false};
};

}  // namespace scan::server
