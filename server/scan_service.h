// The ScanService RPC handlers: decode and validate, route, compute into the response, and report
// every finished call to the metrics.
#pragma once

#include <atomic>
#include <chrono>
#include <optional>

#include "byte_budget.h"
#include "metrics.h"
#include "request_validation.h"
#include "router.h"
#include "scan/v1/scan.grpc.pb.h"
#include "security.h"
#include "wire_service.h"

namespace scan::server {

// Chunk sizes of ScanStream.
struct StreamChunking {
  // The largest chunk a client may send (what it is told in ScanStreamResponse.accepted); bounded
  // by the gRPC message limit.
  std::int64_t max_input_chunk_bytes = std::int64_t{64} << 20;
  // The size of the result chunks the server sends.
  std::int64_t output_chunk_bytes = std::int64_t{4} << 20;
};

class ScanServiceImpl final : public v1::ScanService::Service {
 public:
  // `authenticator` null: calls need no token. Everything referenced must outlive the service.
  ScanServiceImpl(Router& router, ValidationLimits limits, const ServiceMetrics& metrics,
                  ByteBudget& inflight_bytes, const TokenAuthenticator* authenticator,
                  StreamChunking chunking = {})
      : router_(router),
        limits_(limits),
        chunking_(chunking),
        metrics_(metrics),
        inflight_bytes_(inflight_bytes),
        authenticator_(authenticator) {}

  grpc::Status Scan(grpc::ServerContext* context, const v1::ScanRequest* request,
                    v1::ScanResponse* response) override;
  // The ScanStream conversation (see scan.proto) over `io`: the header is validated and the
  // tensor's memory reserved before the client is told to send any bytes.
  grpc::Status StreamScan(grpc::ServerContext* context, ScanStreamIo& io);

  // From now on new calls are refused with UNAVAILABLE (retryable on another replica); calls
  // already inside the handler finish normally.
  void stop_admitting() { draining_.store(true, std::memory_order_relaxed); }

 private:
  // Counts the call in the in-flight gauge and records it in the metrics when `serve` returns.
  template <class Serve>
  grpc::Status recorded(grpc::ServerContext& context, Serve serve);
  // Before any compute: draining, credentials, and the request's bytes (request plus response)
  // reserved from the in-flight budget, held by *held until the call ends.
  grpc::Status admit(const ValidatedScan& scan, std::optional<BudgetLease>* held);
  grpc::Status check_caller(grpc::ServerContext& context) const;
  // Routes `scan`, waits for a slot and computes into `output` (scan.bytes long); fills the
  // response's backend and timing, not its data.
  grpc::Status execute(grpc::ServerContext& context, const ValidatedScan& scan, void* output,
                       v1::ScanResponse& response, RequestRecord& record,
                       std::chrono::steady_clock::time_point received);
  grpc::Status serve(grpc::ServerContext& context, const v1::ScanRequest& request,
                     v1::ScanResponse& response, RequestRecord& record);
  grpc::Status serve_stream(grpc::ServerContext& context, ScanStreamIo& io, RequestRecord& record);
  // Runs `job` on `chosen`, feeding the router's cost model; a GPU failure is retried on the
  // router's CPU fallback (counted in scan_backend_fallbacks_total).
  kernels::KernelStatus compute(RegisteredBackend& chosen, ScanJob job, RequestRecord& record,
                                v1::ScanResponse& response);

  Router& router_;
  const ValidationLimits limits_;
  const StreamChunking chunking_;
  const ServiceMetrics& metrics_;
  ByteBudget& inflight_bytes_;
  const TokenAuthenticator* authenticator_;
  std::atomic<bool> draining_{false};
};

}  // namespace scan::server
