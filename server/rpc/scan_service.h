// The ScanService RPC handlers: decode and validate, route, compute into the response, and report
// every finished call to the metrics.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "admission/byte_budget.h"
#include "admission/request_validation.h"
#include "metrics/metrics.h"
#include "routing/router.h"
#include "rpc/security.h"
#include "rpc/wire_service.h"
#include "scan/v1/scan.pb.h"
#include "shared_memory/region_registry.h"

namespace scan::server {

// Chunk sizes of ScanStream (the transport sizes the result's chunks: WireOptions).
struct StreamChunking {
  // The largest chunk a client may send (what it is told in ScanStreamResponse.accepted); bounded
  // by the gRPC message limit.
  std::int64_t max_input_chunk_bytes = std::int64_t{64} << 20;
};

// Not a generated service: the transport (wire_service.h) registers these handlers itself.
class ScanServiceImpl final {
 public:
  // `authenticator` null: calls need no token. Everything referenced must outlive the service.
  // `shared_memory` null: requests naming shared-memory regions are refused.
  ScanServiceImpl(Router& router, ValidationLimits limits, const ServiceMetrics& metrics,
                  ByteBudget& inflight_bytes, const TokenAuthenticator* authenticator,
                  StreamChunking chunking = {}, shared_memory::Registry* shared_memory = nullptr)
      : router_(router),
        limits_(limits),
        chunking_(chunking),
        metrics_(metrics),
        inflight_bytes_(inflight_bytes),
        authenticator_(authenticator),
        shared_memory_(shared_memory) {}

  // The Scan call. With Waiting::kNotAllowed (gRPC's callback thread) a request that would have
  // to wait for a compute slot comes back deferred, validated, admitted and routed: the transport
  // finishes it from a thread of its own (DeferredScan::resume).
  // The result's tensor buffer comes from `buffers`.
  // `rpc` names the method that carried it in the metrics (KServe's ModelInfer is served as a
  // Scan).
  HandlerResult Scan(grpc::ServerContextBase* context, const v1::ScanRequest* request,
                     v1::ScanResponse* response, Waiting waiting, wire::BufferPool& buffers,
                     RequestRpc rpc = RequestRpc::kScan);
  // A call of `rpc` refused before it became a scan (KServe's ModelInfer naming an unknown model,
  // say): the caller's credentials are checked first, and the refusal is counted like a refused
  // Scan. Returns the status to answer with.
  grpc::Status refuse(grpc::ServerContextBase& context, const grpc::Status& refusal, RequestRpc rpc,
                      std::size_t request_bytes);
  // A ScanStream call (see scan.proto and ScanStreamSession). Its header is validated, and the
  // stream refused while the in-flight budget lacks room for it, before the client is told to
  // send any bytes; the budget is then taken as the bytes arrive, so a stream holds what it was
  // sent and no more.
  std::unique_ptr<ScanStreamSession> open_stream(grpc::ServerContextBase* context,
                                                 const std::shared_ptr<wire::BufferPool>& buffers);

  // From now on new calls are refused with UNAVAILABLE (retryable on another replica); calls
  // already inside the handler finish normally.
  void stop_admitting() { draining_.store(true, std::memory_order_relaxed); }

  // Scan calls whose kWarmUpHeader metadata holds `token` are the server's own, made before it
  // reports SERVING (ScanServer's warm start) so that the first client request does not pay for
  // the first use of the call path: they are served like any call, but need no credentials and
  // are neither recorded in the metrics nor fed to the routing cost models (their times are the
  // cold ones). The token is random per process, so no client can pass for one. Set before the
  // server starts; empty (the default): no call is one.
  static constexpr const char* kWarmUpHeader = "x-scan-warm-up";
  void set_warm_up_token(std::string token) { warm_up_token_ = std::move(token); }

 private:
  class UnaryCall;
  class StreamCall;

  // The end of a call: counted out of the in-flight gauge and recorded in the metrics.
  void record_end(grpc::ServerContextBase& context, RequestRecord& record,
                  const grpc::Status& status, std::chrono::steady_clock::time_point received);
  // Before any compute: `bytes` (what the request and its response hold in server memory)
  // reserved from the in-flight budget, held by *held until the call ends.
  grpc::Status admit(std::int64_t bytes, std::optional<BudgetLease>* held);
  grpc::Status budget_exhausted(std::int64_t needed) const;
  // Draining and credentials.
  grpc::Status check_caller(grpc::ServerContextBase& context) const;
  bool is_warm_up(const grpc::ServerContextBase& context) const;
  // Runs a routed `scan` on `chosen`: waits for a compute slot unless `slot_held` (the caller
  // took one), computes into `output` (scan.bytes long), and fills the response's backend and
  // timing, not its data.
  // `device_memory`: scan.input and `output` are memory of the chosen GPU (CUDA IPC regions).
  grpc::Status execute(grpc::ServerContextBase& context, const ValidatedScan& scan,
                       RegisteredBackend& chosen, bool slot_held, void* output,
                       v1::ScanResponse& response, RequestRecord& record,
                       std::chrono::steady_clock::time_point received, bool device_memory = false);
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
  shared_memory::Registry* const shared_memory_;
  std::atomic<bool> draining_{false};
  std::string warm_up_token_;
};

}  // namespace scan::server
